//! Sensor names, typed values and times. The first byte picks the kind;
//! a value that parses must parse again, unchanged, from what the server
//! writes for it (strings excepted: they are written as quoted CSV).
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlord::codec::{timefmt, Limits, SensorId, SensorKind, Value};

const KINDS: [SensorKind; 6] = [
    SensorKind::Str,
    SensorKind::Int,
    SensorKind::Num,
    SensorKind::Date,
    SensorKind::Bool,
    SensorKind::Bytes,
];

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let _ = SensorId::parse(&text);
    if let Ok(t) = timefmt::parse_instant(&text) {
        if (0..=253_402_300_799_999_999).contains(&t) {
            assert_eq!(timefmt::parse_instant(&timefmt::format_time(t)), Ok(t));
        }
    }
    let kind = KINDS[usize::from(k) % KINDS.len()];
    let limits = Limits::default();
    if let Ok(v) = Value::parse(kind, &text, &limits) {
        if kind != SensorKind::Str {
            let mut w = String::new();
            v.write_csv(&mut w);
            assert_eq!(Value::parse(kind, &w, &limits).ok(), Some(v));
        }
    }
});
