//! Management operations on both stores (issue 20, BENCHMARKS.md, "The
//! storage boundary on PostgreSQL"): the same storage functions through
//! `Store` on a redb file and on a throw-away PostgreSQL (started here,
//! on a free loopback port, stopped at the end; Debian's `postgresql`
//! package, as the tests use). The redb figures, measured in the same
//! run, are the reference.
//!
//! ```text
//! cargo bench --bench pg_ops -- --warm-up-time 1 --measurement-time 5
//! ```

#[path = "../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use overlord::inbox::{self, Kind, Row};
use overlord::pg::Target;
use overlord::store::{DeviceMeta, DeviceRecord, Store};

fn device(id: String) -> DeviceRecord {
    DeviceRecord {
        num: 0,
        id,
        name: String::new(),
        owner: "admin".into(),
        token: [0; 32],
        prev_token: None,
        created: 0,
        meta: DeviceMeta::default(),
    }
}

fn row() -> Row {
    Row {
        kind: Kind::Message,
        time: 0,
        from: "user:admin".into(),
        sensor: String::new(),
        value: "hello".into(),
        device: String::new(),
    }
}

/// One store's figures, under `name`.
fn each(c: &mut Criterion, name: &str, store: &Store) {
    let mut g = c.benchmark_group(name);
    g.sample_size(20);
    // Every device record, 1,000 of them: what a start-up reads.
    store
        .create_devices((0..1000).map(|i| device(format!("l{i}"))).collect())
        .unwrap();
    g.bench_function("load_1000_devices", |b| {
        b.iter(|| store.load_devices().unwrap().len())
    });
    let mut n = 0u64;
    // A write of one record: what creating a device costs the store.
    g.bench_function("create_device", |b| {
        b.iter(|| {
            n += 1;
            store.create_device(device(format!("d{n}"))).unwrap()
        })
    });
    let target = store.create_device(device("inbox".into())).unwrap().num;
    // Read a counter, write two rows: an inbox push and its ack.
    g.bench_function("inbox_push_ack", |b| {
        b.iter(|| {
            let s = store
                .write(|tx| inbox::push(tx, target, &[row()], 1_000))
                .unwrap()
                .unwrap();
            store.write(|tx| inbox::ack(tx, target, s[0])).unwrap()
        })
    });
    // A read transaction with one range: what a device's inbox poll costs.
    store
        .write(|tx| inbox::push(tx, target, &vec![row(); 10], 1_000))
        .unwrap()
        .unwrap();
    g.bench_function("inbox_read_10", |b| {
        b.iter(|| inbox::pending(store, target, 10).unwrap())
    });
    // The floor under those: one statement in a read transaction (a
    // round trip), and a transaction with none.
    g.bench_function("read_one_row", |b| {
        b.iter(|| {
            store
                .read(|tx| {
                    let t = tx.open_table(overlord::store::INBOX_META)?;
                    let v = t.get(target)?.map(|g| g.value());
                    Ok::<_, overlord::store::StoreError>(v)
                })
                .unwrap()
        })
    });
    g.bench_function("read_nothing", |b| {
        b.iter(|| {
            store
                .read(|_| Ok::<_, overlord::store::StoreError>(()))
                .unwrap()
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let file = Store::open(&dir.path().join("b.redb")).unwrap();
    each(c, "redb", &file);
    let Some(pg) = pg::Pg::start() else {
        panic!("PostgreSQL (initdb, pg_ctl) is needed for this benchmark");
    };
    pg.create_db("bench");
    let db = Store::open_postgres(
        Target::parse(&pg.url("bench")).unwrap(),
        4,
        Duration::from_secs(30),
    )
    .unwrap();
    each(c, "postgres", &db);
}

criterion_group!(benches, bench);
criterion_main!(benches);
