//! What a request can make the server hold or do before and while it is
//! parsed: a bound on fields and columns (a request of 80,000 form fields
//! once took 17 s of a request thread, unauthenticated), and an empty CSV
//! body that must not be taken for a heartbeat; bodies read only for a
//! known caller, and a bound on the bytes of all requests in flight.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{hour_ago, TestServer};

/// `n` distinct sensor fields `N1=1&N2=1&...`.
fn fields(n: usize) -> String {
    (1..=n)
        .map(|i| format!("N{i}=1"))
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn more_fields_than_max_fields_is_400_too_many_fields() {
    let s = TestServer::start();
    let tok = s.create_device("d");
    let max = overlord::codec::DEFAULT_MAX_FIELDS;
    let check = |what: &str, r: common::Reply| {
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert_eq!(r.error_code(), "too_many_fields", "{what}");
        assert!(
            r.body.contains(&format!("more than {max} fields")),
            "{what}: the limit is in the detail: {}",
            r.body
        );
        assert_eq!(r.body.lines().count(), 1, "{what}");
    };
    // Unauthenticated: refused for its size before anyone is looked up.
    let body = fields(5000);
    check(
        "anonymous form",
        s.post(
            "/v1/readings",
            "application/x-www-form-urlencoded",
            body.as_bytes(),
            "",
        ),
    );
    // Query string and form body count together.
    let q = fields(max / 2 + 1);
    let body = (max / 2 + 1..=max + 1)
        .map(|i| format!("I{i}=2"))
        .collect::<Vec<_>>()
        .join("&");
    check(
        "query and form",
        s.post(
            &format!("/v1/readings?device=d&token={tok}&{q}"),
            "application/x-www-form-urlencoded",
            body.as_bytes(),
            "",
        ),
    );
    check(
        "query",
        s.get(&format!(
            "/v1/readings?device=d&token={tok}&{}",
            fields(max + 1)
        )),
    );
    // A CSV header of more columns than that.
    let t = hour_ago();
    let header: Vec<String> = (1..=max + 1).map(|i| format!("N{i}")).collect();
    let row = vec!["1"; max + 1].join(",");
    let csv = format!("time,{}\n{t},{row}\n", header.join(","));
    check(
        "CSV header",
        s.post(
            &format!("/v1/readings?device=d&token={tok}"),
            "text/csv",
            csv.as_bytes(),
            "",
        ),
    );
    // A management form too.
    check(
        "management form",
        s.admin_form("POST", "/v1/channels", &"name=x&".repeat(max + 1)),
    );
    // Up to the limit is fine: one field less than max (device, token).
    let r = s.get(&format!(
        "/v1/readings?device=d&token={tok}&{}",
        fields(max - 2)
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.starts_with(&format!("ok,{},", max - 2)),
        "{}",
        r.body
    );
    // Nothing of the refused requests was stored: only N1..N(max-2) once.
    let q = s.get(&format!("/v1/devices/d/sensors?device=d&token={tok}"));
    assert_eq!(q.body.lines().count(), 1 + max - 2, "{}", &q.body[..200]);
}

#[test]
fn max_fields_is_configurable_and_wide_requests_work_under_it() {
    let s = TestServer::start_with(|c| c.limits.max_fields = 20_000);
    let tok = s.create_device("d");
    // 19,000 distinct columns in a CSV header and 5,000 form fields: the
    // duplicate checks are linear, so both are answered (they were
    // quadratic in the field count).
    let t = hour_ago();
    let n = 19_000;
    let header: Vec<String> = (1..=n).map(|i| format!("I{i}")).collect();
    let csv = format!(
        "time,{}\n{t},{}\n",
        header.join(","),
        vec!["7"; n].join(",")
    );
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "text/csv",
        csv.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with(&format!("ok,{n},")), "{}", r.body);
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "application/x-www-form-urlencoded",
        fields(5000).as_bytes(),
        "",
    );
    assert!(r.body.starts_with("ok,5000,"), "{}", r.body);
    // A repeat is still found, however late it comes.
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "application/x-www-form-urlencoded",
        format!("{}&n17=2", fields(5000)).as_bytes(),
        "",
    );
    assert_eq!((r.status, r.error_code()), (400, "duplicate_field"));
    assert!(r.body.contains("n17"), "{}", r.body);
}

