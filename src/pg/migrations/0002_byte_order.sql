-- Schema version 2: text keys in byte order.
-- redb orders a string key by its bytes; a text column's default
-- collation orders it by the database's locale. The "C" collation is byte
-- order, so a range over a text key (src/pg/kv.rs) returns the rows redb
-- would, in redb's order. Only keys are ordered; the other text columns
-- change too, so that every text column compares alike.

ALTER TABLE presence_notify ALTER COLUMN owner TYPE text COLLATE "C",
    ALTER COLUMN device TYPE text COLLATE "C", ALTER COLUMN channel TYPE text COLLATE "C";
ALTER TABLE devices ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE users ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE meta ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE grants ALTER COLUMN grantee TYPE text COLLATE "C";
ALTER TABLE channels ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE channel_labels ALTER COLUMN label TYPE text COLLATE "C";
ALTER TABLE alerts ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE targets ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE presence_targets ALTER COLUMN owner TYPE text COLLATE "C";
ALTER TABLE files ALTER COLUMN name TYPE text COLLATE "C";
