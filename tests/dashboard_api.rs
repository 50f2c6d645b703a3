//! What the browser dashboard relies on, over raw HTTP: the session
//! cookie and its CSRF defence, logout, the latest value per sensor,
//! server-side min/max downsampling, and the embedded files.

mod common;

use common::{hour_ago, rfc3339, TestServer};

const FORM: &str = "application/x-www-form-urlencoded";

/// `POST /v1/login` as the dashboard sends it (with `X-Overlord-CSRF`).
fn dash_login(s: &TestServer) -> common::Reply {
    s.post(
        "/v1/login",
        FORM,
        b"name=ann&password=correct+horse",
        "X-Overlord-CSRF: \r\n",
    )
}

/// A user `ann` with a password, logged in: (cookie value, CSRF token).
fn logged_in(s: &TestServer) -> (String, String) {
    let r = s.admin_form("POST", "/v1/users", "name=ann&password=correct+horse");
    assert_eq!(r.status, 201, "{}", r.body);
    let login = dash_login(s);
    assert_eq!(login.status, 200, "{}", login.body);
    let cookie = login.header("Set-Cookie").expect("a session cookie");
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("overlord_session=")
        .expect("named overlord_session")
        .to_string();
    let csrf = login
        .header("Overlord-Csrf")
        .expect("CSRF token")
        .to_string();
    (value, csrf)
}

fn with_cookie(
    s: &TestServer,
    method: &str,
    path: &str,
    body: &str,
    extra: &str,
    cookie: &str,
) -> common::Reply {
    s.raw(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nCookie: theme=dark; overlord_session={cookie}\r\n{extra}Content-Type: {FORM}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn login_sets_an_http_only_same_site_cookie() {
    let s = TestServer::start();
    s.admin_form("POST", "/v1/users", "name=ann&password=correct+horse");
    let login = dash_login(&s);
    let c = login.header("Set-Cookie").unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=86400"] {
        assert!(c.contains(part), "{c} lacks {part}");
    }
    assert!(!c.contains("Secure"), "not Secure unless configured: {c}");
    assert!(
        login.body.starts_with("user,token\nann,"),
        "the body is unchanged"
    );
    // A login without the dashboard's header (a script, or another site's
    // form: login CSRF) gets the token in the body and no cookie.
    let script = s.post("/v1/login", FORM, b"name=ann&password=correct+horse", "");
    assert_eq!(script.status, 200);
    assert_eq!(script.header("Set-Cookie"), None);
    assert_eq!(script.header("Overlord-Csrf"), None);

    let s = TestServer::start_with(|c| c.dashboard.secure_cookie = true);
    s.admin_form("POST", "/v1/users", "name=ann&password=correct+horse");
    let login = dash_login(&s);
    assert!(login.header("Set-Cookie").unwrap().ends_with("; Secure"));
}

#[test]
fn the_cookie_authenticates_and_the_session_gives_its_csrf_token() {
    let s = TestServer::start();
    let (cookie, csrf) = logged_in(&s);
    let r = with_cookie(&s, "GET", "/v1/devices", "", "", &cookie);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = with_cookie(&s, "GET", "/v1/session", "", "", &cookie);
    assert_eq!(
        r.body,
        format!("user,role,csrf,tile_url\nann,user,{csrf},\n")
    );
    // A user's API token is not accepted as a cookie.
    let r = with_cookie(&s, "GET", "/v1/devices", "", "", &s.admin);
    assert_eq!((r.status, r.error_code()), (401, "unauthorized"));
    // The dashboard's requests get no Basic challenge (no browser dialog);
    // everyone else's do.
    let r = s.raw(
        b"GET /v1/devices HTTP/1.1\r\nHost: t\r\nX-Overlord-CSRF: \r\nConnection: close\r\n\r\n",
    );
    assert_eq!((r.status, r.header("WWW-Authenticate")), (401, None));
    let r = s.get("/v1/devices");
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some("Basic realm=\"overlord\"")
    );
    // Nor is a made-up session.
    let r = with_cookie(
        &s,
        "GET",
        "/v1/devices",
        "",
        "",
        "0123456789abcdef0123456789abcdef",
    );
    assert_eq!(r.status, 401);
}

