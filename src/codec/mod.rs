//! The wire codec: pure functions from request text to typed readings and
//! from stored values back to CSV text. Nothing here does I/O or touches the
//! store, so every rule of `API.md` §1 and §3 is testable one case per line.
//!
//! - [`names`]: sensor names (`N1`, `i2`) and typed values.
//! - [`timefmt`]: RFC 3339 / unix-seconds times, as microseconds.
//! - [`form`]: query strings and `application/x-www-form-urlencoded` bodies.
//! - [`csvbody`]: `text/csv` bodies.
//! - [`json`]: `application/json` bodies (an object or an array of them);
//!   [`json_out`]: the JSON view of a CSV reply (`format=json`).
//! - [`lineproto`]: InfluxDB line protocol bodies.
//! - [`spreadsheet`]: the spreadsheet-safe form of CSV output (`safe=1`).
//! - [`parse_params`]: the whole `GET /v1/readings?...` (or form) request.

pub mod csvbody;
pub mod form;
pub mod json;
pub mod json_out;
pub mod lineproto;
pub mod names;
pub mod spreadsheet;
pub mod timefmt;

use std::collections::HashSet;
use std::fmt;

pub use names::{SensorId, SensorKind, Value};

/// Microseconds since 1970-01-01T00:00:00Z. The exact time of a reading.
pub type Micros = i64;

/// One typed reading, before it is bound to a stored device.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Which sensor.
    pub sensor: SensorId,
    /// Exact time, UTC microseconds.
    pub time: Micros,
    /// The value; its variant always matches `sensor.kind`.
    pub value: Value,
}

/// Limits the codec enforces; they come from `[limits]` in the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest `S` value in bytes, and longest `B` value once decoded.
    pub max_value_bytes: usize,
    /// Latest acceptable reading time is `now + max_future_skew`.
    pub max_future_skew: Micros,
    /// Most fields (parameters) in one query string or form body, and most
    /// columns in a CSV header: more is `too_many_fields`, so no request
    /// can make the server hold (or compare) an unbounded number of names.
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_bytes: 1024,
            max_future_skew: 300 * 1_000_000,
            max_fields: DEFAULT_MAX_FIELDS,
        }
    }
}

/// The default of [`Limits::max_fields`] (`[limits] max_fields`).
pub const DEFAULT_MAX_FIELDS: usize = 1024;

/// The `too_many_fields` error for more than `max` fields or columns.
pub fn too_many_fields(max: usize) -> CodecError {
    CodecError::new(
        "too_many_fields",
        format!("more than {max} fields in one request; send fewer, or CSV rows"),
    )
}

/// Where in the request a codec error is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// 1-based CSV line (physical line of the record's start).
    pub line: Option<u64>,
    /// 1-based CSV column.
    pub column: Option<usize>,
    /// The parameter or column name, when known.
    pub name: Option<String>,
}

/// A rejected request: a stable lower-case `code` (see `API.md` §0), a
/// human message, and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    /// Stable token such as `bad_value`.
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
    /// Where.
    pub at: Position,
}

