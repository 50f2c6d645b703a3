//! `[log]`: the log's format and the request log's level.

use serde::Deserialize;

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
