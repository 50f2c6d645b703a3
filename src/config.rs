//! Configuration: `overlord.toml`, embedded in the binary as the default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::codec::Limits as CodecLimits;

/// The embedded default configuration (the repository's `overlord.toml`).
pub const DEFAULT_TOML: &str = include_str!("../overlord.toml");

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// The data file (relative paths are relative to the working directory).
    pub data_file: PathBuf,
    /// Bounds on clients and queues.
    pub limits: Limits,
    /// The digest pool.
    pub digest: DigestConfig,
    /// Device presence.
    pub presence: PresenceConfig,
}

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

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Seconds to send a request head.
    pub header_timeout_secs: u64,
    /// Seconds to send a request body.
    pub body_timeout_secs: u64,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Longest `S`/`B` value in bytes.
    pub max_value_bytes: usize,
    /// Seconds a reading may be ahead of the server clock.
    pub max_future_skew_secs: u64,
    /// Requests waiting for the writer.
    pub ingest_queue: usize,
    /// Rows a query returns without `limit`.
    pub query_default_rows: usize,
    /// Largest `limit` of a query.
    pub query_max_rows: usize,
    /// Seconds shutdown waits for in-flight requests.
    pub shutdown_grace_secs: u64,
    /// Rows a device inbox may hold.
    pub max_inbox: u64,
    /// Pending inbox rows appended to a readings reply.
    pub reply_inbox_rows: usize,
    /// Items a new channel keeps unless it says otherwise.
    pub channel_retention: u64,
    /// Longest `wait` of a channel long-poll, in seconds.
    pub max_wait_secs: u64,
    /// Long-polls waiting at once; more get `503`.
    pub max_long_polls: usize,
    /// Failed credentials per source address or id per window before
    /// `429` (0: off).
    pub auth_failures_per_window: u32,
    /// The throttling window in seconds.
    pub auth_window_secs: u64,
    /// Readings requests per second per device (0: unlimited).
    pub device_requests_per_sec: f64,
    /// Burst of readings requests per device.
    pub device_burst: f64,
    /// Seconds a dashboard login session lasts.
    pub session_secs: u64,
}

/// `[digest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    /// Threads.
    pub workers: usize,
    /// Parts queued per thread.
    pub queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8080".into(),
            data_file: "overlord.redb".into(),
            limits: Limits::default(),
            digest: DigestConfig::default(),
            presence: PresenceConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_body_bytes: 32 << 20,
            max_value_bytes: 1024,
            max_future_skew_secs: 300,
            ingest_queue: 4096,
            query_default_rows: 100_000,
            query_max_rows: 1_000_000,
            shutdown_grace_secs: 10,
            max_inbox: 100,
            reply_inbox_rows: 3,
            channel_retention: 100_000,
            max_wait_secs: 60,
            max_long_polls: 256,
            auth_failures_per_window: 20,
            auth_window_secs: 60,
            device_requests_per_sec: 50.0,
            device_burst: 200.0,
            session_secs: 86_400,
        }
    }
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            workers: 2,
            queue: 256,
        }
    }
}

impl Config {
    /// Parse TOML text.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Load `path`, or `./overlord.toml` if it exists, or the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
            None => match std::fs::read_to_string("overlord.toml") {
                Ok(t) => t,
                Err(_) => DEFAULT_TOML.to_string(),
            },
        };
        Config::from_toml(&text)
    }

    /// The codec's view of the limits.
    pub fn codec_limits(&self) -> CodecLimits {
        CodecLimits {
            max_value_bytes: self.limits.max_value_bytes,
            max_future_skew: (self.limits.max_future_skew_secs as i64).saturating_mul(1_000_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_matches_code_defaults() {
        let c = Config::from_toml(DEFAULT_TOML).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.data_file, d.data_file);
        assert_eq!(c.limits.max_body_bytes, d.limits.max_body_bytes);
        assert_eq!(c.limits.ingest_queue, d.limits.ingest_queue);
        assert_eq!(c.digest.workers, d.digest.workers);
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::from_toml("lisen = \"x\"").is_err());
        assert!(Config::from_toml("[limits]\nmax_conections = 1").is_err());
    }
}
