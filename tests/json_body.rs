//! JSON on the readings path (issue 17): `application/json` bodies on
//! `POST /v1/readings` go through the same validation, authorisation and
//! durability as CSV, with errors that name a JSON pointer; queries
//! answer JSON when asked (`format=json`, `Accept: application/json`),
//! CSV otherwise.

mod common;

use common::{hour_ago, rfc3339, TestServer};

fn post_json(s: &TestServer, query: &str, body: &str, extra: &str) -> common::Reply {
    s.post(
        &format!("/v1/readings?{query}"),
        "application/json",
        body.as_bytes(),
        extra,
    )
}

#[test]
fn a_device_posts_an_object_and_reads_it_back_as_csv_and_json() {
    let s = TestServer::start();
    let tok = s.create_device("d");
    let t = hour_ago();
    let body = format!(
        r#"{{"time":"{}","N1":21.5,"L2":true,"S3":"door, open","I4":-7,"N5":null}}"#,
        rfc3339(t)
    );
    let r = post_json(&s, &format!("device=d&token={tok}"), &body, "");
    assert_eq!((r.status, r.body.as_str()), (200, "ok,4,0\n"));

    // CSV stays the default.
    let q = format!("/v1/devices/d/readings?token={tok}&sensors=N1,L2,S3,I4");
    let csv = s.get(&q);
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert!(csv.header("Content-Type").unwrap().starts_with("text/csv"));
    assert_eq!(
        csv.body,
        format!(
            "time,N1,L2,S3,I4\n{},21.5,true,\"door, open\",-7\n",
            rfc3339(t)
        )
    );
    // The same table as JSON, typed by sensor kind.
    let want = format!(
        "[{{\"time\":\"{}\",\"N1\":21.5,\"L2\":true,\"S3\":\"door, open\",\"I4\":-7}}]\n",
        rfc3339(t)
    );
    let json = s.get(&format!("{q}&format=json"));
    assert_eq!(json.status, 200, "{}", json.body);
    assert_eq!(json.header("Content-Type"), Some("application/json"));
    assert_eq!(json.body, want);
    let accept = s.raw(
        format!(
            "GET {q} HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(accept.body, want);
    // The latest values too.
    let latest = s.get(&format!("/v1/devices/d/sensors?token={tok}&format=json"));
    assert_eq!(latest.status, 200, "{}", latest.body);
    assert!(
        latest.body.contains(&format!(
            "{{\"sensor\":\"N1\",\"time\":\"{}\",\"value\":21.5}}",
            rfc3339(t)
        )),
        "{}",
        latest.body
    );
    assert_eq!(
        s.get(&format!("{q}&format=xml")).error_code(),
        "bad_parameter"
    );
}

#[test]
fn an_array_with_devices_is_one_request_for_a_user() {
    let s = TestServer::start();
    let _ = s.create_device("a");
    let tb = s.create_device("b");
    let t = hour_ago();
    let auth = format!("Authorization: Bearer {}\r\n", s.admin);
    let body = format!(
        r#"[{{"device":"a","time":{t},"N1":1}},{{"device":"b","time":{t},"N1":2}},{{"device":"b","time":{},"N1":3}}]"#,
        t + 1
    );
    let r = post_json(&s, "", &body, &auth);
    assert_eq!((r.status, r.body.as_str()), (200, "ok,3,0\n"));
    let b = s.get(&format!(
        "/v1/devices/b/readings?token={tb}&sensors=N1&format=json"
    ));
    assert_eq!(
        b.body,
        format!(
            "[{{\"time\":\"{}\",\"N1\":2}},{{\"time\":\"{}\",\"N1\":3}}]\n",
            rfc3339(t),
            rfc3339(t + 1)
        )
    );
    // Without a device for an object, a user is told to name one.
    let r = post_json(&s, "", r#"[{"device":"a","N1":1},{"N1":2}]"#, &auth);
    assert_eq!((r.status, r.error_code()), (400, "missing_device"));
}

#[test]
fn bad_json_is_refused_whole_with_a_pointer() {
    let s = TestServer::start();
    let tok = s.create_device("d");
    let _ = s.create_device("other");
    let t = hour_ago();
    let cred = format!("device=d&token={tok}");
    let cases: &[(&str, u16, &str, &str)] = &[
        (
            r#"[{"N1":1},{"N1":"warm"}]"#,
            400,
            "bad_value",
            "/1/N1: 'warm'",
        ),
        (r#"{"N1":1,"n1":2}"#, 400, "duplicate_field", "/n1:"),
        (r#"{"Q1":1}"#, 400, "bad_sensor_name", "/Q1:"),
        (r#"{"N1":{"v":1}}"#, 400, "bad_value", "/N1:"),
        (r#"{"N1":1,"time":"soon"}"#, 400, "bad_time", "/time:"),
        (r#"{"N1":1"#, 400, "bad_json", "line 1"),
        (r#"[]"#, 400, "bad_json", "empty array"),
        (r#"[{"N1":1},7]"#, 400, "bad_json", "/1:"),
        (r#"{"N1":1,"token":"x"}"#, 400, "bad_parameter", "/token:"),
        // A device may not write another device it cannot see.
        (
            r#"[{"N1":1},{"device":"other","N1":2}]"#,
            404,
            "unknown_device",
            "other",
        ),
    ];
    for (body, status, code, detail) in cases {
        let r = post_json(&s, &cred, body, "");
        assert_eq!(r.status, *status, "{body}: {}", r.body);
        assert_eq!(r.error_code(), *code, "{body}");
        assert!(r.body.contains(detail), "{body}: {}", r.body);
        assert_eq!(r.body.lines().count(), 1, "{body}");
    }
    // An empty JSON POST is an error, never a heartbeat.
    assert_eq!(post_json(&s, &cred, "", "").error_code(), "bad_json");
    // All or nothing: the good first object of a refused body is absent.
    let body = format!(r#"[{{"time":{t},"N1":1}},{{"time":{t},"N2":"x"}}]"#);
    assert_eq!(post_json(&s, &cred, &body, "").status, 400);
    let q = s.get(&format!("/v1/devices/d/readings?token={tok}&sensors=N1"));
    assert_eq!(q.body, "time,N1\n");
}

#[test]
fn channel_items_come_as_json_when_asked() {
    let s = TestServer::start();
    let tok = s.create_device("12");
    assert_eq!(s.admin_form("POST", "/v1/channels", "name=ch").status, 201);
    let r = s.admin_form("POST", "/v1/channels/ch/members", "device=12&sensor=L1");
    assert_eq!(r.status, 201, "{}", r.body);
    let t = hour_ago();
    let body = format!(r#"{{"time":{t},"L1":false}}"#);
    let r = post_json(&s, &format!("device=12&token={tok}"), &body, "");
    assert_eq!(r.status, 200, "{}", r.body);
    // A bounded long-poll: the item's arrival is the barrier.
    let r = s.get_admin("/v1/channels/ch/items?after=0&wait=20&format=json");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(
        r.body,
        format!(
            "[{{\"index\":1,\"time\":\"{}\",\"device\":\"12\",\"sensor\":\"L1\",\"value\":false}}]\n",
            rfc3339(t)
        )
    );
}
