//! Hostile MQTT input as raw bytes: garbage and other protocols,
//! oversized and malformed remaining lengths, QoS 2, a silent client
//! (CONNECT timeout, keep-alive), a client that never reads (dropped, not
//! buffered), many idle connections against the cap, guessed passwords
//! (throttled like HTTP). After each, the server still serves.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::mqtt::{
    closed_within, connect_as, connect_packet, publish_packet, raw_connect, read_packet,
};
use common::TestServer;

const WAIT: Duration = Duration::from_secs(10);

/// CONNACK bytes: `20 02 00 rc` (3.1.1); for MQTT 5 the code is byte 1
/// of the body.
fn connack_code(ack: &Option<(u8, Vec<u8>)>) -> u8 {
    let (kind, body) = ack.as_ref().expect("a CONNACK");
    assert_eq!(*kind, 0x20, "CONNACK");
    body[1]
}

/// A good QoS 1 publish still gets its PUBACK: the server is healthy.
fn still_serves(s: &TestServer, tok: &str) {
    let (mut c, ack) = raw_connect(s.mqtt.unwrap(), 4, "dev1", tok, 60);
    assert_eq!(connack_code(&ack), 0);
    c.write_all(&publish_packet(4, "overlord/dev1/readings", b"N1=1", 1, 9))
        .unwrap();
    let (kind, body) = read_packet(&mut c, WAIT).expect("PUBACK");
    assert_eq!((kind, body), (0x40, vec![0, 9]));
}

#[test]
fn garbage_and_other_protocols_are_closed() {
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let addr = s.mqtt.unwrap();
    // HTTP on the MQTT port: closed, nothing answered.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (closed, got) = closed_within(&mut c, WAIT);
    assert!(closed && got.is_empty(), "{got:?}");
    // MQTT 3.1 ("MQIsdp", level 3): "unacceptable protocol version".
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"\x10\x0c\x00\x06MQIsdp\x03\x02\x00\x3c")
        .unwrap();
    let (closed, got) = closed_within(&mut c, WAIT);
    assert!(closed, "closed");
    assert_eq!(got, vec![0x20, 2, 0, 1]);
    // A CONNECT with another protocol name: closed.
    let mut bad = connect_packet(4, "dev1", &tok, 60);
    bad[4..8].copy_from_slice(b"MQTX");
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(&bad).unwrap();
    let (closed, got) = closed_within(&mut c, WAIT);
    assert!(closed && got.is_empty(), "{got:?}");
    // A publish before CONNECT: closed.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(&publish_packet(4, "overlord/dev1/readings", b"N1=1", 0, 0))
        .unwrap();
    let (closed, got) = closed_within(&mut c, WAIT);
    assert!(closed && got.is_empty(), "{got:?}");
    still_serves(&s, &tok);
}