#[test]
fn state_changes_by_cookie_need_the_csrf_header() {
    let s = TestServer::start();
    let (cookie, csrf) = logged_in(&s);
    let good = format!("X-Overlord-CSRF: {csrf}\r\n");
    // Missing, wrong, or another session's token: refused before anything happens.
    let r = with_cookie(&s, "POST", "/v1/devices", "id=gh1", "", &cookie);
    assert_eq!((r.status, r.error_code()), (403, "csrf"), "{}", r.body);
    let r = with_cookie(
        &s,
        "POST",
        "/v1/devices",
        "id=gh1",
        "X-Overlord-CSRF: nope\r\n",
        &cookie,
    );
    assert_eq!((r.status, r.error_code()), (403, "csrf"));
    let other = overlord::auth::csrf_for("0123456789abcdef0123456789abcdef");
    let r = with_cookie(
        &s,
        "POST",
        "/v1/devices",
        "id=gh1",
        &format!("X-Overlord-CSRF: {other}\r\n"),
        &cookie,
    );
    assert_eq!((r.status, r.error_code()), (403, "csrf"));
    assert_eq!(
        s.get_admin("/v1/devices/gh1").status,
        404,
        "nothing was created"
    );
    // With the token it works.
    let r = with_cookie(&s, "POST", "/v1/devices", "id=gh1", &good, &cookie);
    assert_eq!(r.status, 201, "{}", r.body);
    let token = common::token_of(&r.body);
    // The device GETs that write are guarded too.
    let t = hour_ago();
    let path = format!("/v1/readings?device=gh1&N1=1&time={t}");
    let r = with_cookie(&s, "GET", &path, "", "", &cookie);
    assert_eq!((r.status, r.error_code()), (403, "csrf"));
    let r = with_cookie(&s, "GET", &path, "", &good, &cookie);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = with_cookie(&s, "DELETE", "/v1/alerts/x", "", "", &cookie);
    assert_eq!((r.status, r.error_code()), (403, "csrf"));
    // Reads need no token; Authorization wins over a cookie and needs none.
    assert_eq!(
        with_cookie(&s, "GET", "/v1/devices/gh1", "", "", &cookie).status,
        200
    );
    let bearer = format!("Authorization: Bearer {}\r\n", s.admin);
    let r = with_cookie(&s, "POST", "/v1/devices", "id=gh2", &bearer, &cookie);
    assert_eq!(r.status, 201, "{}", r.body);
    // A device's own requests never carry the cookie and are unaffected.
    let r = s.get(&format!(
        "/v1/readings?device=gh1&token={token}&N1=2&time={}",
        t + 1
    ));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn logout_ends_the_session_and_clears_the_cookie() {
    let s = TestServer::start();
    let (cookie, csrf) = logged_in(&s);
    let r = with_cookie(&s, "POST", "/v1/logout", "", "", &cookie);
    assert_eq!(
        (r.status, r.error_code()),
        (403, "csrf"),
        "logout is a state change"
    );
    let r = with_cookie(
        &s,
        "POST",
        "/v1/logout",
        "",
        &format!("X-Overlord-CSRF: {csrf}\r\n"),
        &cookie,
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ok,1\n"));
    let c = r.header("Set-Cookie").unwrap();
    assert!(
        c.starts_with("overlord_session=;") && c.contains("Max-Age=0"),
        "{c}"
    );
    let r = with_cookie(&s, "GET", "/v1/devices", "", "", &cookie);
    assert_eq!(r.status, 401, "the session is over");
}

#[test]
fn latest_value_of_every_sensor() {
    let s = TestServer::start();
    let tok = s.create_device("gh1");
    let t = hour_ago();
    let body = format!("time,N1,S2\n{t},1.5,a\n{},2.5,\n{},,b\n", t + 60, t + 200);
    let r = s.post(
        &format!("/v1/readings?device=gh1&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.get_admin("/v1/devices/gh1/sensors");
    assert_eq!(
        r.body,
        format!(
            "sensor,time,value\nN1,{},2.5\nS2,{},b\n",
            rfc3339(t + 60),
            rfc3339(t + 200)
        )
    );
    assert_eq!(s.get_admin("/v1/devices/nope/sensors").status, 404);
}

#[test]
fn buckets_give_min_and_max_per_slice() {
    let s = TestServer::start();
    let tok = s.create_device("gh1");
    let t = hour_ago() / 100 * 100;
    // Slice 0 [t, t+50): 1, 5, -2 ; slice 1 [t+50, t+100): 7 ; N2 only in slice 0.
    let body = format!(
        "time,N1,I2\n{t},1,10\n{},5,\n{},-2,30\n{},7,\n",
        t + 10,
        t + 49,
        t + 99
    );
    let r = s.post(
        &format!("/v1/readings?device=gh1&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let q = |extra: &str| {
        s.get_admin(&format!(
            "/v1/devices/gh1/readings?sensors=N1,I2&from={t}&to={}.999999{extra}",
            t + 99
        ))
    };
    let r = q("&buckets=2");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        format!(
            "time,N1_min,N1_max,I2_min,I2_max\n{},-2,5,10,30\n{},7,7,,\n",
            rfc3339(t),
            rfc3339(t + 50)
        )
    );
    // Empty slices are left out.
    let r = q("&buckets=100");
    assert_eq!(r.body.lines().count(), 1 + 4, "{}", r.body);
    // Bad requests say what is wrong.
    let cases: &[(&str, &str)] = &[
        ("&buckets=0", "bad_buckets"),
        ("&buckets=99999", "bad_buckets"),
        ("&buckets=x", "bad_buckets"),
        ("&buckets=5&limit=3", "bad_parameter"),
    ];
    for (extra, code) in cases {
        let r = q(extra);
        assert_eq!(
            (r.status, r.error_code()),
            (400, *code),
            "{extra}: {}",
            r.body
        );
    }
    let r = s.get_admin(&format!(
        "/v1/devices/gh1/readings?sensors=N1&from={t}&buckets=5"
    ));
    assert_eq!((r.status, r.error_code()), (400, "missing_field"));
    let r = s.get_admin(&format!(
        "/v1/devices/gh1/readings?sensors=S1&from={t}&to={}&buckets=5",
        t + 9
    ));
    assert_eq!((r.status, r.error_code()), (400, "bad_sensor"));
    let r = s.get_admin(&format!(
        "/v1/devices/gh1/readings?sensors=N1&from={}&to={t}&buckets=5",
        t + 9
    ));
    assert_eq!((r.status, r.error_code()), (400, "bad_time"));
}

#[test]
fn the_dashboard_files_are_built_in_with_etags_and_a_strict_policy() {
    let s = TestServer::start();
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    let csp = r.header("Content-Security-Policy").unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(r.body.contains("/ui/app.js"));
    let tag = r.header("ETag").unwrap().to_string();
    // (A 304 has no body and, from hyper, no Content-Length: read it raw.)
    let req =
        format!("GET / HTTP/1.1\r\nHost: t\r\nIf-None-Match: {tag}\r\nConnection: close\r\n\r\n");
    assert_eq!(common::raw_status(s.addr, req.as_bytes()), Some(304));
    let req = "GET / HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"other\"\r\nConnection: close\r\n\r\n";
    assert_eq!(common::raw_status(s.addr, req.as_bytes()), Some(200));
    for (path, ctype) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/uplot.min.js", "text/javascript; charset=utf-8"),
        ("/ui/world.js", "text/javascript; charset=utf-8"),
    ] {
        let r = s.get(path);
        assert_eq!(
            (r.status, r.header("Content-Type")),
            (200, Some(ctype)),
            "{path}"
        );
        assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    }
    let r = s.get("/ui/../Cargo.toml");
    assert_eq!(r.status, 404);
    let r = s.get("/ui/nope.js");
    assert_eq!((r.status, r.error_code()), (404, "not_found"));
    // No CDN: the page loads nothing from anywhere else.
    for (name, _, bytes) in overlord::api::dashboard::ASSETS {
        let text = String::from_utf8_lossy(bytes);
        for attr in ["src=\"http", "href=\"http", "url(http", "import(\"http"] {
            assert!(!text.contains(attr), "{name} loads from elsewhere: {attr}");
        }
    }
    // A configured tile server is the one other origin images may come from.
    let s = TestServer::start_with(|c| {
        c.dashboard.tile_url = "http://tiles.lan/{z}/{x}/{y}.png".into()
    });
    let csp = s
        .get("/")
        .header("Content-Security-Policy")
        .unwrap()
        .to_string();
    assert!(
        csp.contains("img-src 'self' data: http://tiles.lan;"),
        "{csp}"
    );
}
