//! `[limits]` (bounds on clients and queues), `[quotas]` (what one
//! ordinary user may own) and `[digest]` (the digest pool).

use serde::Deserialize;

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one source address (an IPv6 /64);
    /// 0: no limit but `max_connections`.
    pub max_connections_per_source: usize,
    /// Seconds to send a request head.
    pub header_timeout_secs: u64,
    /// Seconds to send a request body.
    pub body_timeout_secs: u64,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Largest readings body read before the caller is known: a request
    /// with no credentials in its query string or headers (they may be in
    /// a form body) gets `401` above it.
    pub max_unauthenticated_body_bytes: usize,
    /// Bytes of request bodies (and the readings parsed from them) held
    /// across all requests at once; a request over it gets `503`.
    pub body_budget_bytes: usize,
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
    /// Finished (acknowledged or expired) command records kept per
    /// inbox for `GET /v1/devices/ID/commands` (`crate::commands`).
    pub commands_kept: u64,
    /// Items a new channel keeps unless it says otherwise.
    pub channel_retention: u64,
    /// Longest `wait` of a channel long-poll, in seconds.
    pub max_wait_secs: u64,
    /// Long-polls waiting at once; more get `503`.
    pub max_long_polls: usize,
    /// Long-polls one caller (a user, a device, or for anonymous callers
    /// a source address) may have waiting at once; more get `429`. Keeps
    /// one caller from taking every slot of `max_long_polls`.
    pub max_long_polls_per_caller: usize,
    /// Failed credentials per window: per (source address, id) before
    /// `429`, per source address (and per login name) before checks are
    /// slowed to one a second (0: off). See `crate::throttle`.
    pub auth_failures_per_window: u32,
    /// The throttling window in seconds.
    pub auth_window_secs: u64,
    /// Readings requests per second per device (0: unlimited).
    pub device_requests_per_sec: f64,
    /// Burst of readings requests per device.
    pub device_burst: f64,
    /// Seconds a dashboard login session lasts.
    pub session_secs: u64,
    /// Largest file upload (`/v1/files/NAME`) in bytes.
    pub max_file_bytes: u64,
    /// Most fields in one request's query string plus form body, and most
    /// columns in a CSV header (`400 too_many_fields` above it).
    pub max_fields: usize,
    /// Password (argon2) checks and hashes running at once; more get `503
    /// overloaded` with `Retry-After: 1` (0: one per CPU core).
    pub password_checks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_source: 256,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_body_bytes: 32 << 20,
            max_unauthenticated_body_bytes: 64 << 10,
            body_budget_bytes: 256 << 20,
            max_value_bytes: 1024,
            max_future_skew_secs: 300,
            ingest_queue: 4096,
            query_default_rows: 100_000,
            query_max_rows: 1_000_000,
            shutdown_grace_secs: 10,
            max_inbox: 100,
            reply_inbox_rows: 3,
            commands_kept: 100,
            channel_retention: 100_000,
            max_wait_secs: 60,
            max_long_polls: 256,
            max_long_polls_per_caller: 16,
            auth_failures_per_window: 20,
            auth_window_secs: 60,
            device_requests_per_sec: 50.0,
            device_burst: 200.0,
            session_secs: 86_400,
            max_file_bytes: 4 << 30,
            max_fields: crate::codec::DEFAULT_MAX_FIELDS,
            password_checks: 0,
        }
    }
}

/// `[quotas]`: what one ordinary user may own, so one tenant cannot fill
/// the disk or the memory for all. Administrators are exempt; 0 means
/// unlimited. Over a quota, creating is `403 quota_exceeded`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Devices a user owns (including those their gateways register).
    pub devices_per_user: u64,
    /// Channels a user owns.
    pub channels_per_user: u64,
    /// Alerts a user owns.
    pub alerts_per_user: u64,
    /// Total bytes of the files a user owns.
    pub file_bytes_per_user: u64,
    /// Notification targets a user owns.
    pub targets_per_user: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            devices_per_user: 10_000,
            channels_per_user: 1000,
            alerts_per_user: 1000,
            file_bytes_per_user: 10 << 30,
            targets_per_user: 100,
        }
    }
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

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            workers: 2,
            queue: 256,
        }
    }
}
