//! HTTPS under change and under attack: the certificate replaced while
//! clients keep sending readings (reloaded when the files change, and on
//! `SIGHUP`, to a spawned `overlord serve`), a bad new certificate that
//! keeps the old one, and a flood of stalled handshakes that stays within
//! `[tls] max_handshakes` and `handshake_timeout_secs`.

mod common;
mod tls_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tls_support::{any_cert_client, self_signed, Conn, Server};

const CLIENTS: usize = 4;

/// Clients sending readings over HTTPS until stopped: each keeps one
/// connection alive for all its requests and also opens a new one every
/// 10 requests. Every request must be answered `200`; an error on an
/// open connection (one dropped by a reload) fails the test.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Result<usize, String>>>,
}

impl Load {
    fn start(s: &Server, tok: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let base = common::hour_ago();
        let threads = (1..=CLIENTS)
            .map(|t| {
                let (stop, sent) = (stop.clone(), sent.clone());
                let (addr, tok) = (s.https, tok.to_string());
                std::thread::spawn(move || {
                    let config = any_cert_client();
                    let mut keep = Conn::open(addr, &config).map_err(|e| e.to_string())?;
                    let mut k = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let path = format!(
                            "/v1/readings?device=ld&token={tok}&N{t}={k}&time={}",
                            base + k as i64
                        );
                        let r = if k % 10 == 9 {
                            let mut fresh = Conn::open(addr, &config)
                                .map_err(|e| format!("new connection: {e}"))?;
                            fresh.get(&path, "")
                        } else {
                            keep.get(&path, "")
                        }
                        .map_err(|e| format!("request {k} of client {t}: {e}"))?;
                        if r.status != 200 {
                            return Err(format!("request {k} of client {t}: {}", r.body));
                        }
                        k += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(k)
                })
            })
            .collect();
        Load {
            stop,
            sent,
            threads,
        }
    }

    /// Wait until `n` more requests were answered (the load is running).
    fn wait_for(&self, n: usize) {
        let target = self.sent.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sent.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load made no progress");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop, and check every acknowledged reading is stored once.
    fn finish(self, s: &Server, tok: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let config = any_cert_client();
        let mut c = Conn::open(s.https, &config).unwrap();
        for (i, t) in self.threads.into_iter().enumerate() {
            let acked = t.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
            let q = c
                .get(
                    &format!(
                        "/v1/devices/ld/readings?token={tok}&sensors=N{}&limit=1000000",
                        i + 1
                    ),
                    "",
                )
                .unwrap();
            assert_eq!(q.body.lines().count() - 1, acked, "client {}", i + 1);
        }
    }
}

/// The fingerprint a new connection is shown, polled until it is `want`
/// (15 s at most).
fn until_served(s: &Server, want: &str) -> String {
    let config = any_cert_client();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = Conn::open(s.https, &config).unwrap().fingerprint();
        if got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Replace `dir`'s pair with the one in `from` the way a renewal does:
/// each file written beside and renamed over (certificate first, so a
/// check may see a new certificate with the old key for a moment).
fn install(from: &Path, dir: &Path) {
    for f in ["cert.pem", "key.pem"] {
        let tmp = dir.join(format!("{f}.new"));
        std::fs::copy(from.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(f)).unwrap();
    }
}

fn device(s: &Server) -> String {
    let mut c = Conn::open(s.https, &any_cert_client()).unwrap();
    let form = "id=ld";
    let r = c
        .request(
            format!(
                "POST /v1/devices HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
                s.admin,
                form.len()
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    common::token_of(&r.body)
}

#[test]
fn a_renewed_certificate_is_served_without_dropping_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, first) = self_signed(tmp.path());
    let (_, second) = self_signed(&tmp.path().join("renewed"));
    let s = Server::start(tmp.path(), "127.0.0.1:0", "reload_check_secs = 1\n", &[]);
    assert_eq!(until_served(&s, &first), first);
    let tok = device(&s);
    let load = Load::start(&s, &tok);
    load.wait_for(40);
    install(&tmp.path().join("renewed"), tmp.path());
    assert_eq!(until_served(&s, &second), second, "{}", s.log_text());
    // The connections opened before the reload carry on.
    load.wait_for(40);
    load.finish(&s, &tok);
    let log = s.log_text();
    assert!(
        log.contains("TLS certificate reloaded (the files changed)"),
        "{log}"
    );
    assert!(!log.contains("PRIVATE KEY"), "{log}");
}

#[test]
fn sighup_reloads_and_a_bad_certificate_keeps_the_one_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, first) = self_signed(dir);
    let (_, second) = self_signed(&dir.join("next"));
    // Only SIGHUP reloads here.
    let s = Server::start(dir, "127.0.0.1:0", "reload_check_secs = 0\n", &[]);
    let tok = device(&s);
    let load = Load::start(&s, &tok);
    load.wait_for(20);
    // A certificate whose key is another's: refused, logged, kept.
    std::fs::copy(dir.join("next").join("cert.pem"), dir.join("cert.pem")).unwrap();
    s.hangup();
    let log = s.log_until("not reloaded (SIGHUP)");
    assert!(
        log.contains("the key does not belong to the certificate"),
        "{log}"
    );
    assert_eq!(until_served(&s, &first), first);
    // Not a certificate at all: the same.
    std::fs::write(
        dir.join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    )
    .unwrap();
    s.hangup();
    let log = s.log_until("not a PEM certificate file");
    assert!(log.contains("not a PEM certificate file"), "{log}");
    load.wait_for(20);
    assert_eq!(until_served(&s, &first), first);
    // The whole new pair, then SIGHUP: served from the next handshake.
    install(&dir.join("next"), dir);
    s.hangup();
    assert_eq!(until_served(&s, &second), second, "{}", s.log_text());
    load.wait_for(20);
    load.finish(&s, &tok);
    let metrics = common::raw(s.plain.unwrap(), b"GET /metrics HTTP/1.0\r\n\r\n").body;
    assert!(
        metrics.contains("overlord_tls_reload_failures_total 2\n"),
        "{metrics}"
    );
    // The key never reaches the log.
    let key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(!s.log_text().contains(body));
}

