//! `application/json` bodies: one object or an array of objects, each
//! `{"time": T, "device": ID, "<sensor>": value, ...}` (`time` and
//! `device` optional). Each object is checked by exactly the rules of a
//! form (`super::parse_params`): sensor names, values, duplicate names,
//! times. A value is a number, `true`/`false`, a string (the value's text
//! as in CSV) or `null` (no value). Errors name a JSON pointer
//! (`/3/N1`: object 3, member `N1`) instead of a line and column.
//!
//! The body is read as a stream: each object becomes readings as soon as
//! it is parsed, charged through `grow`, so a body never exists twice as
//! a tree in memory.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::csvbody::{CsvReadings, Grow, OVER_BUDGET, READING_BYTES};
use super::{parse_params, CodecError, Limits, Micros};

/// Parse a JSON body (see the module doc). `now` is the time of objects
/// without `time`. Readings of objects without `device` have no device
/// index (the request's device).
pub fn parse_json(
    body: &[u8],
    now: Micros,
    limits: &Limits,
    grow: Grow<'_>,
) -> Result<CsvReadings, CodecError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CodecError::new("bad_json", "the body is empty"));
    }
    let mut ctx = Ctx {
        now,
        limits,
        grow,
        out: CsvReadings::default(),
        index: HashMap::new(),
        failed: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Top(&mut ctx).deserialize(&mut de).and_then(|()| de.end());
    if let Some(e) = ctx.failed.take() {
        return Err(e);
    }
    if let Err(e) = parsed {
        return Err(CodecError::new("bad_json", e.to_string()));
    }
    Ok(ctx.out)
}

/// What the parse builds, and the first codec error (serde only carries
/// its own error type, so a codec error is parked here and serde is told
/// to stop).
struct Ctx<'a> {
    now: Micros,
    limits: &'a Limits,
    grow: Grow<'a>,
    out: CsvReadings,
    index: HashMap<String, u32>,
    failed: Option<CodecError>,
}

impl Ctx<'_> {
    /// Park `e` and return the error that stops serde.
    fn fail<E: de::Error>(&mut self, e: CodecError) -> E {
        self.failed = Some(e);
        E::custom("stopped")
    }

    /// One object's members (`at`: its pointer prefix) to readings.
    fn object(&mut self, at: &str, pairs: Vec<(String, String)>) -> Result<(), CodecError> {
        let point = |e: CodecError| {
            let mut e = e;
            e.at.name = Some(match e.at.name.take() {
                Some(name) => format!("{at}/{}", escape(&name)),
                None if at.is_empty() => "/".to_string(),
                None => at.to_string(),
            });
            e
        };
        if let Some((name, _)) = pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case("token")) {
            return Err(point(
                CodecError::new(
                    "bad_parameter",
                    "a token goes in the query or an Authorization header, not in JSON",
                )
                .named(name),
            ));
        }
        let params = parse_params(&pairs, self.now, self.limits).map_err(point)?;
        self.out.rows += 1;
        let device = match params.credentials.device {
            Some(id) => {
                let next = self.index.len() as u32;
                let i = *self.index.entry(id.clone()).or_insert(next);
                if i == next {
                    self.out.devices.push(id);
                }
                Some(i)
            }
            None => None,
        };
        let readings = &mut self.out.readings;
        let need = readings.len() + params.readings.len();
        if need > readings.capacity() {
            let extra = need.max(readings.capacity() * 2) - readings.capacity();
            if !(self.grow)(extra * READING_BYTES) {
                return Err(CodecError::new(OVER_BUDGET, "over the memory budget"));
            }
            readings.reserve_exact(extra);
        }
        readings.extend(params.readings.into_iter().map(|r| (device, r)));
        Ok(())
    }
}

/// RFC 6901: `~` is `~0` and `/` is `~1` in a pointer's segment.
fn escape(name: &str) -> String {
    super::names::clip(name)
        .replace('~', "~0")
        .replace('/', "~1")
}

/// The body: an object or an array of objects.
struct Top<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or an array of objects")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Object {
            ctx: self.0,
            at: String::new(),
        }
        .visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let at = format!("/{i}");
            let seed = Element {
                ctx: &mut *self.0,
                at,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            i += 1;
        }
        if i == 0 {
            return Err(self.0.fail(CodecError::new(
                "bad_json",
                "an empty array: nothing to store (send no body for a heartbeat)",
            )));
        }
        Ok(())
    }
}

/// One element of the array: it must be an object.
struct Element<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    at: String,
}

impl<'de> DeserializeSeed<'de> for Element<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Object {
            ctx: self.ctx,
            at: self.at,
        })
    }
}

/// An object's members, in order, duplicates kept (a map would keep one
/// silently; `parse_params` refuses them).
struct Object<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    at: String,
}

