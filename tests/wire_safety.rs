//! Promises to clients that a hostile or careless other client must not
//! break (issue 14): nothing sent can forge a line in what a device reads;
//! spreadsheet-safe exports; every device operation as `GET` and as a form
//! `POST`, with credentials never mixed; `/metrics` device gauges that
//! agree with `GET /v1/devices`.

mod common;

use std::collections::BTreeMap;

use common::{basic, column, enc, hour_ago, m, scrape_until, TestServer};

/// States shown by `GET /v1/devices`, counted.
fn api_states(s: &TestServer) -> BTreeMap<String, usize> {
    let r = s.get_admin("/v1/devices");
    assert_eq!(r.status, 200, "{}", r.body);
    let mut out = BTreeMap::new();
    for st in column(&r.body, "state") {
        *out.entry(st).or_insert(0) += 1;
    }
    out
}

// ---------------------------------------------------------------------
// Item 21: /metrics device gauges = the states of GET /v1/devices.
// ---------------------------------------------------------------------

#[test]
fn device_gauges_equal_the_states_the_api_shows() {
    let s = TestServer::start_with(|c| c.limits.device_requests_per_sec = 0.0);
    let admin = |form: &str| {
        let r = s.admin_form("POST", "/v1/devices", form);
        assert_eq!(r.status, 201, "{form}: {}", r.body);
        common::token_of(&r.body)
    };
    // A gateway that falls silent after 1 s, two devices behind it that
    // would stay online for 300 s on their own; one device that stays
    // online, one that goes offline, one never heard from.
    let gw = admin("id=gw&gateway=true&offline_after=1");
    let c1 = admin("id=c1&parent=gw");
    let c2 = admin("id=c2&parent=gw");
    let on = admin("id=on");
    let off = admin("id=off&offline_after=1");
    admin("id=never");
    for (id, tok) in [
        ("c1", &c1),
        ("c2", &c2),
        ("gw", &gw),
        ("on", &on),
        ("off", &off),
    ] {
        let r = s.get(&format!("/v1/readings?device={id}&token={tok}"));
        assert_eq!(r.status, 200, "heartbeat {id}: {}", r.body);
    }
    let want: BTreeMap<String, usize> = [
        ("offline", 2),     // gw, off
        ("online", 1),      // on
        ("unknown", 1),     // never
        ("unreachable", 2), // c1, c2
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // The 1 s deadlines pass on the server's clock (no sleeping); bounded
    // poll for the sweep (every 250 ms) to mark them.
    s.clock.advance(std::time::Duration::from_secs(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while api_states(&s) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "states never settled: {:?}",
            api_states(&s)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let gauge = |g: &BTreeMap<String, f64>, st: &str| m(g, &format!("overlord_devices_{st}"));
    let got = scrape_until(&s, |g| {
        want.iter()
            .all(|(st, n)| g.get(&format!("overlord_devices_{st}")) == Some(&(*n as f64)))
    });
    for (st, n) in &want {
        assert_eq!(gauge(&got, st), *n as f64, "overlord_devices_{st}");
    }
    // Every device in exactly one gauge, and the API agrees right now.
    let sum: f64 = ["online", "offline", "unreachable", "unknown"]
        .iter()
        .map(|st| gauge(&got, st))
        .sum();
    assert_eq!(sum, 6.0);
    assert_eq!(api_states(&s), want);
}

// ---------------------------------------------------------------------
// Item 20: every device operation as GET and as a form POST; credentials
// that disagree are refused, never mixed.
// ---------------------------------------------------------------------

/// Queue a message for `dev` as the administrator; its seq.
fn message(s: &TestServer, dev: &str, value: &str) -> u64 {
    let r = s.admin_form(
        "POST",
        &format!("/v1/devices/{dev}/inbox"),
        &format!("kind=message&value={}", enc(value)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.body.trim().strip_prefix("ok,").unwrap().parse().unwrap()
}

#[test]
fn the_inbox_is_read_with_a_form_post_over_http_1_0() {
    let s = TestServer::start();
    let tok = s.create_device("a");
    let seq = message(&s, "a", "hello");
    // As a board sends it: HTTP/1.0, the token in the body, not the URL.
    let body = format!("device=a&token={tok}&limit=5");
    let r = s.raw(
        format!(
            "POST /v1/inbox HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.status_line.starts_with("HTTP/1.0 200"),
        "{}",
        r.status_line
    );
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines[0], "seq,kind,time,from,sensor,value");
    assert_eq!(lines.len(), 2, "{}", r.body);
    assert!(lines[1].starts_with(&format!("{seq},message,")));
    assert!(lines[1].ends_with(",user:admin,,hello"), "{}", r.body);
    // The same answer as the GET; a wrong token in the body is 401.
    let g = s.get(&format!("/v1/inbox?device=a&token={tok}&limit=5"));
    assert_eq!(g.body, r.body);
    let r = s.post(
        "/v1/inbox",
        "application/x-www-form-urlencoded",
        b"device=a&token=wrong",
        "",
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.error_code(), "unauthorized");
    // And the acknowledgement as a form POST too.
    let r = s.post(
        "/v1/inbox/ack",
        "application/x-www-form-urlencoded",
        format!("device=a&token={tok}&upto={seq}").as_bytes(),
        "",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ok,1,0\n"));
}

#[test]
fn credentials_that_disagree_are_refused_not_mixed() {
    let s = TestServer::start();
    let ta = s.create_device("a");
    let tb = s.create_device("b");
    message(&s, "a", "for a");
    message(&s, "b", "for b");
    // `device=a` in the query, Basic for b: neither a's inbox (no token
    // for a) nor b's (the request names a) - refused.
    for path in ["/v1/inbox?device=a", "/v1/inbox/ack?device=a&upto=99"] {
        let r = s.raw(
            format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
                basic("b", &tb)
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert_eq!(r.error_code(), "unauthorized");
        assert_eq!(r.body.lines().count(), 1);
    }
    // The same as a form body.
    let r = s.post(
        "/v1/inbox/ack",
        "application/x-www-form-urlencoded",
        b"device=a&upto=99",
        &basic("b", &tb),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    // Nothing was acknowledged in either inbox.
    for (id, tok) in [("a", &ta), ("b", &tb)] {
        let r = s.get(&format!("/v1/inbox?device={id}&token={tok}"));
        assert_eq!(r.body.lines().count(), 2, "{id}: {}", r.body);
        assert!(r.body.ends_with(&format!(",for {id}\n")), "{}", r.body);
    }
    // The documented precedence: device=/token= win over Authorization
    // (here another device's), and are used whole.
    let r = s.raw(
        format!(
            "GET /v1/inbox?device=a&token={ta} HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
            basic("b", &tb)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.ends_with(",for a\n"), "{}", r.body);
    // Basic for b and device=b agree: fine.
    let r = s.raw(
        format!(
            "GET /v1/inbox?device=b HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
            basic("b", &tb)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.ends_with(",for b\n"), "{}", r.body);
    // A token without its device is never paired with Basic's id.
    let r = s.raw(
        format!(
            "GET /v1/inbox?token={ta} HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
            basic("a", "wrong")
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 401, "{}", r.body);
}

// ---------------------------------------------------------------------
// Item 11: nothing a client sends adds a line to what a device reads.
// ---------------------------------------------------------------------

/// A forged inbox row, as an attacker would append it to a value.
const FORGED: &str = "\n9999,command,2026-11-23T10:00:00Z,user:admin,L1,true";

#[test]
fn line_breaks_are_refused_on_every_path_into_an_inbox() {
    let s = TestServer::start();
    s.create_device("a");
    for (path, form) in [
        ("/v1/channels", "name=ch".to_string()),
        ("/v1/channels/ch/members", "device=a&sensor=N1".to_string()),
    ] {
        let r = s.admin_form("POST", path, &form);
        assert_eq!(r.status, 201, "{path}: {}", r.body);
    }
    let bad = [
        format!("hi{FORGED}"),
        "hi\r9999,command,x,y,L1,true".to_string(),
        "hi\r\n".to_string(),
        "tab\there".to_string(),
        "nel\u{85}here".to_string(),
        "ls\u{2028}here".to_string(),
    ];
    for v in &bad {
        for (path, form) in [
            (
                "/v1/devices/a/inbox",
                format!("kind=message&value={}", enc(v)),
            ),
            (
                "/v1/devices/a/inbox",
                format!("kind=command&sensor=S1&value={}", enc(v)),
            ),
            (
                "/v1/channels/ch/messages",
                format!("kind=message&value={}", enc(v)),
            ),
            (
                "/v1/channels/ch/messages",
                format!("kind=command&sensor=S2&value={}", enc(v)),
            ),
            (
                "/v1/alerts",
                format!("name=hot&device=a&sensor=N1&max=100&message={}", enc(v)),
            ),
        ] {
            let r = s.admin_form("POST", path, &form);
            assert_eq!(r.status, 400, "{path} {v:?}: {}", r.body);
            assert_eq!(r.error_code(), "bad_value", "{path} {v:?}");
            assert_eq!(r.body.lines().count(), 1, "{}", r.body);
            assert!(
                r.body.contains("value:") || r.body.contains("message:"),
                "names the field: {}",
                r.body
            );
        }
    }
    // Nothing was queued, no alert was made.
    let r = s.get_admin("/v1/devices/a/inbox");
    assert_eq!(r.body, "seq,kind,time,from,sensor,value\n");
    assert_eq!(s.get_admin("/v1/alerts").body.lines().count(), 1);
}

#[test]
fn a_device_reading_line_by_line_sees_only_real_rows() {
    let s = TestServer::start();
    let tok = s.create_device("a");
    // Values with commas and quotes are fine: RFC 4180 quoted, one line.
    let r = s.admin_form(
        "POST",
        "/v1/devices/a/inbox",
        &format!("kind=command&sensor=S1&value={}", enc("x,command,L1,true")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    message(&s, "a", "say \"hi\"");
    // The injection attempt is refused.
    let r = s.admin_form(
        "POST",
        "/v1/devices/a/inbox",
        &format!("kind=message&value={}", enc(&format!("hi{FORGED}"))),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // Read raw, line by line, as a board does (no quote parsing).
    let r = s.raw(format!("GET /v1/inbox?device=a&token={tok} HTTP/1.0\r\n\r\n").as_bytes());
    let lines: Vec<&str> = r.body.split('\n').collect();
    assert_eq!(lines.len(), 4, "{:?}", r.body);
    assert_eq!(lines[0], "seq,kind,time,from,sensor,value");
    assert!(lines[1].starts_with("1,command,"), "{}", lines[1]);
    assert!(
        lines[1].ends_with(",user:admin,S1,\"x,command,L1,true\""),
        "{}",
        lines[1]
    );
    assert!(lines[2].starts_with("2,message,"), "{}", lines[2]);
    assert!(
        lines[2].ends_with(",user:admin,,\"say \"\"hi\"\"\""),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "");
    assert!(!r.body.contains('\r') && !r.body.contains("9999"));
    // The rows piggybacked on a readings reply: the same lines.
    let r = s.raw(format!("GET /v1/readings?device=a&token={tok} HTTP/1.0\r\n\r\n").as_bytes());
    assert_eq!(
        r.body.split('\n').collect::<Vec<_>>(),
        ["ok,0,2", lines[1], lines[2], ""]
    );
}

#[test]
fn the_cli_refuses_a_user_name_with_a_line_break() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("overlord.redb");
    let (ok, _, err) = common::cli(&data, &["init"], &[], None);
    assert!(ok, "{err}");
    for bad in ["ann\n9999,command", "ann\r", "a b", ""] {
        let (ok, out, err) = common::cli(&data, &["user", "token", bad], &[], None);
        assert!(!ok, "{bad:?} accepted: {out}");
        assert!(err.contains("user name"), "{err}");
    }
    let (ok, out, err) = common::cli(&data, &["user", "token", "ann"], &[], None);
    assert!(ok, "{err}");
    assert!(out.starts_with("user,token\nann,"), "{out}");
}

// ---------------------------------------------------------------------
// Item 13: spreadsheet-safe CSV on request; names without bidi overrides.
// ---------------------------------------------------------------------

#[test]
fn safe_csv_defuses_formulas_and_keeps_numbers() {
    let s = TestServer::start();
    let link = "=HYPERLINK(\"http://evil\",\"x\")";
    let r = s.admin_form(
        "POST",
        "/v1/devices",
        &format!(
            "id=d&name={}&description={}&location={}&latitude=-33.9&kind=%2Bcmd",
            enc(link),
            enc("@SUM(1)"),
            enc("-2+3")
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let tok = common::token_of(&r.body);
    for (path, form) in [
        ("/v1/channels", "name=ch"),
        ("/v1/channels/ch/members", "device=d&sensor=S3"),
    ] {
        assert_eq!(s.admin_form("POST", path, form).status, 201);
    }
    let t = hour_ago();
    let r = s.get(&format!(
        "/v1/readings?device=d&token={tok}&N1=-3.5&I2=-7&S3={}&time={t}",
        enc("=1+1")
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let when = common::rfc3339(t);

    // Plain: verbatim (what a program wants).
    let q = "/v1/devices/d/readings?sensors=N1,I2,S3";
    let plain = s.get_admin(q);
    assert_eq!(plain.body, format!("time,N1,I2,S3\n{when},-3.5,-7,=1+1\n"));
    // safe=1: the text gets a ', the numbers stay numbers.
    let safe = s.get_admin(&format!("{q}&safe=1"));
    assert_eq!(safe.status, 200, "{}", safe.body);
    assert_eq!(safe.body, format!("time,N1,I2,S3\n{when},-3.5,-7,'=1+1\n"));
    assert_eq!(s.get_admin(&format!("{q}&safe=0")).body, plain.body);
    // Anywhere in the query, and on every CSV read endpoint.
    let r = s.get_admin("/v1/devices/d/readings?safe=1&sensors=S3");
    assert_eq!(r.body, format!("time,S3\n{when},'=1+1\n"));
    let items = s.admin_until("/v1/channels/ch/items?safe=1", |b| b.lines().count() == 2);
    assert!(items.body.ends_with(",d,S3,'=1+1\n"), "{}", items.body);
    let r = s.get_admin("/v1/devices/d/sensors?safe=1");
    assert!(r.body.contains(",'=1+1\n"), "{}", r.body);
    assert!(
        r.body.contains(",-3.5\n") && r.body.contains(",-7\n"),
        "{}",
        r.body
    );
    let list = s.get_admin("/v1/devices?safe=1");
    assert_eq!(list.status, 200, "{}", list.body);
    let row = list.body.lines().nth(1).unwrap();
    assert!(
        row.starts_with("d,\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\",admin,"),
        "{row}"
    );
    for want in [",'+cmd,", ",-33.9,", ",'-2+3,", ",'@SUM(1)"] {
        assert!(row.contains(want), "{want} in {row}");
    }
    let plain = s.get_admin("/v1/devices");
    assert!(plain.body.contains(",+cmd,-33.9,,-2+3,"), "{}", plain.body);
    // A bad value of safe is refused like any bad parameter.
    for q in ["safe=2", "safe=1&safe=1"] {
        let r = s.get_admin(&format!("/v1/devices?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.body.lines().count(), 1);
    }

    // The offline export, with --safe, writes the same as safe=1.
    let (tmp, _admin) = s.stop();
    let data = tmp.path().join("overlord.redb");
    let (ok, out, err) = common::cli(
        &data,
        &["export", "--device", "d", "--sensors", "N1,I2,S3", "--safe"],
        &[],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, format!("time,N1,I2,S3\n{when},-3.5,-7,'=1+1\n"));
    let (ok, out, err) = common::cli(
        &data,
        &["export", "--device", "d", "--sensors", "S3"],
        &[],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, format!("time,S3\n{when},=1+1\n"));
}

#[test]
fn names_refuse_bidirectional_overrides() {
    let s = TestServer::start();
    s.create_device("d");
    for bidi in ["\u{202E}", "\u{202A}", "\u{2066}", "\u{2069}"] {
        let evil = format!("invoice{bidi}fdp.exe");
        for (method, path, form, code) in [
            (
                "POST",
                "/v1/devices",
                format!("id=x&name={}", enc(&evil)),
                "bad_name",
            ),
            (
                "POST",
                "/v1/devices/d",
                format!("name={}", enc(&evil)),
                "bad_name",
            ),
            (
                "POST",
                "/v1/devices/d",
                format!("description={}", enc(&evil)),
                "bad_value",
            ),
            (
                "POST",
                "/v1/devices/d",
                format!("location={}", enc(&evil)),
                "bad_value",
            ),
            (
                "POST",
                "/v1/devices/d",
                format!("kind={}", enc(&evil)),
                "bad_value",
            ),
            (
                "POST",
                "/v1/devices/d",
                format!("tags=a;{}", enc(&evil)),
                "bad_value",
            ),
            (
                "POST",
                "/v1/users",
                format!("name={}", enc(&evil)),
                "bad_name",
            ),
            (
                "POST",
                "/v1/channels",
                format!("name={}", enc(&evil)),
                "bad_name",
            ),
            (
                "POST",
                "/v1/alerts",
                format!("name={}&device=d&sensor=N1&max=1", enc(&evil)),
                "bad_name",
            ),
        ] {
            let r = s.admin_form(method, path, &form);
            assert_eq!(r.status, 400, "{path} {form}: {}", r.body);
            assert_eq!(r.error_code(), code, "{path} {form}");
        }
        let r = s.post(
            &format!("/v1/files/{}", enc(&evil)),
            "application/octet-stream",
            b"x",
            &format!("Authorization: Bearer {}\r\n", s.admin),
        );
        assert_eq!((r.status, r.error_code()), (400, "bad_name"), "{}", r.body);
        // A bulk import is checked the same way.
        let csv = format!("id,name\nx,{evil}\n");
        let r = s.post(
            "/v1/devices",
            "text/csv",
            csv.as_bytes(),
            &format!("Authorization: Bearer {}\r\n", s.admin),
        );
        assert_eq!((r.status, r.error_code()), (400, "bad_name"), "{}", r.body);
    }
    // Nothing was created or changed; right-to-left text itself is fine.
    let r = s.admin_form("POST", "/v1/devices/d", &format!("name={}", enc("חממה 3")));
    assert_eq!(r.status, 200, "{}", r.body);
    let list = s.get_admin("/v1/devices");
    assert_eq!(list.body.lines().count(), 2, "{}", list.body);
    assert!(list.body.contains("d,חממה 3,"), "{}", list.body);
}

/// Descriptive text beside the wire names (a channel's description, a
/// member's label, a sensor's label, unit and description) refuses the
/// same characters as a device's fields: `400 bad_value`, for the bidi
/// rule and not the length (the detail says which).
#[test]
fn labels_and_descriptions_refuse_bidirectional_overrides() {
    let s = TestServer::start();
    s.create_device("d");
    assert_eq!(s.admin_form("POST", "/v1/channels", "name=c").status, 201);
    let admin = format!("Authorization: Bearer {}\r\n", s.admin);
    for bidi in ["\u{202E}", "\u{202A}", "\u{2066}", "\u{2069}"] {
        let evil = enc(&format!("invoice{bidi}fdp.exe"));
        // A unit is at most 16 bytes: short enough that only the
        // character can be what is refused.
        let short = enc(&format!("{bidi}C"));
        for (path, form) in [
            ("/v1/channels", format!("name=c2&description={evil}")),
            ("/v1/channels/c", format!("description={evil}")),
            (
                "/v1/channels/c/members",
                format!("device=d&sensor=N1&label={evil}"),
            ),
            ("/v1/devices/d/sensors/N1", format!("label={evil}")),
            ("/v1/devices/d/sensors/N1", format!("unit={short}")),
            ("/v1/devices/d/sensors/N1", format!("description={evil}")),
        ] {
            let r = s.admin_form("POST", path, &form);
            assert_eq!(
                (r.status, r.error_code()),
                (400, "bad_value"),
                "{path} {form}: {}",
                r.body
            );
            assert!(
                r.body.contains("bidirectional"),
                "{path} {form}: {}",
                r.body
            );
        }
        // A member whose label is changed, and sensor labels in a bulk
        // import, are checked the same way.
        let r = s.admin_form("POST", "/v1/channels/c/members", "device=d&sensor=N2");
        assert_eq!(r.status, 201, "{}", r.body);
        let r = s.admin_form(
            "POST",
            "/v1/channels/c/members",
            &format!("device=d&sensor=N2&label={evil}"),
        );
        assert_eq!((r.status, r.error_code()), (400, "bad_value"), "{}", r.body);
        let r = s.admin_form("DELETE", "/v1/channels/c/members?device=d&sensor=N2", "");
        assert_eq!(r.status, 200, "{}", r.body);
        let csv = format!("id,N1.label\nx,a{bidi}b\n");
        let r = s.post("/v1/devices", "text/csv", csv.as_bytes(), &admin);
        assert_eq!((r.status, r.error_code()), (400, "bad_value"), "{}", r.body);
    }
    // Nothing was created or changed.
    let channels = s.get_admin("/v1/channels");
    assert_eq!(channels.body.lines().count(), 2, "{}", channels.body);
    assert!(
        channels.body.ends_with(",\n"),
        "no description: {}",
        channels.body
    );
    let members = s.get_admin("/v1/channels/c/members");
    assert_eq!(members.body, "device,sensor,label\n");
    let devices = s.get_admin("/v1/devices");
    assert_eq!(devices.body.lines().count(), 2, "{}", devices.body);
    // Right-to-left text itself is fine, and the sensor had no unit or
    // description before it.
    let r = s.admin_form(
        "POST",
        "/v1/devices/d/sensors/N1",
        &format!("label={}", enc("חממה 3")),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "sensor,label,unit,description\nN1,חממה 3,,\n");
}

#[test]
fn a_device_queries_itself_with_a_form_post() {
    let s = TestServer::start();
    let tok = s.create_device("q");
    let t = hour_ago();
    let r = s.get(&format!(
        "/v1/readings?device=q&token={tok}&N1=1.5&time={t}"
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    for (path, fields) in [
        ("/v1/devices/q/readings", "sensors=N1"),
        ("/v1/devices/q/aggregates", "sensors=N1"),
        ("/v1/devices/q/sensors", ""),
    ] {
        let get = s.get(&format!("{path}?device=q&token={tok}&{fields}"));
        assert_eq!(get.status, 200, "{path}: {}", get.body);
        let body = format!("device=q&token={tok}&{fields}");
        let post = s.post(
            path,
            "application/x-www-form-urlencoded",
            body.as_bytes(),
            "",
        );
        assert_eq!(post.status, 200, "{path}: {}", post.body);
        assert_eq!(post.body, get.body, "{path}");
        // The token in the body counts like the one in the URL.
        let bad = s.post(
            path,
            "application/x-www-form-urlencoded",
            format!("device=q&token=wrong&{fields}").as_bytes(),
            "",
        );
        assert_eq!(bad.status, 401, "{path}: {}", bad.body);
    }
    let r = s.get_admin("/v1/devices/q/readings?sensors=N1");
    assert!(r.body.ends_with(",1.5\n"), "{}", r.body);
}
