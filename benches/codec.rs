//! Criterion benches for the wire codec's hot paths: a 10,000-row CSV body,
//! a 10,000-line line protocol body and a board's query string.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use overlord::codec::lineproto::{parse_lines, Precision};
use overlord::codec::{csvbody, form, parse_params, Limits};

const NOW: i64 = 1_795_428_000_000_000;

fn csv_body(rows: usize) -> Vec<u8> {
    let mut s = String::from("time,N1,N2,I3,L4\n");
    for i in 0..rows {
        s.push_str(&format!(
            "{},{}.5,-{}.25,{},{}\n",
            1_795_000_000 + i,
            i % 100,
            i % 7,
            i,
            i % 2
        ));
    }
    s.into_bytes()
}

fn line_body(lines: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..lines {
        s.push_str(&format!(
            "env,device=greenhouse-{} N1={}.5,N2=-{}.25,I3={}i,L4={} {}\n",
            i % 4,
            i % 100,
            i % 7,
            i,
            i % 2 == 0,
            1_795_000_000 + i
        ));
    }
    s.into_bytes()
}

fn bench(c: &mut Criterion) {
    let body = csv_body(10_000);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("csv_10k_rows_4_values", |b| {
        b.iter(|| csvbody::parse_csv(&body, NOW, &Limits::default()).unwrap())
    });
    let lines = line_body(10_000);
    g.bench_function("lineproto_10k_lines_4_fields", |b| {
        b.iter(|| {
            parse_lines(&lines, Precision::Seconds, NOW, &Limits::default(), &|_| {
                true
            })
            .unwrap()
        })
    });
    g.throughput(Throughput::Elements(1));
    let q =
        b"device=greenhouse-3&token=0123456789abcdef0123456789abcdef&N1=23.5&L2=1&time=1795428000";
    g.bench_function("query_string", |b| {
        b.iter(|| parse_params(&form::parse_pairs(q).unwrap(), NOW, &Limits::default()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
