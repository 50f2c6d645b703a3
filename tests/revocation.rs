//! Withdrawing a grant stops everything the grantee built on it, at once:
//! channel members, alerts (their events, inbox rows and channel items)
//! and presence notices into the granting user's device; and, on a
//! granted channel, an alert's `to_channel`, an alert on the channel and
//! presence notices into it.
//!
//! A notification target (`to_target`, a presence target) is not covered
//! here because no grant can reach one: targets are never granted, and
//! an alert or presence choice may name only a target its user owns (or,
//! for an administrator, any), checked again at every delivery
//! (`Directory::user_may_target`; docs/permissions.md).

mod common;

use common::{hour_ago, token_of, TestServer};

struct World {
    s: TestServer,
    /// `Authorization` lines.
    ann: String,
    bob: String,
    /// bob's device, shared with ann.
    bdev: String,
}

fn user(s: &TestServer, name: &str) -> String {
    let r = s.admin_form("POST", "/v1/users", &format!("name={name}"));
    assert_eq!(r.status, 201, "{}", r.body);
    format!("Authorization: Bearer {}\r\n", token_of(&r.body))
}

fn form(s: &TestServer, who: &str, method: &str, path: &str, body: &str) -> common::Reply {
    let r = s.raw(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\n{who}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert!(
        r.status < 300,
        "{method} {path} {body}: {} {}",
        r.status,
        r.body
    );
    r
}

/// Poll `path` as `who` until `done` holds (bounded).
fn until(s: &TestServer, who: &str, path: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = form(s, who, "GET", path, "");
        if done(&r.body) || std::time::Instant::now() > deadline {
            return r.body;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn world() -> World {
    let s = TestServer::start();
    let ann = user(&s, "ann");
    let bob = user(&s, "bob");
    let r = form(&s, &bob, "POST", "/v1/devices", "id=bdev");
    let bdev = token_of(&r.body);
    // bob lets ann control (so also read) his device.
    form(
        &s,
        &bob,
        "POST",
        "/v1/grants",
        "resource=device:bdev&to=user:ann&level=control",
    );
    // What ann builds on it: a channel fed by bob's device, an alert on
    // it that tells bob's device and ann's channel, and presence notices
    // for her own devices into bob's device.
    form(&s, &ann, "POST", "/v1/channels", "name=annch");
    form(
        &s,
        &ann,
        "POST",
        "/v1/channels/annch/members",
        "device=bdev&sensor=S1",
    );
    form(
        &s,
        &ann,
        "POST",
        "/v1/alerts",
        "name=annhot&device=bdev&sensor=N1&max=10&message=hot&to_device=bdev&to_channel=annch",
    );
    form(
        &s,
        &ann,
        "POST",
        "/v1/presence/notify",
        "notify_device=bdev",
    );
    // bob's own channel and alert on the same sensors: they keep working
    // and serve as barriers (the digest handled a batch when they show it).
    form(&s, &bob, "POST", "/v1/channels", "name=bobch");
    form(
        &s,
        &bob,
        "POST",
        "/v1/channels/bobch/members",
        "device=bdev&sensor=S1",
    );
    form(
        &s,
        &bob,
        "POST",
        "/v1/alerts",
        "name=bobhot&device=bdev&sensor=N1&max=10&message=bobs&to_device=none",
    );
    World { s, ann, bob, bdev }
}

fn send(w: &World, t: i64, form_body: &str) {
    let r = w.s.get(&format!(
        "/v1/readings?device=bdev&token={}&time={t}&{form_body}",
        w.bdev
    ));
    assert_eq!(r.status, 200, "{}", r.body);
}

/// ann's device `id` makes its first contact (a presence change, online).
fn contact(w: &World, id: &str) {
    let r = form(&w.s, &w.ann, "POST", "/v1/devices", &format!("id={id}"));
    let tok = token_of(&r.body);
    let r = w.s.get(&format!("/v1/readings?device={id}&token={tok}"));
    assert_eq!(r.status, 200, "{}", r.body);
}

fn inbox_rows(w: &World) -> Vec<String> {
    form(&w.s, &w.bob, "GET", "/v1/devices/bdev/inbox", "")
        .body
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn withdrawing_a_grant_stops_what_was_built_on_it() {
    let w = world();
    let t = hour_ago();
    // With the grant: everything works.
    send(&w, t, "S1=before&N1=20");
    contact(&w, "adev1");
    let items = until(&w.s, &w.ann, "/v1/channels/annch/items", |b| {
        b.lines().count() == 3
    });
    assert!(items.contains(",bdev,S1,before\n"), "{items}");
    assert!(items.contains(",bdev,N1,20\n"), "{items}");
    until(&w.s, &w.bob, "/v1/devices/bdev/inbox", |b| {
        b.contains("presence:adev1")
    });
    let rows = inbox_rows(&w);
    assert!(rows.iter().any(|r| r.contains("alert:annhot")), "{rows:?}");
    assert!(
        rows.iter().any(|r| r.contains("presence:adev1")),
        "{rows:?}"
    );
    let before = rows.len();

    // bob withdraws it.
    form(
        &w.s,
        &w.bob,
        "DELETE",
        "/v1/grants?resource=device:bdev&to=user:ann",
        "",
    );
    // New readings: a string ann's channel would carry, and a re-arm and
    // a new firing of ann's alert.
    send(&w, t + 1, "S1=after&N1=5");
    send(&w, t + 2, "N1=30");
    contact(&w, "adev2");
    // Barriers: bob's own channel has the string, bob's own alert fired a
    // second time, the presence feed has adev2's change.
    until(&w.s, &w.bob, "/v1/channels/bobch/items", |b| {
        b.contains(",bdev,S1,after\n")
    });
    until(&w.s, &w.bob, "/v1/alerts/bobhot/events", |b| {
        b.lines().count() == 3
    });
    let admin = format!("Authorization: Bearer {}\r\n", w.s.admin);
    until(&w.s, &admin, "/v1/presence/events", |b| {
        b.contains(",adev2,")
    });

    // ann's channel got nothing more, her alert fired no more, and bob's
    // device got no row from her alert or her presence notices.
    let items = form(&w.s, &w.ann, "GET", "/v1/channels/annch/items", "").body;
    assert_eq!(items.lines().count(), 3, "{items}");
    assert!(!items.contains("after"), "{items}");
    assert!(!items.contains(",N1,30\n"), "{items}");
    let events = form(&w.s, &w.ann, "GET", "/v1/alerts/annhot/events", "").body;
    assert_eq!(events.lines().count(), 2, "one firing only: {events}");
    let rows = inbox_rows(&w);
    assert_eq!(rows.len(), before, "{rows:?}");
    assert!(
        !rows.iter().any(|r| r.contains("presence:adev2")),
        "{rows:?}"
    );

    // Granted again, it works again (nothing was deleted).
    form(
        &w.s,
        &w.bob,
        "POST",
        "/v1/grants",
        "resource=device:bdev&to=user:ann&level=read",
    );
    send(&w, t + 3, "S1=again");
    let items = until(&w.s, &w.ann, "/v1/channels/annch/items", |b| {
        b.contains("again")
    });
    assert!(items.contains(",bdev,S1,again\n"), "{items}");
}

#[test]
fn read_without_control_feeds_a_channel_but_sends_nothing_to_the_device() {
    let w = world();
    // Down from control to read.
    form(
        &w.s,
        &w.bob,
        "POST",
        "/v1/grants",
        "resource=device:bdev&to=user:ann&level=read",
    );
    let t = hour_ago();
    send(&w, t, "S1=x&N1=20");
    contact(&w, "adev1");
    until(&w.s, &w.bob, "/v1/alerts/bobhot/events", |b| {
        b.lines().count() == 2
    });
    let admin = format!("Authorization: Bearer {}\r\n", w.s.admin);
    until(&w.s, &admin, "/v1/presence/events", |b| {
        b.contains(",adev1,")
    });
    let items = until(&w.s, &w.ann, "/v1/channels/annch/items", |b| {
        b.lines().count() == 3
    });
    // Read: her channel and her alert's events and channel item go on...
    assert!(items.contains(",bdev,S1,x\n"), "{items}");
    assert!(items.contains(",bdev,N1,20\n"), "{items}");
    let events = form(&w.s, &w.ann, "GET", "/v1/alerts/annhot/events", "").body;
    assert_eq!(events.lines().count(), 2, "{events}");
    // ...but nothing goes into bob's device: that needs control.
    let rows = inbox_rows(&w);
    assert!(!rows.iter().any(|r| r.contains("alert:annhot")), "{rows:?}");
    assert!(!rows.iter().any(|r| r.contains("presence:")), "{rows:?}");
}

/// The text of the rows of `body` (a CSV reply) that contain `needle`.
fn rows_with(body: &str, needle: &str) -> Vec<String> {
    body.lines()
        .skip(1)
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn withdrawing_a_channel_grant_stops_what_was_built_on_the_channel() {
    let s = TestServer::start();
    let ann = user(&s, "ann");
    let bob = user(&s, "bob");
    let admin = format!("Authorization: Bearer {}\r\n", s.admin);
    let adev = token_of(&form(&s, &ann, "POST", "/v1/devices", "id=adev").body);
    let bdev = token_of(&form(&s, &bob, "POST", "/v1/devices", "id=bdev").body);
    // bob's channel, fed by his own device; ann may manage it (control)
    // and read bob's device (which the alert on the channel also needs;
    // that grant stays).
    form(&s, &bob, "POST", "/v1/channels", "name=bobch");
    form(
        &s,
        &bob,
        "POST",
        "/v1/channels/bobch/members",
        "device=bdev&sensor=N1",
    );
    form(
        &s,
        &bob,
        "POST",
        "/v1/grants",
        "resource=channel:bobch&to=user:ann&level=control",
    );
    form(
        &s,
        &bob,
        "POST",
        "/v1/grants",
        "resource=device:bdev&to=user:ann&level=read",
    );
    // What ann builds on the channel: her own device's alert appends to
    // it, an alert of hers watches its members, her presence notices go
    // into it.
    form(
        &s,
        &ann,
        "POST",
        "/v1/alerts",
        "name=tobob&device=adev&sensor=N1&max=10&message=hot&to_device=none&to_channel=bobch",
    );
    form(
        &s,
        &ann,
        "POST",
        "/v1/alerts",
        "name=onbob&channel=bobch&max=10&message=hot&to_device=none",
    );
    form(&s, &ann, "POST", "/v1/presence/notify", "channel=bobch");
    // bob's own alert on his device: a barrier for his device's readings.
    form(
        &s,
        &bob,
        "POST",
        "/v1/alerts",
        "name=bobhot&device=bdev&sensor=N1&max=10&message=bobs&to_device=none",
    );
    let send = |id: &str, tok: &str, t: i64, v: &str| {
        let r = s.get(&format!(
            "/v1/readings?device={id}&token={tok}&time={t}&N1={v}"
        ));
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let firings = |who: &str, alert: &str| {
        form(&s, who, "GET", &format!("/v1/alerts/{alert}/events"), "")
            .body
            .lines()
            .count()
            - 1
    };
    let t = hour_ago();

    // With the grant: all three reach bob's channel.
    send("adev", &adev, t, "20");
    send("bdev", &bdev, t, "20");
    let items = until(&s, &bob, "/v1/channels/bobch/items", |b| {
        [",adev,N1,20\n", ",adev,S0,online\n", ",bdev,N1,20\n"]
            .iter()
            .all(|x| b.contains(x))
    });
    assert!(items.contains(",adev,N1,20\n"), "{items}");
    assert!(items.contains(",adev,S0,online\n"), "{items}");
    assert_eq!(items.lines().count(), 4, "{items}");
    let events = until(&s, &ann, "/v1/alerts/onbob/events", |b| {
        b.lines().count() == 2
    });
    assert!(events.contains("bdev"), "{events}");
    let feed = form(&s, &admin, "GET", "/v1/presence/events", "").body;
    assert_eq!(
        rows_with(&feed, ",adev,online,")
            .iter()
            .filter(|r| r.ends_with(",channel:bobch"))
            .count(),
        1,
        "{feed}"
    );
    let before = items.lines().count();

    // bob withdraws the channel grant (the device grant stays).
    form(
        &s,
        &bob,
        "DELETE",
        "/v1/grants?resource=channel:bobch&to=user:ann",
        "",
    );
    // A re-arm and a new firing on each device, and a new device of
    // ann's coming online.
    send("adev", &adev, t + 1, "5");
    send("adev", &adev, t + 2, "30");
    send("bdev", &bdev, t + 1, "5");
    send("bdev", &bdev, t + 2, "30");
    let adev2 = token_of(&form(&s, &ann, "POST", "/v1/devices", "id=adev2").body);
    let r = s.get(&format!("/v1/readings?device=adev2&token={adev2}"));
    assert_eq!(r.status, 200, "{}", r.body);
    // Barriers: ann's alert on her own device (still evaluated: she owns
    // the device) fired again, bob's alert fired again, and the presence
    // feed has adev2's change (stored with the owner's notices).
    until(&s, &ann, "/v1/alerts/tobob/events", |b| {
        b.lines().count() == 3
    });
    until(&s, &bob, "/v1/alerts/bobhot/events", |b| {
        b.lines().count() == 3
    });
    let feed = until(&s, &admin, "/v1/presence/events", |b| {
        b.contains(",adev2,online,")
    });

    // Nothing more reached bob's channel but his own member's readings.
    let items = form(&s, &bob, "GET", "/v1/channels/bobch/items", "").body;
    assert!(!items.contains(",adev,N1,30\n"), "{items}");
    assert!(!items.contains("adev2"), "{items}");
    assert!(items.contains(",bdev,N1,30\n"), "{items}");
    assert_eq!(items.lines().count(), before + 2, "{items}");
    // ann's channel alert was not evaluated; adev2's change told no one.
    // (Her own alert's second firing is recorded, above, but appended
    // nothing: the items.)
    assert_eq!(firings(&ann, "onbob"), 1, "the alert on bob's channel");
    let adev2_rows = rows_with(&feed, ",adev2,online,");
    assert_eq!(adev2_rows.len(), 1, "{feed}");
    assert!(adev2_rows[0].ends_with(','), "told nowhere: {feed}");

    // Granted again, the alert appends again (nothing was deleted).
    form(
        &s,
        &bob,
        "POST",
        "/v1/grants",
        "resource=channel:bobch&to=user:ann&level=control",
    );
    send("adev", &adev, t + 3, "5");
    send("adev", &adev, t + 4, "40");
    let items = until(&s, &bob, "/v1/channels/bobch/items", |b| {
        b.contains(",adev,N1,40\n")
    });
    assert!(items.contains(",adev,N1,40\n"), "{items}");
}
