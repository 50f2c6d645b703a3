//! Credentials over HTTP: user token rotation and revocation, passwords
//! and login sessions, brute-force throttling that lifts by itself, and
//! the per-device request limit.

mod common;

use std::time::Duration;

use common::{as_user, hour_ago, TestServer};

#[test]
fn user_tokens_rotate_with_one_step_of_grace_and_revoke_at_once() {
    let s = TestServer::start();
    let t0 = common::token_of(&s.admin_form("POST", "/v1/users", "name=ann").body);
    let ok = |t: &str| as_user(&s, t, "GET", "/v1/devices", "").status;
    assert_eq!(ok(&t0), 200);
    let t1 = common::token_of(&as_user(&s, &t0, "POST", "/v1/users/ann/token", "").body);
    assert_eq!(
        (ok(&t0), ok(&t1)),
        (200, 200),
        "old token works after one rotation"
    );
    let t2 = common::token_of(&as_user(&s, &t1, "POST", "/v1/users/ann/token", "").body);
    assert_eq!(
        (ok(&t0), ok(&t1), ok(&t2)),
        (401, 200, 200),
        "and stops after the next"
    );
    // Revocation ends both tokens and every session at once.
    assert_eq!(
        as_user(
            &s,
            &t2,
            "POST",
            "/v1/users/ann/password",
            "password=correct+horse"
        )
        .status,
        200
    );
    let login = common::login(&s, "ann", "correct+horse");
    assert_eq!(login.status, 200, "{}", login.body);
    let session = common::token_of(&login.body);
    assert_eq!(ok(&session), 200, "a session token works as Bearer");
    assert_eq!(s.admin_form("POST", "/v1/users/ann/revoke", "").status, 200);
    assert_eq!((ok(&t1), ok(&t2), ok(&session)), (401, 401, 401));
    let again = s.post(
        "/v1/login",
        "application/x-www-form-urlencoded",
        b"name=ann&password=correct+horse",
        "",
    );
    assert_eq!(again.status, 401, "the password is revoked too");
    // The administrator issues a fresh token.
    let t3 = common::token_of(&s.admin_form("POST", "/v1/users/ann/token", "").body);
    assert_eq!(ok(&t3), 200);
}

#[test]
fn wrong_passwords_and_unknown_users_look_the_same() {
    let s = TestServer::start();
    s.admin_form("POST", "/v1/users", "name=bob&password=long+enough+pw");
    let wrong = common::login(&s, "bob", "wrong+password");
    let unknown = common::login(&s, "nobody", "wrong+password");
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(common::login(&s, "bob", "long+enough+pw").status, 200);
    let short = s.admin_form("POST", "/v1/users", "name=carl&password=short");
    assert_eq!((short.status, short.error_code()), (400, "bad_password"));
}

#[test]
fn guessing_tokens_is_throttled_and_the_throttle_lifts() {
    let s = TestServer::start_with(|c| {
        c.limits.auth_failures_per_window = 5;
        c.limits.auth_window_secs = 2;
    });
    let tok = s.create_device("d");
    let try_tok = |t: &str| {
        s.get(&format!(
            "/v1/readings?device=d&token={t}&N1=1&time={}",
            hour_ago()
        ))
    };
    for _ in 0..5 {
        assert_eq!(try_tok("00000000000000000000000000000000").status, 401);
    }
    // Throttled now, even with the right token: guessing gains nothing.
    let r = try_tok(&tok);
    assert_eq!((r.status, r.error_code()), (429, "rate_limited"));
    let wait: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // It lifts by itself when the window ends (on the server's clock: no
    // sleeping).
    s.clock.advance(Duration::from_millis(2100));
    assert_eq!(try_tok(&tok).status, 200, "the throttle lifted");
}

#[test]
fn a_device_over_its_request_rate_gets_429_and_csv_batches_still_get_in() {
    let s = TestServer::start_with(|c| {
        c.limits.device_requests_per_sec = 0.5;
        c.limits.device_burst = 3.0;
    });
    let tok = s.create_device("d");
    let t = hour_ago();
    for i in 0..3 {
        assert_eq!(
            s.get(&format!(
                "/v1/readings?device=d&token={tok}&N1={i}&time={}",
                t + i
            ))
            .status,
            200
        );
    }
    let r = s.get(&format!(
        "/v1/readings?device=d&token={tok}&N1=9&time={}",
        t + 9
    ));
    assert_eq!((r.status, r.error_code()), (429, "rate_limited"));
    assert!(r.header("Retry-After").is_some());
    // Nothing of the refused request was stored.
    let q = s.get(&format!("/v1/devices/d/readings?token={tok}&sensors=N1"));
    assert_eq!(q.body.lines().count(), 4);
    // After a wait (on the server's clock: no sleeping), one CSV request
    // carries a whole backlog.
    s.clock.advance(Duration::from_millis(2100));
    let mut body = String::from("time,N1\n");
    for i in 100..1100 {
        body.push_str(&format!("{},{i}\n", t - 5000 + i));
    }
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.body, "ok,1000,0\n");
}

