//! `[notify]` and `[smtp]`: how notifications leave the server
//! (`crate::sender`).

use serde::Deserialize;

/// `[notify]`: how notifications reach their targets (`crate::sender`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Allow webhooks to loopback, private, link-local, unique-local and
    /// unspecified addresses (checked after DNS, on every attempt).
    pub allow_private_targets: bool,
    /// Seconds a notification is retried after its event before it goes
    /// to the dead letters.
    pub retry_for_secs: u64,
    /// First retry delay in milliseconds; it doubles each attempt (with
    /// jitter) up to `retry_max_secs`.
    pub retry_min_ms: u64,
    /// Longest delay between two attempts, in seconds.
    pub retry_max_secs: u64,
    /// Seconds one attempt may take: connect, TLS, request and response.
    pub timeout_secs: u64,
    /// Deliveries in flight at once over all targets (each target has at
    /// most one, which keeps its order).
    pub max_in_flight: usize,
    /// Delivery attempts kept per target for its history, and as many of
    /// its dead notifications.
    pub history_kept: u64,
    /// Notifications one target's outbox may hold; more are not queued
    /// (`target_full`).
    pub max_waiting: u64,
    /// A PEM file of certificate authorities trusted for `https`
    /// webhooks besides the Mozilla roots (a LAN's own CA); empty: none.
    pub ca_file: String,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            allow_private_targets: false,
            retry_for_secs: 86_400,
            retry_min_ms: 1000,
            retry_max_secs: 3600,
            timeout_secs: 10,
            max_in_flight: 16,
            history_kept: 100,
            max_waiting: 10_000,
            ca_file: String::new(),
        }
    }
}

/// `[smtp]`: the relay e-mail targets are sent through (empty `host`:
/// e-mail targets are refused). Its `Debug` hides the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// The relay's host name; empty: no e-mail.
    pub host: String,
    /// Its port (587 submission with STARTTLS, 465 TLS, 25 plain).
    pub port: u16,
    /// `starttls` (required, not opportunistic), `tls` (TLS from the
    /// first byte) or `none` (plain text: a relay on the same host only).
    pub security: String,
    /// Login name; empty: no login.
    pub username: String,
    /// Login password (set it with `OVERLORD_SMTP__PASSWORD` rather than
    /// in the file). Never logged.
    pub password: String,
    /// The sender address (`From`).
    pub from: String,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<hidden>"
                },
            )
            .field("from", &self.from)
            .finish()
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: String::new(),
            port: 587,
            security: "starttls".into(),
            username: String::new(),
            password: String::new(),
            from: "overlord@localhost".into(),
        }
    }
}
