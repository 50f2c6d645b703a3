//! Channels described (a description, a label per member) and alerts
//! defined on a channel (every member sensor, each with its own state),
//! over HTTP as a user would use them (issue 19, item 7).

mod common;

use common::{as_user, hour_ago, rfc3339, token_of, TestServer};

fn send(s: &TestServer, dev: &str, tok: &str, query: &str) {
    let r = s.get(&format!("/v1/readings?device={dev}&token={tok}&{query}"));
    assert_eq!(r.status, 200, "{}", r.body);
}

fn created(s: &TestServer, path: &str, form: &str) {
    let r = s.admin_form("POST", path, form);
    assert_eq!(r.status, 201, "{path} {form}: {}", r.body);
}

/// Rows (without the header) of `path` once it has `n` of them.
fn rows_when(s: &TestServer, path: &str, n: usize) -> Vec<String> {
    let r = s.admin_until(path, |b| b.lines().count() > n);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.lines().skip(1).map(String::from).collect()
}

#[test]
fn channels_keep_a_description_and_member_labels_across_a_restart() {
    let s = TestServer::start();
    s.create_device("gh3");
    s.create_device("gh4");
    created(
        &s,
        "/v1/channels",
        "name=trinidad&retention=50&description=Weather+sensors+in+Trinidad",
    );
    let list = s.get_admin("/v1/channels");
    assert_eq!(
        list.body,
        "name,owner,retention,first,next,members,description\ntrinidad,admin,50,1,1,0,Weather sensors in Trinidad\n"
    );
    // Changed later; text with a comma comes back quoted.
    let r = s.admin_form(
        "POST",
        "/v1/channels/trinidad",
        "description=North+coast%2C+3+stations",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ok,trinidad\n"));
    assert!(
        s.get_admin("/v1/channels")
            .body
            .ends_with(",0,\"North coast, 3 stations\"\n"),
        "{}",
        s.get_admin("/v1/channels").body
    );
    // Bad text is refused, nothing changes.
    for bad in ["description=two%0Alines", "description=%E2%80%AEevil"] {
        let r = s.admin_form("POST", "/v1/channels/trinidad", bad);
        assert_eq!((r.status, r.error_code()), (400, "bad_value"), "{bad}");
    }
    let r = s.admin_form("POST", "/v1/channels", "name=x&description=a%0Db");
    assert_eq!((r.status, r.error_code()), (400, "bad_value"));
    let r = s.admin_form("POST", "/v1/channels/nope", "description=x");
    assert_eq!((r.status, r.error_code()), (404, "unknown_channel"));

    // Member labels: set when adding, kept when re-added without one,
    // changed with one, cleared with an empty one, gone with the member.
    created(
        &s,
        "/v1/channels/trinidad/members",
        "device=gh3&sensor=N1&label=North+wall",
    );
    created(&s, "/v1/channels/trinidad/members", "device=gh4&sensor=N1");
    let members = |s: &TestServer| s.get_admin("/v1/channels/trinidad/members").body;
    assert_eq!(
        members(&s),
        "device,sensor,label\ngh3,N1,North wall\ngh4,N1,\n"
    );
    created(&s, "/v1/channels/trinidad/members", "device=gh3&sensor=N1");
    created(
        &s,
        "/v1/channels/trinidad/members",
        "device=gh4&sensor=N1&label=Roof",
    );
    assert_eq!(
        members(&s),
        "device,sensor,label\ngh3,N1,North wall\ngh4,N1,Roof\n"
    );
    let r = s.admin_form(
        "POST",
        "/v1/channels/trinidad/members",
        "device=gh4&sensor=N1&label=a%0Ab",
    );
    assert_eq!((r.status, r.error_code()), (400, "bad_value"));

    // Persisted: a restart shows the same.
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |_| {});
    assert!(s
        .get_admin("/v1/channels")
        .body
        .ends_with(",2,\"North coast, 3 stations\"\n"));
    assert_eq!(
        members(&s),
        "device,sensor,label\ngh3,N1,North wall\ngh4,N1,Roof\n"
    );
    created(
        &s,
        "/v1/channels/trinidad/members",
        "device=gh4&sensor=N1&label=",
    );
    let r = s.admin_form(
        "DELETE",
        "/v1/channels/trinidad/members",
        "device=gh3&sensor=N1",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    created(&s, "/v1/channels/trinidad/members", "device=gh3&sensor=N1");
    assert_eq!(members(&s), "device,sensor,label\ngh3,N1,\ngh4,N1,\n");
}

#[test]
fn an_alert_on_a_channel_watches_every_member_with_its_own_state() {
    let s = TestServer::start();
    let a = s.create_device("a");
    let b = s.create_device("b");
    let c = s.create_device("c");
    created(&s, "/v1/channels", "name=farm");
    created(&s, "/v1/channels/farm/members", "device=a&sensor=N1");
    created(&s, "/v1/channels/farm/members", "device=b&sensor=N1");
    // A channel without alerts that b also feeds: the barrier for b's
    // readings once b has left the farm.
    created(&s, "/v1/channels", "name=probe");
    created(&s, "/v1/channels/probe/members", "device=b&sensor=N2");
    created(
        &s,
        "/v1/alerts",
        "name=hot&channel=farm&max=100&message=Too+hot",
    );
    let r = s.admin_form("POST", "/v1/alerts", "name=x&channel=farm&device=a&max=1");
    assert_eq!((r.status, r.error_code()), (400, "bad_parameter"));
    let r = s.admin_form("POST", "/v1/alerts", "name=x&channel=nope&max=1");
    assert_eq!((r.status, r.error_code()), (404, "unknown_channel"));
    assert!(
        s.get_admin("/v1/alerts")
            .body
            .contains("\nhot,admin,channel:farm,,,100,0,Too hot,(member),,armed\n"),
        "{}",
        s.get_admin("/v1/alerts").body
    );

    let t = hour_ago();
    // a fires once for 101, 102 (stays in alarm); b fires on its own.
    send(&s, "a", &a, &format!("N1=101&time={}", t));
    send(&s, "a", &a, &format!("N1=102&time={}", t + 1));
    send(&s, "b", &b, &format!("N1=105&time={}", t + 2));
    // a re-arms and fires again.
    send(&s, "a", &a, &format!("N1=50&time={}", t + 3));
    send(&s, "a", &a, &format!("N1=103&time={}", t + 4));
    let ev = rows_when(&s, "/v1/alerts/hot/events", 3);
    // Sorted by time: a and b are digested by different threads.
    let mut ev: Vec<&str> = ev.iter().map(|r| r.split_once(',').unwrap().1).collect();
    ev.sort();
    assert_eq!(
        ev,
        [
            format!("{},a,N1,101,Too hot (a N1: 101 > 100),inbox:1", rfc3339(t)),
            format!(
                "{},b,N1,105,Too hot (b N1: 105 > 100),inbox:1",
                rfc3339(t + 2)
            ),
            format!(
                "{},a,N1,103,Too hot (a N1: 103 > 100),inbox:2",
                rfc3339(t + 4)
            ),
        ]
    );
    // Each member device is told in its own inbox, naming what fired.
    let inbox = s.get(&format!("/v1/inbox?device=b&token={b}")).body;
    assert_eq!(
        inbox,
        format!(
            "seq,kind,time,from,sensor,value\n1,alert,{},alert:hot,N1,Too hot (b N1: 105 > 100)\n",
            rfc3339(t + 2)
        )
    );
    assert!(s.get_admin("/v1/alerts").body.contains(",fired\n"));

    // Members as they change: c joins and is watched; b leaves and is not.
    created(&s, "/v1/channels/farm/members", "device=c&sensor=N1");
    let r = s.admin_form("DELETE", "/v1/channels/farm/members", "device=b&sensor=N1");
    assert_eq!(r.status, 200, "{}", r.body);
    send(&s, "b", &b, &format!("N1=50&time={}", t + 5));
    send(&s, "b", &b, &format!("N1=150&N2=1&time={}", t + 6));
    send(&s, "c", &c, &format!("N1=200&time={}", t + 7));
    rows_when(&s, "/v1/alerts/hot/events", 4);
    // b's readings were digested (the probe item of the same request is
    // there) and fired nothing.
    rows_when(&s, "/v1/channels/probe/items", 1);
    let ev = s.get_admin("/v1/alerts/hot/events").body;
    assert_eq!(ev.lines().count(), 5, "{ev}");
    assert!(
        ev.contains(",c,N1,200,Too hot (c N1: 200 > 100),inbox:1\n"),
        "{ev}"
    );

    // Per-member state survives a restart: a is fired (103), so 104 does
    // not fire again; a re-arm and 120 do.
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |_| {});
    send(&s, "a", &a, &format!("N1=104&time={}", t + 8));
    send(&s, "a", &a, &format!("N1=10&time={}", t + 9));
    send(&s, "a", &a, &format!("N1=120&time={}", t + 10));
    // Barrier: a's last reading is in the farm channel.
    let items = rows_when(&s, "/v1/channels/farm/items", 9);
    assert!(items.last().unwrap().contains(",a,N1,120"), "{items:?}");
    let ev = rows_when(&s, "/v1/alerts/hot/events", 5);
    assert_eq!(ev.len(), 5, "{ev:?}");
    assert!(ev[4].starts_with(&format!("5,{},a,N1,120,", rfc3339(t + 10))));

    // Deleting the channel deletes the alerts on it.
    assert_eq!(s.admin_form("DELETE", "/v1/channels/farm", "").status, 200);
    assert!(!s.get_admin("/v1/alerts").body.contains("hot"));
}

