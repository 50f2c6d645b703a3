//! What a request can make the server hold or do before and while it is
//! parsed: a bound on fields and columns (a request of 80,000 form fields
//! once took 17 s of a request thread, unauthenticated), and an empty CSV
//! body that must not be taken for a heartbeat.

mod common;

use common::{hour_ago, TestServer};

/// `n` distinct sensor fields `N1=1&N2=1&...`.
fn fields(n: usize) -> String {
    (1..=n)
        .map(|i| format!("N{i}=1"))
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn more_fields_than_max_fields_is_400_too_many_fields() {
    let s = TestServer::start();
    let tok = s.create_device("d");
    let max = overlord::codec::DEFAULT_MAX_FIELDS;
    let check = |what: &str, r: common::Reply| {
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert_eq!(r.error_code(), "too_many_fields", "{what}");
        assert!(
            r.body.contains(&format!("more than {max} fields")),
            "{what}: the limit is in the detail: {}",
            r.body
        );
        assert_eq!(r.body.lines().count(), 1, "{what}");
    };
    // Unauthenticated: refused for its size before anyone is looked up.
    let body = fields(5000);
    check(
        "anonymous form",
        s.post(
            "/v1/readings",
            "application/x-www-form-urlencoded",
            body.as_bytes(),
            "",
        ),
    );
    // Query string and form body count together.
    let q = fields(max / 2 + 1);
    let body = (max / 2 + 1..=max + 1)
        .map(|i| format!("I{i}=2"))
        .collect::<Vec<_>>()
        .join("&");
    check(
        "query and form",
        s.post(
            &format!("/v1/readings?device=d&token={tok}&{q}"),
            "application/x-www-form-urlencoded",
            body.as_bytes(),
            "",
        ),
    );
    check(
        "query",
        s.get(&format!(
            "/v1/readings?device=d&token={tok}&{}",
            fields(max + 1)
        )),
    );
    // A CSV header of more columns than that.
    let t = hour_ago();
    let header: Vec<String> = (1..=max + 1).map(|i| format!("N{i}")).collect();
    let row = vec!["1"; max + 1].join(",");
    let csv = format!("time,{}\n{t},{row}\n", header.join(","));
    check(
        "CSV header",
        s.post(
            &format!("/v1/readings?device=d&token={tok}"),
            "text/csv",
            csv.as_bytes(),
            "",
        ),
    );
    // A management form too.
    check(
        "management form",
        s.admin_form("POST", "/v1/channels", &"name=x&".repeat(max + 1)),
    );
    // Up to the limit is fine: one field less than max (device, token).
    let r = s.get(&format!(
        "/v1/readings?device=d&token={tok}&{}",
        fields(max - 2)
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.starts_with(&format!("ok,{},", max - 2)),
        "{}",
        r.body
    );
    // Nothing of the refused requests was stored: only N1..N(max-2) once.
    let q = s.get(&format!("/v1/devices/d/sensors?device=d&token={tok}"));
    assert_eq!(q.body.lines().count(), 1 + max - 2, "{}", &q.body[..200]);
}

#[test]
fn max_fields_is_configurable_and_wide_requests_work_under_it() {
    let s = TestServer::start_with(|c| c.limits.max_fields = 20_000);
    let tok = s.create_device("d");
    // 19,000 distinct columns in a CSV header and 5,000 form fields: the
    // duplicate checks are linear, so both are answered (they were
    // quadratic in the field count).
    let t = hour_ago();
    let n = 19_000;
    let header: Vec<String> = (1..=n).map(|i| format!("I{i}")).collect();
    let csv = format!(
        "time,{}\n{t},{}\n",
        header.join(","),
        vec!["7"; n].join(",")
    );
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "text/csv",
        csv.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with(&format!("ok,{n},")), "{}", r.body);
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "application/x-www-form-urlencoded",
        fields(5000).as_bytes(),
        "",
    );
    assert!(r.body.starts_with("ok,5000,"), "{}", r.body);
    // A repeat is still found, however late it comes.
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "application/x-www-form-urlencoded",
        format!("{}&n17=2", fields(5000)).as_bytes(),
        "",
    );
    assert_eq!((r.status, r.error_code()), (400, "duplicate_field"));
    assert!(r.body.contains("n17"), "{}", r.body);
}

#[test]
fn an_empty_csv_body_is_bad_csv_and_a_heartbeat_stays_a_heartbeat() {
    let s = TestServer::start();
    let tok = s.create_device("d");
    // A script whose file is missing sends an empty CSV body: that must not
    // look like success.
    for (ct, extra) in [
        ("text/csv", String::new()),
        ("text/csv; charset=utf-8", String::new()),
        ("application/csv", String::new()),
        ("text/csv", common::basic("d", &tok)),
    ] {
        let path = if extra.is_empty() {
            format!("/v1/readings?device=d&token={tok}")
        } else {
            "/v1/readings".to_string()
        };
        let r = s.post(&path, ct, b"", &extra);
        assert_eq!(r.status, 400, "{ct}: {}", r.body);
        assert_eq!(r.error_code(), "bad_csv", "{ct}");
        assert_eq!(r.body.lines().count(), 1);
    }
    // Heartbeats: a GET without values, an empty form POST, a form with
    // only credentials.
    let r = s.get(&format!("/v1/readings?device=d&token={tok}"));
    assert_eq!((r.status, r.body.as_str()), (200, "ok,0,0\n"));
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "application/x-www-form-urlencoded",
        b"",
        "",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ok,0,0\n"));
    let r = s.post(
        "/v1/readings",
        "application/x-www-form-urlencoded",
        format!("device=d&token={tok}").as_bytes(),
        "",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ok,0,0\n"));
    // A heartbeat still gets the pending inbox count (`ok,0,N`).
    let sent = s.admin_form("POST", "/v1/devices/d/inbox", "kind=message&value=hello");
    assert!(sent.status < 300, "{}", sent.body);
    let r = s.get(&format!("/v1/readings?device=d&token={tok}"));
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("ok,0,1\n"), "{}", r.body);
}
