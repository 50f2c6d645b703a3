//! Criterion benches for the store: chunk merge and encode, the unit the
//! writer works in, and sealing (`store::sealed`): seal and decode per
//! 1,000 readings.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use overlord::codec::{SensorKind, Value};
use overlord::store::{chunk, sealed};

/// 1,000 readings 1 s apart of a random walk in hundredths (a pressure,
/// as in `benches/compare.sh`'s data).
fn walk() -> Vec<chunk::Entry> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut m: i64 = 101_325;
    (0..1000u32)
        .map(|i| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            m += (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % 15) as i64 - 7;
            (i * 1_000_000, Value::Num(m as f64 / 100.0))
        })
        .collect()
}

fn bench_seal(c: &mut Criterion) {
    let entries = walk();
    let mut hot = Vec::new();
    chunk::encode(&entries, &mut hot);
    let mut sealed_bytes = Vec::new();
    sealed::encode(&entries, SensorKind::Num, &mut sealed_bytes);
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("seal_1000", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            // What the sealer does: decode the hot chunk, seal it.
            let mut e = Vec::with_capacity(1000);
            chunk::decode(&hot, SensorKind::Num, |o, v| e.push((o, v))).unwrap();
            out.clear();
            sealed::encode(&e, SensorKind::Num, &mut out);
        })
    });
    g.bench_function("decode_sealed_1000", |b| {
        b.iter(|| chunk::decode(&sealed_bytes, SensorKind::Num, |_, _| {}).unwrap())
    });
    g.bench_function("decode_hot_1000", |b| {
        b.iter(|| chunk::decode(&hot, SensorKind::Num, |_, _| {}).unwrap())
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let values: Vec<Value> = (0..60)
        .map(|i| Value::Num(20.0 + f64::from(i) / 10.0))
        .collect();
    let incoming: Vec<(u32, &Value)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32 * 1_000_000, v))
        .collect();
    let mut existing = Vec::new();
    chunk::merge(
        None,
        SensorKind::Num,
        &incoming[..30],
        &mut existing,
        |_| {},
    )
    .unwrap();
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Elements(30));
    g.bench_function("merge_30_into_30", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            chunk::merge(
                Some(&existing),
                SensorKind::Num,
                &incoming[30..],
                &mut out,
                |_| {},
            )
            .unwrap();
        })
    });
    g.throughput(Throughput::Elements(60));
    g.bench_function("decode_60", |b| {
        let mut full = Vec::new();
        chunk::merge(None, SensorKind::Num, &incoming, &mut full, |_| {}).unwrap();
        b.iter(|| chunk::decode(&full, SensorKind::Num, |_, _| {}).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench, bench_seal);
criterion_main!(benches);
