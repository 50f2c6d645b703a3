//! Configuration: `overlord.toml`, embedded in the binary as the default,
//! then `OVERLORD_*` environment variables on top.
//!
//! Environment overrides: `OVERLORD_<KEY>` sets a top-level key and
//! `OVERLORD_<SECTION>__<KEY>` (two underscores) a key of a section, names
//! upper-cased: `OVERLORD_LISTEN=127.0.0.1:9000`,
//! `OVERLORD_DATA_FILE=/var/lib/overlord/data.redb`,
//! `OVERLORD_LIMITS__MAX_BODY_BYTES=1048576`, `OVERLORD_DIGEST__WORKERS=4`.
//! The value is read as the key's type (number, boolean or text). An
//! `OVERLORD_` variable naming no key is an error, so a typo does not go
//! unnoticed; `OVERLORD_LOG` (the log filter) and `OVERLORD_TOKEN` (the API
//! token `overlord backup --url` sends) are not config keys.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::codec::Limits as CodecLimits;

mod notify;
pub use notify::{NotifyConfig, SmtpConfig};

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
    /// redb's page cache in MiB: bounds the store's memory (reads, and a
    /// large commit's dirty pages).
    pub cache_mb: usize,
    /// Verify the checksum of every page of the data file on every start,
    /// not only after an unclean shutdown (when redb always does): damage
    /// from outside (a bad disk, a stray write) stops the start with a
    /// message instead of failing later queries. Reads the whole file.
    pub verify_on_start: bool,
    /// Where uploaded files are kept; absent: `<data file>.files` beside
    /// the data file (see [`Config::files_dir`]).
    pub files_dir: Option<PathBuf>,
    /// Bounds on clients and queues.
    pub limits: Limits,
    /// The digest pool.
    pub digest: DigestConfig,
    /// Device presence.
    pub presence: PresenceConfig,
    /// How long readings are kept.
    pub retention: RetentionConfig,
    /// Sealing chunks into their compact form.
    pub storage: StorageConfig,
    /// The browser dashboard.
    pub dashboard: DashboardConfig,
    /// Per-user limits on what an ordinary user may create.
    pub quotas: QuotaConfig,
    /// The MQTT listener (`src/mqtt/`).
    pub mqtt: MqttConfig,
    /// HTTPS beside (or instead of) plain HTTP.
    pub tls: TlsConfig,
    /// Webhook delivery (notification targets).
    pub notify: NotifyConfig,
    /// The mail relay for e-mail targets.
    pub smtp: SmtpConfig,
    /// The log: its format and the request log's level.
    pub log: LogConfig,
    /// The ThingSpeak-compatible door: where `fieldN` goes.
    pub thingspeak: ThingSpeakConfig,
}

/// `[mqtt]`: the MQTT 3.1.1 and 5 listener. Payloads are bounded by
/// `[limits] max_body_bytes` (and, before CONNECT is authenticated, by
/// `max_unauthenticated_body_bytes`), like HTTP bodies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Address to listen on; empty: no MQTT listener.
    pub listen: String,
    /// Address for MQTT over TLS (`mqtts`), served with `[tls]`'s
    /// certificate; used only when `[tls]` has one; empty: off.
    pub tls_listen: String,
    /// Open MQTT connections at most (its own cap, beside HTTP's).
    pub max_connections: usize,
    /// Seconds a new connection has to send its whole CONNECT.
    pub connect_timeout_secs: u64,
    /// Publishes one client may have in progress (QoS 1 not yet
    /// acknowledged, QoS 0 not yet stored); more wait in the socket.
    pub max_inflight: u16,
    /// Packets waiting to be written to one client; a client that lets
    /// them pile up for `write_timeout_secs` is disconnected.
    pub outgoing_queue: usize,
    /// Seconds a full outgoing queue (or one write) may wait for a slow
    /// reader before the connection is dropped.
    pub write_timeout_secs: u64,
    /// Longest keep-alive the server honours, in seconds; a client asking
    /// for none (0) or more gets this one (MQTT 5 clients are told).
    pub max_keep_alive_secs: u16,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: "0.0.0.0:1883".into(),
            tls_listen: "0.0.0.0:8883".into(),
            max_connections: 16_384,
            connect_timeout_secs: 10,
            max_inflight: 32,
            outgoing_queue: 64,
            write_timeout_secs: 10,
            max_keep_alive_secs: 1800,
        }
    }
}

