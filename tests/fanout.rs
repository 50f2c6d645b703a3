//! The digest fan-out over HTTP: channels (with long-poll), alerts that
//! fire on the edge and re-arm, and the per-device inbox.

mod common;

use std::time::{Duration, Instant};

use common::{hour_ago, m, rfc3339, scrape_until, TestServer};

fn send(s: &TestServer, dev: &str, tok: &str, query: &str) -> String {
    let r = s.get(&format!("/v1/readings?device={dev}&token={tok}&{query}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn items(s: &TestServer, ch: &str, after: u64, limit: usize) -> Vec<String> {
    let r = s.get_admin(&format!(
        "/v1/channels/{ch}/items?after={after}&limit={limit}"
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut lines = r.body.lines();
    assert_eq!(lines.next(), Some("index,time,device,sensor,value"));
    lines.map(String::from).collect()
}

fn index_of(row: &str) -> u64 {
    row.split(',').next().unwrap().parse().unwrap()
}

#[test]
fn channel_readers_resume_without_gaps_or_duplicates() {
    let s = TestServer::start();
    let a = s.create_device("a");
    let b = s.create_device("b");
    assert_eq!(
        s.admin_form("POST", "/v1/channels", "name=farm").status,
        201
    );
    assert_eq!(
        s.admin_form("POST", "/v1/channels/farm/members", "device=a&sensor=N1")
            .status,
        201
    );
    assert_eq!(
        s.admin_form("POST", "/v1/channels/farm/members", "device=b&sensor=I2")
            .status,
        201
    );
    let t = hour_ago();
    // 40 readings from two devices; a.N2 is not a member and must not appear.
    for i in 0..20 {
        send(&s, "a", &a, &format!("N1={i}.5&N2=9&time={}", t + i));
        send(&s, "b", &b, &format!("I2={i}&time={}", t + i));
    }
    let all = s.admin_until("/v1/channels/farm/items?after=0&limit=1000", |b| {
        b.lines().count() == 41
    });
    let all: Vec<String> = all.body.lines().skip(1).map(String::from).collect();
    assert_eq!(all.len(), 40);
    let idx: Vec<u64> = all.iter().map(|r| index_of(r)).collect();
    assert_eq!(idx, (1..=40).collect::<Vec<_>>(), "dense indexes from 1");
    assert!(all.iter().all(|r| !r.contains(",N2,")));
    // Sends were sequential, so the channel's order is theirs.
    assert_eq!(all[0], format!("1,{},a,N1,0.5", rfc3339(t)));
    assert_eq!(all[1], format!("2,{},b,I2,0", rfc3339(t)));
    assert_eq!(all[39], format!("40,{},b,I2,19", rfc3339(t + 19)));

    // Reader 1 reads in pages of 7; reader 2 reads 10, "disconnects",
    // and resumes from the last index it saw.
    let mut r1 = Vec::new();
    let mut after = 0;
    loop {
        let page = items(&s, "farm", after, 7);
        if page.is_empty() {
            break;
        }
        after = index_of(page.last().unwrap());
        r1.extend(page);
    }
    let mut r2 = items(&s, "farm", 0, 10);
    let last = index_of(r2.last().unwrap());
    r2.extend(items(&s, "farm", last, 1000));
    assert_eq!(r1, all);
    assert_eq!(r2, all);
    // A retried reading is not fanned out again. Barrier: a new reading
    // of the same device sent after it; once its item is there, the retry
    // (digested before it, in device order) was handled too.
    send(&s, "a", &a, &format!("N1=0.5&time={t}"));
    send(&s, "a", &a, &format!("N1=7.5&time={}", t + 100));
    let deadline = Instant::now() + Duration::from_secs(20);
    while items(&s, "farm", 40, 10).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        items(&s, "farm", 40, 10),
        vec![format!("41,{},a,N1,7.5", rfc3339(t + 100))],
        "the retry made an item"
    );
}

#[test]
fn long_poll_wakes_on_a_reading_and_times_out_empty() {
    let s = TestServer::start();
    let a = s.create_device("a");
    s.admin_form("POST", "/v1/channels", "name=live");
    s.admin_form("POST", "/v1/channels/live/members", "device=a&sensor=N1");
    // Nothing comes: header only, after about the wait.
    let started = Instant::now();
    let r = s.get_admin("/v1/channels/live/items?after=0&wait=1");
    assert_eq!(r.body, "index,time,device,sensor,value\n");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // A reading arrives while a poller waits 30 s: it wakes long before.
    let addr = s.addr;
    let admin = s.admin.clone();
    let poller = std::thread::spawn(move || {
        let started = Instant::now();
        let r = common::raw(
            addr,
            format!("GET /v1/channels/live/items?after=0&wait=30 HTTP/1.1\r\nAuthorization: Bearer {admin}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        (r, started.elapsed())
    });
    // Barrier: the poller is waiting (it holds a long-poll slot).
    let g = scrape_until(&s, |g| m(g, "overlord_long_polls_waiting") >= 1.0);
    assert_eq!(
        m(&g, "overlord_long_polls_waiting"),
        1.0,
        "never long-polled"
    );
    send(&s, "a", &a, "N1=7.25");
    let (r, waited) = poller.join().unwrap();
    assert!(waited < Duration::from_secs(10), "woke after {waited:?}");
    let rows: Vec<&str> = r.body.lines().collect();
    assert_eq!(rows.len(), 2, "{}", r.body);
    assert!(
        rows[1].starts_with("1,") && rows[1].ends_with(",a,N1,7.25"),
        "{}",
        rows[1]
    );
}

#[test]
fn alert_fires_on_the_edge_and_rearms() {
    let s = TestServer::start();
    let tok = s.create_device("gh");
    let r = s.admin_form(
        "POST",
        "/v1/alerts",
        "name=too-hot&device=gh&sensor=N1&min=40&max=100&message=It%27s+too+hot%21",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let t = hour_ago();
    for (i, v) in [50.0, 101.2, 102.0, 99.0, 50.0, 105.0].iter().enumerate() {
        send(&s, "gh", &tok, &format!("N1={v}&time={}", t + i as i64));
    }
    let ev = s.admin_until("/v1/alerts/too-hot/events", |b| b.lines().count() >= 3);
    let rows: Vec<&str> = ev.body.lines().collect();
    assert_eq!(rows[0], "n,time,device,sensor,value,text,delivery");
    assert_eq!(rows.len(), 3, "fires exactly twice: {}", ev.body);
    assert_eq!(
        rows[1],
        format!(
            "1,{},gh,N1,101.2,It's too hot! (101.2 > 100),inbox:1",
            rfc3339(t + 1)
        )
    );
    assert_eq!(
        rows[2],
        format!(
            "2,{},gh,N1,105,It's too hot! (105 > 100),inbox:2",
            rfc3339(t + 5)
        )
    );
    // The device reads both from its inbox.
    let inbox = s.get(&format!("/v1/inbox?device=gh&token={tok}"));
    assert_eq!(
        inbox.body,
        format!(
            "seq,kind,time,from,sensor,value\n1,alert,{},alert:too-hot,N1,It's too hot! (101.2 > 100)\n2,alert,{},alert:too-hot,N1,It's too hot! (105 > 100)\n",
            rfc3339(t + 1),
            rfc3339(t + 5)
        )
    );
    // A value stuck in alarm does not flood.
    for i in 0..20 {
        send(&s, "gh", &tok, &format!("N1=150&time={}", t + 10 + i));
    }
    assert!(s.get_admin("/v1/alerts").body.contains(",fired\n"));
    // Barrier: a re-arm and one more firing, sent after them. When that
    // firing (event 3) is there, the 20 stuck values were handled before
    // it (one device is digested in order): event 3 must be it.
    send(&s, "gh", &tok, &format!("N1=50&time={}", t + 40));
    send(&s, "gh", &tok, &format!("N1=110&time={}", t + 41));
    let ev = s.admin_until("/v1/alerts/too-hot/events", |b| b.lines().count() >= 4);
    let rows: Vec<&str> = ev.body.lines().collect();
    assert_eq!(rows.len(), 4, "the stuck value fired again: {}", ev.body);
    assert!(
        rows[3].starts_with(&format!("3,{},gh,N1,110,", rfc3339(t + 41))),
        "{}",
        ev.body
    );
}

/// An alert that tells a channel appends the reading there, and its event
/// says so (`channel:<name>` in `delivery`, docs/api.md "Alert events").
#[test]
fn an_alert_that_tells_a_channel_names_it_in_the_event() {
    let s = TestServer::start();
    let tok = s.create_device("gh");
    assert_eq!(
        s.admin_form("POST", "/v1/channels", "name=alarms").status,
        201
    );
    let r = s.admin_form(
        "POST",
        "/v1/alerts",
        "name=too-hot&device=gh&sensor=N1&max=100&message=hot&to_device=none&to_channel=alarms",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let t = hour_ago();
    send(&s, "gh", &tok, &format!("N1=50&time={t}"));
    send(&s, "gh", &tok, &format!("N1=101.5&time={}", t + 1));
    let ev = s.admin_until("/v1/alerts/too-hot/events", |b| b.lines().count() >= 2);
    assert_eq!(
        ev.body,
        format!(
            "n,time,device,sensor,value,text,delivery\n1,{},gh,N1,101.5,hot (101.5 > 100),channel:alarms\n",
            rfc3339(t + 1)
        )
    );
    let got = items(&s, "alarms", 0, 10);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].ends_with(",gh,N1,101.5"), "{got:?}");
}

#[test]
fn inbox_order_ack_restart_and_bound() {
    let s = TestServer::start_with(|c| c.limits.max_inbox = 3);
    let tok = s.create_device("dev");
    let r = s.admin_form(
        "POST",
        "/v1/devices/dev/inbox",
        "kind=command&sensor=L1&value=1",
    );
    assert_eq!((r.status, r.body.as_str()), (201, "ok,1\n"));
    assert_eq!(
        s.admin_form(
            "POST",
            "/v1/devices/dev/inbox",
            "kind=message&value=hello%2C+board"
        )
        .body,
        "ok,2\n"
    );
    assert_eq!(
        s.admin_form(
            "POST",
            "/v1/devices/dev/inbox",
            "kind=command&sensor=N2&value=21.50"
        )
        .body,
        "ok,3\n"
    );
    // Full: the sender is refused, nothing older is dropped.
    let r = s.admin_form(
        "POST",
        "/v1/devices/dev/inbox",
        "kind=message&value=one+more",
    );
    assert_eq!((r.status, r.error_code()), (409, "inbox_full"));
    // A command's value must fit its sensor's type.
    let r = s.admin_form(
        "POST",
        "/v1/devices/dev/inbox",
        "kind=command&sensor=L1&value=maybe",
    );
    assert_eq!((r.status, r.error_code()), (400, "bad_value"));
    // The readings reply carries the pending count and the first rows.
    let reply = send(&s, "dev", &tok, &format!("N1=1&time={}", hour_ago()));
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines[0], "ok,1,3");
    assert!(
        lines[1].starts_with("1,command,") && lines[1].ends_with(",user:admin,L1,true"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("2,message,") && lines[2].ends_with(",user:admin,,\"hello, board\""),
        "{}",
        lines[2]
    );
    assert!(lines[3].ends_with(",user:admin,N2,21.5"), "{}", lines[3]);
    // Ack the first two; the third stays, across a restart.
    assert_eq!(
        s.get(&format!("/v1/inbox/ack?device=dev&token={tok}&upto=2"))
            .body,
        "ok,2,1\n"
    );
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |c| c.limits.max_inbox = 3);
    let inbox = s.get(&format!("/v1/inbox?device=dev&token={tok}"));
    let rows: Vec<&str> = inbox.body.lines().collect();
    assert_eq!(rows.len(), 2, "{}", inbox.body);
    assert!(rows[1].starts_with("3,command,"));
    // Seqs are never reused.
    assert_eq!(
        s.admin_form("POST", "/v1/devices/dev/inbox", "kind=message&value=x")
            .body,
        "ok,4\n"
    );
    assert_eq!(
        s.get(&format!("/v1/inbox/ack?device=dev&token={tok}&upto=99"))
            .body,
        "ok,2,0\n"
    );
    assert_eq!(
        s.get(&format!("/v1/inbox?device=dev&token={tok}")).body,
        "seq,kind,time,from,sensor,value\n"
    );
}

#[test]
fn channel_message_reaches_every_member_device() {
    let s = TestServer::start();
    let a = s.create_device("a");
    let b = s.create_device("b");
    s.admin_form("POST", "/v1/channels", "name=all");
    s.admin_form("POST", "/v1/channels/all/members", "device=a&sensor=N1");
    s.admin_form("POST", "/v1/channels/all/members", "device=a&sensor=N2");
    s.admin_form("POST", "/v1/channels/all/members", "device=b&sensor=N1");
    let r = s.admin_form(
        "POST",
        "/v1/channels/all/messages",
        "kind=command&sensor=L3&value=false",
    );
    assert_eq!((r.status, r.body.as_str()), (201, "ok,2\n"));
    for (d, t) in [("a", &a), ("b", &b)] {
        let inbox = s.get(&format!("/v1/inbox?device={d}&token={t}"));
        let rows: Vec<&str> = inbox.body.lines().collect();
        assert_eq!(
            rows.len(),
            2,
            "one row per device, not per member sensor: {}",
            inbox.body
        );
        assert!(
            rows[1].starts_with("1,command,") && rows[1].ends_with(",channel:all,L3,false"),
            "{}",
            rows[1]
        );
    }
}

#[test]
fn a_poison_batch_goes_to_dead_letters_and_the_queue_moves_on() {
    let tmp = tempfile::tempdir().unwrap();
    let hook: overlord::digest::DigestHook = std::sync::Arc::new(|_, r| {
        if r.value == overlord::codec::Value::Num(666.0) {
            panic!("poisoned reading");
        }
    });
    let s = TestServer::open(
        overlord::app::OpenOptions {
            digest_hook: Some(hook),
            ..overlord::app::OpenOptions::new(common::config(tmp.path()))
        },
        None,
    );
    let tok = s.create_device("p");
    s.admin_form("POST", "/v1/channels", "name=c");
    s.admin_form("POST", "/v1/channels/c/members", "device=p&sensor=N1");
    let t = hour_ago();
    // The poisoned reading is stored (it was acknowledged)...
    send(&s, "p", &tok, &format!("N1=666&time={t}"));
    send(&s, "p", &tok, &format!("N1=1&time={}", t + 1));
    // ...its batch is a dead letter, and the next reading still flows.
    let dead = s.admin_until("/v1/dead-letters", |b| b.lines().count() == 2);
    let rows: Vec<&str> = dead.body.lines().collect();
    assert_eq!(rows.len(), 2, "{}", dead.body);
    assert!(rows[1].ends_with(",poisoned reading"), "{}", rows[1]);
    let items = s.admin_until("/v1/channels/c/items", |b| b.lines().count() == 2);
    assert!(items.body.ends_with(",p,N1,1\n"), "{}", items.body);
    let q = s.get(&format!("/v1/devices/p/readings?token={tok}&sensors=N1"));
    assert_eq!(
        q.body.lines().count(),
        3,
        "both readings are stored: {}",
        q.body
    );
    // Only administrators see dead letters.
    let r = s.get(&format!("/v1/dead-letters?device=p&token={tok}"));
    assert_eq!(r.status, 403);
    drop(s);
    drop(tmp);
}

#[test]
fn a_board_gets_its_command_in_the_reply_and_acks_it_over_raw_tcp() {
    use std::io::{Read, Write};
    let s = TestServer::start();
    let tok = s.create_device("board");
    s.admin_form(
        "POST",
        "/v1/devices/board/inbox",
        "kind=command&sensor=L1&value=true",
    );
    let exchange = |req: String| -> String {
        let mut sock = std::net::TcpStream::connect(s.addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let mut n = 0;
        loop {
            let k = sock.read(&mut buf[n..]).unwrap();
            if k == 0 {
                break;
            }
            n += k;
            assert!(n < 512, "reply fits the board's buffer");
        }
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    let reply = exchange(format!(
        "GET /v1/readings?device=board&token={tok}&N1=20.5 HTTP/1.0\n\n"
    ));
    let body = reply.split_once("\r\n\r\n").unwrap().1;
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("ok,1,1"));
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        (row[0], row[1], row[3], row[4], row[5]),
        ("1", "command", "user:admin", "L1", "true")
    );
    let ack = exchange(format!(
        "GET /v1/inbox/ack?device=board&token={tok}&upto={} HTTP/1.0\n\n",
        row[0]
    ));
    assert!(ack.ends_with("\r\n\r\nok,1,0\n"), "{ack}");
    let reply = exchange(format!(
        "GET /v1/readings?device=board&token={tok}&N1=20.6 HTTP/1.0\n\n"
    ));
    assert!(reply.ends_with("\r\n\r\nok,1,0\n"), "{reply}");
}

/// The digest gets the new readings of followed sensors only (a bulk
/// upload nobody follows is not logged twice), every device's contact
/// still counts, and a sensor followed later is followed from then on.
#[test]
fn only_followed_readings_are_digested_and_a_later_channel_follows_from_then() {
    let s = TestServer::start();
    let tok = s.create_device("f");
    s.admin_form("POST", "/v1/channels", "name=c");
    s.admin_form("POST", "/v1/channels/c/members", "device=f&sensor=N1");
    let t = hour_ago();
    // Sent by the administrator for the device (a `device` column), so
    // the device itself never connects: its last contact can only come
    // from the readings' commit.
    let mut csv = String::from("time,device,N1,N2\n");
    for i in 0..10 {
        csv.push_str(&format!("{},f,{i},{i}\n", t + i));
    }
    let r = s.post(
        "/v1/readings",
        "text/csv",
        csv.as_bytes(),
        &format!("Authorization: Bearer {}\r\n", s.admin),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.admin_until("/v1/channels/c/items?limit=100", |b| {
        b.lines().count() == 11
    });
    let met = scrape_until(&s, |met| m(met, "overlord_readings_digested_total") >= 10.0);
    assert_eq!(m(&met, "overlord_readings_stored_total"), 20.0);
    assert_eq!(
        m(&met, "overlord_readings_digested_total"),
        10.0,
        "N2 is not followed"
    );
    // The device's contact counts (only N1 was digested).
    let contact = |b: &str| {
        b.lines()
            .find(|l| l.starts_with("f,"))
            .is_some_and(|l| !l.split(',').nth(4).unwrap_or("").is_empty())
    };
    let list = s.admin_until("/v1/devices", contact);
    assert!(contact(&list.body), "last_seen of f: {}", list.body);
    // Follow N2 now: the next N2 reading reaches the channel.
    s.admin_form("POST", "/v1/channels/c/members", "device=f&sensor=N2");
    send(&s, "f", &tok, &format!("N2=42&time={}", t + 100));
    let items = s.admin_until("/v1/channels/c/items?limit=100", |b| {
        b.lines().count() == 12
    });
    assert!(items.body.ends_with(",f,N2,42\n"), "{}", items.body);
}