#[test]
fn grants_and_revoked_devices() {
    let s = TestServer::start();
    let ann = common::token_of(&s.admin_form("POST", "/v1/users", "name=ann").body);
    let bob = common::token_of(&s.admin_form("POST", "/v1/users", "name=bob").body);
    let dev = common::token_of(&as_user(&s, &ann, "POST", "/v1/devices", "id=anns").body);
    let read = |t: &str| as_user(&s, t, "GET", "/v1/devices/anns/readings", "").status;
    assert_eq!(read(&bob), 404, "invisible before the grant");
    assert_eq!(
        as_user(
            &s,
            &ann,
            "POST",
            "/v1/grants",
            "resource=device:anns&to=user:bob&level=read"
        )
        .status,
        201
    );
    assert_eq!(read(&bob), 200);
    let send = as_user(&s, &bob, "POST", "/v1/devices/anns/inbox", "value=hi");
    assert_eq!(send.status, 403, "read is not control");
    let grants = as_user(&s, &ann, "GET", "/v1/grants?resource=device:anns", "");
    assert_eq!(
        grants.body,
        "resource,to,level\ndevice:anns,user:bob,read\n"
    );
    assert_eq!(
        as_user(
            &s,
            &ann,
            "DELETE",
            "/v1/grants?resource=device:anns&to=user:bob",
            ""
        )
        .status,
        200
    );
    assert_eq!(read(&bob), 404);
    // Revoking a device's tokens stops it at once.
    let send = |t: &str| {
        s.get(&format!("/v1/readings?device=anns&token={t}&N1=1"))
            .status
    };
    assert_eq!(send(&dev), 200);
    assert_eq!(
        as_user(&s, &ann, "POST", "/v1/devices/anns/revoke", "").status,
        200
    );
    assert_eq!(send(&dev), 401);
    // Grants survive a restart.
    as_user(
        &s,
        &ann,
        "POST",
        "/v1/grants",
        "resource=device:anns&to=user:bob&level=control",
    );
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |_| {});
    assert_eq!(
        as_user(&s, &bob, "POST", "/v1/devices/anns/inbox", "value=hi").status,
        201
    );
}

/// A session presented as `bearer TOKEN` (lower case, which
/// authentication accepts) is ended by a logout sent the same way.
#[test]
fn logout_ends_a_session_whatever_the_case_of_bearer() {
    let s = TestServer::start();
    let r = s.admin_form("POST", "/v1/users", "name=ann&password=correct+horse");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = common::login(&s, "ann", "correct+horse");
    assert_eq!(r.status, 200, "{}", r.body);
    let session = common::token_of(&r.body);
    let with = |method: &str, path: &str| {
        s.raw(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: bearer {session}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    assert_eq!(with("GET", "/v1/session").status, 200);
    let r = with("POST", "/v1/logout");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "ok,1\n");
    let r = with("GET", "/v1/session");
    assert_eq!(r.status, 401, "the session outlived its logout: {}", r.body);
}

/// An anonymous caller cannot tell a private channel, alert or file from
/// one that does not exist: the same status and the same line for both.
#[test]
fn anonymous_callers_cannot_probe_which_names_exist() {
    let s = TestServer::start();
    s.create_device("d");
    assert_eq!(s.admin_form("POST", "/v1/channels", "name=ch").status, 201);
    let r = s.admin_form("POST", "/v1/alerts", "name=al&device=d&sensor=N1&max=1");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.raw(
        format!(
            "PUT /v1/files/fw.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            s.admin
        )
        .as_bytes(),
    );
    assert!(r.status < 300, "{}", r.body);
    for (exists, missing) in [
        ("/v1/channels/ch/items", "/v1/channels/nosuch/items"),
        ("/v1/channels/ch/members", "/v1/channels/nosuch/members"),
        ("/v1/alerts/al/events", "/v1/alerts/nosuch/events"),
        ("/v1/files/fw.bin", "/v1/files/nosuch.bin"),
    ] {
        let (a, b) = (s.get(exists), s.get(missing));
        assert_eq!(a.status, 401, "{exists}: {}", a.body);
        assert_eq!(
            (a.status, &a.body),
            (b.status, &b.body),
            "{exists} vs {missing}"
        );
    }
}
