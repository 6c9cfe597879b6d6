-- Consent events waiting for (or kept after) their webhook delivery. body
-- is the event's JSON: names and dates, never a token. A delivered event
-- stays (done_at set) until purged, so that appending it again (id is
-- deterministic) keeps one.
CREATE TABLE outbox (
    id           text        PRIMARY KEY,
    type         text        NOT NULL,
    created      timestamptz NOT NULL,
    body         text        NOT NULL,
    attempts     integer     NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL,
    lease_until  timestamptz,
    lease_by     text,
    delivered    text[]      NOT NULL DEFAULT '{}',
    done_at      timestamptz,
    gave_up      boolean     NOT NULL DEFAULT false
);
-- Dispatchers claim due, undelivered events down this index.
CREATE INDEX outbox_due ON outbox (next_attempt) WHERE done_at IS NULL;
-- The purge of delivered events.
CREATE INDEX outbox_done ON outbox (done_at) WHERE done_at IS NOT NULL;