/// `[thingspeak]`: which sensor a ThingSpeak `field1`..`field8` is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThingSpeakConfig {
    /// `fieldN` → the Nth sensor (default `N1`..`N8`); `""` refuses it.
    pub fields: FieldMap,
    /// Per device id, a map of its own instead of `fields`.
    pub devices: std::collections::HashMap<String, FieldMap>,
}

impl Default for ThingSpeakConfig {
    fn default() -> Self {
        ThingSpeakConfig {
            fields: FieldMap(
                (1..=8)
                    .map(|n| crate::codec::SensorId::parse(&format!("N{n}")).ok())
                    .collect(),
            ),
            devices: Default::default(),
        }
    }
}

/// `[tls]`: HTTPS on its own port, beside plain HTTP on `listen` (or
/// alone, with `listen = ""`). Off while `cert_file` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first (certbot's `fullchain.pem`).
    pub cert_file: String,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// Address HTTPS listens on.
    pub listen: String,
    /// Send `Strict-Transport-Security` on HTTPS replies.
    pub hsts: bool,
    /// Seconds a client has from connecting to a finished handshake.
    pub handshake_timeout_secs: u64,
    /// Handshakes in progress at once; later ones wait for a slot within
    /// their `handshake_timeout_secs`.
    pub max_handshakes: usize,
    /// Seconds between checks of the two files for a change (0: only
    /// `SIGHUP` reloads them).
    pub reload_check_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: String::new(),
            key_file: String::new(),
            listen: "0.0.0.0:8443".into(),
            hsts: false,
            handshake_timeout_secs: 10,
            max_handshakes: 256,
            reload_check_secs: 5,
        }
    }
}

impl TlsConfig {
    /// Is HTTPS configured? An error when only one of the two files is
    /// named, or HTTPS is on with no address to listen on.
    pub fn enabled(&self) -> Result<bool, String> {
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, true) => Ok(false),
            (false, false) if self.listen.is_empty() => {
                Err("[tls] listen is empty but cert_file is set".into())
            }
            (false, false) => Ok(true),
            (false, true) => Err("[tls] cert_file is set but key_file is not".into()),
            (true, false) => Err("[tls] key_file is set but cert_file is not".into()),
        }
    }
}

/// `[log]`: how `serve` writes its log (stderr). The filter is
/// `OVERLORD_LOG` (default `info`) with `overlord::request=<requests>`
/// added, unless `OVERLORD_LOG` names `overlord::request` itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (one human-readable line per event) or `json` (one JSON
    /// object per line, for a log collector).
    pub format: LogFormat,
    /// The level of the request log (target `overlord::request`, one line
    /// per request at `info`): `off` silences it, `warn` or lower keeps
    /// the rest of the log at its level without it.
    pub requests: LogLevel,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A log level for `[log] requests`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The word `tracing_subscriber::EnvFilter` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Up to 8 sensor names (`field1`..`field8`; `""` or a missing entry:
/// not accepted), as a TOML array or a comma-separated string (for
/// `OVERLORD_THINGSPEAK__FIELDS=N1,N2,I3`). Checked when the config loads.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMap(pub Vec<Option<crate::codec::SensorId>>);

impl<'de> Deserialize<'de> for FieldMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            Text(String),
        }
        let names = match Raw::deserialize(d)? {
            Raw::List(v) => v,
            Raw::Text(t) => t.split(',').map(|s| s.trim().to_string()).collect(),
        };
        if names.len() > 8 {
            return Err(serde::de::Error::custom(
                "ThingSpeak has field1..field8: at most 8 names",
            ));
        }
        names
            .iter()
            .map(|n| match n.as_str() {
                "" => Ok(None),
                n => crate::codec::SensorId::parse(n)
                    .map(Some)
                    .map_err(|e| serde::de::Error::custom(format!("thingspeak fields: {e}"))),
            })
            .collect::<Result<_, _>>()
            .map(FieldMap)
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
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            seal_idle_secs: 30,
            seal_chunks_per_step: 2048,
        }
    }
}