/// A metric's value from `/metrics` on the plain port.
fn metric(s: &Server, name: &str) -> u64 {
    let body = common::raw(s.plain.unwrap(), b"GET /metrics HTTP/1.0\r\n\r\n").body;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .parse()
        .unwrap()
}

#[test]
fn a_handshake_flood_is_bounded_in_slots_and_time() {
    const FLOOD: usize = 40;
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let s = Server::start(
        tmp.path(),
        "127.0.0.1:0",
        "max_handshakes = 3\nhandshake_timeout_secs = 8\n",
        &[],
    );
    // Each starts a TLS record and stalls: it passes the first-byte check
    // and wants a handshake slot.
    let stalled: Vec<TcpStream> = (0..FLOOD)
        .map(|_| {
            let mut t = TcpStream::connect(s.https).unwrap();
            t.write_all(&[0x16, 0x03, 0x01]).unwrap();
            t
        })
        .collect();
    // Barrier: every stalled connection is counted, running or waiting.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (running, waiting) = loop {
        let r = metric(&s, "overlord_tls_handshakes_running");
        let w = metric(&s, "overlord_tls_handshakes_waiting");
        if r + w == FLOOD as u64 || Instant::now() > deadline {
            break (r, w);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        (running, waiting),
        (3, FLOOD as u64 - 3),
        "only max_handshakes run at once"
    );
    // Plain HTTP is not held up meanwhile.
    assert_eq!(
        common::raw(s.plain.unwrap(), b"GET /healthz HTTP/1.0\r\n\r\n").status,
        200
    );
    // Every stalled connection is closed by the server at the handshake
    // timeout (a read that waited longer would time out at 15 s).
    for mut t in stalled {
        t.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = Vec::new();
        match t.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    // The server counts each one out just after closing it: poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = metric(&s, "overlord_tls_handshakes_running")
            + metric(&s, "overlord_tls_handshakes_waiting");
        let failed = metric(&s, "overlord_tls_handshake_failures_total");
        if left == 0 && failed >= FLOOD as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} still counted, {failed} failed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s
        .log_until("handshake timed out")
        .contains("handshake timed out"));
    // And HTTPS serves again.
    let mut c = Conn::open(s.https, &tls_support::client(&cert)).unwrap();
    assert_eq!(c.get("/healthz", "").unwrap().status, 200);
}

/// SIGTERM with a handshake stalled and a plain connection silent: both
/// are closed at once, not waited for (the grace period is for requests
/// in flight), and the server shuts down cleanly.
#[test]
fn shutdown_does_not_wait_for_stalled_handshakes_or_silent_clients() {
    let tmp = tempfile::tempdir().unwrap();
    self_signed(tmp.path());
    let mut s = Server::start(
        tmp.path(),
        "127.0.0.1:0",
        "handshake_timeout_secs = 120\n",
        &[
            ("OVERLORD_LIMITS__HEADER_TIMEOUT_SECS", "120"),
            ("OVERLORD_LIMITS__SHUTDOWN_GRACE_SECS", "60"),
        ],
    );
    let mut stalled = TcpStream::connect(s.https).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let mut silent = TcpStream::connect(s.plain.unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&s, "overlord_tls_handshakes_running") != 1 {
        assert!(Instant::now() < deadline, "the handshake never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = libc::pid_t::try_from(s.child.id()).unwrap();
    // SAFETY: a signal to our own live child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Both are closed by the server (a read waits 30 s at most, far less
    // than the 120 s timeouts and the 60 s grace).
    for t in [&mut stalled, &mut silent] {
        t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = Vec::new();
        if let Err(e) = t.read_to_end(&mut buf) {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
    }
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = s.log_text();
    assert!(log.contains("shut down"), "{log}");
    assert!(
        !log.contains("did not finish within the grace period"),
        "{log}"
    );
}