#[test]
fn an_empty_csv_body_is_bad_csv_and_a_heartbeat_stays_a_heartbeat() {
    let s = TestServer::start();
    let tok = s.create_device("d");
    // A script whose file is missing sends an empty CSV body: that must not
    // look like success.
    for (ct, extra) in [
        ("text/csv", String::new()),
        ("text/csv; charset=utf-8", String::new()),
        ("application/csv", String::new()),
        ("text/csv", common::basic("d", &tok)),
    ] {
        let path = if extra.is_empty() {
            format!("/v1/readings?device=d&token={tok}")
        } else {
            "/v1/readings".to_string()
        };
        let r = s.post(&path, ct, b"", &extra);
        assert_eq!(r.status, 400, "{ct}: {}", r.body);
        assert_eq!(r.error_code(), "bad_csv", "{ct}");
        assert_eq!(r.body.lines().count(), 1);
    }
    // Heartbeats: a GET without values, an empty form POST, a form with
    // only credentials.
    let r = s.get(&format!("/v1/readings?device=d&token={tok}"));
    assert_eq!((r.status, r.body.as_str()), (200, "ok,0,0\n"));
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "application/x-www-form-urlencoded",
        b"",
        "",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ok,0,0\n"));
    let r = s.post(
        "/v1/readings",
        "application/x-www-form-urlencoded",
        format!("device=d&token={tok}").as_bytes(),
        "",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ok,0,0\n"));
    // A heartbeat still gets the pending inbox count (`ok,0,N`).
    let sent = s.admin_form("POST", "/v1/devices/d/inbox", "kind=message&value=hello");
    assert!(sent.status < 300, "{}", sent.body);
    let r = s.get(&format!("/v1/readings?device=d&token={tok}"));
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("ok,0,1\n"), "{}", r.body);
}

