//! Sensor names and typed values (`API.md` §1).
//!
//! A sensor name is a type letter and a number: `S` string, `I` integer,
//! `N` float, `D` date-time, `L` boolean, `B` bytes. It is case-insensitive
//! and canonical in upper case without leading zeros (`n01` is `N1`).

use std::fmt;

use super::{timefmt, CodecError, Limits, Micros};

/// Largest sensor number: the number shares a 32-bit key with the type.
pub const MAX_SENSOR_NUMBER: u32 = 0x00FF_FFFF;

/// The type letter of a sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SensorKind {
    /// `S`: UTF-8 text of bounded length.
    Str,
    /// `I`: 64-bit signed integer.
    Int,
    /// `N`: 64-bit float, finite.
    Num,
    /// `D`: a date-time, stored as UTC microseconds.
    Date,
    /// `L`: boolean.
    Bool,
    /// `B`: bytes, written as hex.
    Bytes,
}

impl SensorKind {
    /// The canonical (upper-case) letter.
    pub fn letter(self) -> char {
        match self {
            SensorKind::Str => 'S',
            SensorKind::Int => 'I',
            SensorKind::Num => 'N',
            SensorKind::Date => 'D',
            SensorKind::Bool => 'L',
            SensorKind::Bytes => 'B',
        }
    }

    /// The kind for a letter, either case.
    pub fn from_letter(c: u8) -> Option<Self> {
        Some(match c.to_ascii_uppercase() {
            b'S' => SensorKind::Str,
            b'I' => SensorKind::Int,
            b'N' => SensorKind::Num,
            b'D' => SensorKind::Date,
            b'L' => SensorKind::Bool,
            b'B' => SensorKind::Bytes,
            _ => return None,
        })
    }

    /// Stable code used in storage keys. Never renumber.
    pub fn code(self) -> u32 {
        match self {
            SensorKind::Str => 1,
            SensorKind::Int => 2,
            SensorKind::Num => 3,
            SensorKind::Date => 4,
            SensorKind::Bool => 5,
            SensorKind::Bytes => 6,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => SensorKind::Str,
            2 => SensorKind::Int,
            3 => SensorKind::Num,
            4 => SensorKind::Date,
            5 => SensorKind::Bool,
            6 => SensorKind::Bytes,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            SensorKind::Str => "a string",
            SensorKind::Int => "a 64-bit integer",
            SensorKind::Num => "a finite number",
            SensorKind::Date => "a date-time (RFC 3339 or unix seconds)",
            SensorKind::Bool => "a boolean (true/false/1/0)",
            SensorKind::Bytes => "hex bytes",
        }
    }
}

/// A sensor of a device: type letter and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SensorId {
    /// The type letter.
    pub kind: SensorKind,
    /// The number, at most [`MAX_SENSOR_NUMBER`].
    pub number: u32,
}

impl SensorId {
    /// Parse `N1`, `i2`, `S10`. Anything else is `bad_sensor_name`.
    pub fn parse(name: &str) -> Result<SensorId, CodecError> {
        let bad = |why: &str| CodecError::new("bad_sensor_name", why.to_string()).named(name);
        let bytes = name.as_bytes();
        let (&letter, digits) = bytes
            .split_first()
            .ok_or_else(|| bad("empty sensor name"))?;
        let kind = SensorKind::from_letter(letter).ok_or_else(|| {
            bad("not a sensor name: a type letter S, I, N, D, L or B and a number")
        })?;
        if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad(
                "not a sensor name: a type letter S, I, N, D, L or B and a number",
            ));
        }
        let number = digits
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        if number > MAX_SENSOR_NUMBER {
            return Err(bad("sensor number is larger than 16777215"));
        }
        Ok(SensorId { kind, number })
    }

    /// The 32-bit storage code: kind in the top byte, number below.
    pub fn code(self) -> u32 {
        (self.kind.code() << 24) | self.number
    }

    /// Inverse of [`SensorId::code`].
    pub fn from_code(code: u32) -> Option<SensorId> {
        Some(SensorId {
            kind: SensorKind::from_code(code >> 24)?,
            number: code & MAX_SENSOR_NUMBER,
        })
    }
}

