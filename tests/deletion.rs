//! Deleting a device, through HTTP and the CLI: refused at once, its data
//! gone (readings by the writer, in bounded batches), nothing of it seen
//! by a new device with the same id, other devices untouched.

mod common;

use common::{as_user, basic, column, hour_ago, rfc3339, TestServer};
use overlord::store::{DELETED_DEVICES, READINGS, SEALED, SENSORS};

/// Two hours of readings of N1 and L2 for `id`, one a minute.
fn readings(s: &TestServer, id: &str, tok: &str) {
    let t = hour_ago() - 3600;
    let mut csv = String::from("time,N1,L2\n");
    for i in 0..120 {
        csv.push_str(&format!("{},{i}.5,{}\n", rfc3339(t + i * 60), i % 2));
    }
    let r = s.post("/v1/readings", "text/csv", csv.as_bytes(), &basic(id, tok));
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `(readings rows, sensors rows)` of device number `num` in a stopped
/// server's data file, and whether it is tombstoned.
fn rows_of(data: &std::path::Path, num: u32) -> (usize, usize, bool) {
    let store = common::open_store(data);
    let m = u32::MAX;
    store
        .read(|txn| {
            // Hot and sealed chunks alike.
            let readings: usize = [READINGS, SEALED]
                .into_iter()
                .map(|t| {
                    txn.open_table(t)
                        .unwrap()
                        .range((num, 0, 0, 0)..=(num, m, m, u16::MAX))
                        .unwrap()
                        .count()
                })
                .sum();
            let sensors = txn.open_table(SENSORS)?.range((num, 0)..=(num, m))?.count();
            let tomb = txn.open_table(DELETED_DEVICES)?.get(num)?.is_some();
            Ok::<_, overlord::store::StoreError>((readings, sensors, tomb))
        })
        .unwrap()
}

#[test]
fn a_deleted_device_is_refused_at_once_and_its_data_goes() {
    let s = TestServer::start();
    let ann = common::token_of(&s.admin_form("POST", "/v1/users", "name=ann").body);
    let bob = common::token_of(&s.admin_form("POST", "/v1/users", "name=bob").body);
    let tok = common::token_of(&as_user(&s, &ann, "POST", "/v1/devices", "id=gh3").body);
    let keep = common::token_of(&as_user(&s, &ann, "POST", "/v1/devices", "id=gh4").body);
    readings(&s, "gh3", &tok);
    readings(&s, "gh4", &keep);
    for (method, path, form) in [
        ("POST", "/v1/channels", "name=ch"),
        ("POST", "/v1/channels/ch/members", "device=gh3&sensor=N1"),
        ("POST", "/v1/channels/ch/members", "device=gh4&sensor=N1"),
        (
            "POST",
            "/v1/alerts",
            "name=hot&device=gh3&sensor=N1&max=100",
        ),
        (
            "POST",
            "/v1/grants",
            "resource=device:gh3&to=user:bob&level=read",
        ),
        (
            "POST",
            "/v1/devices/gh3/inbox",
            "kind=command&sensor=L1&value=1",
        ),
        ("POST", "/v1/devices/gh3/sensors/N1", "label=Temperature"),
    ] {
        let r = as_user(&s, &ann, method, path, form);
        assert!(r.status < 300, "{path}: {}", r.body);
    }
    // Neither a grantee, nor another user's view, nor the device itself.
    let r = as_user(&s, &bob, "DELETE", "/v1/devices/gh3", "");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = s.raw(
        format!(
            "DELETE /v1/devices/gh3 HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
            basic("gh3", &tok)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.body);

    let r = as_user(&s, &ann, "DELETE", "/v1/devices/gh3", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body, "ok,1,1,1\n",
        "one inbox row, one membership, one alert"
    );
    // Refused at once: its token, its id, its membership and alert.
    let r = s.get(&format!("/v1/readings?device=gh3&token={tok}&N1=1"));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(as_user(&s, &ann, "GET", "/v1/devices/gh3", "").status, 404);
    assert_eq!(
        as_user(&s, &ann, "DELETE", "/v1/devices/gh3", "").status,
        404
    );
    let m = as_user(&s, &ann, "GET", "/v1/channels/ch/members", "");
    assert_eq!(column(&m.body, "device"), ["gh4"], "{}", m.body);
    let a = as_user(&s, &ann, "GET", "/v1/alerts", "");
    assert!(!a.body.contains("hot"), "{}", a.body);
    assert!(!as_user(&s, &bob, "GET", "/v1/devices", "")
        .body
        .contains("gh3"));
    // A new device with the same id starts empty.
    let tok2 = common::token_of(&as_user(&s, &ann, "POST", "/v1/devices", "id=gh3").body);
    let r = s.get(&format!("/v1/devices/gh3/readings?token={tok2}"));
    assert_eq!(r.body, "time\n", "nothing of the old gh3: {}", r.body);
    let r = s.get(&format!("/v1/devices/gh3/sensors?token={tok2}&labels=1"));
    assert_eq!(r.body, "sensor,time,value,label,unit,description\n");
    let r = s.get(&format!("/v1/inbox?device=gh3&token={tok2}"));
    assert_eq!(r.body.lines().count(), 1, "{}", r.body);
    assert_eq!(
        as_user(&s, &ann, "GET", "/v1/devices/gh3/commands", "")
            .body
            .lines()
            .count(),
        1
    );
    assert!(
        !as_user(&s, &bob, "GET", "/v1/devices", "")
            .body
            .contains("gh3"),
        "the grant went"
    );
    // The writer removes its readings with its next commit: one is this
    // request's (gh4 keeps everything).
    let r = s.get(&format!("/v1/readings?device=gh4&token={keep}&N1=1"));
    assert_eq!(r.status, 200);
    let r = s.get(&format!("/v1/devices/gh4/readings?token={keep}&sensors=N1"));
    assert_eq!(r.body.lines().count(), 122, "{}", r.body);
    let dir = s.dir.clone();
    let (_tmp, _) = s.stop();
    // gh3 was device 1, gh4 device 2.
    assert_eq!(rows_of(&dir.join("overlord.redb"), 1), (0, 0, true));
    let (r4, s4, t4) = rows_of(&dir.join("overlord.redb"), 2);
    assert!(r4 >= 2 && s4 == 2 && !t4, "gh4: {r4} chunks, {s4} sensors");
}

#[test]
fn a_gateway_with_devices_below_is_not_deleted() {
    let s = TestServer::start();
    let gw = s.create_device("gw");
    assert_eq!(
        s.admin_form("POST", "/v1/devices/gw", "gateway=true")
            .status,
        200
    );
    let r = s.post(
        "/v1/devices",
        "text/csv",
        b"id,name\nt1,T1\n",
        &basic("gw", &gw),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.admin_form("DELETE", "/v1/devices/gw", "");
    assert_eq!(
        (r.status, r.error_code()),
        (409, "device_has_children"),
        "{}",
        r.body
    );
    // The device below first (its rows in the gateway's inbox go too).
    let r = s.admin_form(
        "POST",
        "/v1/devices/t1/inbox",
        "kind=command&sensor=L1&value=1",
    );
    assert_eq!(r.status, 201);
    let r = s.admin_form("DELETE", "/v1/devices/t1", "");
    assert_eq!(r.body, "ok,1,0,0\n");
    let r = s.get(&format!("/v1/inbox?device=gw&token={gw}"));
    assert_eq!(r.body.lines().count(), 1, "{}", r.body);
    let r = s.admin_form("DELETE", "/v1/devices/gw", "");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn the_cli_deletes_a_device_with_the_server_stopped() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");
    readings(&s, "gh3", &tok);
    let ann = common::token_of(&s.admin_form("POST", "/v1/users", "name=ann").body);
    let r = as_user(&s, &ann, "POST", "/v1/devices", "id=hers");
    assert_eq!(r.status, 201);
    let dir = s.dir.clone();
    let (tmp, _) = s.stop();
    let data = dir.join("overlord.redb");
    let (ok, out, err) = common::cli(&data, &["device", "delete", "gh3"], &[], None);
    assert!(ok, "{err}");
    assert_eq!(out, "ok,0,0,0\n");
    assert_eq!(rows_of(&data, 1), (0, 0, true));
    let (ok, _, err) = common::cli(&data, &["device", "delete", "gh3"], &[], None);
    assert!(!ok && err.contains("no device 'gh3'"), "{err}");
    let (ok, _, err) = common::cli(&data, &["user", "delete", "ann"], &[], None);
    assert!(!ok && err.contains("user_owns_things"), "{err}");
    let (ok, out, err) = common::cli(&data, &["user", "delete", "ann", "--cascade"], &[], None);
    assert!(ok, "{err}");
    assert_eq!(out, "ok,1,0,0,0\n");
    let (_, out, _) = common::cli(&data, &["device", "list"], &[], None);
    assert!(!out.contains("hers"), "{out}");
    drop(tmp);
}

#[test]
fn a_device_is_given_to_another_user() {
    let s = TestServer::start_with(|c| c.quotas.devices_per_user = 1);
    let ann = common::token_of(&s.admin_form("POST", "/v1/users", "name=ann").body);
    let bob = common::token_of(&s.admin_form("POST", "/v1/users", "name=bob").body);
    let tok = common::token_of(&as_user(&s, &ann, "POST", "/v1/devices", "id=gh3").body);
    readings(&s, "gh3", &tok);
    for (form, status, code) in [
        ("", 400, "missing_field"),
        ("to=nobody", 404, "unknown_user"),
    ] {
        let r = as_user(&s, &ann, "POST", "/v1/devices/gh3/owner", form);
        assert_eq!(
            (r.status, r.error_code()),
            (status, code),
            "{form}: {}",
            r.body
        );
    }
    // Bob may not take it; ann may give it.
    let r = as_user(&s, &bob, "POST", "/v1/devices/gh3/owner", "to=bob");
    assert_eq!(r.status, 404, "{}", r.body);
    let r = as_user(&s, &ann, "POST", "/v1/devices/gh3/owner", "to=bob");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "id,owner\ngh3,bob\n");
    // Now it is bob's: with its readings, and its token still works.
    let r = as_user(&s, &bob, "GET", "/v1/devices/gh3/readings?sensors=N1", "");
    assert_eq!(r.body.lines().count(), 121, "{}", r.body);
    assert_eq!(as_user(&s, &ann, "GET", "/v1/devices/gh3", "").status, 404);
    assert_eq!(
        s.get(&format!("/v1/readings?device=gh3&token={tok}&N1=1"))
            .status,
        200
    );
    // Bob's quota (one device) applies to what he is given.
    let r = as_user(&s, &ann, "POST", "/v1/devices", "id=gh5");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = as_user(&s, &ann, "POST", "/v1/devices/gh5/owner", "to=bob");
    assert_eq!(
        (r.status, r.error_code()),
        (403, "quota_exceeded"),
        "{}",
        r.body
    );
    assert_eq!(as_user(&s, &ann, "GET", "/v1/devices/gh5", "").status, 200);
}

#[test]
fn a_deleted_channel_is_gone_with_its_items() {
    let s = TestServer::start();
    let ann = common::token_of(&s.admin_form("POST", "/v1/users", "name=ann").body);
    let bob = common::token_of(&s.admin_form("POST", "/v1/users", "name=bob").body);
    let tok = common::token_of(&as_user(&s, &ann, "POST", "/v1/devices", "id=gh3").body);
    for (path, form) in [
        ("/v1/channels", "name=ch"),
        ("/v1/channels/ch/members", "device=gh3&sensor=N1"),
        (
            "/v1/grants",
            "resource=channel:ch&to=user:bob&level=control",
        ),
    ] {
        let r = as_user(&s, &ann, "POST", path, form);
        assert_eq!(r.status, 201, "{path}: {}", r.body);
    }
    readings(&s, "gh3", &tok);
    let items = |who: &str| as_user(&s, who, "GET", "/v1/channels/ch/items?after=0", "");
    let r = (0..500)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            items(&ann)
        })
        .find(|r| r.body.lines().count() == 121)
        .expect("the digest puts the 120 readings on the channel");
    assert_eq!(r.status, 200);
    // A control grant manages the channel but does not delete it.
    let r = as_user(&s, &bob, "DELETE", "/v1/channels/ch", "");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = as_user(&s, &ann, "DELETE", "/v1/channels/ch", "");
    assert_eq!((r.status, r.body.as_str()), (200, "ok,120\n"));
    assert_eq!(items(&ann).status, 404);
    assert_eq!(items(&bob).status, 404);
    assert!(!as_user(&s, &ann, "GET", "/v1/channels", "")
        .body
        .contains("\nch,"));
    // Readings go on; a new channel of the same name starts empty.
    let r = s.get(&format!("/v1/readings?device=gh3&token={tok}&N1=1"));
    assert_eq!(r.status, 200);
    let r = as_user(&s, &ann, "POST", "/v1/channels", "name=ch");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(items(&ann).body.lines().count(), 1, "{}", items(&ann).body);
    assert_eq!(items(&bob).status, 404, "the old grant does not carry over");
}

