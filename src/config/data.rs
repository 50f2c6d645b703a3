//! The sections about stored data: `[presence]`, `[retention]` and
//! `[storage]`.

use serde::Deserialize;

/// `[presence]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Seconds of silence before a device is offline, unless the device
    /// sets its own.
    pub offline_after_secs: u32,
    /// Presence events kept (oldest removed first).
    pub events_kept: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            offline_after_secs: 300,
            events_kept: 100_000,
        }
    }
}

/// `[retention]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days readings are kept unless a device or sensor says otherwise
    /// (0: forever).
    pub keep_days: u32,
    /// Seconds between retention passes.
    pub sweep_secs: u64,
    /// Reading chunks (one sensor-minute part) removed per commit.
    pub chunks_per_commit: usize,
    /// Days the per-minute aggregates (count, min, max, sum) of removed
    /// `N` and `I` readings are kept, counted from the minute (0: no
    /// aggregates are made).
    pub aggregate_keep_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_days: 0,
            sweep_secs: 3600,
            chunks_per_commit: 1000,
            aggregate_keep_days: 0,
        }
    }
}

/// `[storage]`: sealing chunks into the compact form (`docs/storage.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Seconds without a write after which a sensor's last chunk, once
    /// its hour is over, is sealed (earlier chunks are sealed without
    /// waiting). 0 seals as eagerly as possible (tests).
    pub seal_idle_secs: u64,
    /// Chunks looked at or sealed per sealing transaction; 0 turns
    /// sealing off (chunks stay hot).
    pub seal_chunks_per_step: usize,
    /// Seconds the writer has had no request after which the data file is
    /// compacted in place, if it grew since the last time; 0: never (use
    /// `overlord compact` with the server stopped).
    pub compact_idle_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            seal_idle_secs: 30,
            seal_chunks_per_step: 2048,
            compact_idle_secs: 30,
        }
    }
}

/// Which store the server serves from (`[store] kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The data file (`data_file`): the embedded default.
    #[default]
    Redb,
    /// A PostgreSQL database (`postgres_url`); docs/scale-out.md.
    Postgres,
}

/// `[store]`: which store the server runs on, and the PostgreSQL
/// database (also `overlord export-store`'s default target). Its `Debug`
/// hides the connection string's password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redb` (the data file) or `postgres` (`postgres_url`).
    pub kind: StoreKind,
    /// The PostgreSQL connection string (`host=... port=... user=...
    /// dbname=...`, or a `postgresql://` URL; several hosts with
    /// `target_session_attrs=read-write` for failover). May hold a
    /// password: set it with `OVERLORD_STORE__POSTGRES_URL` rather than
    /// in the file.
    pub postgres_url: String,
    /// Sessions (connections) a node keeps to PostgreSQL at most, besides
    /// the one that holds its lock on the database.
    pub pool_size: usize,
    /// The longest a request waits for a session, a new session takes to
    /// start, and a statement may run; past it the request gets `503`
    /// with `Retry-After`.
    pub timeout_secs: u64,
    /// Where this node takes the connections other nodes forward to it
    /// while it serves the database (`crate::server::forward`); empty:
    /// no other node may join, a second one is refused at start. Set on
    /// every node of a cluster.
    pub node_listen: String,
    /// `host:port` the other nodes reach `node_listen` at; empty: the
    /// address it is bound to (which must then name one, not `0.0.0.0`).
    pub node_address: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Redb,
            postgres_url: String::new(),
            pool_size: 16,
            timeout_secs: 10,
            node_listen: String::new(),
            node_address: String::new(),
        }
    }
}

impl StoreConfig {
    /// The checks serving from PostgreSQL needs before anything opens:
    /// a connection string that parses, and a pool of at least one.
    pub fn check(&self) -> Result<(), String> {
        if self.kind != StoreKind::Postgres {
            return match self.node_listen.is_empty() {
                true => Ok(()),
                false => Err(
                    "[store] node_listen is for kind = \"postgres\" (nodes sharing one database)"
                        .into(),
                ),
            };
        }
        if !self.node_listen.is_empty() && self.node_address.is_empty() {
            if let Ok(a) = self.node_listen.parse::<std::net::SocketAddr>() {
                if a.ip().is_unspecified() {
                    return Err(format!(
                        "[store] node_listen = \"{}\" names no address the other nodes can reach: set node_address",
                        self.node_listen
                    ));
                }
            }
        }
        if self.postgres_url.trim().is_empty() {
            return Err(
                "[store] kind = \"postgres\" needs postgres_url (or OVERLORD_STORE__POSTGRES_URL)"
                    .into(),
            );
        }
        crate::pg::Target::parse(&self.postgres_url)
            .map_err(|e| format!("[store] postgres_url: {e}"))?;
        if self.pool_size == 0 || self.timeout_secs == 0 {
            return Err("[store] pool_size and timeout_secs must be at least 1".into());
        }
        Ok(())
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.postgres_url.is_empty() {
            String::new()
        } else {
            crate::pg::Target::parse(&self.postgres_url)
                .map(|t| t.shown)
                .unwrap_or_else(|_| "<does not parse>".into())
        };
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("postgres_url", &shown)
            .field("pool_size", &self.pool_size)
            .field("timeout_secs", &self.timeout_secs)
            .field("node_listen", &self.node_listen)
            .field("node_address", &self.node_address)
            .finish()
    }
}
