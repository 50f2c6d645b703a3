//! Property tests of the sealed chunk form (`store::sealed`): every value
//! of every kind, extremes included, at any microsecond offset in a
//! chunk's window, comes back bit for bit after sealing; sealing and the
//! hot form decode to the same readings; arbitrary bytes behind the
//! sealed tag are `Corrupt`, never a panic; and a value the wire refuses
//! (NaN, infinities) never reaches a chunk.

use overlord::codec::names::{MAX_DATE, MIN_DATE};
use overlord::codec::{Limits, SensorKind, Value};
use overlord::store::chunk::{self, Entry, SPAN_US};
use overlord::store::sealed;
use proptest::prelude::*;

/// Numbers a sensor sends: decimals of every scale, extremes, tiny and
/// huge magnitudes, signed zeros and arbitrary finite bit patterns.
fn num() -> BoxedStrategy<f64> {
    prop_oneof![
        (-1_000_000i64..1_000_000, 0u32..10).prop_map(|(m, s)| m as f64 / 10f64.powi(s as i32)),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(-f64::MIN_POSITIVE),
        Just(5e-324),
        Just(0.0),
        Just(-0.0),
        Just(9.007_199_254_740_993e15),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ]
    .boxed()
}

fn value(kind: SensorKind) -> BoxedStrategy<Value> {
    match kind {
        SensorKind::Str => prop_oneof![
            "[a-c]{1,3}".prop_map(|s| Value::Str(s.into())),
            "[^\0]{1,40}".prop_map(|s| Value::Str(s.into())),
        ]
        .boxed(),
        SensorKind::Int => prop_oneof![Just(i64::MIN), Just(i64::MAX), -5i64..5, any::<i64>()]
            .prop_map(Value::Int)
            .boxed(),
        SensorKind::Num => num().prop_map(Value::Num).boxed(),
        SensorKind::Date => prop_oneof![Just(MIN_DATE), Just(MAX_DATE), MIN_DATE..=MAX_DATE]
            .prop_map(Value::Date)
            .boxed(),
        SensorKind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        SensorKind::Bytes => prop_oneof![
            proptest::collection::vec(0u8..2, 1..3),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
        .prop_map(|b| Value::Bytes(b.into()))
        .boxed(),
    }
}

/// Offsets in the window: whole seconds, milliseconds, microseconds, a
/// regular interval, or anywhere; sorted and unique.
fn offsets() -> BoxedStrategy<Vec<u32>> {
    let span = SPAN_US as u32;
    prop_oneof![
        proptest::collection::btree_set(0..span, 1..600).prop_map(|s| s.into_iter().collect()),
        proptest::collection::btree_set(0..span / 1_000_000, 1..600)
            .prop_map(|s| s.into_iter().map(|x| x * 1_000_000).collect()),
        proptest::collection::btree_set(0..span / 1_000, 1..600)
            .prop_map(|s| s.into_iter().map(|x| x * 1_000).collect()),
        (0..span / 2, 1..1_000_000u32, 1..2000usize).prop_map(move |(first, step, n)| {
            (0..n as u32)
                .map(|i| first + i * step)
                .take_while(|o| *o < span)
                .collect()
        }),
        Just(vec![0, span - 1]),
    ]
    .boxed()
}

fn entries(kind: SensorKind) -> BoxedStrategy<Vec<Entry>> {
    offsets()
        .prop_flat_map(move |offs| {
            let n = offs.len();
            (Just(offs), proptest::collection::vec(value(kind), n))
        })
        .prop_map(|(o, v)| o.into_iter().zip(v).collect())
        .boxed()
}

fn kinds() -> impl Strategy<Value = SensorKind> {
    prop_oneof![
        Just(SensorKind::Str),
        Just(SensorKind::Int),
        Just(SensorKind::Num),
        Just(SensorKind::Date),
        Just(SensorKind::Bool),
        Just(SensorKind::Bytes),
    ]
}

/// Values compared bit for bit (`-0.0` is not `0.0`).
fn same(a: &[Entry], b: &[Entry]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((oa, va), (ob, vb))| {
            oa == ob
                && match (va, vb) {
                    (Value::Num(x), Value::Num(y)) => x.to_bits() == y.to_bits(),
                    _ => va == vb,
                }
        })
}

