//! Bounds a hostile or broken client runs into: the connection cap and the
//! header timeout. Each is a config key; the tests set small values.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::TestServer;

#[test]
fn connections_over_the_cap_get_503_with_retry_after() {
    let s = TestServer::start_with(|c| c.limits.max_connections = 2);
    // Two idle clients hold both slots (until the header timeout).
    let a = TcpStream::connect(s.addr).unwrap();
    let b = TcpStream::connect(s.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let r = s.get("/healthz");
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
