//! Durability: `200` means fsynced. A load client records which readings
//! were acknowledged; the server process is killed with SIGKILL while the
//! load runs, restarted on the same data file, and every acknowledged
//! reading must be there exactly once, with the right value. Bounded: a
//! few cycles of well under a second of load each (`CRASH_CYCLES`
//! sets how many; 100 is the long version).

#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{assert_all_stored_once, Proc};

fn start(dir: &std::path::Path) -> Proc {
    start_with(dir, "")
}

/// [`start`] with `extra` appended to the config file.
fn start_with(dir: &std::path::Path, extra: &str) -> Proc {
    Proc::start(dir, extra)
}

fn http(addr: SocketAddr, req: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Run `THREADS` clients that send one reading per HTTP/1.0 connection
/// (reading number `k`, value `value(k)`, time `base + k`) until the
/// server dies, then kill it with SIGKILL after `ms`. Returns the
/// acknowledged reading numbers and values.
fn load_then_kill(
    p: &mut Proc,
    token: &str,
    base: i64,
    first: i64,
    ms: u64,
    value: fn(i64) -> i64,
) -> BTreeMap<i64, i64> {
    load_probe_kill(p, token, base, first, (ms, 0), value, |_| {})
}

/// [`load_then_kill`], calling `probe` on the server just before the
/// kill; with `(ms, quiet)`, the load stops after `ms` and the kill comes
/// `quiet` ms later (0: under load).
fn load_probe_kill(
    p: &mut Proc,
    token: &str,
    base: i64,
    first: i64,
    (ms, quiet): (u64, u64),
    value: fn(i64) -> i64,
    probe: impl FnOnce(&Proc),
) -> BTreeMap<i64, i64> {
    const THREADS: i64 = 4;
    let acked: Arc<Mutex<BTreeMap<i64, i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for th in 0..THREADS {
        let (acked, stop, token, addr) = (acked.clone(), stop.clone(), token.to_string(), p.addr);
        threads.push(std::thread::spawn(move || {
            let mut k = first + th;
            // Bounded: at most 2,000 requests per thread per cycle.
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = format!(
                    "GET /v1/readings?device=crash&token={token}&I1={}&time={} HTTP/1.0\r\n\r\n",
                    value(k),
                    base + k
                );
                match http(addr, &req) {
                    Ok(r) if r.starts_with("HTTP/1.0 200") && r.contains("\r\n\r\nok,1,") => {
                        acked.lock().unwrap().insert(k, value(k));
                    }
                    Ok(_) => {}
                    Err(_) => break, // the server is gone
                }
                k += THREADS;
            }
        }));
    }
    // Not a wait for the server: the kill lands `ms` into the load, a
    // different moment each cycle; what was acknowledged by then is
    // what is checked.
    std::thread::sleep(Duration::from_millis(ms));
    if quiet > 0 {
        stop.store(true, Ordering::Relaxed);
        for t in threads.drain(..) {
            t.join().unwrap();
        }
        std::thread::sleep(Duration::from_millis(quiet));
    }
    probe(p);
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

fn admin_req(p: &Proc, admin: &str, method: &str, path: &str, form: &str) -> String {
    let r = http(
        p.addr,
        &format!(
            "{method} {path} HTTP/1.0\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .unwrap();
    r.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn create_device(p: &Proc, admin: &str) -> String {
    let body = admin_req(p, admin, "POST", "/v1/devices", "id=crash");
    body.lines()
        .last()
        .unwrap()
        .split_once(',')
        .unwrap()
        .1
        .to_string()
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = start(tmp.path());
    let admin = p.admin.clone().expect("first start shows the admin token");
    let token = create_device(&p, &admin);
    let base = common::hour_ago() - 86_400;
    let mut acked = BTreeMap::new();
    // 4 kill cycles in CI; `CRASH_CYCLES=100 cargo test --test
    // crash` is the long version.
    let cycles: i64 = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
        .clamp(1, 1000);
    for cycle in 0..cycles {
        acked.extend(load_then_kill(
            &mut p,
            &token,
            base,
            cycle * 8_000,
            300 + 100 * (cycle % 5) as u64,
            |k| k * 7,
        ));
        p = start(tmp.path());
        assert!(p.admin.is_none(), "restart must not create a second admin");
    }
    assert!(
        acked.len() > 20,
        "the load got some acknowledgements: {}",
        acked.len()
    );

    assert_all_stored_once(&p, &admin, base, &acked);
    // The digest hand-off survived the kills too: the device's last
    // contact was recorded (replayed from the digest log if need be).
    let list = admin_req(&p, &admin, "GET", "/v1/devices", "");
    let row = list
        .lines()
        .find(|l| l.starts_with("crash,"))
        .expect("device listed");
    let last_seen = row.split(',').nth(4).expect("last_seen column");
    assert!(!last_seen.is_empty(), "last_seen recorded: {row}");
}

/// One counter of `/metrics`.
fn metric(p: &Proc, name: &str) -> f64 {
    let body = http(p.addr, "GET /metrics HTTP/1.0\r\n\r\n").unwrap_or_default();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn sigkill_while_sealing_loses_no_acknowledged_reading() {
    // Sealing as eagerly as it goes: after every commit the sensor's
    // chunks, the live one included (its hour is long over), are sealed,
    // and the next commit re-opens it. Kills land mid-seal, mid-reopen
    // and mid-commit alike.
    const EAGER: &str = "[storage]\nseal_idle_secs = 0\nseal_chunks_per_step = 3\n";
    let tmp = tempfile::tempdir().unwrap();
    let mut p = start_with(tmp.path(), EAGER);
    let admin = p.admin.clone().expect("first start shows the admin token");
    let token = create_device(&p, &admin);
    let base = common::hour_ago() - 86_400;
    let mut acked = BTreeMap::new();
    let cycles: i64 = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
        .clamp(1, 1000);
    let mut sealed_under_load = 0.0;
    for cycle in 0..cycles {
        // Readings 1 s apart: a cycle crosses into new chunks too.
        acked.extend(load_probe_kill(
            &mut p,
            &token,
            base,
            cycle * 8_000,
            (300 + 100 * (cycle % 5) as u64, 0),
            |k| k * 7,
            |p| sealed_under_load += metric(p, "overlord_chunks_sealed_total"),
        ));
        p = start_with(tmp.path(), EAGER);
    }
    assert!(acked.len() > 20, "some acknowledgements: {}", acked.len());
    assert!(sealed_under_load > 0.0, "chunks were sealed under load");
    assert_all_stored_once(&p, &admin, base, &acked);
    // After the start has sealed everything, still all there, once.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metric(&p, "overlord_seal_pending_sensors") > 0.0 {
        assert!(std::time::Instant::now() < deadline, "sealing finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_all_stored_once(&p, &admin, base, &acked);
}

#[test]
fn sigkill_around_an_idle_compaction_loses_no_acknowledged_reading() {
    // The file is compacted 1 s after the last request; each cycle's kill
    // lands a different time after its load stops: before, during or
    // after that compaction (each of redb's passes is one atomic commit).
    const IDLE: &str = "[storage]\nseal_idle_secs = 0\ncompact_idle_secs = 1\n";
    let tmp = tempfile::tempdir().unwrap();
    let mut p = start_with(tmp.path(), IDLE);
    let admin = p.admin.clone().expect("first start shows the admin token");
    let token = create_device(&p, &admin);
    let base = common::hour_ago() - 86_400;
    // A file worth compacting (over 256 KiB): a past day of four other
    // sensors, one reading every 2 s.
    let mut body = String::from("time,N2,N3,N4,N5\n");
    for i in 0..43_200i64 {
        let t = base - 86_400 + 2 * i;
        body.push_str(&format!(
            "{t},{}.{},{},{},{}\n",
            i % 40,
            i % 10,
            i % 7,
            i,
            i / 3
        ));
    }
    let r = http(
        p.addr,
        &format!(
            "POST /v1/readings?device=crash&token={token} HTTP/1.0\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    let mut acked = BTreeMap::new();
    let mut compactions = 0.0;
    for cycle in 0..6i64 {
        let quiet = 900 + 150 * cycle as u64;
        acked.extend(load_probe_kill(
            &mut p,
            &token,
            base,
            cycle * 8_000,
            (300, quiet),
            |k| k * 3,
            |p| compactions += metric(p, "overlord_compactions_total"),
        ));
        p = start_with(tmp.path(), IDLE);
    }
    assert!(acked.len() > 20, "some acknowledgements: {}", acked.len());
    assert!(compactions > 0.0, "compactions ran before some kills");
    assert_all_stored_once(&p, &admin, base, &acked);
}

/// The reading that breaks the alert's threshold; every other is normal.
const HOT: i64 = 37;

fn hot_once(k: i64) -> i64 {
    if k == HOT {
        150
    } else {
        50 + k % 40
    }
}

#[test]
fn sigkill_after_acks_fans_out_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = start(tmp.path());
    let admin = p.admin.clone().unwrap();
    let token = create_device(&p, &admin);
    admin_req(&p, &admin, "POST", "/v1/channels", "name=stream");
    admin_req(
        &p,
        &admin,
        "POST",
        "/v1/channels/stream/members",
        "device=crash&sensor=I1",
    );
    admin_req(
        &p,
        &admin,
        "POST",
        "/v1/alerts",
        "name=hot&device=crash&sensor=I1&max=100",
    );
    let base = common::hour_ago() - 86_400;
    let mut acked = BTreeMap::new();
    for cycle in 0..3 {
        acked.extend(load_then_kill(
            &mut p,
            &token,
            base,
            cycle * 8_000,
            250 + 100 * cycle as u64,
            hot_once,
        ));
        p = start(tmp.path());
    }
    assert!(
        acked.len() > 20,
        "the load got some acknowledgements: {}",
        acked.len()
    );
    // Wait (bounded) for the digest to replay what it had not finished.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut rows: Vec<String>;
    loop {
        let body = admin_req(
            &p,
            &admin,
            "GET",
            "/v1/channels/stream/items?after=0&limit=1000000",
            "",
        );
        rows = body.lines().skip(1).map(String::from).collect();
        let seen: std::collections::BTreeSet<String> = rows
            .iter()
            .map(|r| r.split(',').nth(1).unwrap().to_string())
            .collect();
        let all_in = acked
            .keys()
            .all(|k| seen.contains(&common::rfc3339(base + k)));
        if all_in || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut by_time: BTreeMap<String, i64> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(
            f[0].parse::<usize>().unwrap(),
            i + 1,
            "channel indexes are dense: {row}"
        );
        let prev = by_time.insert(f[1].to_string(), f[4].parse().unwrap());
        assert!(prev.is_none(), "reading at {} on the channel twice", f[1]);
    }
    for (k, v) in &acked {
        let t = common::rfc3339(base + k);
        assert_eq!(
            by_time.get(&t),
            Some(v),
            "acknowledged reading {k} missing from the channel"
        );
    }
    let events = admin_req(&p, &admin, "GET", "/v1/alerts/hot/events", "");
    let fired = events.lines().count() - 1;
    assert!(fired <= 1, "one excursion fires at most once: {events}");
    if acked.contains_key(&HOT) {
        assert_eq!(
            fired, 1,
            "the acknowledged hot reading fired the alert: {events}"
        );
    }
}

/// A supervisor may stop a service the moment it has started: a SIGTERM
/// right after "listening on" is a clean shutdown too (the handler was
/// installed before the line was printed), not the default disposition's
/// kill, which leaves a file that needs a repair.
#[test]
fn sigterm_right_after_listening_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    // The window was microseconds: the signal is sent the moment the line
    // is read (no `kill` process in between), a number of times.
    for _ in 0..20 {
        let mut p = start(tmp.path());
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) }, 0);
        let code = p.child.wait().unwrap();
        assert!(code.success(), "exit status {code:?}");
    }
}

#[test]
fn sigterm_finishes_in_flight_work_and_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = start(tmp.path());
    let admin = p.admin.clone().unwrap();
    let token = create_device(&p, &admin);
    let base = common::hour_ago() - 86_400;
    // Load for a moment, then SIGTERM instead of SIGKILL.
    let acked: Arc<Mutex<BTreeMap<i64, i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for th in 0..4i64 {
        let (acked, stop, token, addr) = (acked.clone(), stop.clone(), token.clone(), p.addr);
        threads.push(std::thread::spawn(move || {
            let mut k = th;
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = format!(
                    "GET /v1/readings?device=crash&token={token}&I1={k}&time={} HTTP/1.0\r\n\r\n",
                    base + k
                );
                match http(addr, &req) {
                    Ok(r) if r.starts_with("HTTP/1.0 200") => {
                        acked.lock().unwrap().insert(k, k);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
                k += 4;
            }
        }));
    }
    // Under load: the SIGTERM comes once requests are being acknowledged
    // (bounded poll).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 20 {
        assert!(std::time::Instant::now() < deadline, "the load never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(p.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    // It exits by itself, well within the grace period, with status 0.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(code.success(), "exit status {code:?}");
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let p = start(tmp.path());
    let body = admin_req(
        &p,
        &admin,
        "GET",
        "/v1/devices/crash/readings?sensors=I1&limit=1000000",
        "",
    );
    let rows = body.lines().count() - 1;
    for k in acked.keys() {
        assert!(
            body.contains(&format!("{},{k}\n", common::rfc3339(base + k))),
            "acknowledged {k} lost"
        );
    }
    assert!(rows >= acked.len());
}

/// Items of channel `ch` after `after` (`wait` seconds of long-poll):
/// `(index, the whole row)`; `None` when the server is gone.
fn follow(
    addr: SocketAddr,
    admin: &str,
    ch: &str,
    after: u64,
    wait: u32,
) -> Option<Vec<(u64, String)>> {
    let r = http(
        addr,
        &format!(
            "GET /v1/channels/{ch}/items?after={after}&limit=100000&wait={wait} HTTP/1.0\r\nAuthorization: Bearer {admin}\r\n\r\n"
        ),
    )
    .ok()?;
    let (head, body) = r.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(
        body.lines()
            .skip(1)
            .map(|l| (l.split(',').next().unwrap().parse().unwrap(), l.to_string()))
            .collect(),
    )
}

/// A follower long-polls a channel fed by CSV bodies that each hold rows
/// of four devices (each digested by its own thread); the server is
/// SIGKILLed right after the follower has seen the last acknowledged
/// body's items, and restarted. Every index the follower saw must hold
/// the same row after the restart, and resuming from its last index gives
/// the rest with no gap and no duplicate.
#[test]
fn sigkill_never_renumbers_channel_items_a_follower_saw() {
    const DEVICES: [&str; 4] = ["ma", "mb", "mc", "md"];
    const EXTRA: &str = "[digest]\nworkers = 4\n";
    let tmp = tempfile::tempdir().unwrap();
    let mut p = start_with(tmp.path(), EXTRA);
    let admin = p.admin.clone().unwrap();
    for d in DEVICES {
        admin_req(&p, &admin, "POST", "/v1/devices", &format!("id={d}"));
    }
    admin_req(&p, &admin, "POST", "/v1/channels", "name=mix");
    for d in DEVICES {
        admin_req(
            &p,
            &admin,
            "POST",
            "/v1/channels/mix/members",
            &format!("device={d}&sensor=I1"),
        );
    }
    let base = common::hour_ago() - 86_400;
    // Everything the follower ever saw, by index, across cycles.
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    let mut acked = 0usize;
    let mut k: i64 = 0;
    let cycles = 6;
    for cycle in 0..cycles {
        // Two bodies of 100 rows (25 per device), each acknowledged
        // before the next; readings are unique by (device, time).
        for _ in 0..2 {
            let mut body = String::from("time,device,I1\n");
            for _ in 0..25 {
                for d in DEVICES {
                    body.push_str(&format!("{},{d},{k}\n", base + k));
                }
                k += 1;
            }
            let r = http(
                p.addr,
                &format!(
                    "POST /v1/readings HTTP/1.0\r\nAuthorization: Bearer {admin}\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            )
            .unwrap();
            assert!(r.starts_with("HTTP/1.0 200"), "{r}");
            acked += 100;
        }
        // Follow until every acknowledged reading's item is there
        // (bounded), then kill at once: nothing else was written since.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < acked {
            assert!(
                std::time::Instant::now() < deadline,
                "cycle {cycle}: the follower saw {} of {acked} items",
                seen.len()
            );
            let after = seen.keys().next_back().copied().unwrap_or(0);
            for (i, row) in follow(p.addr, &admin, "mix", after, 2).expect("server up") {
                assert!(seen.insert(i, row).is_none(), "index {i} served twice");
            }
        }
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        p = start_with(tmp.path(), EXTRA);
        // What the follower saw is still there, at the same indexes.
        let all: BTreeMap<u64, String> = follow(p.addr, &admin, "mix", 0, 0)
            .expect("server up")
            .into_iter()
            .collect();
        for (i, row) in &seen {
            assert_eq!(
                all.get(i),
                Some(row),
                "cycle {cycle}: index {i} changed after the crash"
            );
        }
        // Resuming from the last index seen: nothing missed, nothing twice.
        let last = *seen.keys().next_back().unwrap();
        let rest = follow(p.addr, &admin, "mix", last, 0).expect("server up");
        let mut idx: Vec<u64> = seen.keys().copied().collect();
        idx.extend(rest.iter().map(|(i, _)| *i));
        let want: Vec<u64> = (1..=idx.len() as u64).collect();
        assert_eq!(idx, want, "cycle {cycle}: indexes dense from 1");
        let mut readings = std::collections::BTreeSet::new();
        for row in seen.values().chain(rest.iter().map(|(_, r)| r)) {
            let f: Vec<&str> = row.split(',').collect();
            assert!(
                readings.insert((f[1].to_string(), f[2].to_string())),
                "cycle {cycle}: reading on the channel twice: {row}"
            );
        }
        assert_eq!(readings.len(), acked, "cycle {cycle}: every reading once");
    }
}
