-- The privileges of the role tokenproxy runs as when another role owns the
-- store's tables (migrate_on_start: false): read and write the rows of the
-- consent store's tables, read the schema version the start-up checks; no
-- DDL, no ownership, no sequence (the schema has none). Run it as the
-- tables' owner after `tokenproxy store migrate`, and again after an
-- upgrade whose migration adds a table. psql: -v role=NAME.
GRANT USAGE ON SCHEMA public TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE consents, pending, store_meta, outbox, access_counts TO :"role";
GRANT SELECT ON TABLE schema_migrations TO :"role";
