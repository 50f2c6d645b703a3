//! InfluxDB line protocol bodies (`POST /write`, `POST /api/v2/write`):
//!
//! ```text
//! measurement[,tag=value...] field=value[,field=value...] [timestamp]
//! ```
//!
//! The mapping to Overlord (documented in `docs/api.md`): the measurement
//! is free and ignored; the one tag allowed is `device` (the device the
//! line's readings go to; absent: the request's device); every field key
//! is a sensor name (`N1`, `I2`, `L3`, `S4`, ...) and its value must fit
//! the sensor's kind: a float or an integer (`5i`, `5u`) for `N`, an
//! integer for `I`, a boolean for `L`, a string for `S` (and `B` as hex,
//! `D` as a time). The timestamp is in the request's precision (default
//! nanoseconds), truncated to the microsecond; absent: the receive time.
//! Anything else is refused with the line's number, whole request or
//! nothing, like a CSV body.

use std::collections::{HashMap, HashSet};

use super::csvbody::{CsvReadings, Grow, OVER_BUDGET, READING_BYTES};
use super::{timefmt, CodecError, Limits, Micros, Reading, SensorId, SensorKind, Value};

/// The unit of a line's timestamp (`precision=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Nanoseconds (the default).
    Nanos,
    /// Microseconds.
    Micros,
    /// Milliseconds.
    Millis,
    /// Seconds.
    Seconds,
}

impl Precision {
    /// `ns`/`n`, `us`/`u`/`µs`, `ms`, `s` (InfluxDB v1 and v2 spellings).
    pub fn parse(text: &str) -> Option<Precision> {
        Some(match text {
            "ns" | "n" => Precision::Nanos,
            "us" | "u" | "µs" | "µ" => Precision::Micros,
            "ms" => Precision::Millis,
            "s" => Precision::Seconds,
            _ => return None,
        })
    }

    /// A timestamp in this unit as microseconds; `None` when out of range.
    fn to_micros(self, t: i64) -> Option<Micros> {
        match self {
            Precision::Nanos => Some(t.div_euclid(1000)),
            Precision::Micros => Some(t),
            Precision::Millis => t.checked_mul(1000),
            Precision::Seconds => t.checked_mul(1_000_000),
        }
    }
}

/// A field's value as written.
enum Field<'a> {
    Float(&'a str),
    Int(&'a str),
    Bool(bool),
    Str(String),
}

impl Field<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Field::Float(_) => "a float",
            Field::Int(_) => "an integer",
            Field::Bool(_) => "a boolean",
            Field::Str(_) => "a string",
        }
    }
}

/// A line's fields: (key, value), in order.
type Fields<'a> = Vec<(String, Field<'a>)>;

/// One parsed line.
struct Line<'a> {
    device: Option<String>,
    fields: Vec<(String, Field<'a>)>,
    time: Option<&'a str>,
}

/// Bytes per reading of the duplicate check's map (key, value, hash
/// table overhead), charged through `grow` beside the reading itself.
const SEEN_BYTES: usize = 48;

/// Parse a line protocol body received at `now`. Readings of lines
/// without a `device` tag have no device index (the request's device).
pub fn parse_lines(
    body: &[u8],
    precision: Precision,
    now: Micros,
    limits: &Limits,
    grow: Grow<'_>,
) -> Result<CsvReadings, CodecError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let line = 1 + memchr::memchr_iter(b'\n', &body[..e.valid_up_to()]).count() as u64;
        CodecError::new("bad_encoding", "not valid UTF-8").at(line, None)
    })?;
    let mut out = CsvReadings::default();
    let mut index: HashMap<String, u32> = HashMap::new();
    // (device index, sensor code, time) → line: the same reading twice in
    // one body would be stored once and the second silently dropped.
    let mut seen: Seen = HashMap::new();
    for (n, raw) in text.split('\n').enumerate() {
        let line_no = n as u64 + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = |e: CodecError| e.at(line_no, None);
        let line = parse_line(trimmed, limits).map_err(at)?;
        let time = match line.time {
            None => now,
            Some(t) => line_time(t, precision, now, limits).map_err(at)?,
        };
        let device = line.device.map(|id| {
            let next = index.len() as u32;
            let i = *index.entry(id.clone()).or_insert(next);
            if i == next {
                out.devices.push(id);
            }
            i
        });
        reserve(&mut out.readings, line.fields.len(), grow)?;
        let stamp = (device, time, line_no);
        push_fields(line.fields, stamp, limits, &mut seen, &mut out.readings)?;
        out.rows += 1;
    }
    if out.rows == 0 {
        return Err(CodecError::new(
            "bad_line",
            "no lines: send measurement field=value [timestamp] lines",
        ));
    }
    Ok(out)
}

