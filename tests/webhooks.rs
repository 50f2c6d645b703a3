//! Notification targets end to end: alerts and presence changes reach a
//! real HTTP receiver in the test, signed, in order, at least once with a
//! stable event id, through failures, timeouts and a dead endpoint; the
//! delivery history and dead letters over the API; the SSRF refusal; and
//! the Python verification example as the receiver.

mod common;
mod webhook_receiver;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{column, hour_ago, TestServer};
use hmac::{Hmac, Mac};
use overlord::config::Config;
use sha2::Sha256;
use webhook_receiver::{Answer, Got, Receiver};

/// Fast retries, a short timeout, and loopback receivers allowed.
fn fast(c: &mut Config) {
    c.notify.allow_private_targets = true;
    c.notify.retry_min_ms = 50;
    c.notify.retry_max_secs = 1;
    c.notify.timeout_secs = 1;
}

fn send(s: &TestServer, dev: &str, tok: &str, query: &str) {
    let r = s.get(&format!("/v1/readings?device={dev}&token={tok}&{query}"));
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Readings that fire an alert with `max=10` `n` times (20, 0, 20, ...).
fn fire(s: &TestServer, dev: &str, tok: &str, n: usize, t0: i64) {
    for i in 0..n as i64 {
        send(s, dev, tok, &format!("N1=20&time={}", t0 + 2 * i));
        send(s, dev, tok, &format!("N1=0&time={}", t0 + 2 * i + 1));
    }
}

fn form(s: &TestServer, method: &str, path: &str, body: &str, want: u16) -> String {
    let r = s.admin_form(method, path, body);
    assert_eq!(r.status, want, "{method} {path}: {}", r.body);
    r.body
}

/// Does `g` carry a valid signature of its body with `secret`?
fn signed(g: &Got, secret: &str) -> bool {
    let ts = &g.headers["overlord-timestamp"];
    let sig = g.headers["overlord-signature"].strip_prefix("v1=").unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&g.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == sig
}

fn event_n(id: &str) -> u64 {
    id.strip_prefix("evt-").unwrap().parse().unwrap()
}

#[test]
fn alert_firings_reach_a_webhook_signed_in_order_through_failures() {
    // Two 500s, one stall past the 1 s timeout, then all is well.
    let rx = Receiver::start(
        &[
            Answer::Status(500),
            Answer::Status(500),
            Answer::Stall(Duration::from_secs(3)),
        ],
        Answer::Status(200),
    );
    let s = TestServer::start_with(fast);
    let tok = s.create_device("gh");
    let url = common::enc(&rx.url("/hook?x=1"));
    form(
        &s,
        "POST",
        "/v1/targets",
        &format!("name=ops&url={url}&secret=s3cret"),
        201,
    );
    form(
        &s,
        "POST",
        "/v1/alerts",
        "name=hot&device=gh&sensor=N1&max=10&to_device=none&to_target=ops",
        201,
    );
    fire(&s, "gh", &tok, 5, hour_ago());
    let got = rx.until("5 delivered events", |g| {
        g.iter().filter(|g| g.answer == Answer::Status(200)).count() >= 5
    });
    // Every event delivered exactly once with a 200, in event order
    // (one target: each waits for the one before it).
    let ok = rx.delivered();
    assert_eq!(ok.len(), 5, "{ok:?}");
    let ns: Vec<u64> = ok.iter().map(|e| event_n(e)).collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in order: {ns:?}");
    // The failed tries were all of the first event, with its id and body.
    let first = &got[0];
    for g in &got[..4] {
        assert_eq!(g.event(), ok[0], "retries carry the same event id");
        assert_eq!(g.body, first.body, "and the same body");
    }
    let ids: HashSet<&str> = got.iter().map(|g| g.event()).collect();
    assert_eq!(ids.len(), 5, "no other duplicates");
    for g in &got {
        assert!(signed(g, "s3cret"), "signature of {}", g.event());
        assert_eq!(g.path, "/hook?x=1");
        assert_eq!(g.headers["content-type"], "application/json");
    }
    let j: serde_json::Value = serde_json::from_slice(&got[4].body).unwrap();
    assert_eq!(j["id"], got[4].event());
    assert_eq!(j["type"], "alert");
    assert_eq!(j["source"], "hot");
    assert_eq!(j["device"], "gh");
    assert_eq!(j["sensor"], "N1");
    assert_eq!(j["value"], "20");
    // The history tells the story; the alert's events name the event ids.
    let h = s.admin_until("/v1/targets/ops/deliveries", |b| {
        b.matches(",delivered,").count() >= 5
    });
    assert!(h
        .body
        .starts_with("n,time,event,attempt,outcome,status,detail\n"));
    let outcomes = column(&h.body, "outcome");
    assert_eq!(outcomes[..4], ["failed", "failed", "failed", "delivered"]);
    assert!(
        h.body.contains(",failed,500,HTTP 500: status 500\n"),
        "{}",
        h.body
    );
    assert!(h.body.contains("timed out after 1s"), "{}", h.body);
    assert_eq!(column(&h.body, "attempt")[..4], ["1", "2", "3", "4"]);
    let ev = s.get_admin("/v1/alerts/hot/events");
    let delivery = column(&ev.body, "delivery");
    assert_eq!(delivery.len(), 5);
    for (d, id) in delivery.iter().zip(&ok) {
        assert_eq!(d, &format!("target:ops:{id}"));
    }
    let list = s.get_admin("/v1/targets");
    assert_eq!(column(&list.body, "waiting"), ["0"]);
    assert_eq!(column(&list.body, "signed"), ["yes"]);
    let m = common::scrape(&s);
    assert_eq!(common::m(&m, "overlord_notify_delivered_total"), 5.0);
    assert_eq!(common::m(&m, "overlord_notify_failed_total"), 3.0);
    assert_eq!(common::m(&m, "overlord_notify_dead_total"), 0.0);
}

#[test]
fn a_dead_endpoint_delays_neither_ingest_nor_other_targets_then_goes_to_dead_letters() {
    let stuck = Receiver::start(&[Answer::Hold], Answer::Status(503));
    let live = Receiver::start(&[], Answer::Status(204));
    let s = TestServer::start_with(|c| {
        fast(c);
        // Long enough that the held request is not cut by the timeout.
        c.notify.timeout_secs = 60;
        c.notify.retry_for_secs = 1;
    });
    let tok = s.create_device("gh");
    let (u1, u2) = (common::enc(&stuck.url("/")), common::enc(&live.url("/in")));
    form(
        &s,
        "POST",
        "/v1/targets",
        &format!("name=stuck&url={u1}"),
        201,
    );
    form(
        &s,
        "POST",
        "/v1/targets",
        &format!("name=live&url={u2}&format=csv"),
        201,
    );
    for (name, target) in [("a1", "stuck"), ("a2", "live")] {
        form(
            &s,
            "POST",
            "/v1/alerts",
            &format!("name={name}&device=gh&sensor=N1&max=10&to_device=none&to_target={target}"),
            201,
        );
    }
    let t0 = hour_ago();
    fire(&s, "gh", &tok, 1, t0);
    stuck.until("the stuck target's request", |g| !g.is_empty());
    // The stuck endpoint holds its request; ingest is answered and the
    // other target gets every event meanwhile.
    fire(&s, "gh", &tok, 2, t0 + 10);
    let got = live.until("3 events at the live target", |g| g.len() >= 3);
    assert_eq!(stuck.got().len(), 1, "still holding the first");
    let g = &got[0];
    assert_eq!(g.headers["content-type"], "text/csv; charset=utf-8");
    assert!(
        !g.headers.contains_key("overlord-signature"),
        "no secret, no signature"
    );
    let body = g.body_text();
    let mut lines = body.lines();
    assert_eq!(
        lines.next(),
        Some("id,type,time,source,device,sensor,value,text")
    );
    assert!(lines
        .next()
        .unwrap()
        .starts_with(&format!("{},alert,", g.event())));
    // Released, the stuck endpoint answers 503 until the retry time is
    // up; then each of its events goes to the dead letters, in order.
    stuck.release();
    let dl = s.admin_until("/v1/targets/stuck/dead-letters", |b| b.lines().count() >= 4);
    assert!(
        dl.body.starts_with("event,time,error,body\n"),
        "{}",
        dl.body
    );
    let errors = column(&dl.body, "error");
    assert_eq!(errors.len(), 3, "{}", dl.body);
    assert!(
        errors.iter().all(|e| e.starts_with("HTTP 503")),
        "{}",
        dl.body
    );
    let h = s.get_admin("/v1/targets/stuck/deliveries");
    assert_eq!(
        column(&h.body, "outcome")
            .iter()
            .filter(|o| *o == "dead")
            .count(),
        3,
        "{}",
        h.body
    );
    let list = s.get_admin("/v1/targets");
    assert_eq!(column(&list.body, "waiting"), ["0", "0"], "{}", list.body);
}

#[test]
fn private_addresses_are_refused_unless_allowed() {
    let rx = Receiver::start(&[], Answer::Status(200));
    // The default: allow_private_targets = false.
    let s = TestServer::start_with(|c| {
        c.notify.retry_min_ms = 50;
        c.notify.retry_for_secs = 1;
    });
    let url = common::enc(&rx.url("/"));
    form(
        &s,
        "POST",
        "/v1/targets",
        &format!("name=lan&url={url}"),
        201,
    );
    let body = form(&s, "POST", "/v1/targets/lan/test", "", 201);
    assert!(body.starts_with("event\nevt-"), "{body}");
    let h = s.admin_until("/v1/targets/lan/deliveries", |b| b.contains(",dead,"));
    assert!(h.body.contains(",dead,"), "{}", h.body);
    assert!(
        h.body.contains("refused: 127.0.0.1 is a private address"),
        "{}",
        h.body
    );
    assert!(rx.got().is_empty(), "nothing reached the receiver");
}

#[test]
fn dead_notifications_and_history_are_bounded_per_target() {
    // A target that fails for months must not grow the file without end:
    // its dead notifications, like its delivery history, keep only the
    // newest `[notify] history_kept`.
    let s = TestServer::start_with(|c| {
        c.notify.retry_min_ms = 50;
        c.notify.retry_for_secs = 0;
        c.notify.history_kept = 2;
    });
    let url = common::enc("http://127.0.0.1:9/never");
    form(
        &s,
        "POST",
        "/v1/targets",
        &format!("name=lan&url={url}"),
        201,
    );
    let mut events = Vec::new();
    for _ in 0..5 {
        let body = form(&s, "POST", "/v1/targets/lan/test", "", 201);
        events.push(body.lines().nth(1).unwrap().to_string());
    }
    // The barrier: the fifth event is dead only after the first four.
    let h = s.admin_until("/v1/targets/lan/deliveries", |b| b.contains(&events[4]));
    assert_eq!(column(&h.body, "event"), events[3..], "{}", h.body);
    let dl = s.get_admin("/v1/targets/lan/dead-letters");
    assert_eq!(column(&dl.body, "event"), events[3..], "{}", dl.body);
    let m = common::scrape(&s);
    assert_eq!(common::m(&m, "overlord_notify_dead_total"), 5.0);
}

#[test]
fn targets_are_checked_and_private_to_their_owner() {
    let s = TestServer::start_with(fast);
    for (body, code) in [
        ("name=a&url=ftp%3A%2F%2Fx%2F", "bad_value"),
        ("name=a&url=http%3A%2F%2Fu%3Ap%40x%2F", "bad_value"),
        ("name=a", "missing_field"),
        ("name=a%2Fb&url=http%3A%2F%2Fx%2F", "bad_name"),
        ("name=a&url=http%3A%2F%2Fx%2F&format=xml", "bad_value"),
        ("name=a&url=http%3A%2F%2Fx%2F&kind=pager", "bad_value"),
        // No [smtp] host in this server's configuration.
        ("name=a&kind=email&address=ann%40example.com", "bad_value"),
        ("name=a&url=http%3A%2F%2Fx%2F&secret=a%0Ab", "bad_value"),
    ] {
        let r = s.admin_form("POST", "/v1/targets", body);
        assert_eq!(
            (r.status, r.error_code()),
            (400, code),
            "{body}: {}",
            r.body
        );
    }
    form(
        &s,
        "POST",
        "/v1/targets",
        "name=a&url=http%3A%2F%2Fx%2F&secret=k",
        201,
    );
    let r = s.admin_form("POST", "/v1/targets", "name=a&url=http%3A%2F%2Fy%2F");
    assert_eq!((r.status, r.error_code()), (409, "target_exists"));
    // The listing never shows the secret.
    let list = s.get_admin("/v1/targets");
    assert!(list
        .body
        .starts_with("name,owner,kind,to,format,signed,presence,waiting,created\n"));
    assert!(!list.body.contains(",k,"), "{}", list.body);
    // An alert naming a missing target is refused like a missing channel.
    s.create_device("gh");
    let r = s.admin_form(
        "POST",
        "/v1/alerts",
        "name=x&device=gh&sensor=N1&max=1&to_target=nope",
    );
    assert_eq!((r.status, r.error_code()), (404, "unknown_target"));
    form(&s, "DELETE", "/v1/targets/a", "", 200);
    let r = s.get_admin("/v1/targets/a/deliveries");
    assert_eq!((r.status, r.error_code()), (404, "unknown_target"));
}

#[test]
fn presence_changes_reach_the_owners_presence_target() {
    let rx = Receiver::start(&[], Answer::Status(200));
    let s = TestServer::start_with(|c| {
        fast(c);
        c.presence.offline_after_secs = 1;
    });
    let tok = s.create_device("d1");
    let url = common::enc(&rx.url("/p"));
    form(
        &s,
        "POST",
        "/v1/targets",
        &format!("name=pager&url={url}&presence=1"),
        201,
    );
    assert_eq!(
        column(&s.get_admin("/v1/targets").body, "presence"),
        ["yes"]
    );
    send(&s, "d1", &tok, &format!("N1=1&time={}", hour_ago()));
    // Online now; offline after a second of silence.
    let got = rx.until("online and offline", |g| g.len() >= 2);
    let values: Vec<String> = got
        .iter()
        .map(|g| {
            let j: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
            assert_eq!(j["type"], "presence");
            assert_eq!(j["device"], "d1");
            j["value"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(values[..2], ["online", "offline"]);
    let ev = s.get_admin("/v1/presence/events?after=0");
    assert!(ev.body.contains("target:pager:evt-"), "{}", ev.body);
}

#[test]
fn the_python_example_verifies_the_signature_as_a_receiver() {
    if !common::have("python3") {
        return;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/verify_webhook.py");
    let spawn = |secret: &str| {
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--secret", secret, "--port", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let port: u16 = first.strip_prefix("listening ").unwrap().parse().unwrap();
        (child, lines, port)
    };
    let s = TestServer::start_with(fast);
    let (mut good, mut good_out, p1) = spawn("right");
    let (mut bad, mut bad_out, p2) = spawn("wrong");
    form(
        &s,
        "POST",
        "/v1/targets",
        &format!("name=py&url=http%3A%2F%2F127.0.0.1%3A{p1}%2F&secret=right"),
        201,
    );
    form(
        &s,
        "POST",
        "/v1/targets",
        &format!("name=py2&url=http%3A%2F%2F127.0.0.1%3A{p2}%2F&secret=right"),
        201,
    );
    let id = form(&s, "POST", "/v1/targets/py/test", "", 201);
    let id = id.lines().nth(1).unwrap().to_string();
    let line = good_out.next().unwrap().unwrap();
    assert!(line.starts_with(&format!("ok {id} {{")), "{line}");
    assert!(line.contains("\"type\":\"test\""), "{line}");
    // A receiver with another secret refuses it (401), and the server
    // records the failure and tries again with the same event id.
    let id2 = form(&s, "POST", "/v1/targets/py2/test", "", 201);
    let id2 = id2.lines().nth(1).unwrap().to_string();
    for _ in 0..2 {
        let line = bad_out.next().unwrap().unwrap();
        assert_eq!(line, format!("bad {id2} signature mismatch"));
    }
    let h = s.admin_until("/v1/targets/py2/deliveries", |b| b.contains(",failed,401,"));
    assert!(h.body.contains(",failed,401,HTTP 401"), "{}", h.body);
    let _ = good.kill();
    let _ = bad.kill();
    let _ = good.wait();
    let _ = bad.wait();
}

#[cfg(unix)]
use common::process::Proc;

/// `overlord serve` as a child process on `dir`'s data file, retrying
/// quickly.
#[cfg(unix)]
fn start(dir: &std::path::Path) -> Proc {
    Proc::start(
        dir,
        "[notify]\nallow_private_targets = true\nretry_min_ms = 50\nretry_max_secs = 1\ntimeout_secs = 30\n",
    )
}

/// A management request over HTTP.
#[cfg(unix)]
trait Requests {
    fn req(&self, admin: &str, method: &str, path: &str, form: &str) -> common::Reply;
}

#[cfg(unix)]
impl Requests for Proc {
    fn req(&self, admin: &str, method: &str, path: &str, form: &str) -> common::Reply {
        common::raw(
            self.addr,
            format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            )
            .as_bytes(),
        )
    }
}

#[cfg(unix)]
#[test]
fn no_notification_is_lost_across_a_sigkill_mid_delivery() {
    // Two delivered, the third held in flight when the server is killed.
    let rx = Receiver::start(
        &[Answer::Status(200), Answer::Status(200), Answer::Hold],
        Answer::Status(200),
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut p = start(tmp.path());
    let admin = p.admin.clone().expect("admin token on first start");
    let ok = |r: common::Reply, want: u16| {
        assert_eq!(r.status, want, "{}", r.body);
        r.body
    };
    let tok = common::token_of(&ok(p.req(&admin, "POST", "/v1/devices", "id=gh"), 201));
    let url = common::enc(&rx.url("/k"));
    ok(
        p.req(
            &admin,
            "POST",
            "/v1/targets",
            &format!("name=k&url={url}&secret=z"),
        ),
        201,
    );
    ok(
        p.req(
            &admin,
            "POST",
            "/v1/alerts",
            "name=hot&device=gh&sensor=N1&max=10&to_device=none&to_target=k",
        ),
        201,
    );
    let t0 = hour_ago();
    for i in 0..6i64 {
        for (v, dt) in [(20, 0), (0, 1)] {
            let r = common::raw(
                p.addr,
                format!(
                    "GET /v1/readings?device=gh&token={tok}&N1={v}&time={} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    t0 + 2 * i + dt
                )
                .as_bytes(),
            );
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    rx.until("the third request, held", |g| g.len() >= 3);
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    rx.release();
    drop(p);
    let p = start(tmp.path());
    // Firings the digest had not stored before the kill are derived again
    // from the digest log on start (with their outbox rows).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ev = loop {
        let ev = ok(p.req(&admin, "GET", "/v1/alerts/hot/events", ""), 200);
        if ev.lines().count() > 6 || std::time::Instant::now() > deadline {
            break ev;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ids: Vec<String> = column(&ev, "delivery")
        .iter()
        .map(|d| {
            d.strip_prefix("target:k:")
                .expect("queued for k")
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 6, "{ev}");
    rx.until("all six delivered", |g| {
        let done: HashSet<&str> = g
            .iter()
            .filter(|g| g.answer == Answer::Status(200))
            .map(|g| g.event())
            .collect();
        ids.iter().all(|id| done.contains(id.as_str()))
    });
    let got = rx.got();
    // Duplicates only with the same id and body: the held one came again.
    for id in &ids {
        let same: Vec<&Got> = got.iter().filter(|g| g.event() == id).collect();
        assert!(same
            .iter()
            .all(|g| g.body == same[0].body && signed(g, "z")));
    }
    let held = got[2].event();
    assert!(got.iter().filter(|g| g.event() == held).count() >= 2);
    let delivered = rx.delivered();
    assert_eq!(
        delivered.iter().collect::<HashSet<_>>().len(),
        6,
        "{delivered:?}"
    );
    let ns: Vec<u64> = delivered.iter().map(|e| event_n(e)).collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in order: {ns:?}");
}