#[test]
fn oversized_and_malformed_lengths_are_refused_from_the_header() {
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let addr = s.mqtt.unwrap();
    // Before CONNECT: a CONNECT claiming 256 MiB, and nothing after it.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(&[0x10, 0xff, 0xff, 0xff, 0x7f]).unwrap();
    let (closed, got) = closed_within(&mut c, WAIT);
    assert!(closed && got.is_empty(), "{got:?}");
    // A remaining length of five bytes.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]).unwrap();
    let (closed, _) = closed_within(&mut c, WAIT);
    assert!(closed);
    // After CONNECT, 3.1.1: a PUBLISH claiming 256 MiB is closed at once.
    let (mut c, ack) = raw_connect(addr, 4, "dev1", &tok, 60);
    assert_eq!(connack_code(&ack), 0);
    c.write_all(&[0x30, 0xff, 0xff, 0xff, 0x7f]).unwrap();
    let (closed, got) = closed_within(&mut c, WAIT);
    assert!(closed && got.is_empty(), "{got:?}");
    // MQTT 5 is told why: DISCONNECT "packet too large" (0x95).
    let (mut c, ack) = raw_connect(addr, 5, "dev1", &tok, 60);
    assert_eq!(connack_code(&ack), 0);
    c.write_all(&[0x30, 0xff, 0xff, 0xff, 0x7f]).unwrap();
    let (kind, body) = read_packet(&mut c, WAIT).expect("DISCONNECT");
    assert_eq!((kind, body[0]), (0xe0, 0x95));
    assert!(closed_within(&mut c, WAIT).0);
    // QoS 2 is not supported: DISCONNECT 0x9B.
    let (mut c, _) = raw_connect(addr, 5, "dev1", &tok, 60);
    c.write_all(&publish_packet(5, "overlord/dev1/readings", b"N1=1", 2, 1))
        .unwrap();
    let (kind, body) = read_packet(&mut c, WAIT).expect("DISCONNECT");
    assert_eq!((kind, body[0]), (0xe0, 0x9b));
    // A SUBSCRIBE whose filter length runs past the packet: malformed.
    let (mut c, _) = raw_connect(addr, 5, "dev1", &tok, 60);
    c.write_all(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x40, b'a'])
        .unwrap();
    let (kind, body) = read_packet(&mut c, WAIT).expect("DISCONNECT");
    assert_eq!((kind, body[0]), (0xe0, 0x81));
    // A payload one byte over max_body_bytes (1 MiB in tests) frames
    // fine but is refused like an HTTP body: PUBACK 0x97, too_large.
    let (mut c, _) = raw_connect(addr, 5, "dev1", &tok, 60);
    let big = vec![b'1'; (1 << 20) + 1];
    c.write_all(&publish_packet(5, "overlord/dev1/readings", &big, 1, 7))
        .unwrap();
    let (kind, body) = read_packet(&mut c, WAIT).expect("PUBACK");
    assert_eq!((kind, &body[..3]), (0x40, &[0, 7, 0x97][..]));
    assert!(String::from_utf8_lossy(&body).contains("error,too_large,"));
    let r = s.get_admin("/v1/devices/dev1/readings?sensors=N1");
    assert_eq!(r.body.lines().count(), 1, "nothing stored: {}", r.body);
    still_serves(&s, &tok);
}

#[test]
fn silent_clients_are_closed_at_the_connect_timeout_and_keep_alive() {
    let s = TestServer::start_with(|c| c.mqtt.connect_timeout_secs = 1);
    let tok = s.create_device("dev1");
    let addr = s.mqtt.unwrap();
    // Connected, nothing sent: closed after the CONNECT timeout.
    let mut c = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut c, WAIT).0,
        "closed at the CONNECT timeout"
    );
    // Half a CONNECT: the same.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(&connect_packet(4, "dev1", &tok, 60)[..7])
        .unwrap();
    assert!(
        closed_within(&mut c, WAIT).0,
        "closed at the CONNECT timeout"
    );
    // Keep-alive 1 s, then silence: MQTT 5 gets DISCONNECT 0x8D.
    let (mut c, ack) = raw_connect(addr, 5, "dev1", &tok, 1);
    assert_eq!(connack_code(&ack), 0);
    let (kind, body) = read_packet(&mut c, WAIT).expect("DISCONNECT");
    assert_eq!((kind, body[0]), (0xe0, 0x8d));
    // Keep-alive 2 s with a PINGREQ every 300 ms: kept for 4 s.
    let (mut c, _) = raw_connect(addr, 4, "dev1", &tok, 2);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        c.write_all(&[0xc0, 0x00]).unwrap();
        let pong = read_packet(&mut c, WAIT).expect("PINGRESP");
        assert_eq!(pong, (0xd0, vec![]));
        // Not a wait for the server: the client paces its pings (the
        // keep-alive under test).
        std::thread::sleep(Duration::from_millis(300));
    }
    still_serves(&s, &tok);
}

/// A TCP connection to `addr` with a tiny receive buffer, so a client that
/// does not read fills it fast.
fn small_window(addr: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("IPv4 loopback")
    };
    // SAFETY: a fresh socket, set up and connected before std owns it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect");
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn a_client_that_never_reads_is_dropped_not_buffered() {
    let s = TestServer::start_with(|c| {
        c.mqtt.outgoing_queue = 4;
        c.mqtt.write_timeout_secs = 1;
    });
    let tok = s.create_device("dev1");
    let mut c = small_window(s.mqtt.unwrap());
    c.write_all(&connect_packet(4, "dev1", &tok, 60)).unwrap();
    // PINGREQs, never reading a PINGRESP, until the server gives up on
    // us (our writes fail) or 64 MiB went out.
    const MAX: usize = 64 << 20;
    let pings = [0xc0u8, 0x00].repeat(8192);
    c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let dropped = loop {
        if sent >= MAX || Instant::now() > deadline {
            break false;
        }
        match c.write(&pings) {
            Ok(n) => sent += n,
            Err(_) => break true,
        }
    };
    assert!(dropped, "still connected after {sent} bytes of PINGREQ");
    // What we get back is far less than a PINGRESP per PINGREQ: the
    // server did not keep them for us.
    let (_, got) = closed_within(&mut c, WAIT);
    assert!(got.len() < sent, "{} of {sent}", got.len());
    still_serves(&s, &tok);
}

