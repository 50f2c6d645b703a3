//! JSON replies for queries that ask for them (`Accept: application/json`
//! or `format=json`): a CSV table (header row, then rows) becomes an
//! array of objects, one per row, keyed by the header. CSV stays the
//! format every query answers by default; this is a view of the same
//! table, so the two never disagree.
//!
//! Typing: `time`, `device`, `sensor` and the values of `S`, `D` and `B`
//! sensors are strings;
//! `N` and `I` values are numbers, `L` values `true`/`false` (also in a
//! `value` column whose row names its `sensor`); other columns (bucket
//! `N1_min`, aggregate `N1_count`) are numbers when they are numeric.
//! An empty field (no value at that time) is left out of its object.

use super::names::{SensorId, SensorKind};

/// The JSON form of a CSV table. Text that is not a CSV table (it always
/// is: the server wrote it) becomes an empty array.
pub fn table_to_json(csv_text: &str) -> String {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(csv_text.as_bytes());
    let header: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(_) => return "[]".into(),
    };
    let kinds: Vec<Option<SensorKind>> = header
        .iter()
        .map(|h| SensorId::parse(h).ok().map(|s| s.kind))
        .collect();
    let sensor_col = header.iter().position(|h| h == "sensor");
    let mut out = String::with_capacity(csv_text.len() * 2);
    out.push('[');
    for (n, record) in rdr.records().filter_map(Result::ok).enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push('{');
        let row_kind = sensor_col
            .and_then(|c| record.get(c))
            .and_then(|s| SensorId::parse(s).ok())
            .map(|s| s.kind);
        let mut first = true;
        for (i, field) in record.iter().enumerate() {
            let Some(name) = header.get(i) else { break };
            if field.is_empty() {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            push_string(name, &mut out);
            out.push(':');
            let kind = match name.as_str() {
                "value" => row_kind,
                "time" | "sensor" | "device" | "from" | "kind" => Some(SensorKind::Str),
                _ => kinds[i],
            };
            push_value(kind, field, &mut out);
        }
        out.push('}');
    }
    out.push_str("]\n");
    out
}

/// One field as a JSON value of `kind` (`None`: number if numeric).
fn push_value(kind: Option<SensorKind>, text: &str, out: &mut String) {
    let numeric = || {
        text.parse::<f64>().is_ok_and(f64::is_finite)
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    };
    match kind {
        Some(SensorKind::Bool) if text == "true" || text == "false" => out.push_str(text),
        Some(SensorKind::Num | SensorKind::Int) | None if numeric() => out.push_str(text),
        _ => push_string(text, out),
    }
}

fn push_string(text: &str, out: &mut String) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        assert_eq!(
            table_to_json("time,N1,L2,S3\n2026-11-23T10:00:00Z,21.5,true,\"a,\"\"b\"\n2026-11-23T10:01:00Z,,false,7\n"),
            "[{\"time\":\"2026-11-23T10:00:00Z\",\"N1\":21.5,\"L2\":true,\"S3\":\"a,\\\"b\"},{\"time\":\"2026-11-23T10:01:00Z\",\"L2\":false,\"S3\":\"7\"}]\n"
        );
        assert_eq!(
            table_to_json("sensor,time,value\nN1,2026-11-23T10:00:00Z,3\nS2,2026-11-23T10:00:00Z,3\n"),
            "[{\"sensor\":\"N1\",\"time\":\"2026-11-23T10:00:00Z\",\"value\":3},{\"sensor\":\"S2\",\"time\":\"2026-11-23T10:00:00Z\",\"value\":\"3\"}]\n"
        );
        assert_eq!(
            table_to_json("time,N1_min,N1_max\nT,1,2\n"),
            "[{\"time\":\"T\",\"N1_min\":1,\"N1_max\":2}]\n"
        );
        assert_eq!(table_to_json("time,N1\n"), "[]\n");
    }
}