impl CodecError {
    /// An error with no position yet.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        CodecError {
            code,
            message: message.into(),
            at: Position::default(),
        }
    }

    /// Attach the parameter or column name.
    pub fn named(mut self, name: &str) -> Self {
        if self.at.name.is_none() {
            self.at.name = Some(name.to_string());
        }
        self
    }

    /// Attach a CSV line and column.
    pub fn at(mut self, line: u64, column: Option<usize>) -> Self {
        self.at.line = Some(line);
        if column.is_some() {
            self.at.column = column;
        }
        self
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.at.line {
            write!(f, "line {line}")?;
            if let Some(col) = self.at.column {
                write!(f, " column {col}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(name) = &self.at.name {
            write!(f, "{name}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodecError {}

/// Parameters of a readings request that are not sensor values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `device=` parameter.
    pub device: Option<String>,
    /// `token=` parameter.
    pub token: Option<String>,
}

/// A parsed parameter-style readings request (`GET` query or form body).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ParamReadings {
    /// `device` / `token`, if given as parameters.
    pub credentials: Credentials,
    /// The readings, all at one time.
    pub readings: Vec<Reading>,
}

/// Parse `device=..&token=..&N1=21.5&time=..` pairs into readings.
///
/// Every non-empty name other than `device`, `token` and `time` must be a
/// sensor name. A name given twice is `duplicate_field`, because the device
/// would not know which value was kept. An empty value (`N1=`) means "no
/// value", as in CSV. `now` is the receive time used when `time` is absent.
pub fn parse_params(
    pairs: &[(String, String)],
    now: Micros,
    limits: &Limits,
) -> Result<ParamReadings, CodecError> {
    if pairs.len() > limits.max_fields {
        return Err(too_many_fields(limits.max_fields));
    }
    let mut out = ParamReadings::default();
    let mut time: Option<Micros> = None;
    // Hash sets, not a scan of every earlier name: a request's fields are
    // checked in O(n), whatever their number.
    let mut seen: HashSet<String> = HashSet::with_capacity(pairs.len());
    let mut sensors: HashSet<SensorId> = HashSet::new();
    let mut values: Vec<(SensorId, &str, &str)> = Vec::new();
    for (name, value) in pairs {
        let lname = name.to_ascii_lowercase();
        if !seen.insert(lname.clone()) {
            return Err(CodecError::new("duplicate_field", "given more than once").named(name));
        }
        match lname.as_str() {
            "device" => out.credentials.device = Some(value.clone()),
            "token" => out.credentials.token = Some(value.clone()),
            "time" => {
                time = Some(timefmt::parse_time(value, now, limits).map_err(|e| e.named("time"))?)
            }
            _ => {
                let sensor = SensorId::parse(name)?;
                if !sensors.insert(sensor) {
                    return Err(
                        CodecError::new("duplicate_field", "given more than once").named(name)
                    );
                }
                values.push((sensor, name, value));
            }
        }
    }
    let time = time.unwrap_or(now);
    for (sensor, name, text) in values {
        if text.is_empty() {
            continue;
        }
        let value = Value::parse(sensor.kind, text, limits).map_err(|e| e.named(name))?;
        out.readings.push(Reading {
            sensor,
            time,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        form::parse_pairs(q.as_bytes()).unwrap()
    }

    const NOW: Micros = 1_795_000_000_000_000;

    fn ok(q: &str) -> ParamReadings {
        parse_params(&pairs(q), NOW, &Limits::default()).unwrap()
    }

    fn err(q: &str) -> &'static str {
        parse_params(&pairs(q), NOW, &Limits::default())
            .unwrap_err()
            .code
    }

    #[test]
    fn params_table() {
        let r = ok("device=d1&token=t&N1=23.5&i2=7");
        assert_eq!(r.credentials.device.as_deref(), Some("d1"));
        assert_eq!(r.credentials.token.as_deref(), Some("t"));
        assert_eq!(r.readings.len(), 2);
        assert_eq!(r.readings[0].value, Value::Num(23.5));
        assert_eq!(r.readings[1].sensor.to_string(), "I2");
        assert!(r.readings.iter().all(|x| x.time == NOW));
        assert_eq!(ok("N1=1&time=0").readings[0].time, 0);
        assert_eq!(ok("N1=&L2=1").readings.len(), 1);
        assert_eq!(ok("device=d&token=t").readings.len(), 0);
        assert_eq!(err("N1=1&N1=2"), "duplicate_field");
        assert_eq!(err("N1=1&n1=2"), "duplicate_field");
        assert_eq!(err("N01=1&N1=2"), "duplicate_field");
        assert_eq!(err("device=a&device=b"), "duplicate_field");
        assert_eq!(err("X1=1"), "bad_sensor_name");
        assert_eq!(err("foo=1"), "bad_sensor_name");
        assert_eq!(err("N1=abc"), "bad_value");
        assert_eq!(err("N1=NaN"), "bad_value");
        assert_eq!(err("I1=99999999999999999999"), "bad_value");
        assert_eq!(err("N1=1&time=yesterday"), "bad_time");
    }

    #[test]
    fn errors_name_their_field() {
        let e = parse_params(&pairs("N1=1&L7=maybe"), NOW, &Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "L7: 'maybe' is not a boolean (true/false/1/0)"
        );
    }
}