/// `[dashboard]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Mark the session cookie `Secure` (set this when the server is
    /// reached over HTTPS, e.g. behind a TLS-terminating proxy).
    pub secure_cookie: bool,
    /// A map tile server, `{z}/{x}/{y}` in the URL (empty: none; the map
    /// then shows the world outline shipped in the binary).
    pub tile_url: String,
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
            cache_mb: 64,
            verify_on_start: false,
            files_dir: None,
            limits: Limits::default(),
            digest: DigestConfig::default(),
            presence: PresenceConfig::default(),
            retention: RetentionConfig::default(),
            storage: StorageConfig::default(),
            dashboard: DashboardConfig::default(),
            log: LogConfig::default(),
            quotas: QuotaConfig::default(),
            mqtt: MqttConfig::default(),
            tls: TlsConfig::default(),
            notify: NotifyConfig::default(),
            smtp: SmtpConfig::default(),
            thingspeak: ThingSpeakConfig::default(),
        }
    }
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

    /// Load `path`, or `./overlord.toml` if it exists, or the embedded
    /// default; then apply the `OVERLORD_*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
            None => match std::fs::read_to_string("overlord.toml") {
                Ok(t) => t,
                Err(_) => DEFAULT_TOML.to_string(),
            },
        };
        Config::from_toml_and_env(&text, std::env::vars_os())
    }

    /// Parse TOML text, then apply `OVERLORD_*` overrides from `vars`
    /// (the process environment in [`Config::load`]; a list in tests).
    pub fn from_toml_and_env<K, V>(
        text: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Config, String>
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let defaults: toml::Table = toml::from_str(DEFAULT_TOML).map_err(|e| e.to_string())?;
        for (k, v) in vars {
            let Some(k) = k.as_ref().to_str() else {
                continue;
            };
            let Some(key) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if ENV_NOT_CONFIG.contains(&key) {
                continue;
            }
            let v = v
                .as_ref()
                .to_str()
                .ok_or_else(|| format!("{k}: not valid UTF-8"))?;
            apply_env(&mut table, &defaults, k, key, v)?;
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())
    }

    /// Where uploaded files live: `files_dir`, or `<data file>.files`
    /// beside the data file.
    pub fn files_dir(&self) -> PathBuf {
        match &self.files_dir {
            Some(d) => d.clone(),
            None => {
                let mut name = self
                    .data_file
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_else(|| "overlord".into());
                name.push(".files");
                self.data_file.with_file_name(name)
            }
        }
    }

    /// The codec's view of the limits.
    pub fn codec_limits(&self) -> CodecLimits {
        CodecLimits {
            max_value_bytes: self.limits.max_value_bytes,
            max_future_skew: (self.limits.max_future_skew_secs as i64).saturating_mul(1_000_000),
            max_fields: self.limits.max_fields.max(1),
        }
    }
}

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "OVERLORD_";

/// `OVERLORD_*` variables that are not config keys.
const ENV_NOT_CONFIG: &[&str] = &["LOG", "TOKEN"];

/// Set one key from `OVERLORD_<KEY>` or `OVERLORD_<SECTION>__<KEY>`; the
/// value takes the type the key has in the embedded default.
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    var: &str,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let lower = key.to_ascii_lowercase();
    let (section, name) = match lower.split_once("__") {
        Some((s, n)) => (Some(s), n),
        None => (None, lower.as_str()),
    };
    let default = match section {
        Some(s) => defaults
            .get(s)
            .and_then(|t| t.as_table())
            .and_then(|t| t.get(name)),
        None => defaults.get(name).filter(|v| !v.is_table()),
    };
    // Keys with no default value (optional paths) are text.
    let optional_text = section.is_none() && OPTIONAL_TEXT_KEYS.contains(&name);
    if default.is_none() && !optional_text {
        return Err(format!("{var}: no such configuration key"));
    }
    let bad = |what: &str| format!("{var}: '{value}' is not {what}");
    let parsed = match default {
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(value.trim().parse().map_err(|_| bad("an integer"))?)
        }
        Some(toml::Value::Float(_)) => {
            toml::Value::Float(value.trim().parse().map_err(|_| bad("a number"))?)
        }
        Some(toml::Value::Boolean(_)) => {
            toml::Value::Boolean(value.trim().parse().map_err(|_| bad("true or false"))?)
        }
        _ => toml::Value::String(value.to_string()),
    };
    let target = match section {
        Some(s) => table
            .entry(s)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{var}: [{s}] is not a section"))?,
        None => table,
    };
    target.insert(name.to_string(), parsed);
    Ok(())
}

