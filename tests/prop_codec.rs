//! Property tests of the wire codecs (the stable-toolchain stand-in for
//! the cargo-fuzz targets in `fuzz/`): arbitrary bytes into the query
//! string, form, CSV, name, value and time parsers never panic, and what
//! the server writes parses back to what it wrote.

use overlord::codec::names::{write_csv_text, MAX_DATE, MIN_DATE};
use overlord::codec::{self, csvbody, form, timefmt, Limits, SensorId, SensorKind, Value};
use proptest::prelude::*;

const KINDS: [SensorKind; 6] = [
    SensorKind::Str,
    SensorKind::Int,
    SensorKind::Num,
    SensorKind::Date,
    SensorKind::Bool,
    SensorKind::Bytes,
];

/// 9999-12-31T23:59:59.999999Z, the last time written with four digits.
const MAX_TIME: i64 = 253_402_300_799_999_999;

fn limits() -> Limits {
    Limits::default()
}

/// Percent-encode everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn value_strategy(kind: SensorKind) -> BoxedStrategy<Value> {
    match kind {
        // Non-empty (empty means "no value"), no NUL, within the limit.
        SensorKind::Str => "[^\0]{1,40}".prop_map(|s| Value::Str(s.into())).boxed(),
        SensorKind::Int => any::<i64>().prop_map(Value::Int).boxed(),
        SensorKind::Num => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Num)
            .boxed(),
        SensorKind::Date => (MIN_DATE..=MAX_DATE).prop_map(Value::Date).boxed(),
        SensorKind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        SensorKind::Bytes => proptest::collection::vec(any::<u8>(), 1..64)
            .prop_map(|b| Value::Bytes(b.into()))
            .boxed(),
    }
}

