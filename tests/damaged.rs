//! A damaged data file: bytes flipped in the middle while the server was
//! stopped. Queries get a clean error, writes are never acknowledged,
//! `overlord check` says so; a healthy file checks clean.

mod common;

use common::TestServer;

/// Start, store `n` readings of device `d` (one body), stop; the kept dir
/// and admin token, the device token, and the reading base time.
fn file_with_readings(n: i64) -> (tempfile::TempDir, String, String, i64) {
    // Sealing off while it is written: the readings stay in the hot chunks
    // that fill the file, so the bytes flipped in its middle hit them (with
    // sealing, the middle of this file is mostly pages sealing freed).
    let s = TestServer::start_with(|c| {
        c.limits.device_requests_per_sec = 0.0;
        c.storage.seal_chunks_per_step = 0;
    });
    let tok = s.create_device("d");
    let base = common::hour_ago() - 30 * 86_400;
    let mut body = String::from("time,I1,N2\n");
    for k in 0..n {
        body.push_str(&format!("{},{},{}.5\n", base + k * 60, k, k));
    }
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (tmp, admin) = s.stop();
    (tmp, admin, tok, base)
}

/// Flip 256 bytes at `pct` percent of the file (server stopped).
fn flip_at(path: &std::path::Path, pct: usize) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    flip_bytes(path, len * pct / 100, 256);
}

/// Flip `n` bytes from byte `at` (server stopped).
fn flip_bytes(path: &std::path::Path, at: usize, n: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    for b in &mut bytes[at..at + n] {
        *b ^= 0xA5;
    }
    std::fs::write(path, bytes).unwrap();
}

/// Every reply of a damaged store is one error line with a 5xx status.
fn assert_damaged_reply(r: &common::Reply, what: &str) {
    assert!(r.status >= 500, "{what}: {r:?}");
    assert_eq!(r.body.lines().count(), 1, "{what}: one line: {r:?}");
    assert!(r.body.starts_with("error,storage"), "{what}: {r:?}");
}

#[test]
fn a_damaged_file_refuses_writes_and_answers_with_error_lines() {
    let (tmp, admin, tok, base) = file_with_readings(20_000);
    let data = tmp.path().join("overlord.redb");
    // Pages in the middle of the file hold readings that a query reads.
    flip_at(&data, 50);
    let s = TestServer::restart(tmp, admin.clone(), |c| {
        c.limits.device_requests_per_sec = 0.0;
    });
    let q = s.get(&format!("/v1/devices/d/readings?token={tok}&limit=100000"));
    assert_damaged_reply(&q, "query of the damaged range");
    // From then on nothing is acknowledged into the file: readings and
    // management writes are refused, and /healthz says why.
    for k in 0..3 {
        let w = s.get(&format!(
            "/v1/readings?device=d&token={tok}&I1=5&time={}",
            base - 3600 + k
        ));
        assert_damaged_reply(&w, "a reading");
        assert_eq!(w.error_code(), "storage_damaged", "{w:?}");
    }
    let m = s.post(
        "/v1/devices",
        "application/x-www-form-urlencoded",
        b"id=after-damage",
        &format!("Authorization: Bearer {admin}\r\n"),
    );
    assert_damaged_reply(&m, "a management write");
    let h = s.get("/healthz");
    assert_eq!(h.status, 500, "{h:?}");
    assert_eq!(h.error_code(), "storage_damaged");
    // Reads that do not touch the damage still work.
    let r = s.get_admin("/v1/devices");
    assert_eq!(r.status, 200, "{r:?}");
    let (tmp, _) = s.stop();
    // `overlord check` finds it, without changing the file.
    let before = std::fs::read(&data).unwrap();
    let (ok, out, err) = common::cli(&data, &["check"], &[], None);
    assert!(!ok, "check must fail on a damaged file: {out}");
    assert!(out.starts_with("what,rows,state\n"), "{out}");
    assert!(out.contains("damaged"), "{out}");
    assert!(
        err.contains("is damaged") && err.contains("restore"),
        "a clear message: {err}"
    );
    assert_eq!(
        std::fs::read(&data).unwrap(),
        before,
        "check wrote the file"
    );
    drop(tmp);
}

#[test]
fn a_file_that_does_not_open_stops_the_server_with_a_message() {
    let (tmp, _admin, _tok, _base) = file_with_readings(20_000);
    let data = tmp.path().join("overlord.redb");
    // The header after redb's magic number: its commit slots, which every
    // open reads, whatever the layout of the pages behind them (a flip at
    // a fixed share of the file missed them in some runs).
    flip_bytes(&data, 16, 256);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_overlord"))
        .arg("--config")
        .arg(common::config_file(&data))
        .env("OVERLORD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: it must exit by itself; a server that starts is killed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let status = status.expect("the server started on a damaged file");
    assert_eq!(status.code(), Some(1), "a clean exit, not a panic: {err}");
    assert!(
        err.contains("data file damaged") && err.contains("overlord check"),
        "{err}"
    );
    let (ok, out, _) = common::cli(&data, &["check"], &[], None);
    assert!(!ok && out.contains("damaged"), "{out}");
}

#[test]
fn a_healthy_file_checks_clean() {
    let (tmp, _admin, _tok, _base) = file_with_readings(2_000);
    let data = tmp.path().join("overlord.redb");
    let (ok, out, err) = common::cli(&data, &["check"], &[], None);
    assert!(ok, "{out} {err}");
    assert!(out.contains("\nreadings,"), "{out}");
    assert!(out.contains("\nintegrity,0,ok\n"), "{out}");
    assert!(out.ends_with("ok\n"), "{out}");
    assert!(!out.contains("damaged"), "{out}");
    // No copy is left beside the file.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("check"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn verify_on_start_finds_damage_before_serving() {
    let (tmp, _admin, _tok, _base) = file_with_readings(20_000);
    let data = tmp.path().join("overlord.redb");
    flip_at(&data, 50);
    let mut c = common::config(tmp.path());
    c.verify_on_start = true;
    match overlord::app::open(c.into()) {
        Ok(_) => panic!("a damaged file was opened with verify_on_start"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("damaged") && msg.contains("overlord check"),
                "{msg}"
            );
        }
    }
    // The same file without verification opens (the damage shows later,
    // as the test above shows).
    let c = common::config(tmp.path());
    assert!(overlord::app::open(c.into()).is_ok());
}