impl<'de> Visitor<'de> for Object<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            if pairs.len() >= self.ctx.limits.max_fields {
                let e = super::too_many_fields(self.ctx.limits.max_fields);
                let e = CodecError {
                    at: point_at(&self.at),
                    ..e
                };
                return Err(self.ctx.fail(e));
            }
            match map.next_value::<Scalar>()? {
                Scalar::Text(t) => pairs.push((name, t)),
                Scalar::Null => pairs.push((name, String::new())),
                Scalar::Nested => {
                    let e = CodecError::new(
                        "bad_value",
                        "must be a number, true/false, a string or null",
                    );
                    let mut e = CodecError {
                        at: point_at(&self.at),
                        ..e
                    };
                    e.at.name = Some(format!("{}/{}", self.at, escape(&name)));
                    return Err(self.ctx.fail(e));
                }
            }
        }
        let at = self.at;
        self.ctx.object(&at, pairs).map_err(|e| self.ctx.fail(e))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_object())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.not_object())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.not_object())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.not_object())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.not_object())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.not_object())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_object())
    }
}

impl Object<'_, '_> {
    fn not_object<E: de::Error>(self) -> E {
        let e = CodecError::new(
            "bad_json",
            "must be an object such as {\"N1\":21.5} (or an array of them)",
        );
        self.ctx.fail(CodecError {
            at: point_at(&self.at),
            ..e
        })
    }
}

/// A position that is just a pointer.
fn point_at(at: &str) -> super::Position {
    super::Position {
        name: Some(if at.is_empty() { "/".into() } else { at.into() }),
        ..Default::default()
    }
}

/// A member's value as the text a form would carry.
enum Scalar {
    Text(String),
    Null,
    Nested,
}

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, true/false, a string or null")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Text(if v { "true" } else { "false" }.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Text(v))
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{SensorId, Value};

    const NOW: Micros = 1_795_000_000_000_000;

    fn ok(body: &str) -> CsvReadings {
        parse_json(body.as_bytes(), NOW, &Limits::default(), &|_| true).unwrap()
    }

    fn err(body: &str) -> String {
        let e = parse_json(body.as_bytes(), NOW, &Limits::default(), &|_| true).unwrap_err();
        format!("{},{}", e.code, e)
    }

    #[test]
    fn shapes() {
        let r = ok(r#"{"N1":21.5,"L2":true,"S3":"hi","I4":-7,"N5":null}"#);
        assert_eq!(r.readings.len(), 4);
        assert!(r.readings.iter().all(|(d, x)| d.is_none() && x.time == NOW));
        assert_eq!(r.readings[0].1.value, Value::Num(21.5));
        assert_eq!(r.readings[1].1.value, Value::Bool(true));
        assert_eq!(r.readings[3].1.value, Value::Int(-7));
        let r = ok(
            r#"[{"time":"2026-11-01T10:00:00Z","N1":1},{"time":1795000000,"device":"b","N1":2}]"#,
        );
        assert_eq!(r.devices, vec!["b".to_string()]);
        assert_eq!(r.readings[0].0, None);
        assert_eq!(r.readings[1].0, Some(0));
        assert_eq!(r.readings[1].1.time, 1_795_000_000_000_000);
        assert_eq!(r.readings[1].1.sensor, SensorId::parse("N1").unwrap());
        assert_eq!(r.rows, 2);
    }

    #[test]
    fn errors_point_at_the_member() {
        assert_eq!(
            err(r#"[{"N1":1},{"N1":1},{"N1":1},{"N1":"warm"}]"#),
            "bad_value,/3/N1: 'warm' is not a finite number"
        );
        assert!(err(r#"{"N1":1,"n1":2}"#).starts_with("duplicate_field,/n1:"));
        assert!(err(r#"{"X1":1}"#).starts_with("bad_sensor_name,/X1:"));
        assert!(err(r#"{"N1":[1]}"#).starts_with("bad_value,/N1:"));
        assert!(err(r#"[1]"#).starts_with("bad_json,/0:"));
        assert!(err(r#"{"a/b~":1}"#).starts_with("bad_sensor_name,/a~1b~0:"));
        assert!(err(r#"{"N1":1,"token":"x"}"#).starts_with("bad_parameter,/token:"));
        assert!(err(r#"[{"N1":1},{"N1":1,"time":"soon"}]"#).starts_with("bad_time,/1/time:"));
        assert!(err("[]").starts_with("bad_json"));
        assert!(err("").starts_with("bad_json"));
        assert!(err("{\"N1\":1").starts_with("bad_json,EOF while parsing an object at line 1"));
        assert!(err("{\"N1\":1} x").starts_with("bad_json"));
        assert!(err("\"N1\"").starts_with("bad_json,invalid type: string"));
        let deep = "[".repeat(10_000);
        assert!(err(&deep).starts_with("bad_json"));
    }

    #[test]
    fn budget_refusal_stops_the_parse() {
        let e = parse_json(br#"[{"N1":1},{"N1":2}]"#, NOW, &Limits::default(), &|_| {
            false
        })
        .unwrap_err();
        assert_eq!(e.code, OVER_BUDGET);
    }
}
