//! Overload: far more concurrent writers than a slow disk can take, with a
//! tiny ingest queue and connection cap. Every request ends (no hang) with
//! `200`, or `503`/`429` carrying `Retry-After`; every acknowledged reading
//! is stored exactly once; and the server serves normally once the load
//! stops.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use common::TestServer;
use overlord::store::faults::DiskFaults;

const CLIENTS: usize = 48;
const REQUESTS: i64 = 20;

#[test]
fn overload_is_refused_with_retry_after_and_nothing_acknowledged_is_lost() {
    let disk = DiskFaults::new();
    // Each group commit's fsync takes 5 ms more: the writer manages at
    // most ~200 commits a second, far below what 48 clients send.
    disk.set_sync_delay(Duration::from_millis(5));
    let s = TestServer::start_disk(disk.clone(), |c| {
        c.limits.ingest_queue = 2;
        c.limits.max_connections = 32;
        // No per-device limit: the queue and the connection cap are under
        // test here (429 + Retry-After has its own test in security.rs).
        c.limits.device_requests_per_sec = 0.0;
    });
    let devices = 8;
    let toks: Vec<String> = (0..devices)
        .map(|d| s.create_device(&format!("d{d}")))
        .collect();
    let base = common::hour_ago() - 3600;
    // (device, reading number) -> value, for every 200.
    let acked = Mutex::new(BTreeMap::new());
    let statuses = Mutex::new(BTreeMap::<u16, usize>::new());
    let refusals = Mutex::new(BTreeMap::<&str, usize>::new());
    std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let (s, toks, acked, statuses, refusals) = (&s, &toks, &acked, &statuses, &refusals);
            scope.spawn(move || {
                let d = c % devices;
                for i in 0..REQUESTS {
                    let k = (c as i64) * 100 + i;
                    let req = format!(
                        "GET /v1/readings?device=d{d}&token={}&I1={}&time={} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                        toks[d],
                        k * 3,
                        base + k
                    );
                    // A reply (read under a generous timeout that only a
                    // hang reaches), whatever it is.
                    let r = common::raw(s.addr, req.as_bytes());
                    match r.status {
                        200 => {
                            acked.lock().unwrap().insert((d, k), k * 3);
                        }
                        503 | 429 => {
                            assert!(
                                r.header("Retry-After").is_some_and(|v| v.parse::<u32>().is_ok()),
                                "{} without Retry-After",
                                r.status
                            );
                            let code = if r.status == 503 { "overloaded" } else { "rate_limited" };
                            assert_eq!(r.error_code(), code);
                            // A short back-off (real clients wait
                            // Retry-After; this keeps the test short).
                            // Not a wait for the server: client pacing.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        other => panic!("unexpected {other}: {}", r.body),
                    }
                    *statuses.lock().unwrap().entry(r.status).or_default() += 1;
                    if r.status == 503 {
                        // Which bound refused it: the ingest queue or the
                        // connection cap.
                        let why = if r.body.contains("busy") { "queue" } else { "cap" };
                        *refusals.lock().unwrap().entry(why).or_default() += 1;
                    }
                }
            });
        }
    });
    let statuses = statuses.into_inner().unwrap();
    let acked = acked.into_inner().unwrap();
    let refusals = refusals.into_inner().unwrap();
    eprintln!("statuses: {statuses:?}, 503 from: {refusals:?}");
    assert!(
        refusals.get("queue").copied().unwrap_or(0) > 0,
        "the ingest queue never refused: {refusals:?}"
    );
    let total: usize = statuses.values().sum();
    assert_eq!(total, CLIENTS * REQUESTS as usize);
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "the load never overloaded the server: {statuses:?}"
    );
    assert!(!acked.is_empty(), "nothing was accepted: {statuses:?}");

    // Load stopped, disk fast again: normal service, and every
    // acknowledged reading is there exactly once with its value.
    disk.set_sync_delay(Duration::ZERO);
    for (d, tok) in toks.iter().enumerate() {
        // The per-device limiter may still be refilling: retry while it
        // says so (bounded), anything else must be 200.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let r = loop {
            let r = s.get(&format!(
                "/v1/readings?device=d{d}&token={tok}&I1=-1&time={}",
                base + 6000
            ));
            if r.status != 429 || std::time::Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(r.status, 200, "after the load: {}", r.body);
        let r = s.get(&format!(
            "/v1/devices/d{d}/readings?token={tok}&sensors=I1&limit=100000"
        ));
        assert_eq!(r.status, 200);
        let mut got = BTreeMap::new();
        for line in r.body.lines().skip(1) {
            let (t, v) = line.split_once(',').unwrap();
            let k = overlord::codec::timefmt::parse_instant(t).unwrap() / 1_000_000 - base;
            let v: i64 = v.parse().unwrap();
            assert!(got.insert(k, v).is_none(), "reading {k} listed twice");
        }
        for ((dev, k), v) in &acked {
            if *dev == d {
                assert_eq!(got.get(k), Some(v), "acknowledged reading d{d}/{k} lost");
            }
        }
    }
    assert_eq!(s.get("/healthz").status, 200);
}