/// Top-level keys that are absent from the default (optional) and text.
const OPTIONAL_TEXT_KEYS: &[&str] = &["files_dir"];

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
        assert_eq!(c.limits.max_fields, d.limits.max_fields);
        assert_eq!(
            c.limits.max_unauthenticated_body_bytes,
            d.limits.max_unauthenticated_body_bytes
        );
        assert_eq!(c.limits.body_budget_bytes, d.limits.body_budget_bytes);
        assert_eq!(
            c.limits.max_connections_per_source,
            d.limits.max_connections_per_source
        );
        assert_eq!(c.digest.workers, d.digest.workers);
        assert_eq!(c.limits.password_checks, d.limits.password_checks);
        assert_eq!(c.quotas.devices_per_user, d.quotas.devices_per_user);
        assert_eq!(c.quotas.channels_per_user, d.quotas.channels_per_user);
        assert_eq!(c.quotas.alerts_per_user, d.quotas.alerts_per_user);
        assert_eq!(c.quotas.file_bytes_per_user, d.quotas.file_bytes_per_user);
        assert_eq!(c.tls.listen, d.tls.listen);
        assert_eq!(c.tls.cert_file, d.tls.cert_file);
        assert_eq!(c.tls.hsts, d.tls.hsts);
        assert_eq!(c.tls.handshake_timeout_secs, d.tls.handshake_timeout_secs);
        assert_eq!(c.tls.max_handshakes, d.tls.max_handshakes);
        assert_eq!(c.tls.reload_check_secs, d.tls.reload_check_secs);
        assert_eq!(c.tls.enabled(), Ok(false), "HTTPS is off by default");
        assert_eq!(c.quotas.targets_per_user, d.quotas.targets_per_user);
        assert_eq!(
            c.notify.allow_private_targets,
            d.notify.allow_private_targets
        );
        assert_eq!(c.notify.retry_for_secs, d.notify.retry_for_secs);
        assert_eq!(c.notify.retry_min_ms, d.notify.retry_min_ms);
        assert_eq!(c.notify.retry_max_secs, d.notify.retry_max_secs);
        assert_eq!(c.notify.timeout_secs, d.notify.timeout_secs);
        assert_eq!(c.notify.max_in_flight, d.notify.max_in_flight);
        assert_eq!(c.notify.history_kept, d.notify.history_kept);
        assert_eq!(c.notify.ca_file, d.notify.ca_file);
        assert_eq!(c.notify.max_waiting, d.notify.max_waiting);
        assert_eq!(c.smtp.host, d.smtp.host);
        assert_eq!(c.smtp.port, d.smtp.port);
        assert_eq!(c.smtp.security, d.smtp.security);
        assert_eq!(c.smtp.username, d.smtp.username);
        assert_eq!(c.smtp.password, d.smtp.password);
        assert_eq!(c.smtp.from, d.smtp.from);
    }

    #[test]
    fn tls_files_come_from_the_environment_and_go_in_pairs() {
        let env = [
            ("OVERLORD_TLS__CERT_FILE", "/etc/o/cert.pem"),
            ("OVERLORD_TLS__KEY_FILE", "/etc/o/key.pem"),
            ("OVERLORD_TLS__HSTS", "true"),
            ("OVERLORD_LISTEN", ""),
        ];
        let c = Config::from_toml_and_env("", env).unwrap();
        assert_eq!(c.tls.cert_file, "/etc/o/cert.pem");
        assert_eq!(c.tls.key_file, "/etc/o/key.pem");
        assert!(c.tls.hsts);
        assert_eq!(c.listen, "", "plain HTTP off");
        assert_eq!(c.tls.enabled(), Ok(true));
        let half = Config::from_toml("[tls]\ncert_file = \"c.pem\"\n").unwrap();
        assert!(half.tls.enabled().unwrap_err().contains("key_file"));
        let nowhere =
            Config::from_toml("[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nlisten = \"\"\n")
                .unwrap();
        assert!(nowhere.tls.enabled().is_err());
    }

    #[test]
    fn environment_overrides_keys_by_type() {
        let env = [
            ("OVERLORD_LISTEN", "127.0.0.1:9000"),
            ("OVERLORD_DATA_FILE", "/srv/o.redb"),
            ("OVERLORD_FILES_DIR", "/srv/files"),
            ("OVERLORD_LIMITS__MAX_BODY_BYTES", "1024"),
            ("OVERLORD_LIMITS__DEVICE_REQUESTS_PER_SEC", "2.5"),
            ("OVERLORD_DIGEST__WORKERS", "3"),
            ("OVERLORD_NOTIFY__ALLOW_PRIVATE_TARGETS", "true"),
            ("OVERLORD_SMTP__PASSWORD", "hunter2"),
            ("OVERLORD_LOG", "debug"),
            ("PATH", "/bin"),
        ];
        let c = Config::from_toml_and_env("[limits]\nmax_inbox = 7\n", env).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.data_file, PathBuf::from("/srv/o.redb"));
        assert_eq!(c.files_dir(), PathBuf::from("/srv/files"));
        assert_eq!(c.limits.max_body_bytes, 1024);
        assert_eq!(c.limits.device_requests_per_sec, 2.5);
        assert_eq!(c.limits.max_inbox, 7, "the file's keys stay");
        assert_eq!(c.digest.workers, 3);
        assert!(c.notify.allow_private_targets);
        assert_eq!(c.smtp.password, "hunter2");
        assert!(
            !format!("{:?}", c.smtp).contains("hunter2"),
            "Debug hides it"
        );
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            Config::from_toml_and_env("", none)
                .unwrap()
                .limits
                .max_body_bytes,
            32 << 20
        );
    }

    #[test]
    fn bad_environment_overrides_are_errors() {
        for (k, v) in [
            ("OVERLORD_LISTN", "x"),
            ("OVERLORD_LIMITS__NOPE", "1"),
            ("OVERLORD_LIMITS__MAX_BODY_BYTES", "lots"),
            ("OVERLORD_NOPE__WORKERS", "1"),
        ] {
            let err = Config::from_toml_and_env("", [(k, v)]).unwrap_err();
            assert!(err.contains(k) || err.contains("invalid"), "{k}: {err}");
        }
    }

    #[test]
    fn files_dir_defaults_beside_the_data_file() {
        let c = Config {
            data_file: "/var/lib/o/data.redb".into(),
            ..Config::default()
        };
        assert_eq!(c.files_dir(), PathBuf::from("/var/lib/o/data.redb.files"));
    }

    #[test]
    fn thingspeak_fields_from_toml_and_env() {
        let c = Config::from_toml(DEFAULT_TOML).unwrap();
        assert_eq!(c.thingspeak.fields, Config::default().thingspeak.fields);
        let c = Config::from_toml(
            "[thingspeak]\nfields = [\"I1\", \"\"]\n[thingspeak.devices]\nw = [\"S8\"]\n",
        )
        .unwrap();
        assert_eq!(c.thingspeak.fields.0[0].unwrap().to_string(), "I1");
        assert_eq!(c.thingspeak.fields.0[1], None);
        assert_eq!(c.thingspeak.devices["w"].0[0].unwrap().to_string(), "S8");
        let c = Config::from_toml_and_env(
            DEFAULT_TOML,
            [("OVERLORD_THINGSPEAK__FIELDS", "N1, L2,,I4")],
        )
        .unwrap();
        let names: Vec<String> = c
            .thingspeak
            .fields
            .0
            .iter()
            .map(|s| s.map(|s| s.to_string()).unwrap_or_default())
            .collect();
        assert_eq!(names, ["N1", "L2", "", "I4"]);
        assert!(Config::from_toml("[thingspeak]\nfields = [\"Q1\"]\n").is_err());
        assert!(
            Config::from_toml("[thingspeak]\nfields = \"N1,N2,N3,N4,N5,N6,N7,N8,N9\"\n").is_err()
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::from_toml("lisen = \"x\"").is_err());
        assert!(Config::from_toml("[limits]\nmax_conections = 1").is_err());
    }
}