impl fmt::Display for SensorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.letter(), self.number)
    }
}

/// A typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `S`
    Str(Box<str>),
    /// `I`
    Int(i64),
    /// `N`, always finite.
    Num(f64),
    /// `D`, UTC microseconds.
    Date(Micros),
    /// `L`
    Bool(bool),
    /// `B`
    Bytes(Box<[u8]>),
}

impl Value {
    /// The kind this value belongs to.
    pub fn kind(&self) -> SensorKind {
        match self {
            Value::Str(_) => SensorKind::Str,
            Value::Int(_) => SensorKind::Int,
            Value::Num(_) => SensorKind::Num,
            Value::Date(_) => SensorKind::Date,
            Value::Bool(_) => SensorKind::Bool,
            Value::Bytes(_) => SensorKind::Bytes,
        }
    }

    /// Parse `text` as a value of `kind`. Surrounding spaces are ignored for
    /// every kind but `S`, whose text is kept as sent.
    pub fn parse(kind: SensorKind, text: &str, limits: &Limits) -> Result<Value, CodecError> {
        let bad = || {
            CodecError::new(
                "bad_value",
                format!("'{}' is not {}", clip(text), kind.describe()),
            )
        };
        let t = text.trim_matches(|c| c == ' ' || c == '\t');
        Ok(match kind {
            SensorKind::Str => {
                if text.len() > limits.max_value_bytes {
                    return Err(CodecError::new(
                        "bad_value",
                        format!(
                            "string of {} bytes is longer than {}",
                            text.len(),
                            limits.max_value_bytes
                        ),
                    ));
                }
                if text.contains('\0') {
                    return Err(CodecError::new("bad_value", "string contains a NUL byte"));
                }
                Value::Str(text.into())
            }
            SensorKind::Int => Value::Int(t.parse().map_err(|_| bad())?),
            SensorKind::Num => {
                // Rust also parses "inf" and "NaN": the finiteness check
                // rejects those and overflows such as 1e400.
                let is_numeric = t
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
                let v: f64 = if is_numeric { t.parse().ok() } else { None }.ok_or_else(bad)?;
                if !v.is_finite() {
                    return Err(bad());
                }
                Value::Num(v)
            }
            SensorKind::Date => {
                // Only times RFC 3339 can write back (four-digit years):
                // unix seconds such as 444444444444 (year 16053) parse, but
                // would be written as a time no client could read.
                let v = timefmt::parse_instant(t).map_err(|_| bad())?;
                if !(MIN_DATE..=MAX_DATE).contains(&v) {
                    return Err(bad());
                }
                Value::Date(v)
            }
            SensorKind::Bool => match t.to_ascii_lowercase().as_str() {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => return Err(bad()),
            },
            SensorKind::Bytes => {
                let bytes = decode_hex(t).ok_or_else(bad)?;
                if bytes.len() > limits.max_value_bytes {
                    return Err(CodecError::new(
                        "bad_value",
                        format!(
                            "{} bytes is longer than {}",
                            bytes.len(),
                            limits.max_value_bytes
                        ),
                    ));
                }
                Value::Bytes(bytes.into())
            }
        })
    }

    /// Append the value as one CSV field (quoted when needed).
    pub fn write_csv(&self, out: &mut String) {
        use std::fmt::Write;
        match self {
            Value::Str(s) => write_csv_text(s, out),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Date(t) => timefmt::write_time(*t, out),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Bytes(b) => {
                for byte in b.iter() {
                    let _ = write!(out, "{byte:02x}");
                }
            }
        }
    }
}

/// 0000-01-01T00:00:00Z: the earliest `D` value (RFC 3339 years have four
/// digits).
pub const MIN_DATE: Micros = -62_167_219_200_000_000;
/// 9999-12-31T23:59:59.999999Z: the latest `D` value.
pub const MAX_DATE: Micros = 253_402_300_799_999_999;

