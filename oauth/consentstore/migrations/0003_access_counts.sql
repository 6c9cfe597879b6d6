-- Access counts: a consent's unattended calls in one bank day (a route's
-- frequency_per_day), kept here when no Redis shares them. A row lives
-- until its day ended (expires); the store deletes rows past it.
CREATE TABLE access_counts (
    route   text        NOT NULL,
    owner   text        NOT NULL,
    subject text        NOT NULL,
    day     date        NOT NULL,
    count   integer     NOT NULL CHECK (count > 0),
    expires timestamptz NOT NULL,
    PRIMARY KEY (route, owner, subject, day)
);
CREATE INDEX access_counts_expires ON access_counts (expires);
