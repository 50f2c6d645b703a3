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

/// `[store]`: PostgreSQL, for `overlord export-store` (docs/scale-out.md).
/// The server itself runs on the data file; its `Debug` hides the
/// connection string's password.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The PostgreSQL connection string `overlord export-store` uses when
    /// no `--url` is given (`host=... port=... user=... dbname=...`, or a
    /// `postgresql://` URL). May hold a password: set it with
    /// `OVERLORD_STORE__POSTGRES_URL` rather than in the file.
    pub postgres_url: String,
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
            .field("postgres_url", &shown)
            .finish()
    }
}
