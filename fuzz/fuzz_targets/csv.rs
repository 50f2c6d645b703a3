//! `text/csv` bodies: `csvbody::parse_csv` must never panic, and every
//! reading it returns must have a value of its sensor's kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlord::codec::{csvbody, Limits};

/// A fixed receive time (2026-11-23T10:00:00Z) keeps runs reproducible.
const NOW: i64 = 1_795_428_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = csvbody::parse_csv(data, NOW, &Limits::default()) {
        for (_, r) in &parsed.readings {
            assert_eq!(r.value.kind(), r.sensor.kind);
        }
    }
});
