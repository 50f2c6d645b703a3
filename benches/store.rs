//! Criterion benches for the store: chunk merge and encode, the unit the
//! writer works in.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use overlord::codec::{SensorKind, Value};
use overlord::store::chunk;

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

criterion_group!(benches, bench);
criterion_main!(benches);
