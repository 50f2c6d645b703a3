-- Schema version 1: the image of the redb data file (src/pg/mirror.rs).
-- One table per redb table, the same name; the key's parts are the
-- primary key, the value's parts the other columns; records stay the
-- bytes the server encodes (bytea). redb's u32 is bigint here (its whole
-- range). Never edit a migration that has shipped: add the next one.

CREATE TABLE readings (device bigint, sensor bigint, minute bigint, part integer,
    data bytea NOT NULL, PRIMARY KEY (device, sensor, minute, part));
CREATE TABLE sealed (device bigint, sensor bigint, minute bigint, part integer,
    data bytea NOT NULL, PRIMARY KEY (device, sensor, minute, part));
CREATE TABLE sensors (device bigint, sensor bigint, first_at bigint NOT NULL,
    PRIMARY KEY (device, sensor));
CREATE TABLE digest_log (seq bigint PRIMARY KEY, batch bytea NOT NULL);
CREATE TABLE last_seen (device bigint PRIMARY KEY, at bigint NOT NULL);
CREATE TABLE presence (device bigint PRIMARY KEY, flags smallint NOT NULL, since bigint NOT NULL);
CREATE TABLE presence_events (idx bigint PRIMARY KEY, event bytea NOT NULL);
CREATE TABLE presence_notify (owner text PRIMARY KEY, device text NOT NULL, channel text NOT NULL);

CREATE TABLE devices (id text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE users (name text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE meta (name text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE grants (kind smallint, num bigint, grantee text, level smallint NOT NULL,
    PRIMARY KEY (kind, num, grantee));

CREATE TABLE channels (name text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE channel_members (channel bigint, device bigint, sensor bigint,
    PRIMARY KEY (channel, device, sensor));
CREATE TABLE channel_meta (channel bigint PRIMARY KEY, first_idx bigint NOT NULL,
    next_idx bigint NOT NULL);
CREATE TABLE channel_items (channel bigint, idx bigint, item bytea NOT NULL,
    PRIMARY KEY (channel, idx));
CREATE TABLE channel_labels (channel bigint, device bigint, sensor bigint, label text NOT NULL,
    PRIMARY KEY (channel, device, sensor));

CREATE TABLE alerts (name text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE alert_state (alert bigint PRIMARY KEY, fired smallint NOT NULL);
CREATE TABLE alert_events (alert bigint, n bigint, event bytea NOT NULL, PRIMARY KEY (alert, n));
CREATE TABLE alert_member_state (alert bigint, device bigint, sensor bigint,
    PRIMARY KEY (alert, device, sensor));

CREATE TABLE inbox (device bigint, seq bigint, "row" bytea NOT NULL, PRIMARY KEY (device, seq));
CREATE TABLE inbox_meta (device bigint PRIMARY KEY, next_seq bigint NOT NULL, pending bigint NOT NULL);
CREATE TABLE commands (device bigint, seq bigint, record bytea NOT NULL, PRIMARY KEY (device, seq));
CREATE TABLE command_meta (device bigint PRIMARY KEY, kept bigint NOT NULL,
    delivered_upto bigint NOT NULL);
CREATE TABLE command_expiry (expires_at bigint, device bigint, seq bigint,
    PRIMARY KEY (expires_at, device, seq));
CREATE TABLE dead_letters (seq bigint PRIMARY KEY, reason bytea NOT NULL);

CREATE TABLE retention (device bigint, sensor bigint, keep_days bigint NOT NULL,
    PRIMARY KEY (device, sensor));
CREATE TABLE aggregates (device bigint, sensor bigint, minute bigint, agg bytea NOT NULL,
    PRIMARY KEY (device, sensor, minute));
CREATE TABLE deleted_devices (device bigint PRIMARY KEY, deleted_at bigint NOT NULL);
CREATE TABLE sensor_labels (device bigint, sensor bigint, labels bytea NOT NULL,
    PRIMARY KEY (device, sensor));

CREATE TABLE targets (name text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE outbox (target bigint, n bigint, body bytea NOT NULL, PRIMARY KEY (target, n));
CREATE TABLE outbox_waiting (target bigint PRIMARY KEY, waiting bigint NOT NULL);
CREATE TABLE target_history (target bigint, n bigint, attempt bytea NOT NULL,
    PRIMARY KEY (target, n));
CREATE TABLE notify_dead (target bigint, n bigint, body bytea NOT NULL, PRIMARY KEY (target, n));
CREATE TABLE presence_targets (owner text PRIMARY KEY, target bigint NOT NULL);

CREATE TABLE files (name text PRIMARY KEY, record bytea NOT NULL);
-- Uploaded files' contents (redb keeps them in the files directory), by
-- SHA-256, in parts of 1 MiB.
CREATE TABLE file_blobs (sha256 bytea, part integer, bytes bytea NOT NULL,
    PRIMARY KEY (sha256, part));