/// The duplicate check: (device index, sensor code, time) → the line
/// that has it.
type Seen = HashMap<(Option<u32>, u32, Micros), u64>;

/// A line's timestamp `t` in `precision`, as a checked time.
#[inline]
fn line_time(
    t: &str,
    precision: Precision,
    now: Micros,
    limits: &Limits,
) -> Result<Micros, CodecError> {
    let bad = || {
        CodecError::new(
            "bad_time",
            format!("timestamp '{}' is out of range", super::names::clip(t)),
        )
    };
    let v: i64 = t.parse().map_err(|_| bad())?;
    let micros = precision.to_micros(v).ok_or_else(bad)?;
    timefmt::check_time(micros, now, limits)
}

/// Make room for `more` readings, asking `grow` first.
#[inline]
fn reserve(
    readings: &mut Vec<(Option<u32>, Reading)>,
    more: usize,
    grow: Grow<'_>,
) -> Result<(), CodecError> {
    let need = readings.len() + more;
    if need > readings.capacity() {
        let extra = need.max(readings.capacity() * 2) - readings.capacity();
        // The duplicate check's map grows with the readings: charge
        // it too (the caller resizes the charge to the readings alone
        // once the parse is done and the map is gone).
        if !grow(extra * (READING_BYTES + SEEN_BYTES)) {
            return Err(CodecError::new(OVER_BUDGET, "over the memory budget"));
        }
        readings.reserve_exact(extra);
    }
    Ok(())
}

/// Push a line's fields as readings of `(device, time)`, each checked
/// against its sensor's kind, once per line and once per body (`seen`);
/// errors name the field and the line.
#[inline]
fn push_fields(
    fields: Fields<'_>,
    (device, time, line_no): (Option<u32>, Micros, u64),
    limits: &Limits,
    seen: &mut Seen,
    readings: &mut Vec<(Option<u32>, Reading)>,
) -> Result<(), CodecError> {
    let mut names: HashSet<SensorId> = HashSet::with_capacity(fields.len());
    for (key, field) in fields {
        let named = |e: CodecError| e.named(&key).at(line_no, None);
        let sensor = SensorId::parse(&key).map_err(named)?;
        if !names.insert(sensor) {
            return Err(named(CodecError::new(
                "duplicate_field",
                "given more than once",
            )));
        }
        let value = field_value(sensor.kind, &field, limits).map_err(named)?;
        if let Some(first) = seen.insert((device, sensor.code(), time), line_no) {
            return Err(named(CodecError::new(
                "duplicate_field",
                format!("line {first} has this sensor at the same time; give each line its own timestamp"),
            )));
        }
        readings.push((
            device,
            Reading {
                sensor,
                time,
                value,
            },
        ));
    }
    Ok(())
}

/// A field value as a value of the sensor's kind, or `bad_value` naming
/// both when they do not fit.
fn field_value(kind: SensorKind, field: &Field<'_>, limits: &Limits) -> Result<Value, CodecError> {
    let text = match (kind, field) {
        (SensorKind::Num, Field::Float(t) | Field::Int(t)) => *t,
        (SensorKind::Int, Field::Int(t)) => *t,
        (SensorKind::Bool, Field::Bool(b)) => return Ok(Value::Bool(*b)),
        (SensorKind::Str | SensorKind::Bytes | SensorKind::Date, Field::Str(s)) => s.as_str(),
        (kind, field) => {
            return Err(CodecError::new(
                "bad_value",
                format!(
                    "{} field for a sensor of type {} (N takes floats and integers, I integers, L booleans, S, B and D strings)",
                    field.describe(),
                    kind.letter()
                ),
            ))
        }
    };
    Value::parse(kind, text, limits)
}

/// Split at the first byte of `stops` not escaped by a backslash.
fn split_unescaped<'a>(s: &'a str, stops: &[u8]) -> (&'a str, Option<(u8, &'a str)>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if stops.contains(&b[i]) {
            return (&s[..i], Some((b[i], &s[i + 1..])));
        }
        i += 1;
    }
    (s, None)
}

/// Remove the escapes of a key or tag: `\,` `\=` `\ ` and `\\`; any other
/// backslash is kept as it is (as InfluxDB does).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if matches!(n, ',' | '=' | ' ' | '\\' | '"') {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

