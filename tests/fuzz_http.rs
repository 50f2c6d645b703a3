//! Raw-HTTP fuzzing of a live server: random byte mutations of valid
//! requests (flips, insertions, deletions, duplicated and truncated runs,
//! stray CR/LF/NUL/space/colon) over loopback, a bounded number of cases
//! from a fixed seed (`FUZZ_SEED` and `FUZZ_CASES`
//! override it).
//!
//! What every case must get:
//! - no hang: the server replies or closes within a bound (the header and
//!   body timeouts; the client half-closes after sending);
//! - every byte the server sends parses as a sequence of well-formed
//!   HTTP/1.x responses, each with a 2xx, 4xx or 5xx status and a
//!   `Content-Length` that matches its body;
//! - a reply at all, unless the bytes are not a complete HTTP request head
//!   (no blank line ends the head, or the request line is not
//!   `METHOD SP target SP HTTP/1.x`): for input that is not HTTP, closing
//!   the connection without a word is the right answer. A connection reset
//!   after the server closed counts as closing.
//!
//! And the server stays healthy: `/healthz` between batches, and the
//! original valid requests still succeed at the end.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;

use common::{Rng, TestServer};

fn seeds(tok: &str, t: i64) -> Vec<Vec<u8>> {
    let csv = format!("time,N1,I2,S3\n{t},21.5,3,door open\n{},21.7,,\n", t + 60);
    let form = format!("device=d&token={tok}&N1=1.5&L2=true&time={}", t + 120);
    vec![
        format!("GET /v1/readings?device=d&token={tok}&N1=23.5&I2=7&time={t} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("POST /v1/readings?device=d&token={tok} HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{csv}", csv.len()).into_bytes(),
        format!("POST /v1/readings HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}", form.len()).into_bytes(),
        format!("GET /v1/devices/d/readings?token={tok}&sensors=N1,I2&limit=5 HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes(),
        format!("GET /v1/inbox?device=d&token={tok} HTTP/1.0\n\n").into_bytes(),
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        format!("POST /v1/readings?device=d&token={tok} HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{csv}\r\n0\r\n\r\n", csv.len()).into_bytes(),
    ]
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                b.insert(i, rng.next() as u8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(8.min(len - i));
                b.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(32.min(len - i));
                let run = b[i..i + n].to_vec();
                let times = 1 + rng.below(64);
                for _ in 0..times {
                    b.splice(i..i, run.iter().copied());
                }
            }
            4 => {
                let i = rng.below(len + 1);
                b.truncate(i);
            }
            5 => {
                let special: &[&[u8]] = &[
                    b"\r\n",
                    b"\n",
                    b"\r",
                    b"\0",
                    b" ",
                    b":",
                    b"%",
                    b"%00",
                    b"%ff",
                    b"\r\n\r\n",
                    b"Content-Length: 5\r\n",
                    b"Transfer-Encoding: chunked\r\n",
                    b"\xc3\x28",
                ];
                let s = special[rng.below(special.len())];
                let i = rng.below(len + 1);
                b.splice(i..i, s.iter().copied());
            }
            6 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next() as u8;
            }
            _ => {
                // Swap two bytes.
                if len > 1 {
                    let (i, j) = (rng.below(len), rng.below(len));
                    b.swap(i, j);
                }
            }
        }
    }
    b
}

/// Whether `bytes` start with a complete request head that names HTTP/1.x:
/// `METHOD SP target SP HTTP/1.x` and a blank line.
fn is_complete_http_head(bytes: &[u8]) -> bool {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n"));
    if end.is_none() {
        return false;
    }
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = bytes[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&bytes[..line_end]);
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let parts: Vec<&str> = line.split(' ').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && parts[0].bytes().all(|c| c.is_ascii_uppercase())
        && !parts[1].is_empty()
        && (parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0")
}

/// Parse a sequence of responses; panics (with the case) on anything that
/// is not a well-formed 2xx/4xx/5xx response with a matching length.
fn check_responses(mut buf: &[u8], case: &[u8]) -> usize {
    let mut n = 0;
    while !buf.is_empty() {
        let head_end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("unterminated response head {buf:?} for {case:?}"));
        let head = std::str::from_utf8(&buf[..head_end])
            .unwrap_or_else(|_| panic!("non-UTF-8 response head for {case:?}"));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap();
        assert!(
            version == "HTTP/1.1" || version == "HTTP/1.0",
            "bad status line {status_line:?} for {case:?}"
        );
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?} for {case:?}"));
        assert!(
            matches!(status, 200..=299 | 400..=599),
            "status {status} for {case:?}"
        );
        let mut len = None;
        for l in lines {
            let (name, value) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?} for {case:?}"));
            assert!(
                !name.eq_ignore_ascii_case("transfer-encoding"),
                "chunked reply for {case:?}"
            );
            if name.eq_ignore_ascii_case("content-length") {
                len = Some(value.trim().parse::<usize>().unwrap());
            }
        }
        let len = len.unwrap_or_else(|| panic!("no Content-Length in {head:?} for {case:?}"));
        let rest = &buf[head_end + 4..];
        assert!(rest.len() >= len, "short body in reply to {case:?}");
        buf = &rest[len..];
        n += 1;
    }
    n
}

/// [`common::exchange`], with `None` on a hang.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    match common::exchange(addr, bytes) {
        Ok(buf) => Some(buf),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("read: {e}"),
    }
}

#[test]
fn mutated_requests_get_well_formed_replies_and_the_server_survives() {
    let s = TestServer::start_with(|c| {
        c.limits.device_requests_per_sec = 0.0;
        c.limits.header_timeout_secs = 2;
        c.limits.body_timeout_secs = 2;
        // Mutated tokens are failed logins: keep the brute-force throttle
        // (tested in security.rs) from answering everything with 429.
        c.limits.auth_failures_per_window = 1_000_000;
    });
    let tok = s.create_device("d");
    let t = common::hour_ago();
    let seeds = seeds(&tok, t);
    // Control: every seed as sent is answered, and not with a 4xx/5xx.
    for seed in &seeds {
        let reply = exchange(s.addr, seed).expect("no hang");
        assert!(
            check_responses(&reply, seed) >= 1,
            "no reply to a valid seed"
        );
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
            "seed refused: {text}"
        );
    }

    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_0F0E_u64);
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut rng = Rng(seed | 1);
    let (mut answered, mut closed) = (0, 0);
    for i in 0..cases {
        let base = &seeds[rng.below(seeds.len())];
        let case = mutate(&mut rng, base);
        let reply = exchange(s.addr, &case)
            .unwrap_or_else(|| panic!("case {i} (seed {seed}) hung: {case:?}"));
        if reply.is_empty() {
            assert!(
                !is_complete_http_head(&case),
                "case {i} (seed {seed}): a complete HTTP head got no reply: {:?}",
                String::from_utf8_lossy(&case)
            );
            closed += 1;
        } else {
            check_responses(&reply, &case);
            answered += 1;
        }
        if i % 100 == 99 {
            assert_eq!(
                s.get("/healthz").status,
                200,
                "after case {i} (seed {seed})"
            );
        }
    }
    eprintln!("fuzz_http: seed {seed}: {answered} answered, {closed} closed without a reply");
    assert!(
        answered > cases / 2,
        "most mutations should still be answered"
    );
    // Still healthy, and still storing.
    assert_eq!(s.get("/healthz").status, 200);
    let r = s.get(&format!(
        "/v1/readings?device=d&token={tok}&N1=1&time={}",
        t + 600
    ));
    assert_eq!(r.status, 200, "{}", r.body);
}