fn decode(bytes: &[u8], kind: SensorKind) -> Vec<Entry> {
    let mut out = Vec::new();
    chunk::decode(bytes, kind, |o, v| out.push((o, v))).expect("decodes");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn sealed_round_trips_every_kind((kind, e) in kinds().prop_flat_map(|k| (Just(k), entries(k)))) {
        let mut out = Vec::new();
        sealed::encode(&e, kind, &mut out);
        prop_assert!(sealed::is_sealed(&out));
        let back = decode(&out, kind);
        prop_assert!(same(&back, &e), "{:?} came back as {:?}", e, back);
        prop_assert_eq!(chunk::count(&out).unwrap(), e.len() as u64);
        prop_assert_eq!(chunk::first_offset(&out).unwrap(), Some(e[0].0));
        // The hot form of the same readings decodes to the same.
        let mut hot = Vec::new();
        chunk::encode(&e, &mut hot);
        prop_assert!(!sealed::is_sealed(&hot));
        prop_assert!(same(&decode(&hot, kind), &back));
    }

    #[test]
    fn a_late_reading_into_a_sealed_chunk_reseals_it(
        e in entries(SensorKind::Num),
        late_off in 0..SPAN_US as u32,
        late in num(),
    ) {
        let mut stored = Vec::new();
        sealed::encode(&e, SensorKind::Num, &mut stored);
        let late = Value::Num(late);
        let mut fresh = Vec::new();
        let merged = chunk::merge_entries(decode(&stored, SensorKind::Num), &[(late_off, &late)], |i| fresh.push(i));
        let mut out = Vec::new();
        chunk::encode_like(&stored, &merged, SensorKind::Num, &mut out);
        prop_assert!(sealed::is_sealed(&out));
        let back = decode(&out, SensorKind::Num);
        let was_there = e.iter().any(|(o, _)| *o == late_off);
        prop_assert_eq!(fresh.is_empty(), was_there, "a retry is stored once");
        prop_assert_eq!(back.len(), e.len() + usize::from(!was_there));
        prop_assert!(same(&back, &merged));
    }

    #[test]
    fn garbage_behind_the_tag_is_corrupt_not_a_panic(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        kind in kinds(),
        tag in prop_oneof![Just(sealed::TAG_V1), Just(sealed::TAG_V2)],
    ) {
        let mut bytes = vec![tag];
        bytes.extend(body);
        let _ = chunk::decode(&bytes, kind, |_, _| {});
        let _ = chunk::count(&bytes);
        let _ = chunk::first_offset(&bytes);
    }

    #[test]
    fn the_wire_refuses_what_no_chunk_may_hold(
        word in prop_oneof![Just("NaN"), Just("nan"), Just("inf"), Just("-inf"), Just("infinity"), Just("1e999")],
    ) {
        prop_assert!(Value::parse(SensorKind::Num, word, &Limits::default()).is_err());
    }
}

#[test]
fn a_regular_interval_costs_no_time_bits() {
    // 360 readings 10 s apart, a thermometer's tenths: times are free, the
    // values a few bits each.
    let e: Vec<Entry> = (0..360u32)
        .map(|i| (i * 10_000_000, Value::Num(21.5 + f64::from(i % 7) / 10.0)))
        .collect();
    let mut out = Vec::new();
    sealed::encode(&e, SensorKind::Num, &mut out);
    let mut hot = Vec::new();
    chunk::encode(&e, &mut hot);
    assert!(out.len() < 360 * 4 / 8 + 24, "{} bytes sealed", out.len());
    assert!(
        out.len() * 3 < hot.len(),
        "{} sealed vs {} hot",
        out.len(),
        hot.len()
    );
}