/// The soft limit on open files of this process (Linux), if readable.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn many_idle_connections_fill_the_cap_and_no_more() {
    // Each connection is two descriptors here (client and server side).
    let limit = open_files_limit().unwrap_or(1024);
    let n = 400.min(limit.saturating_sub(200) / 2);
    assert!(
        n >= 50,
        "open-files limit {limit} is too small for this test"
    );
    let s = TestServer::start_with(|c| c.mqtt.max_connections = n);
    let tok = s.create_device("dev1");
    let addr = s.mqtt.unwrap();
    let mut idle = Vec::with_capacity(n);
    for i in 0..n {
        let (c, ack) = raw_connect(addr, 4, "dev1", &tok, 60);
        assert_eq!(connack_code(&ack), 0, "connection {i}");
        idle.push(c);
    }
    // Over the cap: "server unavailable" (3.1.1), "server busy" (5).
    let (_, ack) = raw_connect(addr, 4, "dev1", &tok, 60);
    assert_eq!(connack_code(&ack), 3);
    let (_, ack) = raw_connect(addr, 5, "dev1", &tok, 60);
    assert_eq!(connack_code(&ack), 0x89);
    // HTTP is not affected, and /metrics counts them.
    assert_eq!(s.get("/healthz").status, 200);
    let m = common::scrape(&s);
    assert_eq!(common::m(&m, "overlord_mqtt_connections_open"), n as f64);
    assert_eq!(
        common::m(&m, "overlord_mqtt_connections_refused_total"),
        2.0
    );
    // One goes away; a new one gets its slot.
    drop(idle.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, ack) = raw_connect(addr, 4, "dev1", &tok, 60);
        if connack_code(&ack) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_same_client_id_again_ends_the_old_connection() {
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let tok2 = s.create_device("dev2");
    let addr = s.mqtt.unwrap();
    let open = |user: &str, pass: &str| {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&connect_as("board", 4, user, pass, 60))
            .unwrap();
        let ack = read_packet(&mut c, WAIT);
        assert_eq!(connack_code(&ack), 0);
        c
    };
    let mut first = open("dev1", &tok);
    // Another device with the same client id is another session.
    let mut other = open("dev2", &tok2);
    // dev1 back with the same id (a board after a dropped link): the old
    // connection is closed, the new one serves.
    let mut second = open("dev1", &tok);
    assert!(closed_within(&mut first, WAIT).0, "the old connection ends");
    for c in [&mut second, &mut other] {
        c.write_all(&[0xc0, 0x00]).unwrap();
        assert_eq!(read_packet(c, WAIT), Some((0xd0, vec![])));
    }
}

#[test]
fn guessed_passwords_are_throttled_like_http() {
    let s = TestServer::start_with(|c| c.limits.auth_failures_per_window = 2);
    let tok = s.create_device("dev1");
    let addr = s.mqtt.unwrap();
    for _ in 0..2 {
        let (_, ack) = raw_connect(addr, 4, "dev1", "guess", 60);
        assert_eq!(connack_code(&ack), 4, "bad user name or password");
    }
    // Throttled: even the right token waits ("server unavailable"; MQTT 5
    // 0x88), and HTTP agrees.
    let (_, ack) = raw_connect(addr, 4, "dev1", &tok, 60);
    assert_eq!(connack_code(&ack), 3);
    let (_, ack) = raw_connect(addr, 5, "dev1", &tok, 60);
    assert_eq!(connack_code(&ack), 0x88);
    let r = s.get(&format!("/v1/readings?device=dev1&token={tok}"));
    assert_eq!(r.status, 429, "{}", r.body);
}
