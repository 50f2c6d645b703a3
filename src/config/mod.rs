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
//!
//! One file per group of sections: [`limits`] (`[limits]`, `[quotas]`,
//! `[digest]`), [`data`] (`[presence]`, `[retention]`, `[storage]`),
//! [`doors`] (`[mqtt]`, `[tls]`, `[thingspeak]`, `[dashboard]`), [`log`]
//! (`[log]`), `notify` (`[notify]`, `[smtp]`); `env` applies the
//! environment overrides. A section's checks live beside it
//! ([`TlsConfig::enabled`], [`FieldMap`]'s parse).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::codec::Limits as CodecLimits;

pub mod data;
pub mod doors;
mod env;
pub mod limits;
pub mod log;
mod notify;

pub use data::{PresenceConfig, RetentionConfig, StorageConfig, StoreConfig, StoreKind};
pub use doors::{DashboardConfig, FieldMap, MqttConfig, ThingSpeakConfig, TlsConfig};
pub use env::ENV_PREFIX;
pub use limits::{DigestConfig, Limits, QuotaConfig};
pub use log::{LogConfig, LogFormat, LogLevel};
pub use notify::{NotifyConfig, SmtpConfig};

/// The embedded default configuration (the repository's `overlord.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../overlord.toml");

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
    /// Which store: the data file or PostgreSQL (docs/scale-out.md).
    pub store: StoreConfig,
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
            store: StoreConfig::default(),
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
            if env::ENV_NOT_CONFIG.contains(&key) {
                continue;
            }
            let v = v
                .as_ref()
                .to_str()
                .ok_or_else(|| format!("{k}: not valid UTF-8"))?;
            env::apply_env(&mut table, &defaults, k, key, v)?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        config.store.check()?;
        Ok(config)
    }

    /// `cache_mb` in bytes: redb's page cache for the data file (the
    /// server) and for a file a command writes or reads whole.
    pub fn cache_bytes(&self) -> usize {
        self.cache_mb.saturating_mul(1 << 20)
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
        assert_eq!(c.store.postgres_url, d.store.postgres_url);
        assert_eq!(c.store.kind, d.store.kind);
        assert_eq!(c.store.pool_size, d.store.pool_size);
        assert_eq!(c.store.timeout_secs, d.store.timeout_secs);
    }

    #[test]
    fn a_postgres_store_needs_a_connection_string_that_parses() {
        let env = [("OVERLORD_STORE__KIND", "postgres")];
        let e = Config::from_toml_and_env("", env).unwrap_err();
        assert!(e.contains("needs postgres_url"), "{e}");
        let env = [
            ("OVERLORD_STORE__KIND", "postgres"),
            (
                "OVERLORD_STORE__POSTGRES_URL",
                "host=db1 user=ov password=s3cret",
            ),
        ];
        let c = Config::from_toml_and_env("", env).unwrap();
        assert_eq!(c.store.kind, StoreKind::Postgres);
        let bad = [
            ("OVERLORD_STORE__KIND", "postgres"),
            (
                "OVERLORD_STORE__POSTGRES_URL",
                "host=db1 password=s3cret port=x",
            ),
        ];
        let e = Config::from_toml_and_env("", bad).unwrap_err();
        assert!(e.contains("postgres_url") && !e.contains("s3cret"), "{e}");
        let e = Config::from_toml_and_env("", [("OVERLORD_STORE__KIND", "mysql")]).unwrap_err();
        assert!(e.contains("mysql"), "{e}");
        // A connection string alone is export-store's target, not a switch.
        let c =
            Config::from_toml_and_env("", [("OVERLORD_STORE__POSTGRES_URL", "host=db1")]).unwrap();
        assert_eq!(c.store.kind, StoreKind::Redb);
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