fn syntax(message: impl Into<String>) -> CodecError {
    CodecError::new("bad_line", message)
}

/// Parse one non-empty, non-comment line.
fn parse_line<'a>(line: &'a str, limits: &Limits) -> Result<Line<'a>, CodecError> {
    // Measurement and tags run to the first unescaped space.
    let (series, rest) = split_unescaped(line, b" ");
    let Some((_, rest)) = rest else {
        return Err(syntax(
            "no fields: write measurement field=value [timestamp]",
        ));
    };
    let (measurement, mut tags) = split_unescaped(series, b",");
    if measurement.is_empty() {
        return Err(syntax("the measurement is empty"));
    }
    let mut device = None;
    while let Some((_, t)) = tags {
        let (pair, next) = split_unescaped(t, b",");
        tags = next;
        let (key, value) = match split_unescaped(pair, b"=") {
            (k, Some((_, v))) if !k.is_empty() && !v.is_empty() => (unescape(k), unescape(v)),
            _ => {
                return Err(syntax(format!(
                    "tag '{}' is not key=value",
                    super::names::clip(pair)
                )))
            }
        };
        if key != "device" {
            return Err(CodecError::new(
                "bad_tag",
                format!(
                    "tag '{}': the only tag is device (name sensors as fields, e.g. N1=21.5)",
                    super::names::clip(&key)
                ),
            ));
        }
        if device.replace(value).is_some() {
            return Err(CodecError::new(
                "duplicate_field",
                "device: given more than once",
            ));
        }
    }
    let rest = rest.trim_start_matches(' ');
    let (fields, time) = parse_fields(rest, limits)?;
    Ok(Line {
        device,
        fields,
        time,
    })
}

/// The field set and the optional timestamp after it.
fn parse_fields<'a>(
    mut rest: &'a str,
    limits: &Limits,
) -> Result<(Fields<'a>, Option<&'a str>), CodecError> {
    let mut fields = Vec::new();
    loop {
        if fields.len() >= limits.max_fields {
            return Err(super::too_many_fields(limits.max_fields));
        }
        let (key, after) = split_unescaped(rest, b"=, ");
        let after = match after {
            Some((b'=', a)) if !key.is_empty() => a,
            _ => {
                return Err(syntax(format!(
                    "field '{}' is not key=value",
                    super::names::clip(key)
                )))
            }
        };
        let key = unescape(key);
        let (field, tail) = if let Some(s) = after.strip_prefix('"') {
            let (text, tail) = string_value(s)
                .ok_or_else(|| syntax(format!("{key}: the string has no closing quote")))?;
            (Field::Str(text), tail)
        } else {
            let end = after.find([',', ' ']).unwrap_or(after.len());
            (
                scalar(&after[..end]).map_err(|e| e.named(&key))?,
                &after[end..],
            )
        };
        fields.push((key, field));
        match tail.as_bytes().first() {
            Some(b',') => rest = &tail[1..],
            None => return Ok((fields, None)),
            Some(_) => {
                let t = tail.trim_matches(' ');
                if t.is_empty() {
                    return Ok((fields, None));
                }
                if t.contains(' ') {
                    return Err(syntax("text after the timestamp"));
                }
                return Ok((fields, Some(t)));
            }
        }
    }
}

/// A string field's text (after the opening quote) and what follows its
/// closing quote; `\"` and `\\` are escapes.
fn string_value(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, n @ ('"' | '\\'))) => out.push(n),
                Some((_, n)) => {
                    out.push('\\');
                    out.push(n);
                }
                None => return None,
            },
            c => out.push(c),
        }
    }
    None
}