/// Append `text` as one RFC 4180 field: quoted if it holds a comma, a quote,
/// a line break or leading/trailing spaces; inner quotes doubled.
pub fn write_csv_text(text: &str, out: &mut String) {
    let needs =
        text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ');
    if !needs {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

fn decode_hex(t: &str) -> Option<Vec<u8>> {
    let b = t.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some((hex_digit(p[0])? << 4) | hex_digit(p[1])?))
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Shorten text quoted in an error so a 10 MB value does not come back.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 40;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// A client-chosen string made safe for a log line: [`log_safe`].
pub struct LogSafe<'a>(&'a str);

/// Most bytes of a client-chosen string written to a log.
pub const LOG_MAX: usize = 200;

/// Wrap a client-chosen string (an id, a name, a path, a throttling key)
/// for a `tracing` field. Its `Display` writes it with every control
/// character (CR, LF, ESC, NUL, DEL, the C1 range), backslash and double
/// quote escaped as `\n`, `\x1b`, `\u{85}`, `\\`, `\"`, and clips it to
/// [`LOG_MAX`] bytes with `...`, so nothing a client sends can start a
/// forged log line, move a terminal's cursor or flood the log.
pub fn log_safe(s: &str) -> LogSafe<'_> {
    LogSafe(s)
}

impl std::fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let mut used = 0;
        for c in self.0.chars() {
            if used + c.len_utf8() > LOG_MAX {
                return f.write_str("...");
            }
            used += c.len_utf8();
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
                c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                    write!(f, "\\u{{{:x}}}", c as u32)?
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for LogSafe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_safe_escapes_controls_and_clips() {
        let got = log_safe("a\nb\r\x1b[2J\"q\\\u{85}\u{2028}\0").to_string();
        assert_eq!(got, "a\\nb\\r\\x1b[2J\\\"q\\\\\\u{85}\\u{2028}\\x00");
        assert!(!got.chars().any(|c| c.is_control()));
        assert_eq!(log_safe("greenhouse-3").to_string(), "greenhouse-3");
        let long = "é".repeat(150);
        let clipped = log_safe(&long).to_string();
        assert!(clipped.ends_with("...") && clipped.len() <= LOG_MAX + 3);
    }

    /// Regression (found by the `value` fuzz target): a `D` value past
    /// year 9999 was accepted and written back as `16053-...`, which no
    /// RFC 3339 reader accepts. Both ends of the range round-trip.
    #[test]
    fn date_values_stay_writable() {
        let l = Limits::default();
        assert_eq!(
            Value::parse(SensorKind::Date, "444444444444", &l).map_err(|e| e.code),
            Err("bad_value")
        );
        assert!(Value::parse(SensorKind::Date, "0000-01-01T00:00:00+00:01", &l).is_err());
        for text in [
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "253402300799",
        ] {
            let v = Value::parse(SensorKind::Date, text, &l).unwrap();
            let mut w = String::new();
            v.write_csv(&mut w);
            assert_eq!(Value::parse(SensorKind::Date, &w, &l).unwrap(), v, "{text}");
        }
    }

    fn name(s: &str) -> Result<String, &'static str> {
        SensorId::parse(s)
            .map(|x| x.to_string())
            .map_err(|e| e.code)
    }

    #[test]
    fn sensor_names() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("N1", Ok("N1")),
            ("n1", Ok("N1")),
            ("i2", Ok("I2")),
            ("S10", Ok("S10")),
            ("d0", Ok("D0")),
            ("L01", Ok("L1")),
            ("b16777215", Ok("B16777215")),
            ("B16777216", Err("bad_sensor_name")),
            ("N123456789", Err("bad_sensor_name")),
            ("X1", Err("bad_sensor_name")),
            ("N", Err("bad_sensor_name")),
            ("", Err("bad_sensor_name")),
            ("N-1", Err("bad_sensor_name")),
            ("N1a", Err("bad_sensor_name")),
            ("N 1", Err("bad_sensor_name")),
            ("Ｎ1", Err("bad_sensor_name")),
        ];
        for (input, want) in cases {
            assert_eq!(name(input), want.map(String::from), "input {input:?}");
        }
    }

    #[test]
    fn sensor_codes_round_trip() {
        for s in ["S1", "I2", "N3", "D4", "L5", "B16777215"] {
            let id = SensorId::parse(s).unwrap();
            assert_eq!(SensorId::from_code(id.code()), Some(id));
        }
        assert_eq!(SensorId::from_code(0), None);
    }

    fn val(kind: SensorKind, t: &str) -> Result<Value, &'static str> {
        Value::parse(kind, t, &Limits::default()).map_err(|e| e.code)
    }

    #[test]
    fn values() {
        use SensorKind::*;
        let cases: &[(SensorKind, &str, Result<Value, &str>)] = &[
            (Int, "7", Ok(Value::Int(7))),
            (Int, " -7 ", Ok(Value::Int(-7))),
            (Int, "9223372036854775807", Ok(Value::Int(i64::MAX))),
            (Int, "9223372036854775808", Err("bad_value")),
            (Int, "1.5", Err("bad_value")),
            (Int, "", Err("bad_value")),
            (Num, "21.5", Ok(Value::Num(21.5))),
            (Num, "-1e3", Ok(Value::Num(-1000.0))),
            (Num, "NaN", Err("bad_value")),
            (Num, "inf", Err("bad_value")),
            (Num, "-infinity", Err("bad_value")),
            (Num, "1e400", Err("bad_value")),
            (Num, "0x10", Err("bad_value")),
            (Num, "1,5", Err("bad_value")),
            (Bool, "true", Ok(Value::Bool(true))),
            (Bool, "FALSE", Ok(Value::Bool(false))),
            (Bool, "1", Ok(Value::Bool(true))),
            (Bool, "0", Ok(Value::Bool(false))),
            (Bool, "yes", Err("bad_value")),
            (Bytes, "00ff", Ok(Value::Bytes(vec![0, 255].into()))),
            (Bytes, "0", Err("bad_value")),
            (Bytes, "zz", Err("bad_value")),
            (Date, "0", Ok(Value::Date(0))),
            (
                Date,
                "2026-11-23T10:00:00Z",
                Ok(Value::Date(1_795_428_000_000_000)),
            ),
            (Date, "soon", Err("bad_value")),
            (Str, "door open", Ok(Value::Str("door open".into()))),
            (Str, " kept ", Ok(Value::Str(" kept ".into()))),
            (Str, "a\0b", Err("bad_value")),
        ];
        for (kind, input, want) in cases {
            assert_eq!(&val(*kind, input), want, "{kind:?} {input:?}");
        }
        assert_eq!(val(Str, &"x".repeat(1025)), Err("bad_value"));
        assert_eq!(val(Bytes, &"ab".repeat(1025)), Err("bad_value"));
    }

    #[test]
    fn csv_output() {
        let cases: &[(Value, &str)] = &[
            (Value::Int(-3), "-3"),
            (Value::Num(21.5), "21.5"),
            (Value::Num(1e21), "1000000000000000000000"),
            (Value::Bool(true), "true"),
            (Value::Bytes(vec![1, 0xab].into()), "01ab"),
            (Value::Date(1_500_000), "1970-01-01T00:00:01.5Z"),
            (Value::Str("plain".into()), "plain"),
            (Value::Str("a,b".into()), "\"a,b\""),
            (Value::Str("say \"hi\"".into()), "\"say \"\"hi\"\"\""),
            (Value::Str("two\nlines".into()), "\"two\nlines\""),
        ];
        for (v, want) in cases {
            let mut s = String::new();
            v.write_csv(&mut s);
            assert_eq!(&s, want);
        }
    }

    #[test]
    fn errors_do_not_echo_huge_values() {
        let e =
            Value::parse(SensorKind::Int, &"9".repeat(100_000), &Limits::default()).unwrap_err();
        assert!(e.message.len() < 100, "{}", e.message);
    }
}