#[test]
fn a_channel_alert_needs_manage_rights_and_stops_when_access_goes() {
    let s = TestServer::start();
    let x = s.create_device("x");
    let ann = token_of(&s.admin_form("POST", "/v1/users", "name=ann").body);
    created(&s, "/v1/channels", "name=admins");
    created(&s, "/v1/channels/admins/members", "device=x&sensor=N1");
    // Not hers: invisible, then visible but read-only.
    let r = as_user(
        &s,
        &ann,
        "POST",
        "/v1/alerts",
        "name=h&channel=admins&max=1",
    );
    assert_eq!((r.status, r.error_code()), (404, "unknown_channel"));
    created(
        &s,
        "/v1/grants",
        "resource=channel:admins&to=user:ann&level=read",
    );
    let r = as_user(
        &s,
        &ann,
        "POST",
        "/v1/alerts",
        "name=h&channel=admins&max=1",
    );
    assert_eq!(r.status, 403, "{}", r.body);

    // Her own channel with admin's device x (she may read it).
    created(&s, "/v1/grants", "resource=device:x&to=user:ann&level=read");
    let r = as_user(&s, &ann, "POST", "/v1/channels", "name=hers");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = as_user(
        &s,
        &ann,
        "POST",
        "/v1/channels/hers/members",
        "device=x&sensor=N1",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = as_user(
        &s,
        &ann,
        "POST",
        "/v1/alerts",
        "name=h&channel=hers&max=100&to_device=none&message=Too+hot",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let t = hour_ago();
    send(&s, "x", &x, &format!("N1=150&time={t}"));
    let ev = rows_when(&s, "/v1/alerts/h/events", 1);
    assert!(ev[0].contains(",x,N1,150,Too"), "{ev:?}");
    // Its owner reads the history too.
    let mine = as_user(&s, &ann, "GET", "/v1/alerts/h/events", "");
    assert_eq!(mine.body.lines().count(), 2, "{}", mine.body);

    // The grant on x goes: the digest stops evaluating x for her alert.
    let r = s.admin_form("DELETE", "/v1/grants", "resource=device:x&to=user:ann");
    assert_eq!(r.status, 200, "{}", r.body);
    send(&s, "x", &x, &format!("N1=10&time={}", t + 1));
    send(&s, "x", &x, &format!("N1=170&time={}", t + 2));
    // Barrier: both readings reached admin's channel.
    rows_when(&s, "/v1/channels/admins/items", 3);
    let ev = s.get_admin("/v1/alerts/h/events").body;
    assert_eq!(ev.lines().count(), 2, "fired without access: {ev}");
}

/// The `state` column of alert `name` in `GET /v1/alerts`.
fn alert_state(s: &TestServer, name: &str) -> String {
    let body = s.get_admin("/v1/alerts").body;
    let line = body
        .lines()
        .find(|l| l.starts_with(&format!("{name},")))
        .unwrap_or_else(|| panic!("no alert {name} in {body}"));
    line.rsplit(',').next().unwrap().to_string()
}

/// A member that leaves the channel while in alarm no longer keeps the
/// alert `fired`, nor after a restart, and when added again it starts
/// armed: its next reading over the limit fires. A member in alarm
/// deleted along with its device leaves the alert armed too.
#[test]
fn a_member_that_leaves_in_alarm_is_forgotten() {
    let s = TestServer::start();
    let a = s.create_device("a");
    let b = s.create_device("b");
    created(&s, "/v1/channels", "name=farm");
    created(&s, "/v1/channels/farm/members", "device=a&sensor=N1");
    created(&s, "/v1/channels/farm/members", "device=b&sensor=N1");
    created(&s, "/v1/alerts", "name=hot&channel=farm&max=100");
    let t = hour_ago();
    send(&s, "a", &a, &format!("N1=101&time={t}"));
    rows_when(&s, "/v1/alerts/hot/events", 1);
    assert_eq!(alert_state(&s, "hot"), "fired");
    let r = s.admin_form("DELETE", "/v1/channels/farm/members", "device=a&sensor=N1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(alert_state(&s, "hot"), "armed", "no member is in alarm");
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |_| {});
    assert_eq!(alert_state(&s, "hot"), "armed", "after a restart");

    // Back in the channel, a starts armed: 102 fires.
    created(&s, "/v1/channels/farm/members", "device=a&sensor=N1");
    send(&s, "a", &a, &format!("N1=102&time={}", t + 1));
    let ev = rows_when(&s, "/v1/alerts/hot/events", 2);
    assert!(
        ev.len() == 2 && ev[1].contains(",a,N1,102,"),
        "a fires again: {ev:?}"
    );

    // b in alarm, then deleted with its device: a (102) is the only
    // member in alarm; once a re-arms the alert is armed.
    send(&s, "b", &b, &format!("N1=150&time={}", t + 2));
    rows_when(&s, "/v1/alerts/hot/events", 3);
    assert_eq!(s.admin_form("DELETE", "/v1/devices/b", "").status, 200);
    send(&s, "a", &a, &format!("N1=10&time={}", t + 3));
    let r = s.admin_until("/v1/alerts", |b| b.contains(",armed\n"));
    assert!(r.body.contains("\nhot,"), "{}", r.body);
    assert_eq!(alert_state(&s, "hot"), "armed", "{}", r.body);
}

/// A digest result computed before a member left, applied after: the
/// member's alarm must not come back. The digest hook holds the part that
/// fired member `a/N1` (at a later reading of the same request) until the
/// member has been removed (and, in the second case, added again, when it
/// starts armed); after a restart the alert is still `armed`.
#[test]
fn a_firing_applied_after_the_member_left_does_not_bring_its_alarm_back() {
    member_leaves_while_its_firing_is_pending(false);
    member_leaves_while_its_firing_is_pending(true);
}

fn member_leaves_while_its_firing_is_pending(add_again: bool) {
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;
    // (reached the marker, may go on)
    let gate = Arc::new((Mutex::new((false, false)), Condvar::new()));
    let g = gate.clone();
    let hook: overlord::digest::DigestHook = Arc::new(move |_, r| {
        if r.value != overlord::codec::Value::Num(666.0) {
            return;
        }
        let (m, cv) = &*g;
        let mut st = m.lock().unwrap();
        st.0 = true;
        cv.notify_all();
        // Bounded: a test that goes wrong does not hang the digest.
        let _ = cv.wait_timeout_while(st, Duration::from_secs(20), |st| !st.1);
    });
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::open(
        overlord::app::OpenOptions {
            digest_hook: Some(hook),
            ..overlord::app::OpenOptions::new(common::config(tmp.path()))
        },
        None,
    );
    let a = s.create_device("a");
    created(&s, "/v1/channels", "name=farm");
    created(&s, "/v1/channels/farm/members", "device=a&sensor=N1");
    // N2 is followed (a member elsewhere), so it is digested: the marker.
    created(&s, "/v1/channels", "name=marks");
    created(&s, "/v1/channels/marks/members", "device=a&sensor=N2");
    created(&s, "/v1/alerts", "name=hot&channel=farm&max=100");
    let t = hour_ago();
    // One request, one digest part: N1 (fires) is evaluated, then the
    // hook holds the part at N2.
    send(&s, "a", &a, &format!("N1=150&N2=666&time={t}"));
    {
        let (m, cv) = &*gate;
        let st = m.lock().unwrap();
        let (st, _) = cv
            .wait_timeout_while(st, Duration::from_secs(20), |st| !st.0)
            .unwrap();
        assert!(st.0, "the digest reached the marker");
    }
    let r = s.admin_form("DELETE", "/v1/channels/farm/members", "device=a&sensor=N1");
    assert_eq!(r.status, 200, "{}", r.body);
    if add_again {
        created(&s, "/v1/channels/farm/members", "device=a&sensor=N1");
    }
    {
        let (m, cv) = &*gate;
        m.lock().unwrap().1 = true;
        cv.notify_all();
    }
    // The part's results are applied: its firing is an event (evaluated
    // while a was a member)...
    let ev = rows_when(&s, "/v1/alerts/hot/events", 1);
    assert!(ev[0].contains(",a,N1,150,"), "{ev:?}");
    // ...and the marker's item is there, so the part is committed.
    let items = s.admin_until("/v1/channels/marks/items", |b| b.lines().count() == 2);
    assert!(items.body.ends_with(",a,N2,666\n"), "{}", items.body);
    // But a's alarm was not stored back: armed, now and after a restart.
    let admin = s.admin.clone();
    drop(s); // a graceful stop
    let s = TestServer::open(
        overlord::app::OpenOptions::new(common::config(tmp.path())),
        Some(admin),
    );
    assert_eq!(
        alert_state(&s, "hot"),
        "armed",
        "after a restart (added again: {add_again})"
    );
    drop(s);
    drop(tmp);
}

/// `description=` (empty) clears a channel's description and `label=`
/// a member's label, as documented; leaving `description` out is
/// `400 missing_field`.
#[test]
fn an_empty_description_or_label_clears_it() {
    let s = TestServer::start();
    s.create_device("gh3");
    created(&s, "/v1/channels", "name=farm&description=North+wall");
    created(
        &s,
        "/v1/channels/farm/members",
        "device=gh3&sensor=N1&label=Air",
    );
    let r = s.admin_form("POST", "/v1/channels/farm", "");
    assert_eq!(
        (r.status, r.error_code()),
        (400, "missing_field"),
        "{}",
        r.body
    );
    let r = s.admin_form("POST", "/v1/channels/farm", "description=");
    assert_eq!((r.status, r.body.as_str()), (200, "ok,farm\n"));
    let list = s.get_admin("/v1/channels").body;
    assert!(list.contains("\nfarm,admin,"), "{list}");
    assert!(list.ends_with(",1,\n"), "no description left: {list}");
    let r = s.admin_form(
        "POST",
        "/v1/channels/farm/members",
        "device=gh3&sensor=N1&label=",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let members = s.get_admin("/v1/channels/farm/members").body;
    assert_eq!(members, "device,sensor,label\ngh3,N1,\n");
}
