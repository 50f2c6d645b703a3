//! Presence and gateways through HTTP: a device goes offline once and
//! comes back once, its owner is told once per change; a gateway registers
//! devices below it, writes for them and receives their commands; presence
//! survives a restart without losing or repeating a change.

mod common;

use std::time::Duration;

use common::{column, hour_ago, TestServer};

fn fast(c: &mut overlord::config::Config) {
    c.presence.offline_after_secs = 1;
    c.limits.device_requests_per_sec = 0.0;
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}\r\n")
}

/// `GET path` as the administrator until `done(body)`; panics after 20 s.
fn wait_for(s: &TestServer, path: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let r = s.admin_until(path, &done);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(done(&r.body), "timed out waiting for {what}: {}", r.body);
    r.body
}

/// The presence events of device `id`: its states in order.
fn states_of(s: &TestServer, id: &str) -> Vec<String> {
    let r = s.get_admin("/v1/presence/events?after=0");
    assert_eq!(r.status, 200, "{}", r.body);
    let devs = column(&r.body, "device");
    let states = column(&r.body, "state");
    devs.iter()
        .zip(states)
        .filter(|(d, _)| *d == id)
        .map(|(_, s)| s)
        .collect()
}

/// The state column of one device's row.
fn state(s: &TestServer, id: &str) -> String {
    let r = s.get_admin(&format!("/v1/devices/{id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    column(&r.body, "state").remove(0)
}

fn send(s: &TestServer, id: &str, tok: &str) {
    let r = s.get(&format!(
        "/v1/readings?device={id}&token={tok}&N1=1&time={}",
        hour_ago()
    ));
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Let `by` pass on the server's clock (no sleeping), and wait until the
/// presence sweep has run at the new time: `witness` (a device whose
/// `offline_after` is under `by`) is heard from first and must go offline,
/// and the sweep takes every due device in one pass, so whatever was
/// going to change by then has changed.
fn let_pass(s: &TestServer, by: Duration, witness: &str, token: &str) {
    let gone = format!(",{witness},offline,");
    let before = s
        .get_admin("/v1/presence/events?after=0")
        .body
        .matches(&gone)
        .count();
    send(s, witness, token);
    wait_for(
        s,
        "/v1/presence/events?after=0",
        "the witness online",
        |b| b.matches(&format!(",{witness},online,")).count() > before,
    );
    s.clock.advance(by);
    wait_for(
        s,
        "/v1/presence/events?after=0",
        "the witness offline",
        |b| b.matches(&gone).count() > before,
    );
}

#[test]
fn offline_once_online_once_and_the_owner_is_told_once_each() {
    let s = TestServer::start_with(fast);
    let tok = s.create_device("d1");
    let wtok = s.create_device("watcher");
    let r = s.admin_form("POST", "/v1/channels", "name=presence");
    assert_eq!(r.status, 201, "{}", r.body);
    // The administrator owns d1: tell them on watcher's inbox and a channel.
    let r = s.admin_form(
        "POST",
        "/v1/presence/notify",
        "notify_device=watcher&channel=presence",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "notify_device,channel\nwatcher,presence\n");
    assert_eq!(state(&s, "d1"), "unknown");

    send(&s, "d1", &tok);
    wait_for(&s, "/v1/devices?state=online", "d1 online", |b| {
        b.contains("\nd1,")
    });
    // Silent for more than a second: offline, once.
    s.clock.advance(Duration::from_millis(1100));
    let body = wait_for(&s, "/v1/devices?state=offline", "d1 offline", |b| {
        b.contains("\nd1,")
    });
    assert!(!body.contains("\nwatcher,"), "never heard from: {body}");
    let witness = s.create_device("witness");
    let_pass(&s, Duration::from_millis(1500), "witness", &witness);
    assert_eq!(states_of(&s, "d1"), ["online", "offline"]);
    // Next contact: online again, once.
    send(&s, "d1", &tok);
    send(&s, "d1", &tok);
    wait_for(&s, "/v1/presence/events?after=0", "back", |b| {
        b.matches(",d1,").count() == 3
    });
    assert_eq!(states_of(&s, "d1"), ["online", "offline", "online"]);

    // The owner was told exactly once per change, on the device inbox...
    let r = s.get(&format!("/v1/inbox?device=watcher&token={wtok}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let from = column(&r.body, "from");
    let value = column(&r.body, "value");
    let told: Vec<&str> = from
        .iter()
        .zip(&value)
        .filter(|(f, _)| *f == "presence:d1")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(told, ["online", "offline", "online"], "{}", r.body);
    // ...and on the channel, as S0 items.
    let r = s.get_admin("/v1/channels/presence/items?after=0");
    let rows: Vec<&str> = r.body.lines().filter(|l| l.contains(",d1,S0,")).collect();
    assert_eq!(rows.len(), 3, "{}", r.body);
    assert!(rows[1].ends_with(",offline"), "{}", r.body);
    // The events feed resumes after an index.
    let idx = column(&s.get_admin("/v1/presence/events?after=0").body, "index");
    let last: u64 = idx.last().unwrap().parse().unwrap();
    let r = s.get_admin(&format!("/v1/presence/events?after={}", last - 1));
    assert_eq!(r.body.lines().count(), 2, "{}", r.body);
    let r = s.get_admin("/v1/presence/events?since=2000-01-01T00:00:00Z&limit=1");
    assert_eq!(r.body.lines().count(), 2, "{}", r.body);
    let r = s.get_admin("/v1/presence/events?after=x");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s.get_admin("/v1/devices?state=sleepy");
    assert_eq!((r.status, r.error_code()), (400, "bad_value"));
}

#[test]
fn a_gateway_registers_writes_for_and_relays_to_its_devices() {
    // A minute by default, so nothing goes offline before the end.
    let s = TestServer::start_with(|c| {
        c.limits.device_requests_per_sec = 0.0;
        c.presence.offline_after_secs = 60;
    });
    let r = s.admin_form(
        "POST",
        "/v1/devices",
        "id=gw&name=Plug+1&gateway=true&latitude=52.52&longitude=13.4&location=shed",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let gw = common::token_of(&r.body);
    let auth = format!("device=gw&token={gw}");
    // A plain device may not register devices.
    let plain = s.create_device("plain");
    let children = "id,name,kind,tags\nc1,Thermo 1,thermo,north\nc2,Thermo 2,thermo,\nc3,Door,switch,north;door\n";
    let r = s.post(
        &format!("/v1/devices?device=plain&token={plain}"),
        "text/csv",
        children.as_bytes(),
        "",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // The gateway registers three devices below it, in one CSV.
    let r = s.post(
        &format!("/v1/devices?{auth}"),
        "text/csv",
        children.as_bytes(),
        "",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let tokens = column(&r.body, "token");
    assert_eq!(tokens.len(), 3);
    assert!(tokens.iter().all(|t| t.len() == 32), "{}", r.body);
    // Again on its next boot: nothing new, no new tokens, no error.
    let r = s.post(
        &format!("/v1/devices?{auth}"),
        "text/csv",
        children.as_bytes(),
        "",
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "id,token\nc1,\nc2,\nc3,\n")
    );
    // A device that is not below it is not taken over.
    let r = s.post(
        &format!("/v1/devices?{auth}"),
        "text/csv",
        b"id\nplain\n",
        "",
    );
    assert_eq!((r.status, r.error_code()), (409, "device_exists"));

    // Readings for all three in one CSV with a device column.
    let t = hour_ago();
    let body = format!("time,device,N1\n{t},c1,20.5\n{t},c2,21.5\n{t},c3,1\n");
    let r = s.post(
        &format!("/v1/readings?{auth}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.body, "ok,3,0\n");
    let r = s.get_admin(&format!(
        "/v1/devices/c2/readings?sensors=N1&from={t}&to={t}"
    ));
    assert_eq!(column(&r.body, "N1"), ["21.5"]);
    // Not for a device that is not below it.
    let body = format!("time,device,N1\n{t},plain,1\n");
    let r = s.post(
        &format!("/v1/readings?{auth}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.status, 404, "{}", r.body);

    // The tree and the parent filter (presence follows the digest, which
    // runs after the reply: wait until all four are online).
    wait_for(&s, "/v1/devices/tree", "all online", |b| {
        ["0,gw,", "1,c1,", "1,c2,", "1,c3,"].iter().all(|d| {
            b.lines()
                .any(|l| l.starts_with(d) && l.contains(",online,"))
        })
    });
    let r = s.get_admin("/v1/devices/tree");
    assert_eq!(
        r.body
            .lines()
            .filter(|l| !l.contains(",plain,"))
            .collect::<Vec<_>>(),
        [
            "depth,id,parent,state,name",
            "0,gw,,online,Plug 1",
            "1,c1,gw,online,Thermo 1",
            "1,c2,gw,online,Thermo 2",
            "1,c3,gw,online,Door",
        ],
        "{}",
        r.body
    );
    let r = s.get_admin("/v1/devices?parent=gw&tag=north");
    assert_eq!(column(&r.body, "id"), ["c1", "c3"]);
    let r = s.get_admin("/v1/devices?q=THERMO");
    assert_eq!(column(&r.body, "id"), ["c1", "c2"]);

    // A command for c2 arrives in the gateway's inbox, marked with c2.
    let r = s.admin_form(
        "POST",
        "/v1/devices/c2/inbox",
        "kind=command&sensor=L1&value=true",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.get(&format!("/v1/inbox?{auth}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut lines = r.body.lines();
    assert_eq!(lines.next(), Some("seq,kind,time,from,sensor,value,device"));
    let row = lines.next().expect("one row");
    assert!(
        row.starts_with("1,command,") && row.ends_with(",user:admin,L1,true,c2"),
        "{row}"
    );
    // Watching c2's queue shows the row waiting in the gateway's inbox.
    let r = s.get_admin("/v1/devices/c2/inbox");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .starts_with("seq,kind,time,from,sensor,value,device\n1,command,")
            && r.body.ends_with(",L1,true,c2\n")
            && r.body.lines().count() == 2,
        "{}",
        r.body
    );
    assert_eq!(s.get_admin("/v1/devices/c1/inbox").body.lines().count(), 1);
    // The readings reply carries it too, with the device column.
    let r = s.get(&format!("/v1/readings?{auth}&N1=1&time={}", hour_ago()));
    assert!(r.body.starts_with("ok,1,1\n1,command,"), "{}", r.body);
    assert!(r.body.ends_with(",L1,true,c2\n"), "{}", r.body);
    let r = s.get(&format!("/v1/inbox/ack?{auth}&upto=1"));
    assert_eq!(r.body, "ok,1,0\n");

    // The gateway falls silent with its devices, all with a 1 s
    // offline_after (set now, which reschedules them): one outage, the
    // gateway's; the devices below it are unreachable, not individually
    // offline.
    for d in ["gw", "c1", "c2", "c3"] {
        let r = s.admin_form("POST", &format!("/v1/devices/{d}"), "offline_after=1");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_for(
        &s,
        "/v1/devices?state=unreachable",
        "children unreachable",
        |b| {
            ["c1", "c2", "c3"]
                .iter()
                .all(|c| b.contains(&format!("\n{c},")))
        },
    );
    // Time passes: the devices are checked again, and still are not
    // offline on their own.
    let witness = s.create_device("witness");
    let r = s.admin_form("POST", "/v1/devices/witness", "offline_after=1");
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..2 {
        let_pass(&s, Duration::from_millis(1250), "witness", &witness);
    }
    assert_eq!(
        states_of(&s, "gw").last().map(String::as_str),
        Some("offline")
    );
    for c in ["c1", "c2", "c3"] {
        assert_eq!(states_of(&s, c), ["online"], "{c} never failed on its own");
        assert_eq!(state(&s, c), "unreachable");
    }
}

#[test]
fn presence_survives_a_restart_without_repeats() {
    let s = TestServer::start_with(|c| c.presence.offline_after_secs = 2);
    let tok = s.create_device("d1");
    send(&s, "d1", &tok);
    wait_for(&s, "/v1/presence/events?after=0", "online", |b| {
        b.contains(",d1,online,")
    });
    // Stop while it is online; it stays silent while the server is down.
    let clock = s.clock.clone();
    let (tmp, admin) = s.stop();
    clock.advance(Duration::from_millis(2500));
    let s = TestServer::restart_at(tmp, admin, clock, |c| c.presence.offline_after_secs = 2);
    wait_for(&s, "/v1/presence/events?after=0", "offline", |b| {
        b.contains(",d1,offline,")
    });
    assert_eq!(states_of(&s, "d1"), ["online", "offline"]);
    // Another restart: still offline, no second event, however long.
    let clock = s.clock.clone();
    let (tmp, admin) = s.stop();
    let s = TestServer::restart_at(tmp, admin, clock, |c| c.presence.offline_after_secs = 2);
    assert_eq!(state(&s, "d1"), "offline");
    let witness = s.create_device("witness");
    let_pass(&s, Duration::from_millis(2500), "witness", &witness);
    assert_eq!(state(&s, "d1"), "offline");
    assert_eq!(states_of(&s, "d1"), ["online", "offline"]);
    // And back.
    send(&s, "d1", &tok);
    wait_for(&s, "/v1/presence/events?after=0", "online", |b| {
        b.matches(",d1,").count() == 3
    });
    assert_eq!(state(&s, "d1"), "online");
}

#[test]
fn metadata_is_validated_and_editable_by_the_owner_only() {
    let s = TestServer::start();
    s.create_device("d1");
    let r = s.admin_form(
        "POST",
        "/v1/devices/d1",
        "description=North+wall&latitude=-33.9&longitude=151.2&tags=a%3Bb&offline_after=90",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(",false,,-33.9,151.2,,a;b,90,North wall\n"),
        "{}",
        r.body
    );
    for (form, code) in [
        ("latitude=91", "bad_value"),
        ("longitude=abc", "bad_value"),
        ("offline_after=0", "bad_value"),
        ("gateway=maybe", "bad_value"),
        ("parent=d1", "bad_parent"),
        ("parent=nope", "unknown_device"),
        ("colour=red", "bad_parameter"),
        ("name=", "bad_name"),
        ("", "missing_field"),
    ] {
        let r = s.admin_form("POST", "/v1/devices/d1", form);
        assert_eq!(r.error_code(), code, "{form}: {}", r.body);
        assert!(r.status >= 400 && r.status < 500, "{form}: {}", r.status);
    }
    // Cycles through gateways are refused.
    s.admin_form("POST", "/v1/devices", "id=g1&gateway=true");
    s.admin_form("POST", "/v1/devices", "id=g2&gateway=true&parent=g1");
    let r = s.admin_form("POST", "/v1/devices/g1", "parent=g2");
    assert_eq!((r.status, r.error_code()), (400, "bad_parent"));
    // A bulk import is all or none.
    let r = s.post(
        "/v1/devices",
        "text/csv",
        b"id,latitude\nok1,10\nbad1,100\n",
        &bearer(&s.admin),
    );
    assert_eq!((r.status, r.error_code()), (400, "bad_value"));
    assert_eq!(s.get_admin("/v1/devices/ok1").status, 404);
    let r = s.post(
        "/v1/devices",
        "text/csv",
        b"id,latitude,longitude,location\nok1,10,20,\"Field 7, east\"\nok2,,,\n",
        &bearer(&s.admin),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.get_admin("/v1/devices/ok1");
    assert!(
        r.body.contains(",10,20,\"Field 7, east\",,,\n"),
        "{}",
        r.body
    );
}
