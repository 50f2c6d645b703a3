//! Commands as records, through HTTP: a command is queued, delivered the
//! first time its device reads it, acknowledged with the result the
//! device reports, or expired unread; each device's history is kept
//! within a bound and survives a restart.

mod common;

use std::time::{Duration, Instant};

use common::{column, TestServer};

/// The device's command history as the administrator sees it.
fn history(s: &TestServer, id: &str) -> String {
    let r = s.get_admin(&format!("/v1/devices/{id}/commands"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The one history row with this seq, split into its columns.
fn row(body: &str, seq: u64) -> Vec<String> {
    let line = body
        .lines()
        .skip(1)
        .find(|l| l.starts_with(&format!("{seq},")))
        .unwrap_or_else(|| panic!("no command {seq} in {body}"));
    line.split(',').map(str::to_string).collect()
}

/// Queue a command as the administrator; its seq.
fn send(s: &TestServer, id: &str, form: &str) -> u64 {
    let r = s.admin_form("POST", &format!("/v1/devices/{id}/inbox"), form);
    assert_eq!(r.status, 201, "{}", r.body);
    r.body.trim().strip_prefix("ok,").unwrap().parse().unwrap()
}

/// Poll the history until `done` holds (bounded: 20 s).
fn history_until(s: &TestServer, id: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = history(s, id);
        if done(&h) || Instant::now() > deadline {
            return h;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_command_is_queued_delivered_and_acknowledged_with_its_result() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");
    let seq = send(&s, "gh3", "kind=command&sensor=L1&value=1");
    let h = history(&s, "gh3");
    assert!(
        h.starts_with("seq,state,queued,delivered,done,expires,from,sensor,value,result\n"),
        "{h}"
    );
    let r = row(&h, seq);
    assert_eq!(r[1], "queued", "{h}");
    assert!(
        !r[2].is_empty() && r[3].is_empty() && r[4].is_empty(),
        "{h}"
    );
    assert_eq!(&r[6..], ["user:admin", "L1", "true", ""], "{h}");

    // The device reads its inbox: delivered, with the time of that read.
    let inbox = s.get(&format!("/v1/inbox?device=gh3&token={tok}"));
    assert_eq!(inbox.status, 200);
    assert!(inbox.body.contains(",command,"), "{}", inbox.body);
    let h = history(&s, "gh3");
    let delivered = row(&h, seq);
    assert_eq!(delivered[1], "delivered", "{h}");
    assert!(!delivered[3].is_empty(), "{h}");
    // Reading again does not move the first delivery.
    s.get(&format!("/v1/inbox?device=gh3&token={tok}"));
    assert_eq!(row(&history(&s, "gh3"), seq)[3], delivered[3]);

    // The device acknowledges with a result.
    let ack = s.get(&format!(
        "/v1/inbox/ack?device=gh3&token={tok}&upto={seq}&result=ok%3A%20relay%20on"
    ));
    assert_eq!(ack.status, 200, "{}", ack.body);
    assert_eq!(ack.body, "ok,1,0\n");
    let h = history(&s, "gh3");
    let done = row(&h, seq);
    assert_eq!(done[1], "acknowledged", "{h}");
    assert_eq!(done[3], delivered[3], "{h}");
    assert!(!done[4].is_empty(), "{h}");
    assert_eq!(done[9], "ok: relay on", "{h}");

    // The record survives a restart.
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |_| {});
    assert_eq!(row(&history(&s, "gh3"), seq), done);
}

#[test]
fn a_command_carried_by_a_readings_reply_is_delivered() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");
    let seq = send(&s, "gh3", "kind=command&sensor=N4&value=18.5");
    let r = s.get(&format!("/v1/readings?device=gh3&token={tok}&N1=21.5"));
    assert_eq!(r.status, 200);
    assert!(
        r.body.starts_with("ok,1,1\n") && r.body.contains(",command,"),
        "{}",
        r.body
    );
    // Recorded in the commit of the readings the reply answers.
    let h = history_until(&s, "gh3", |h| row(h, seq)[1] == "delivered");
    assert_eq!(row(&h, seq)[1], "delivered", "{h}");
    assert!(!row(&h, seq)[3].is_empty(), "{h}");
}

#[test]
fn a_csv_ack_reports_one_result_per_command() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");
    let a = send(&s, "gh3", "kind=command&sensor=L1&value=1");
    let m = s.admin_form("POST", "/v1/devices/gh3/inbox", "kind=message&value=hi");
    assert_eq!(m.status, 201);
    let b = send(&s, "gh3", "kind=command&sensor=N2&value=7");
    let c = send(&s, "gh3", "kind=command&sensor=N2&value=8");
    let body = format!("seq,result\n{a},ok\n{b},\"error: 7 > 5, \"\"max\"\"\"\n");
    let r = s.post(
        &format!("/v1/inbox/ack?device=gh3&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Up to the highest seq listed: a, the message and b; c stays.
    assert_eq!(r.body, "ok,3,1\n");
    let h = history(&s, "gh3");
    assert_eq!(row(&h, a)[1], "acknowledged");
    assert_eq!(row(&h, a)[9], "ok");
    assert_eq!(row(&h, b)[1], "acknowledged");
    assert!(h.contains("\"error: 7 > 5, \"\"max\"\"\"\n"), "{h}");
    assert_eq!(row(&h, c)[1], "queued", "{h}");
    // Newest first.
    assert_eq!(column(&h, "seq"), [c, b, a].map(|n| n.to_string()));

    // Bad result rows are refused whole; nothing is acknowledged.
    for (body, code) in [
        (format!("seq,result\n{c},a\rb\n"), "bad_value"),
        (format!("seq,result\n{c},ok\n{c},ok\n"), "duplicate_field"),
        (format!("seq,value\n{c},ok\n"), "bad_csv"),
        ("seq,result\n".to_string(), "bad_csv"),
        (
            format!("seq,result\n{c},{}\n", "x".repeat(201)),
            "bad_value",
        ),
    ] {
        let r = s.post(
            &format!("/v1/inbox/ack?device=gh3&token={tok}"),
            "text/csv",
            body.as_bytes(),
            "",
        );
        assert_eq!(
            (r.status, r.error_code()),
            (400, code),
            "{body:?}: {}",
            r.body
        );
    }
    let r = s.post("/v1/inbox/ack", "text/csv", b"seq,result\n1,ok\n", "");
    assert_eq!(r.status, 401);
    assert_eq!(row(&history(&s, "gh3"), c)[1], "queued");
}

#[test]
fn an_undelivered_command_expires_and_leaves_the_inbox() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");
    let soon = common::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 2,
    );
    // One the device reads before its expiry, one it never reads.
    let read = send(
        &s,
        "gh3",
        &format!("kind=command&sensor=L1&value=1&expires={soon}"),
    );
    let inbox = s.get(&format!("/v1/inbox?device=gh3&token={tok}"));
    assert!(inbox.body.contains(&format!("\n{read},command,")));
    let unread = send(
        &s,
        "gh3",
        &format!("kind=command&sensor=L1&value=0&expires={soon}"),
    );
    let h = history(&s, "gh3");
    assert_eq!(row(&h, unread)[5], soon, "{h}");
    let h = history_until(&s, "gh3", |h| row(h, unread)[1] == "expired");
    assert_eq!(row(&h, unread)[1], "expired", "{h}");
    assert!(!row(&h, unread)[4].is_empty(), "{h}");
    // The delivered one stays: the device may be applying it.
    assert_eq!(row(&h, read)[1], "delivered", "{h}");
    let inbox = s.get(&format!("/v1/inbox?device=gh3&token={tok}"));
    assert_eq!(
        column(&inbox.body, "seq"),
        [read.to_string()],
        "{}",
        inbox.body
    );
    let r = s.get(&format!("/v1/readings?device=gh3&token={tok}"));
    assert!(r.body.starts_with("ok,0,1\n"), "{}", r.body);

    // Bad expiries.
    for (form, code) in [
        (
            "kind=command&sensor=L1&value=1&expires=2001-01-01T00:00:00Z",
            "bad_time",
        ),
        ("kind=command&sensor=L1&value=1&expires=soon", "bad_time"),
        ("kind=message&value=hi&expires=4102444800", "bad_parameter"),
    ] {
        let r = s.admin_form("POST", "/v1/devices/gh3/inbox", form);
        assert_eq!(
            (r.status, r.error_code()),
            (400, code),
            "{form}: {}",
            r.body
        );
    }
}

#[test]
fn history_is_bounded_and_follows_a_gateway() {
    let s = TestServer::start_with(|c| c.limits.commands_kept = 3);
    let tok = s.create_device("gw");
    let r = s.admin_form("POST", "/v1/devices/gw", "gateway=true");
    assert_eq!(r.status, 200, "{}", r.body);
    // A device below the gateway: its commands go to the gateway's inbox.
    let r = s.post(
        "/v1/devices",
        "text/csv",
        b"id,name\nt1,Thermo 1\n",
        &common::basic("gw", &tok),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let mut seqs = Vec::new();
    for v in 1..=5 {
        seqs.push(send(&s, "t1", &format!("kind=command&sensor=N1&value={v}")));
    }
    let own = send(&s, "gw", "kind=command&sensor=L1&value=1");
    let h = history(&s, "t1");
    assert_eq!(h.lines().count(), 6, "{h}");
    assert!(!h.contains(&format!("\n{own},")), "the gateway's own: {h}");
    assert_eq!(column(&history(&s, "gw"), "seq"), [own.to_string()]);
    // Unfinished commands are never trimmed, whatever the bound.
    let ack = s.get(&format!(
        "/v1/inbox/ack?device=gw&token={tok}&upto={own}&result=done"
    ));
    assert_eq!(ack.body, "ok,6,0\n");
    assert_eq!(row(&history(&s, "t1"), seqs[4])[1], "acknowledged");
    // Six finished in the gateway's inbox: the next command trims the
    // oldest until three records are left.
    let next = send(&s, "t1", "kind=command&sensor=N1&value=6");
    let all: Vec<String> = [history(&s, "t1"), history(&s, "gw")]
        .iter()
        .flat_map(|h| column(h, "seq"))
        .collect();
    assert_eq!(
        all,
        [next, seqs[4], own].map(|n| n.to_string()),
        "the newest three are kept"
    );
    let r = s.get_admin("/v1/devices/t1/commands?limit=0");
    assert_eq!((r.status, r.error_code()), (400, "bad_limit"));
    let r = s.get_admin("/v1/devices/t1/commands?limit=1");
    assert_eq!(column(&r.body, "seq"), [next.to_string()]);
    let r = s.get_admin("/v1/devices/nope/commands");
    assert_eq!(r.status, 404);
}

/// Every way a device is handed its inbox rows records the commands among
/// them as delivered, by the time the device has them: a heartbeat's reply
/// (over HTTP/1.1 and from a raw HTTP/1.0 board with LF-only lines), a
/// readings reply from that board, and its MQTT inbox subscription.
#[test]
fn every_way_a_device_gets_a_command_marks_it_delivered() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");

    // A heartbeat (no readings): the reply carries the row, and the
    // record says delivered by the time the reply is in.
    let seq = send(&s, "gh3", "kind=command&sensor=L1&value=1");
    let r = s.get(&format!("/v1/readings?device=gh3&token={tok}"));
    assert!(
        r.body.starts_with("ok,0,1\n") && r.body.contains(&format!("\n{seq},command,")),
        "{}",
        r.body
    );
    let h = history(&s, "gh3");
    assert_eq!(row(&h, seq)[1], "delivered", "heartbeat reply: {h}");
    assert!(!row(&h, seq)[3].is_empty(), "{h}");

    // A board speaking HTTP/1.0 with bare LFs: a heartbeat, then readings.
    let board = |body: &str| {
        let req = format!(
            "POST /v1/readings?device=gh3&token={tok} HTTP/1.0\nContent-Type: text/csv\nContent-Length: {}\n\n{body}",
            body.len()
        );
        s.raw(req.as_bytes())
    };
    let hb = send(&s, "gh3", "kind=command&sensor=N2&value=5");
    let r = s.raw(format!("GET /v1/readings?device=gh3&token={tok} HTTP/1.0\n\n").as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(&format!("\n{hb},command,")), "{}", r.body);
    assert_eq!(row(&history(&s, "gh3"), hb)[1], "delivered");
    let up = send(&s, "gh3", "kind=command&sensor=N2&value=6");
    let r = board(&format!("time,N1\n{},21.5\n", common::hour_ago()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.starts_with("ok,1,3\n") && r.body.contains(&format!("\n{up},command,")),
        "{}",
        r.body
    );
    // Recorded in the commit the `200` waited for: no later poll needed.
    let h = history(&s, "gh3");
    assert_eq!(row(&h, up)[1], "delivered", "readings reply: {h}");

    // MQTT: the inbox subscription.
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let m = send(&s, "gh3", "kind=command&sensor=N3&value=7");
    assert_eq!(row(&history(&s, "gh3"), m)[1], "queued");
    let sub = common::mqtt::msub(
        s.mqtt.expect("mqtt listener"),
        "gh3",
        &tok,
        &["-t", "overlord/gh3/inbox"],
    );
    let line = sub.until(&format!(" {m},command,"), Duration::from_secs(15));
    assert!(line.contains(&format!(" {m},command,")), "{line}");
    let h = history(&s, "gh3");
    assert_eq!(row(&h, m)[1], "delivered", "mqtt subscription: {h}");
    assert!(!row(&h, m)[3].is_empty(), "{h}");
}

/// A command that expires while its device keeps polling is either
/// served and recorded delivered, or gone and recorded expired: never
/// served to the device and recorded expired.
#[test]
fn expiry_racing_delivery_never_serves_an_expired_command() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Far enough ahead that every send is accepted on a loaded machine;
    // the server's clock is moved past it while the device polls.
    let soon = common::rfc3339(now + 30);
    let seqs: Vec<u64> = (0..20)
        .map(|v| {
            send(
                &s,
                "gh3",
                &format!("kind=command&sensor=N1&value={v}&expires={soon}"),
            )
        })
        .collect();
    // Poll until every command is delivered or expired (bounded).
    let mut served = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut polls = 0;
    loop {
        polls += 1;
        if polls == 4 {
            // Expiry now races the polls below.
            s.clock.advance(Duration::from_secs(31));
        }
        let path = if served.len() % 2 == 0 {
            format!("/v1/inbox?device=gh3&token={tok}&limit=1")
        } else {
            format!("/v1/readings?device=gh3&token={tok}")
        };
        let r = s.get(&path);
        assert_eq!(r.status, 200, "{}", r.body);
        for l in r.body.lines().filter(|l| l.contains(",command,")) {
            served.insert(l.split(',').next().unwrap().parse::<u64>().unwrap());
        }
        let h = history(&s, "gh3");
        if seqs.iter().all(|q| row(&h, *q)[1] != "queued") || Instant::now() > deadline {
            break;
        }
        // Ack what was served so the next poll sees the next command.
        if let Some(last) = served.iter().max() {
            s.get(&format!("/v1/inbox/ack?device=gh3&token={tok}&upto={last}"));
        }
    }
    let h = history(&s, "gh3");
    for q in &seqs {
        let state = row(&h, *q)[1].clone();
        if served.contains(q) {
            assert_ne!(state, "expired", "command {q} was served: {h}");
        } else {
            assert_eq!(state, "expired", "command {q} was never served: {h}");
        }
    }
}
