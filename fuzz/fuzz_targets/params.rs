//! A whole `GET /v1/readings?...` query: pairs, then readings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlord::codec::{self, form, Limits};

/// A fixed receive time (2026-11-23T10:00:00Z) keeps runs reproducible.
const NOW: i64 = 1_795_428_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = form::parse_pairs(data) {
        let _ = codec::parse_params(&pairs, NOW, &Limits::default());
    }
});
