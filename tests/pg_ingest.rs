//! The writer's rounds on PostgreSQL (issue 20) store exactly what they
//! store on redb. On PostgreSQL a round reads the chunks it will touch in
//! one statement per table and sends its writes together (the round's
//! cache in `store::chunks`); this test feeds the same random rounds to a
//! server on a redb file and one on PostgreSQL through HTTP (in-order
//! appends, late readings into chunks written sealed, retries, bursts of
//! more than one part in a minute, backfill before everything, and jumps
//! past a chunk's hour) and compares every chunk row of both stores byte
//! for byte, and every query's answer.

mod common;

use common::pg::Pg;
use common::{Rng, TestServer};
use overlord::config::StoreKind;

/// Random rounds as CSV bodies: `device,time,N1,I2` rows over four
/// devices, times as unix seconds with microseconds.
fn rounds(seed: u64, count: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    let base: i64 = 1_767_225_600_000_000; // 2026-01-01, µs
    let mut head = [base; 4]; // each device's latest time so far
    let mut out = Vec::new();
    for _ in 0..count {
        let mut body = String::from("device,time,N1,I2\n");
        for _ in 0..1 + rng.below(6) {
            let d = rng.below(4);
            let n = 1 + rng.below(700);
            let (mut t, step): (i64, i64) = match rng.below(6) {
                // in order, a reading every 10 s
                0 | 1 => (head[d] + 10_000_000, 10_000_000),
                // a burst within a minute: past a 512-reading part
                2 => (head[d] + 1_000, 50_000),
                // late: into the last few hours
                3 => (head[d] - rng.below(4 * 3_600) as i64 * 1_000_000, 7_000_000),
                // backfill, days or weeks before everything (a round whose
                // readings of one sensor span more than a week is not
                // cached: both paths run)
                4 => (
                    base - (1 + rng.below(40)) as i64 * 86_400_000_000,
                    13_000_000,
                ),
                // a jump past the chunk's hour
                _ => (head[d] + 5_400_000_000, 30_000_000),
            };
            for _ in 0..n {
                let v = rng.below(1000);
                body.push_str(&format!(
                    "d{d},{}.{:06},{}.5,{}\n",
                    t.div_euclid(1_000_000),
                    t.rem_euclid(1_000_000),
                    v,
                    v as i64 - 500
                ));
                // Now and then the same reading twice (a retry).
                if rng.below(20) == 0 {
                    body.push_str(&format!(
                        "d{d},{}.{:06},{}.5,{}\n",
                        t.div_euclid(1_000_000),
                        t.rem_euclid(1_000_000),
                        v,
                        v as i64 - 500
                    ));
                }
                head[d] = head[d].max(t);
                t += step;
            }
        }
        out.push(body);
    }
    out
}

fn feed(s: &TestServer, bodies: &[String]) {
    for d in 0..4 {
        s.create_device(&format!("d{d}"));
    }
    let auth = format!("Authorization: Bearer {}\r\n", s.admin);
    for b in bodies {
        let r = s.post("/v1/readings", "text/csv", b.as_bytes(), &auth);
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

/// Every reading of every device and sensor, as the query answers.
fn answers(s: &TestServer) -> Vec<String> {
    let mut out = Vec::new();
    for d in 0..4 {
        for sensor in ["N1", "I2"] {
            let r = s.admin_form(
                "GET",
                &format!("/v1/devices/d{d}/readings?sensors={sensor}&from=0&limit=1000000"),
                "",
            );
            assert_eq!(r.status, 200, "{}", r.body);
            out.push(r.body);
        }
    }
    out
}

/// The chunk tables' rows, hashed (`ops::fingerprint`).
fn chunk_rows(store: &overlord::store::Store) -> Vec<(String, u64, [u8; 32])> {
    store
        .read(|tx| overlord::ops::fingerprint(tx))
        .unwrap()
        .into_iter()
        .filter(|(name, _, _)| name == "readings" || name == "sealed")
        .collect()
}

#[test]
fn rounds_on_postgresql_store_what_they_store_on_redb() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("ingest");
    // `PG_INGEST_ROUNDS=400` (and `PG_INGEST_SEED`) for a longer look.
    let count = std::env::var("PG_INGEST_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed = std::env::var("PG_INGEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d_0001);
    let bodies = rounds(seed, count);
    // The background sealer never runs (its timing would differ); the
    // sealing a write does as it finishes a chunk does, on both.
    let quiet = |c: &mut overlord::config::Config| c.storage.seal_idle_secs = 1_000_000;
    let redb = TestServer::start_with(|c| {
        quiet(c);
        c.store.kind = StoreKind::Redb;
    });
    // Forced to redb even under TEST_STORE=postgres: the harness only
    // moves a server that has not chosen.
    feed(&redb, &bodies);
    let on_pg = TestServer::start_with(|c| {
        quiet(c);
        c.store.kind = StoreKind::Postgres;
        c.store.postgres_url = pg.url("ingest");
    });
    feed(&on_pg, &bodies);
    let (a, b) = (answers(&redb), answers(&on_pg));
    let readings: usize = a.iter().map(|x| x.lines().count() - 1).sum();
    assert!(readings > 2_000, "the rounds stored readings: {readings}");
    assert_eq!(a, b, "the same answers");
    let (dir, _) = redb.stop();
    let redb_store = overlord::store::Store::open(&dir.path().join("overlord.redb")).unwrap();
    drop(on_pg.stop());
    let pg_store = overlord::store::Store::open_postgres(
        overlord::pg::Target::parse(&pg.url("ingest")).unwrap(),
        2,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let (x, y) = (chunk_rows(&redb_store), chunk_rows(&pg_store));
    assert!(x.iter().all(|(_, n, _)| *n > 0), "both tables used: {x:?}");
    assert_eq!(x, y, "the same chunk rows, byte for byte");
}