fn written(v: &Value) -> String {
    let mut s = String::new();
    v.write_csv(&mut s);
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn form_parser_never_panics(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = form::parse_pairs(&input);
        let _ = form::decode(&input);
    }

    #[test]
    fn query_strings_round_trip(pairs in proptest::collection::vec((".{0,12}", ".{0,24}"), 0..8)) {
        let q: Vec<String> = pairs.iter().map(|(n, v)| format!("{}={}", enc(n), enc(v))).collect();
        let parsed = form::parse_pairs(q.join("&").as_bytes()).expect("well-formed");
        prop_assert_eq!(parsed, pairs);
    }

    #[test]
    fn plus_is_a_space_and_escapes_decode(s in "[a-z +]{0,20}") {
        prop_assert_eq!(form::decode(s.as_bytes()).unwrap(), s.replace('+', " "));
    }

    #[test]
    fn params_never_panic(pairs in proptest::collection::vec(("[a-zA-Z0-9]{0,6}", ".{0,20}"), 0..8),
                          now in 0i64..MAX_TIME) {
        let _ = codec::parse_params(&pairs, now, &limits());
    }

    #[test]
    fn sensor_names_never_panic_and_print_back(name in ".{0,16}") {
        if let Ok(id) = SensorId::parse(&name) {
            prop_assert_eq!(SensorId::parse(&id.to_string()).unwrap(), id);
            prop_assert_eq!(SensorId::from_code(id.code()), Some(id));
        }
    }

    #[test]
    fn times_round_trip(t in 0..=MAX_TIME) {
        let s = timefmt::format_time(t);
        prop_assert_eq!(timefmt::parse_instant(&s), Ok(t), "{}", s);
    }

    #[test]
    fn time_parser_never_panics(s in ".{0,40}", digits in "[0-9.]{0,30}") {
        let _ = timefmt::parse_instant(&s);
        let _ = timefmt::parse_instant(&digits);
        let _ = timefmt::parse_time(&s, 0, &limits());
    }

    #[test]
    fn values_never_panic_and_normalise(kind in 0usize..6, text in ".{0,40}") {
        let kind = KINDS[kind];
        if let Ok(v) = Value::parse(kind, &text, &limits()) {
            prop_assert_eq!(v.kind(), kind);
            if kind != SensorKind::Str {
                // What the server writes back parses to the same value.
                let again = Value::parse(kind, &written(&v), &limits()).unwrap();
                prop_assert_eq!(again, v);
            }
        }
    }

    /// Regression guard for `D` values given as unix seconds: whatever is
    /// accepted can be written back and read again (years past 9999 are
    /// refused rather than written as `16053-...`).
    #[test]
    fn date_values_from_digits_write_back(text in "[0-9]{1,16}(\\.[0-9]{1,8})?") {
        if let Ok(v) = Value::parse(SensorKind::Date, &text, &limits()) {
            prop_assert_eq!(Value::parse(SensorKind::Date, &written(&v), &limits()).unwrap(), v);
        }
    }

    #[test]
    fn written_values_parse_back(v in (0usize..6).prop_flat_map(|k| value_strategy(KINDS[k]))) {
        let w = written(&v);
        if let Value::Str(s) = &v {
            // Strings are written as CSV fields (quoted when needed).
            let mut field = String::new();
            write_csv_text(s, &mut field);
            prop_assert_eq!(&w, &field);
        } else {
            prop_assert_eq!(Value::parse(v.kind(), &w, &limits()).unwrap(), v);
        }
    }

    #[test]
    fn csv_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..1024),
                               now in 0i64..MAX_TIME) {
        let _ = csvbody::parse_csv(&body, now, &limits());
    }

    #[test]
    fn csv_shaped_garbage_never_panics(body in "(time|N1|I2|S3|D4|L5|B6|device|,|\"|\n|\r|[0-9a-f.:TZ -]){0,200}") {
        let _ = csvbody::parse_csv(body.as_bytes(), timefmt::now_micros(), &limits());
    }

    /// A CSV body written the way the server writes values parses back to
    /// exactly those readings.
    #[test]
    fn csv_bodies_round_trip(
        cols in proptest::sample::subsequence((0usize..6).collect::<Vec<_>>(), 1..=6),
        rows in proptest::collection::vec((0i64..1_000_000_000, any::<u64>()), 1..6),
        seed_values in proptest::collection::vec(
            (0usize..6).prop_flat_map(|k| value_strategy(KINDS[k]).prop_map(move |v| (k, v))), 0..64),
    ) {
        // One column per chosen kind, numbered by its position.
        let sensors: Vec<SensorId> = cols
            .iter()
            .enumerate()
            .map(|(i, &k)| SensorId { kind: KINDS[k], number: i as u32 + 1 })
            .collect();
        let mut body = String::from("time");
        for s in &sensors {
            body.push(',');
            body.push_str(&s.to_string());
        }
        body.push('\n');
        let mut expected = Vec::new();
        let mut seen_times = std::collections::BTreeSet::new();
        for (r, (secs, pick)) in rows.iter().enumerate() {
            let t = secs * 1_000_000 + r as i64;
            if !seen_times.insert(t) {
                continue;
            }
            timefmt::write_time(t, &mut body);
            for (c, s) in sensors.iter().enumerate() {
                body.push(',');
                // A value of the column's kind from the pool, or the
                // column's canonical value when the pool has none.
                let v = seed_values
                    .iter()
                    .filter(|(k, _)| KINDS[*k] == s.kind)
                    .map(|(_, v)| v.clone())
                    .nth((*pick as usize + c) % 3)
                    .unwrap_or(match s.kind {
                        SensorKind::Str => Value::Str("x".into()),
                        SensorKind::Int => Value::Int(-7),
                        SensorKind::Num => Value::Num(0.5),
                        SensorKind::Date => Value::Date(0),
                        SensorKind::Bool => Value::Bool(true),
                        SensorKind::Bytes => Value::Bytes(vec![0xab].into()),
                    });
                v.write_csv(&mut body);
                expected.push(codec::Reading { sensor: *s, time: t, value: v });
            }
            body.push('\n');
        }
        let parsed = csvbody::parse_csv(body.as_bytes(), timefmt::now_micros(), &limits())
            .unwrap_or_else(|e| panic!("{e:?} in {body:?}"));
        let got: Vec<codec::Reading> = parsed.readings.into_iter().map(|(d, r)| {
            assert_eq!(d, None);
            r
        }).collect();
        prop_assert_eq!(got, expected);
    }
}