/// Send `head` and the first `part` bytes of a body, then read the reply
/// without sending the rest: `Err` if none comes within 30 s. The servers
/// of these tests wait `body_timeout_secs` = 120 s for a body, so a reply
/// within 30 s was sent without it, however loaded the machine.
fn reply_before_body(s: &TestServer, head: &str, part: &[u8]) -> std::io::Result<common::Reply> {
    let mut c = TcpStream::connect(s.addr)?;
    c.write_all(head.as_bytes())?;
    c.write_all(part)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Read until the whole reply is in (its head and `Content-Length`
    // bytes of body), not until the server closes.
    let complete = |buf: &[u8]| {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        len.is_some_and(|n| buf.len() >= end + 4 + n)
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !complete(&buf) {
        match c.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !buf.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    Ok(common::parse_first(&buf))
}

#[test]
fn wrong_credentials_are_refused_before_the_body_is_read() {
    let s = TestServer::start_with(|c| c.limits.body_timeout_secs = 120);
    let tok = s.create_device("d");
    // The last character changed (to one it is not: a token ending in '0'
    // made this test read the whole body of a valid request).
    let last = if tok.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &tok[..tok.len() - 1]);
    for (what, target, extra) in [
        (
            "query token",
            format!("/v1/readings?device=d&token={wrong}"),
            String::new(),
        ),
        (
            "Basic",
            "/v1/readings".to_string(),
            common::basic("d", &wrong),
        ),
        (
            "Bearer",
            "/v1/readings?device=d".to_string(),
            "Authorization: Bearer nope\r\n".to_string(),
        ),
    ] {
        // 900 KB declared (under max_body_bytes), 8 bytes sent.
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\nContent-Length: 900000\r\n{extra}\r\n"
        );
        let r = reply_before_body(&s, &head, b"time,N1\n")
            .unwrap_or_else(|e| panic!("{what}: no reply before the body was sent: {e}"));
        assert_eq!(
            (r.status, r.error_code()),
            (401, "unauthorized"),
            "{what}: {}",
            r.body
        );
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some("Basic realm=\"overlord\"")
        );
    }
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn a_large_body_needs_credentials_outside_it() {
    let s = TestServer::start_with(|c| c.limits.body_timeout_secs = 120);
    let tok = s.create_device("d");
    let t = hour_ago();
    // busybox wget puts the credentials in the form body: fine for a small
    // body...
    let small = format!("device=d&token={tok}&N1=1&time={t}");
    let r = s.post(
        "/v1/readings",
        "application/x-www-form-urlencoded",
        small.as_bytes(),
        "",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ok,1,0\n"));
    // ...but over max_unauthenticated_body_bytes (64 KiB) the body is not
    // read for a caller not known yet.
    let big = format!(
        "device=d&token={tok}&S1={}&time={}",
        "x".repeat(1000),
        t + 1
    ) + &"&".repeat(70_000);
    let r = s.post(
        "/v1/readings",
        "application/x-www-form-urlencoded",
        big.as_bytes(),
        "",
    );
    assert_eq!(
        (r.status, r.error_code()),
        (401, "unauthorized"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("credentials in the query or an Authorization header"),
        "{}",
        r.body
    );
    // Refused on its declared length, before it is sent...
    let head = format!(
        "POST /v1/readings HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let r = reply_before_body(&s, &head, &big.as_bytes()[..100]).expect("reply before the body");
    assert_eq!((r.status, r.error_code()), (401, "unauthorized"));
    // ...or, chunked, once it grows past the limit.
    let mut chunked =
        b"POST /v1/readings HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for piece in big.as_bytes().chunks(8192) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = s.raw(&chunked);
    assert_eq!(
        (r.status, r.error_code()),
        (401, "unauthorized"),
        "{}",
        r.body
    );
    // With the credentials in the query, the same body is read and stored.
    let body = big.replacen(&format!("device=d&token={tok}&"), "", 1);
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "application/x-www-form-urlencoded",
        body.as_bytes(),
        "",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ok,1,0\n"));
    let q = s.get(&format!("/v1/devices/d/readings?token={tok}&sensors=N1,S1"));
    assert_eq!(q.body.lines().count(), 3, "{}", q.body);
}

/// `rows` CSV rows of one reading each, older than an hour.
fn csv_rows(rows: usize) -> String {
    let t = hour_ago() - 1_000_000;
    let mut b = String::from("time,I1\n");
    for i in 0..rows {
        b.push_str(&format!("{},{}\n", t + i as i64, i % 10));
    }
    b
}

fn in_flight(s: &TestServer) -> f64 {
    common::m(&common::scrape(s), "overlord_body_bytes_in_flight")
}

#[test]
fn request_bytes_in_flight_are_bounded_and_come_back() {
    const KIB: usize = 1024;
    let s = TestServer::start_with(|c| {
        c.limits.body_budget_bytes = 384 * KIB;
        c.limits.body_timeout_secs = 60;
    });
    let tok = s.create_device("d");
    let path = format!("/v1/readings?device=d&token={tok}");
    let head = |len: usize| {
        format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    // Two uploads of 256 KiB, each stalled after 160 KiB.
    let body = csv_rows(30_000);
    assert!(body.len() > 256 * KIB);
    let body = &body.as_bytes()[..256 * KIB];
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(head(body.len()).as_bytes()).unwrap();
        c.write_all(&body[..160 * KIB]).unwrap();
        held.push(c);
    }
    // Barrier: the server has buffered both halves.
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight(&s) < (320 * KIB) as f64 {
        assert!(
            Instant::now() < deadline,
            "the halves never arrived: {}",
            in_flight(&s)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A third does not fit beside them: refused at once, with Retry-After.
    let mut third = head(body.len()).into_bytes();
    third.extend_from_slice(body);
    let r = s.raw(&third);
    assert_eq!(
        (r.status, r.error_code()),
        (503, "overloaded"),
        "{}",
        r.body
    );
    assert_eq!(r.header("Retry-After"), Some("1"));
    // The stalled ones leave; their bytes come back and uploads work again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight(&s) > 0.0 {
        assert!(
            Instant::now() < deadline,
            "bytes never came back: {}",
            in_flight(&s)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = s.post(&path, "text/csv", csv_rows(1000).as_bytes(), "");
    assert_eq!((r.status, r.body.as_str()), (200, "ok,1000,0\n"));
    assert_eq!(in_flight(&s), 0.0, "a finished request holds nothing");
}

#[test]
fn readings_parsed_from_a_body_count_against_the_budget() {
    let s = TestServer::start_with(|c| c.limits.body_budget_bytes = 512 * 1024);
    let tok = s.create_device("d");
    let path = format!("/v1/readings?device=d&token={tok}");
    // 200 KB of one-digit values: some 70 bytes of readings per 2 bytes of
    // body, far more than the whole budget.
    let t = hour_ago();
    let header: Vec<String> = (1..=1000).map(|i| format!("I{i}")).collect();
    let mut body = format!("time,{}\n", header.join(","));
    let row = vec!["1"; 1000].join(",");
    for k in 0..100 {
        body.push_str(&format!("{},{row}\n", t + k));
    }
    let r = s.post(&path, "text/csv", body.as_bytes(), "");
    assert_eq!((r.status, r.error_code()), (413, "too_large"), "{}", r.body);
    assert!(r.body.contains("body_budget_bytes"), "{}", r.body);
    assert_eq!(in_flight(&s), 0.0);
    // A body whose readings fit is stored.
    let r = s.post(&path, "text/csv", csv_rows(2000).as_bytes(), "");
    assert_eq!((r.status, r.body.as_str()), (200, "ok,2000,0\n"));
}
