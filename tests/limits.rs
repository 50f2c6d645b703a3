//! Bounds a hostile or broken client runs into: the connection cap and the
//! header timeout. Each is a config key; the tests set small values.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::TestServer;

#[test]
fn connections_over_the_cap_get_503_with_retry_after() {
    let s = TestServer::start_with(|c| c.limits.max_connections = 2);
    // Two idle clients hold both slots (until the header timeout).
    let a = TcpStream::connect(s.addr).unwrap();
    let b = TcpStream::connect(s.addr).unwrap();
    // Bounded poll until the server has taken both (a request that still
    // found a slot is answered and leaves).
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = s.get("/healthz");
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "overloaded");
    assert_eq!(r.header("Retry-After"), Some("1"));
    drop(a);
    drop(b);
    // Slots come back when the idle clients leave.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.get("/healthz");
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stalled_head_is_cut_and_others_are_served() {
    let s = TestServer::start_with(|c| c.limits.header_timeout_secs = 1);
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
    // Meanwhile a normal client is served at once.
    assert_eq!(s.get("/healthz").status, 200);
    // The stalled one is closed by the server (bounded by a generous read
    // timeout so a broken server fails the test instead of hanging it).
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    let res = slow.read_to_end(&mut buf);
    assert!(
        res.is_ok(),
        "the server closed the stalled connection: {res:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
}

/// A connection to `to` from the loopback address `ip` (every 127.x.y.z
/// is loopback), as a blocking std stream.
fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        let stream = sock.connect(to).await.expect("connect");
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

/// `GET path` from the loopback address `ip`; the whole reply.
fn get_from(ip: &str, to: SocketAddr, path: &str) -> common::Reply {
    let mut c = connect_from(ip, to);
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = c.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut buf = Vec::new();
    match c.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !buf.is_empty() => {}
        Err(e) => panic!("read reply: {e}"),
    }
    common::parse(&buf)
}

#[test]
fn one_source_cannot_take_every_slot_and_a_new_source_still_gets_healthz() {
    let s = TestServer::start_with(|c| {
        c.limits.max_connections = 8;
        c.limits.max_connections_per_source = 4;
        // The idle clients below must outlive the test's steps.
        c.limits.header_timeout_secs = 60;
    });
    let refused = |r: common::Reply, what: &str| {
        assert_eq!(r.status, 503, "{what}: {}", r.body);
        assert_eq!(r.error_code(), "overloaded", "{what}");
        assert_eq!(r.header("Retry-After"), Some("1"), "{what}");
    };
    // One address holds its four idle connections (the server accepts in
    // arrival order, so they are counted before the next one)...
    let mut first: Vec<TcpStream> = (0..4).map(|_| connect_from("127.0.0.1", s.addr)).collect();
    // ...and its fifth is refused, with half the slots still free.
    refused(
        get_from("127.0.0.1", s.addr, "/healthz"),
        "fifth from 127.0.0.1",
    );
    // A second address takes three: 7 of 8 slots are held.
    let second: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.2", s.addr)).collect();
    // The last slot is kept for a source with nothing open: not for
    // 127.0.0.2, though it is under its own cap...
    refused(
        get_from("127.0.0.2", s.addr, "/healthz"),
        "127.0.0.2 into the reserve",
    );
    // ...but a monitor on a third address is answered.
    let r = get_from("127.0.0.3", s.addr, "/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    // When the first address lets go, it is served again.
    first.clear();
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get_from("127.0.0.1", s.addr, "/healthz");
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slots never came back: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