/// A float, an integer (`5i`, `5u`) or a boolean.
fn scalar(text: &str) -> Result<Field<'_>, CodecError> {
    match text {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(Field::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(Field::Bool(false)),
        "" => return Err(syntax("no value")),
        _ => {}
    }
    if let Some(digits) = text.strip_suffix('i').or_else(|| text.strip_suffix('u')) {
        let ok = digits.strip_prefix('-').unwrap_or(digits);
        if !ok.is_empty() && ok.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Field::Int(digits));
        }
        return Err(CodecError::new(
            "bad_value",
            format!("'{}' is not an integer", super::names::clip(text)),
        ));
    }
    Ok(Field::Float(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Micros = 1_795_000_000_000_000;

    fn parse(body: &str, p: Precision) -> Result<CsvReadings, String> {
        parse_lines(body.as_bytes(), p, NOW, &Limits::default(), &|_| true)
            .map_err(|e| format!("{},{}", e.code, e))
    }

    #[test]
    fn lines_map_to_readings() {
        let r = parse(
            "# comment\nweather,device=gh3 N1=21.5,I2=7i,L3=t,S4=\"a \\\"b\\\", c\" 1794999999000000000\r\n\nm N5=-1e3,N6=2i\n",
            Precision::Nanos,
        )
        .unwrap();
        assert_eq!(r.devices, vec!["gh3".to_string()]);
        assert_eq!(r.rows, 2);
        let v: Vec<_> = r
            .readings
            .iter()
            .map(|(d, x)| (*d, x.sensor.to_string(), x.value.clone(), x.time))
            .collect();
        let t = 1_794_999_999_000_000;
        assert_eq!(v[0], (Some(0), "N1".into(), Value::Num(21.5), t));
        assert_eq!(v[1], (Some(0), "I2".into(), Value::Int(7), t));
        assert_eq!(v[2], (Some(0), "L3".into(), Value::Bool(true), t));
        assert_eq!(
            v[3],
            (Some(0), "S4".into(), Value::Str("a \"b\", c".into()), t)
        );
        assert_eq!(v[4], (None, "N5".into(), Value::Num(-1000.0), NOW));
        assert_eq!(v[5], (None, "N6".into(), Value::Num(2.0), NOW));
        // Escaped spaces and commas in measurement and tag values.
        let r = parse(
            "my\\ m\\,x,device=a\\ b N1=1 1794999999",
            Precision::Seconds,
        )
        .unwrap();
        assert_eq!(r.devices, vec!["a b".to_string()]);
        assert_eq!(r.readings[0].1.time, 1_794_999_999_000_000);
        for (p, t) in [
            (Precision::Micros, 5),
            (Precision::Millis, 5_000),
            (Precision::Nanos, 0),
        ] {
            assert_eq!(parse("m N1=1 5", p).unwrap().readings[0].1.time, t);
        }
    }

    #[test]
    fn refusals_name_the_line() {
        let e = |body: &str| parse(body, Precision::Nanos).unwrap_err();
        assert_eq!(e("m N1=1\nm,host=a N1=2"), "bad_tag,line 2: tag 'host': the only tag is device (name sensors as fields, e.g. N1=21.5)");
        assert!(e("m N1=NaN").starts_with("bad_value,line 1: N1: 'NaN'"));
        assert!(e("m N1=inf").starts_with("bad_value,line 1: N1:"));
        assert!(e("m usage_idle=3").starts_with("bad_sensor_name,line 1: usage_idle"));
        assert!(e("m I1=1.5").starts_with("bad_value,line 1: I1: a float field for"));
        assert!(e("m L1=1").starts_with("bad_value,line 1: L1: a float field"));
        assert!(e("m N1=\"x\"").starts_with("bad_value,line 1: N1: a string field"));
        assert!(e("m N1=1 99999999999999999999").starts_with("bad_time,line 1"));
        assert!(e("m N1=1 9223372036854775807").starts_with("bad_time,line 1"));
        assert_eq!(
            parse("m N1=1 9223372036854775807", Precision::Seconds).unwrap_err(),
            "bad_time,line 1: timestamp '9223372036854775807' is out of range"
        );
        assert!(e("m N1=1 -5").starts_with("bad_time,line 1: time is before 1970"));
        assert!(e("m N1=1,N1=2").starts_with("duplicate_field,line 1: N1"));
        assert!(e("m N1=1\nm N1=2").starts_with("duplicate_field,line 2: N1: line 1"));
        assert!(e("m").starts_with("bad_line,line 1"));
        assert!(e("m N1=\"open").starts_with("bad_line,line 1"));
        assert!(e("m N1=1 5 6").starts_with("bad_line,line 1: text after"));
        assert!(e("m N1=").starts_with("bad_line,line 1"));
        assert!(e("m N1=5x i").starts_with("bad_"));
        assert!(e("").starts_with("bad_line"));
        assert!(e("m I1=99999999999999999999i").starts_with("bad_value,line 1: I1"));
        assert_eq!(
            parse_lines(
                b"m N1=1\n\xff",
                Precision::Nanos,
                NOW,
                &Limits::default(),
                &|_| true
            )
            .unwrap_err()
            .at
            .line,
            Some(2)
        );
    }
}
