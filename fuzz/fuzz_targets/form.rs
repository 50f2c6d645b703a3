//! Query strings and form bodies: `form::parse_pairs` and `form::decode`
//! must never panic; a successful decode is valid UTF-8 by type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlord::codec::form;

fuzz_target!(|data: &[u8]| {
    let _ = form::parse_pairs(data);
    let _ = form::decode(data);
});
