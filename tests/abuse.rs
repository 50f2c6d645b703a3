//! Hostile and careless clients against accounts: sessions after a
//! credential change, login floods, lock-outs by other addresses,
//! anonymous grants and per-user quotas.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{as_user, hour_ago, login, token_of, Reply, TestServer};

const FORM: &str = "application/x-www-form-urlencoded";

/// Send `bytes` to the server from the loopback address `src` (any
/// 127.x.y.z works on loopback), read to the close, parse.
fn raw_from(src: [u8; 4], addr: SocketAddr, bytes: &[u8]) -> Reply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(src)), 0))
            .unwrap();
        sock.connect(addr).await.expect("connect")
    });
    let mut s = stream.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    common::parse(&buf)
}

fn get_from(src: [u8; 4], s: &TestServer, path: &str) -> Reply {
    raw_from(
        src,
        s.addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn post_from(src: [u8; 4], s: &TestServer, path: &str, form: &str, extra: &str) -> Reply {
    raw_from(
        src,
        s.addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {FORM}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{form}",
            form.len()
        )
        .as_bytes(),
    )
}

/// A user with a password; returns their API token.
fn user(s: &TestServer, name: &str, password: &str) -> String {
    let r = s.admin_form(
        "POST",
        "/v1/users",
        &format!("name={name}&password={password}"),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    token_of(&r.body)
}

const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const HOLDER: [u8; 4] = [127, 0, 0, 1];

// ---- item: sessions end when credentials change ----

#[test]
fn a_password_change_or_token_rotation_ends_every_session() {
    let s = TestServer::start();
    let api = user(&s, "ann", "correct+horse");
    let alive = |t: &str| as_user(&s, t, "GET", "/v1/session", "").status;

    // A new password (set with the API token) ends the session.
    let s1 = token_of(&login(&s, "ann", "correct+horse").body);
    assert_eq!(alive(&s1), 200);
    let r = as_user(
        &s,
        &api,
        "POST",
        "/v1/users/ann/password",
        "password=battery+staple",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(alive(&s1), 401, "the session ended with the old password");

    // Rotating the token (twice) ends it too.
    let s2 = token_of(&login(&s, "ann", "battery+staple").body);
    assert_eq!(alive(&s2), 200);
    let t1 = token_of(&as_user(&s, &api, "POST", "/v1/users/ann/token", "").body);
    assert_eq!(alive(&s2), 401, "the session ended with the token rotation");
    let s3 = token_of(&login(&s, "ann", "battery+staple").body);
    let _t2 = token_of(&as_user(&s, &t1, "POST", "/v1/users/ann/token", "").body);
    assert_eq!(alive(&s3), 401);

    // An administrator's change ends them as well.
    let s4 = token_of(&login(&s, "ann", "battery+staple").body);
    let r = s.admin_form("POST", "/v1/users/ann/password", "password=third+password");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(alive(&s4), 401);
}

#[test]
fn a_session_needs_the_current_password_to_change_credentials() {
    let s = TestServer::start();
    user(&s, "ann", "correct+horse");
    let session = token_of(&login(&s, "ann", "correct+horse").body);

    // Neither a new password nor a new API token without `current`.
    for (path, form) in [
        ("/v1/users/ann/password", "password=stolen+session"),
        ("/v1/users/ann/token", ""),
        ("/v1/users/ann/revoke", ""),
    ] {
        let r = as_user(&s, &session, "POST", path, form);
        assert_eq!(
            (r.status, r.error_code()),
            (403, "password_required"),
            "{path}"
        );
    }
    let r = as_user(
        &s,
        &session,
        "POST",
        "/v1/users/ann/token",
        "current=wrong+guess+1",
    );
    assert_eq!((r.status, r.error_code()), (403, "wrong_password"));
    assert_eq!(login(&s, "ann", "stolen+session").status, 401, "unchanged");
    assert_eq!(login(&s, "ann", "correct+horse").status, 200, "unchanged");

    // With it, the change is made (and ends the session that made it).
    let r = as_user(
        &s,
        &session,
        "POST",
        "/v1/users/ann/password",
        "password=battery+staple&current=correct+horse",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(login(&s, "ann", "battery+staple").status, 200);
    assert_eq!(as_user(&s, &session, "GET", "/v1/session", "").status, 401);

    // The same rule through the dashboard's cookie.
    let dash = s.post(
        "/v1/login",
        FORM,
        b"name=ann&password=battery+staple",
        "X-Overlord-CSRF: \r\n",
    );
    assert_eq!(dash.status, 200, "{}", dash.body);
    let cookie = dash
        .header("Set-Cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = dash.header("Overlord-Csrf").unwrap().to_string();
    let r = s.post(
        "/v1/users/ann/token",
        FORM,
        b"",
        &format!("Cookie: {cookie}\r\nX-Overlord-CSRF: {csrf}\r\n"),
    );
    assert_eq!((r.status, r.error_code()), (403, "password_required"));

    // An administrator acting on another user needs no `current` (from a
    // session either).
    let admin_pw = s.admin_form(
        "POST",
        "/v1/users/admin/password",
        "password=admin+password",
    );
    assert_eq!(admin_pw.status, 200, "{}", admin_pw.body);
    let admin_session = token_of(&login(&s, "admin", "admin+password").body);
    let r = as_user(
        &s,
        &admin_session,
        "POST",
        "/v1/users/ann/password",
        "password=reset+by+admin",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(login(&s, "ann", "reset+by+admin").status, 200);
}

// ---- item: login floods ----

#[test]
fn concurrent_wrong_logins_are_counted_before_they_are_checked() {
    let s = TestServer::start_with(|c| {
        c.limits.auth_failures_per_window = 5;
        c.limits.auth_window_secs = 600;
        // More argon2 slots than logins sent: no `503` can keep the count
        // of checked passwords low, only counting each attempt before its
        // check (`Throttle::begin`) can.
        c.limits.password_checks = 64;
    });
    user(&s, "ann", "correct+horse");
    const N: usize = 40;
    let replies = wrong_logins_at_once(&s, N);
    let mut checked = 0;
    for r in &replies {
        match r.status {
            401 => checked += 1,
            429 | 503 => {
                assert!(matches!(r.error_code(), "rate_limited" | "overloaded"));
                assert!(r.header("Retry-After").is_some(), "{r:?}");
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(
        checked <= 5,
        "{checked} wrong passwords were checked; the limit is 5 per window"
    );
    // The holder, elsewhere, still logs in.
    let r = post_from(
        [127, 0, 0, 3],
        &s,
        "/v1/login",
        "name=ann&password=correct+horse",
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `n` wrong logins for `ann`, sent at once (released by a barrier).
fn wrong_logins_at_once(s: &TestServer, n: usize) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(n));
    let addr = s.addr;
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                common::raw(
                    addr,
                    format!(
                        "POST /v1/login HTTP/1.1\r\nHost: t\r\nContent-Type: {FORM}\r\nContent-Length: 32\r\nConnection: close\r\n\r\nname=ann&password=wrong+password"
                    )
                    .as_bytes(),
                )
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn password_checks_beyond_the_slots_get_503_not_a_queue() {
    let s = TestServer::start_with(|c| {
        c.limits.auth_failures_per_window = 0;
        c.limits.password_checks = 1;
    });
    user(&s, "ann", "correct+horse");
    const N: usize = 24;
    let mut saw_503 = false;
    // Bounded: a few rounds of N simultaneous logins (each takes an
    // argon2 check of several ms on one slot).
    for _ in 0..5 {
        for r in wrong_logins_at_once(&s, N) {
            match r.status {
                401 => {}
                503 => {
                    assert_eq!(r.error_code(), "overloaded");
                    assert_eq!(r.header("Retry-After"), Some("1"));
                    saw_503 = true;
                }
                other => panic!("unexpected {other}: {}", r.body),
            }
        }
        if saw_503 {
            break;
        }
    }
    assert!(
        saw_503,
        "simultaneous password checks beyond the slot all ran"
    );
    assert_eq!(
        login(&s, "ann", "correct+horse").status,
        200,
        "service is normal after"
    );
}

// ---- item: nobody can lock out somebody else ----

#[test]
fn wrong_tokens_from_one_address_do_not_lock_out_the_device() {
    let s = TestServer::start_with(|c| {
        c.limits.auth_failures_per_window = 5;
        c.limits.auth_window_secs = 600;
    });
    let tok = s.create_device("bdev");
    let other = s.create_device("cdev");
    let t = hour_ago();
    let path = |dev: &str, tok: &str, i: i64| {
        format!("/v1/readings?device={dev}&token={tok}&N1=1&time={}", t + i)
    };
    let mut refused = 0;
    for i in 0..30 {
        let r = get_from(
            ATTACKER,
            &s,
            &path("bdev", "00000000000000000000000000000000", i),
        );
        match r.status {
            401 => {}
            429 => {
                assert_eq!(r.error_code(), "rate_limited");
                assert!(r.header("Retry-After").is_some());
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(refused, 25, "the guessing address is throttled after 5");
    // The device itself, from its own address, is not locked out.
    let r = get_from(HOLDER, &s, &path("bdev", &tok, 100));
    assert_eq!(r.status, 200, "{}", r.body);
    // The guesser gains nothing even with the right token...
    let r = get_from(ATTACKER, &s, &path("bdev", &tok, 101));
    assert_eq!((r.status, r.error_code()), (429, "rate_limited"));
    // ...while another device behind the guesser's address (a NAT) still
    // gets in with its right token (at a reduced rate).
    let r = get_from(ATTACKER, &s, &path("cdev", &other, 102));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn wrong_passwords_from_one_address_do_not_lock_out_the_user() {
    let s = TestServer::start_with(|c| {
        c.limits.auth_failures_per_window = 5;
        c.limits.auth_window_secs = 600;
    });
    user(&s, "ann", "correct+horse");
    // A name chosen to look like another counter's key hits nothing.
    for _ in 0..6 {
        let r = post_from(
            [127, 0, 0, 3],
            &s,
            "/v1/login",
            "name=127.0.0.1%3Aann&password=wrong+guess",
            "",
        );
        assert!(matches!(r.status, 401 | 429), "{}", r.body);
    }
    let mut refused = 0;
    for _ in 0..30 {
        let r = post_from(
            ATTACKER,
            &s,
            "/v1/login",
            "name=ann&password=wrong+guess",
            "",
        );
        match r.status {
            401 => {}
            429 => refused += 1,
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(refused, 25);
    let r = post_from(
        HOLDER,
        &s,
        "/v1/login",
        "name=ann&password=correct+horse",
        "",
    );
    assert_eq!(
        r.status, 200,
        "the user logs in from their own address: {}",
        r.body
    );
    let r = post_from(
        ATTACKER,
        &s,
        "/v1/login",
        "name=ann&password=correct+horse",
        "",
    );
    assert_eq!((r.status, r.error_code()), (429, "rate_limited"));
}

#[test]
fn wrong_file_passwords_from_one_address_do_not_lock_out_the_file() {
    let s = TestServer::start_with(|c| {
        c.limits.auth_failures_per_window = 5;
        c.limits.auth_window_secs = 600;
    });
    let r = s.raw(
        format!(
            "PUT /v1/files/fw.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            s.admin
        )
        .as_bytes(),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
    let r = s.admin_form("POST", "/v1/files/fw.bin/password", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let pw = token_of(&r.body);
    for _ in 0..10 {
        let r = get_from(
            ATTACKER,
            &s,
            "/v1/files/fw.bin?password=00000000000000000000000000000000",
        );
        assert!(matches!(r.status, 401 | 429), "{}", r.body);
    }
    let r = get_from(ATTACKER, &s, &format!("/v1/files/fw.bin?password={pw}"));
    assert_eq!(r.status, 429);
    let r = get_from(HOLDER, &s, &format!("/v1/files/fw.bin?password={pw}"));
    assert_eq!((r.status, r.body.as_str()), (200, "hello"));
}

// ---- item: nothing a client sends forges a log line ----

/// The server binary with its log (stderr) going to a file; killed on drop.
struct Logged {
    child: std::process::Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_logged(dir: &std::path::Path) -> Logged {
    use std::io::BufRead;
    let cfg = dir.join("overlord.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_file = \"{}\"\n[limits]\nauth_failures_per_window = 2\n[mqtt]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("o.redb").display()
        ),
    )
    .unwrap();
    let log = dir.join("stderr.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_overlord"))
        .arg("--config")
        .arg(&cfg)
        .env("OVERLORD_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start overlord");
    let mut p = Logged {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        log,
    };
    let out = p.child.stdout.take().unwrap();
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(a) = line.strip_prefix("listening on ") {
            p.addr = a.parse().unwrap();
            return p;
        }
    }
    panic!("the server exited before listening");
}

#[test]
fn client_chosen_ids_cannot_forge_log_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let p = start_logged(tmp.path());
    let forged = "x\n2026-12-03T00:00:00Z  INFO FORGED: user=admin login\x1b[2J";
    let id = common::enc(forged);
    for _ in 0..3 {
        let r = raw_from(
            [127, 0, 0, 4],
            p.addr,
            format!("GET /v1/readings?device={id}&token=0&N1=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(matches!(r.status, 401 | 429), "{}", r.body);
        let body = format!("name={id}&password=wrong+password");
        let r = raw_from(
            [127, 0, 0, 5],
            p.addr,
            format!(
                "POST /v1/login HTTP/1.1\r\nHost: t\r\nContent-Type: {FORM}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert!(matches!(r.status, 401 | 429), "{}", r.body);
        // A path with an encoded newline is logged too (the request log).
        let r = common::raw(
            p.addr,
            b"GET /v1/devices/a%0AFORGED%1B HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 401);
    }
    // The throttling lines name the device id (one key) and the user
    // name (two keys) when the limit is reached. They are written before
    // the replies went out; still, poll (bounded) for the first.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = std::fs::read(&p.log).unwrap();
        let text = String::from_utf8_lossy(&log);
        if text.contains("INFO FORGED") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = String::from_utf8_lossy(&log).into_owned();
    assert!(text.contains("INFO FORGED"), "{text}");
    assert!(!log.contains(&0x1b), "an ESC byte reached the log:\n{text}");
    for line in text.lines() {
        assert!(
            !line.starts_with("2026-12-03T00:00:00Z"),
            "a forged line: {line:?}\n{text}"
        );
    }
    assert_eq!(
        text.matches("\\n2026-12-03T00:00:00Z  INFO FORGED: user=admin login\\x1b[2J")
            .count(),
        3,
        "{text}"
    );
}

// ---- item: an anonymous grant means public read, nothing more ----

#[test]
fn an_anonymous_grant_makes_a_device_publicly_readable_and_nothing_more() {
    let s = TestServer::start();
    let ann = user(&s, "ann", "correct+horse");
    let bob = user(&s, "bob", "correct+horse");
    let r = as_user(&s, &ann, "POST", "/v1/devices", "id=pub");
    assert_eq!(r.status, 201, "{}", r.body);
    let tok = token_of(&r.body);
    let r = s.get(&format!(
        "/v1/readings?device=pub&token={tok}&N1=21.5&time={}",
        hour_ago()
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let reads = [
        "/v1/devices/pub/readings",
        "/v1/devices/pub/sensors",
        "/v1/devices/pub",
    ];
    let status = |who: Option<&str>, path: &str| match who {
        Some(t) => as_user(&s, t, "GET", path, "").status,
        None => s.get(path).status,
    };

    // Private: nobody without credentials, no other user.
    for p in reads {
        assert_eq!(status(None, p), 401, "{p}");
        assert_eq!(status(Some(&bob), p), 404, "{p}");
    }
    // `anonymous` may only be granted read.
    let grant = |form: &str| as_user(&s, &ann, "POST", "/v1/grants", form);
    let r = grant("resource=device:pub&to=anonymous&level=control");
    assert_eq!((r.status, r.error_code()), (400, "bad_level"));
    let r = grant("resource=device:pub&to=anonymous&level=read");
    assert_eq!(r.status, 201, "{}", r.body);

    // Public: anyone reads its record and readings...
    let r = s.get("/v1/devices/pub/readings?sensors=N1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("21.5"), "{}", r.body);
    let r = s.get("/v1/devices/pub/sensors");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("N1"), "{}", r.body);
    let r = s.get("/v1/devices/pub");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.lines().nth(1).unwrap().starts_with("pub,"),
        "{}",
        r.body
    );
    for p in reads {
        assert_eq!(status(Some(&bob), p), 200, "public means everyone: {p}");
    }
    // ...and nothing more: not its inbox, not sending to it, not editing.
    assert_eq!(s.get("/v1/devices/pub/inbox").status, 401);
    assert_eq!(status(Some(&bob), "/v1/devices/pub/inbox"), 403);
    let r = as_user(
        &s,
        &bob,
        "POST",
        "/v1/devices/pub/inbox",
        "sensor=L1&value=true",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = as_user(&s, &bob, "POST", "/v1/devices/pub", "name=mine");
    assert_eq!(r.status, 403, "{}", r.body);
    // A device that does not exist stays indistinguishable for anonymous.
    assert_eq!(s.get("/v1/devices/nope/readings").status, 401);
    assert_eq!(s.get("/v1/devices/nope").status, 401);

    // Withdrawn: private again.
    let r = as_user(
        &s,
        &ann,
        "DELETE",
        "/v1/grants",
        "resource=device:pub&to=anonymous",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for p in reads {
        assert_eq!(status(None, p), 401, "{p}");
        assert_eq!(status(Some(&bob), p), 404, "{p}");
    }
}

// ---- item: per-user quotas ----

fn quota_server() -> TestServer {
    TestServer::start_with(|c| {
        c.limits.device_requests_per_sec = 0.0;
        c.quotas.devices_per_user = 3;
        c.quotas.channels_per_user = 2;
        c.quotas.alerts_per_user = 2;
        c.quotas.file_bytes_per_user = 10;
    })
}

fn assert_quota(r: &Reply, what: &str) {
    assert_eq!(
        (r.status, r.error_code()),
        (403, "quota_exceeded"),
        "{what}: {}",
        r.body
    );
    assert_eq!(r.body.lines().count(), 1, "{}", r.body);
}

#[test]
fn device_quota_counts_bulk_gateway_and_concurrent_creations() {
    let s = quota_server();
    let ann = user(&s, "ann", "correct+horse");
    let r = as_user(&s, &ann, "POST", "/v1/devices", "id=gw&gateway=true");
    assert_eq!(r.status, 201, "{}", r.body);
    let gw = token_of(&r.body);
    // A bulk import that would go over is refused whole.
    let csv = "id\nb1\nb2\nb3\n";
    let bulk = |body: &str| {
        s.raw(
            format!(
                "POST /v1/devices HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ann}\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    assert_quota(&bulk(csv), "bulk over the quota");
    assert_eq!(
        as_user(&s, &ann, "GET", "/v1/devices/b1", "").status,
        404,
        "nothing created"
    );
    assert_eq!(bulk("id\nb1\nb2\n").status, 201);
    // Full: neither the user nor the user's gateway may add more.
    assert_quota(&as_user(&s, &ann, "POST", "/v1/devices", "id=d4"), "form");
    let r = s.post("/v1/devices", FORM, b"id=child", &common::basic("gw", &gw));
    assert_quota(&r, "gateway registration counts against its owner");
    // Administrators are exempt.
    for i in 0..5 {
        s.create_device(&format!("adm{i}"));
    }

    // Concurrent creations cannot overshoot.
    let bob = user(&s, "bob", "correct+horse");
    let addr = s.addr;
    let barrier = Arc::new(Barrier::new(10));
    let made = (0..10)
        .map(|i| {
            let (b, bob) = (barrier.clone(), bob.clone());
            std::thread::spawn(move || {
                b.wait();
                let form = format!("id=bob{i}");
                common::raw(
                    addr,
                    format!(
                        "POST /v1/devices HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {bob}\r\nContent-Type: {FORM}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                        form.len()
                    )
                    .as_bytes(),
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|r| {
            assert!(matches!(r.status, 201 | 403), "{}", r.body);
            r.status == 201
        })
        .count();
    assert_eq!(made, 3);
    let listed = as_user(&s, &bob, "GET", "/v1/devices", "");
    assert_eq!(listed.body.lines().count(), 1 + 3, "{}", listed.body);
}

#[test]
fn channel_alert_and_file_quotas() {
    let s = quota_server();
    let ann = user(&s, "ann", "correct+horse");
    let r = as_user(&s, &ann, "POST", "/v1/devices", "id=d1");
    assert_eq!(r.status, 201, "{}", r.body);

    for ch in ["c1", "c2"] {
        let r = as_user(&s, &ann, "POST", "/v1/channels", &format!("name={ch}"));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert_quota(
        &as_user(&s, &ann, "POST", "/v1/channels", "name=c3"),
        "channels",
    );
    assert_eq!(
        s.admin_form("POST", "/v1/channels", "name=c4").status,
        201,
        "admin exempt"
    );

    for a in ["a1", "a2"] {
        let r = as_user(
            &s,
            &ann,
            "POST",
            "/v1/alerts",
            &format!("name={a}&device=d1&sensor=N1&max=10"),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert_quota(
        &as_user(
            &s,
            &ann,
            "POST",
            "/v1/alerts",
            "name=a3&device=d1&sensor=N1&max=10",
        ),
        "alerts",
    );

    let put = |name: &str, body: &str| {
        s.raw(
            format!(
                "PUT /v1/files/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ann}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    assert_eq!(put("f1", "123456").status, 201);
    assert_quota(&put("f2", "123456"), "6 + 6 bytes over 10");
    assert_eq!(
        put("f1", "123456789").status,
        200,
        "a replaced file's bytes are freed"
    );
    assert_quota(&put("f3", "12"), "9 + 2 bytes over 10");
    assert_eq!(put("f3", "1").status, 201);
    let list = as_user(&s, &ann, "GET", "/v1/files", "");
    assert_eq!(list.body.lines().count(), 1 + 2, "{}", list.body);
}