#[test]
fn a_user_is_deleted_only_with_what_they_own() {
    let s = TestServer::start();
    let ann = common::token_of(&s.admin_form("POST", "/v1/users", "name=ann").body);
    let bob = common::token_of(&s.admin_form("POST", "/v1/users", "name=bob").body);
    let gw = common::token_of(&as_user(&s, &ann, "POST", "/v1/devices", "id=gw&gateway=true").body);
    let r = s.post(
        "/v1/devices",
        "text/csv",
        b"id,name\nt1,T1\n",
        &basic("gw", &gw),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let tok = common::token_of(&as_user(&s, &ann, "POST", "/v1/devices", "id=gh3").body);
    for (method, path, form) in [
        ("POST", "/v1/channels", "name=ch"),
        (
            "POST",
            "/v1/alerts",
            "name=hot&device=gh3&sensor=N1&max=100",
        ),
        ("PUT", "/v1/files/fw", "firmware"),
        (
            "POST",
            "/v1/grants",
            "resource=device:gh3&to=user:bob&level=read",
        ),
    ] {
        let r = as_user(&s, &ann, method, path, form);
        assert!(r.status < 300, "{path}: {}", r.body);
    }
    // Bob was given a grant on ann's device; ann one on bob's channel.
    let r = as_user(&s, &bob, "POST", "/v1/channels", "name=bobs");
    assert_eq!(r.status, 201);
    let r = as_user(
        &s,
        &bob,
        "POST",
        "/v1/grants",
        "resource=channel:bobs&to=user:ann&level=read",
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // Only administrators; not without cascade while she owns things.
    let r = as_user(&s, &bob, "DELETE", "/v1/users/ann", "");
    assert_eq!(r.status, 403);
    let r = s.admin_form("DELETE", "/v1/users/ann", "");
    assert_eq!(
        (r.status, r.error_code()),
        (409, "user_owns_things"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("3 devices, 1 channels, 0 alerts and 1 files"),
        "{}",
        r.body
    );
    let r = s.admin_form("DELETE", "/v1/users/ann", "cascade=maybe");
    assert_eq!((r.status, r.error_code()), (400, "bad_parameter"));
    assert_eq!(
        as_user(&s, &ann, "GET", "/v1/devices/gh3", "").status,
        200,
        "nothing went"
    );

    let r = s.admin_form("DELETE", "/v1/users/ann", "cascade=true");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok,3,1,0,1\n"),
        "{}",
        r.body
    );
    // Her token, her devices' tokens, her things: gone at once.
    assert_eq!(as_user(&s, &ann, "GET", "/v1/devices", "").status, 401);
    assert_eq!(
        s.get(&format!("/v1/readings?device=gh3&token={tok}&N1=1"))
            .status,
        401
    );
    assert_eq!(
        s.get(&format!("/v1/readings?device=gw&token={gw}&N1=1"))
            .status,
        401
    );
    for path in [
        "/v1/devices/gh3",
        "/v1/devices/t1",
        "/v1/channels/ch/members",
        "/v1/files/fw",
    ] {
        assert_eq!(s.get_admin(path).status, 404, "{path}");
    }
    assert!(!s.get_admin("/v1/alerts").body.contains("hot"));
    let g = as_user(&s, &bob, "GET", "/v1/grants?resource=channel:bobs", "");
    assert!(
        !g.body.contains("user:ann"),
        "the grant to her went: {}",
        g.body
    );
    assert_eq!(
        as_user(&s, &bob, "GET", "/v1/channels/bobs/members", "").status,
        200
    );
    // A new ann starts with nothing.
    let ann2 = common::token_of(&s.admin_form("POST", "/v1/users", "name=ann").body);
    let r = as_user(&s, &ann2, "GET", "/v1/devices", "");
    assert_eq!(r.body.lines().count(), 1, "{}", r.body);
    assert_eq!(
        as_user(&s, &ann2, "GET", "/v1/channels/bobs/items", "").status,
        404
    );
    // Bob owns nothing but a channel; and the last administrator stays.
    let r = s.admin_form("DELETE", "/v1/users/bob", "cascade=1");
    assert_eq!(r.body, "ok,0,1,0,0\n");
    let r = s.admin_form("DELETE", "/v1/users/admin", "");
    assert_eq!((r.status, r.error_code()), (409, "last_administrator"));
    assert_eq!(s.admin_form("DELETE", "/v1/users/nobody", "").status, 404);
}
