-- Consents: one row per route, owner and subject. value is the sealed
-- record (AES-256-GCM, bound to route|owner|subject|generation) under the
-- key key_id names; state and refresh_expiry repeat two of its fields.
CREATE TABLE consents (
    route      text        NOT NULL,
    owner      text        NOT NULL,
    subject    text        NOT NULL,
    generation bigint      NOT NULL CHECK (generation > 0),
    value      bytea       NOT NULL,
    key_id     text        NOT NULL,
    -- Not secret, kept in clear for the census (counts by route and state,
    -- refresh tokens expiring soon) without opening every value.
    state      text        NOT NULL,
    refresh_expiry timestamptz,
    updated    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (route, owner, subject)
);
-- The primary key serves listing by route, and by route and owner; this
-- index serves listing one owner's consents on every route.
CREATE INDEX consents_owner_route ON consents (owner, route);
-- Finds the keys values are sealed under (start-up, rekey).
CREATE INDEX consents_key_id ON consents (key_id);

-- Started consents waiting for the customer's return; single use.
CREATE TABLE pending (
    state   text        PRIMARY KEY,
    expires timestamptz NOT NULL,
    value   bytea       NOT NULL,
    key_id  text        NOT NULL
);
CREATE INDEX pending_expires ON pending (expires);

-- Key checks (keycheck:<id>): a known value sealed under each key the
-- store has met, so a different key under a known id is refused.
CREATE TABLE store_meta (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
