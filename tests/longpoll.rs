//! Long-poll slots (`GET /v1/channels/CH/items?wait=S`): a client that
//! goes away gives its slot back at once, a half-closed client is answered
//! at once, and one caller cannot take every slot.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::{m, scrape, scrape_until, TestServer};

const WAITING: &str = "overlord_long_polls_waiting";

/// A server with a public channel `pub` (anonymous read) and a device
/// `d` feeding it.
fn server(total: usize, per_caller: usize) -> (TestServer, String) {
    let s = TestServer::start_with(|c| {
        c.limits.max_long_polls = total;
        c.limits.max_long_polls_per_caller = per_caller;
    });
    let tok = s.create_device("d");
    assert_eq!(s.admin_form("POST", "/v1/channels", "name=pub").status, 201);
    let r = s.admin_form("POST", "/v1/channels/pub/members", "device=d&sensor=N1");
    assert!(r.status < 300, "{}", r.body);
    let r = s.admin_form(
        "POST",
        "/v1/grants",
        "resource=channel:pub&to=anonymous&level=read",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    (s, tok)
}

/// Connect to `addr` from the loopback address `src`.
fn connect_from(src: IpAddr, addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(src, 0)).unwrap();
        sock.connect(addr).await.unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// Start a long-poll that would wait 60 s, anonymously from `src`;
/// the request is sent, the reply not read.
fn start_poll(s: &TestServer, src: IpAddr, extra: &str) -> TcpStream {
    let mut c = connect_from(src, s.addr);
    c.write_all(
        format!("GET /v1/channels/pub/items?after=0&wait=60 HTTP/1.1\r\nHost: t\r\n{extra}\r\n")
            .as_bytes(),
    )
    .unwrap();
    c
}

/// Read one reply's status line and body (up to the connection's end or
/// the first complete reply).
fn read_reply(c: &mut TcpStream) -> String {
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match c.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("no reply: {e} (have {:?})", String::from_utf8_lossy(&buf)),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[test]
fn closed_clients_give_their_slots_back_at_once() {
    let (s, _) = server(8, 8);
    let polls: Vec<TcpStream> = (0..8).map(|_| start_poll(&s, LOCAL, "")).collect();
    let got = scrape_until(&s, |g| m(g, WAITING) == 8.0);
    assert_eq!(m(&got, WAITING), 8.0);
    // Every slot is taken: the next one (from another caller) is
    // refused, not queued.
    let reply = read_reply(&mut start_poll(&s, OTHER, "Connection: close\r\n"));
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    assert!(reply.contains("\r\nRetry-After: "), "{reply}");
    assert!(reply.contains("\r\n\r\nerror,overloaded,"), "{reply}");
    // The clients go away (before their 60 s wait ends): the slots are
    // free again well before that.
    drop(polls);
    let got = scrape_until(&s, |g| m(g, WAITING) == 0.0);
    assert_eq!(
        m(&got, WAITING),
        0.0,
        "slots still held after the clients closed"
    );
    let r = s.get("/v1/channels/pub/items?after=0&wait=0.2");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "index,time,device,sensor,value\n");
}

#[test]
fn a_half_closed_client_gets_its_reply_at_once() {
    let (s, _) = server(8, 8);
    let mut c = start_poll(&s, LOCAL, "Connection: close\r\n");
    scrape_until(&s, |g| m(g, WAITING) == 1.0);
    // The board shuts its sending side and reads: the wait ends now (it
    // would be 60 s) with an empty page, and the slot is free.
    c.shutdown(Shutdown::Write).unwrap();
    let reply = read_reply(&mut c);
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\nindex,time,device,sensor,value\n"),
        "{reply}"
    );
    assert_eq!(m(&scrape(&s), WAITING), 0.0);
}

#[test]
fn one_caller_cannot_take_every_slot() {
    let (s, tok) = server(8, 2);
    // Anonymous callers are counted by source address.
    let _mine: Vec<TcpStream> = (0..2).map(|_| start_poll(&s, LOCAL, "")).collect();
    scrape_until(&s, |g| m(g, WAITING) == 2.0);
    let mut third = start_poll(&s, LOCAL, "Connection: close\r\n");
    let reply = read_reply(&mut third);
    assert!(reply.starts_with("HTTP/1.1 429 "), "{reply}");
    assert!(reply.contains("\r\nRetry-After: "), "{reply}");
    assert!(reply.contains("\r\n\r\nerror,rate_limited,"), "{reply}");
    // Another source, and a user, each still get their own share.
    let _theirs: Vec<TcpStream> = (0..2).map(|_| start_poll(&s, OTHER, "")).collect();
    let admin = format!("Authorization: Bearer {}\r\n", s.admin);
    let _admins: Vec<TcpStream> = (0..2).map(|_| start_poll(&s, LOCAL, &admin)).collect();
    let got = scrape_until(&s, |g| m(g, WAITING) == 6.0);
    assert_eq!(m(&got, WAITING), 6.0);
    // And a reading wakes them all with the item.
    let r = s.get(&format!("/v1/readings?device=d&token={tok}&N1=4.5"));
    assert_eq!(r.status, 200, "{}", r.body);
    for mut c in _admins {
        let reply = read_reply(&mut c);
        assert!(reply.contains(",d,N1,4.5\n"), "{reply}");
    }
}
