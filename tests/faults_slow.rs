//! Slow and idle clients: hundreds of connections that send half a request
//! head (or nothing) and stall do not keep a normal client from being
//! served, and the server cuts every one of them at the header timeout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::TestServer;

/// The soft limit on open files of this process (Linux), if readable.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn stalled_heads_are_cut_at_the_header_timeout_and_others_are_served() {
    // Client and server share this process: each stalled connection costs
    // two descriptors. Up to 600 of them, fewer under a small fd limit
    // (leaving room for the test harness, redb and the normal clients).
    let limit = open_files_limit().unwrap_or(1024);
    let n = 600.min(limit.saturating_sub(200) / 2);
    assert!(
        n >= 100,
        "open-files limit {limit} is too small for this test"
    );
    let s = TestServer::start_with(|c| {
        c.limits.header_timeout_secs = 1;
        c.limits.max_connections = n + 20;
        // Every client here is 127.0.0.1: the per-source cap (tests/limits.rs)
        // is not what this test is about.
        c.limits.max_connections_per_source = 0;
    });
    let tok = s.create_device("d");

    let mut stalled = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = TcpStream::connect(s.addr).expect("connect");
        // Two kinds: half a head, and nothing at all.
        if i % 2 == 0 {
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaa")
                .unwrap();
        }
        stalled.push(c);
    }
    let opened = Instant::now();

    // A normal client is served meanwhile (the bound is only a guard
    // against a hang: the read timeout of the harness).
    assert_eq!(s.get("/healthz").status, 200);
    let r = s.get(&format!("/v1/readings?device=d&token={tok}&I1=1"));
    assert_eq!(r.status, 200, "{}", r.body);

    // Every stalled connection is closed by the server: a read ends with
    // end-of-stream (or a reset), never by our own generous timeout.
    for (i, c) in stalled.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = Vec::new();
        match c.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("stalled connection {i} was not closed by the server: {e}"),
        }
        let text = String::from_utf8_lossy(&buf);
        assert!(
            !text.contains(" 200 "),
            "stalled connection {i} got {text:?}"
        );
    }
    // Cut at the timeout (1 s), with generous slack for a loaded machine;
    // not as late as our 20 s read timeout.
    assert!(
        opened.elapsed() < Duration::from_secs(15),
        "stalled connections were cut only after {:?}",
        opened.elapsed()
    );

    // Their slots are free again: as many fresh clients are served.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get("/healthz").status != 200 {
        assert!(Instant::now() < deadline, "slots never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(TcpStream::connect(s.addr).unwrap());
    }
    let r = s.get("/healthz");
    assert_eq!(r.status, 200, "freed slots were not reused: {}", r.body);
}

#[test]
fn a_head_trickled_byte_by_byte_is_cut_too() {
    // Slowloris: one byte every 200 ms keeps the connection busy but never
    // completes the head; the timeout is for the whole head, not per byte.
    let s = TestServer::start_with(|c| c.limits.header_timeout_secs = 1);
    let mut c = TcpStream::connect(s.addr).unwrap();
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for b in head.iter() {
        if c.write_all(std::slice::from_ref(b)).is_err() {
            cut = true;
            break;
        }
        // Not a wait for the server: the slow client under test.
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(12) {
            break;
        }
    }
    if !cut {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        match c.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the trickling client was never cut: {e}"),
        }
        assert!(!String::from_utf8_lossy(&buf).contains(" 200 "));
    }
    assert!(started.elapsed() < Duration::from_secs(12), "cut too late");
    assert_eq!(s.get("/healthz").status, 200);
}
