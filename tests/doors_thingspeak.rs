//! The ThingSpeak-compatible door (issue 17): the exact requests the
//! ThingSpeak Arduino library and the ESP8266 examples send, over raw TCP
//! in HTTP/1.0 and 1.1; the reply is the entry number (`0` on failure,
//! with the failure's status and the error line in a header); the
//! readings are stored and fsynced before it.

mod common;

use common::{hour_ago, rfc3339, TestServer};
use overlord::codec::SensorId;
use overlord::config::FieldMap;

fn readings(s: &TestServer, dev: &str, sensors: &str) -> String {
    let r = s.get_admin(&format!("/v1/devices/{dev}/readings?sensors={sensors}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// A successful update: `200`, plain text, a positive entry number.
fn entry(r: &common::Reply) -> i64 {
    assert_eq!(r.status, 200, "{} {:?}", r.body, r.headers);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    let n: i64 = r
        .body
        .parse()
        .unwrap_or_else(|_| panic!("entry number: {:?}", r.body));
    assert!(n > 0);
    n
}

/// A failed update: `status`, body `0`, the error code in the header.
fn refused(r: &common::Reply, status: u16, code: &str) {
    assert_eq!(
        (r.status, r.body.as_str()),
        (status, "0"),
        "{:?}",
        r.headers
    );
    let line = r.header("Overlord-Error").unwrap_or("");
    assert!(line.starts_with(&format!("error,{code},")), "{line}");
}

#[test]
fn the_arduino_library_post_is_stored() {
    let s = TestServer::start();
    let key = s.create_device("ts");
    // ThingSpeak.writeFields(): every set field with a leading '&', then
    // "&headers=false"; the key in X-THINGSPEAKAPIKEY.
    let body = "&field1=21.50&field2=55&headers=false";
    let req = format!(
        "POST /update HTTP/1.1\r\nHost: api.thingspeak.com\r\nConnection: close\r\nUser-Agent: tslib-arduino/2.0.1 (esp8266)\r\nX-THINGSPEAKAPIKEY: {key}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    entry(&s.raw(req.as_bytes()));
    let csv = readings(&s, "ts", "N1,N2");
    let row = csv.lines().nth(1).expect("one row");
    assert!(row.ends_with(",21.5,55"), "{csv}");
    // With setCreatedAt(): the time is the device's.
    let t = hour_ago();
    let body = format!(
        "&field3=1&created_at={}&headers=false",
        common::enc(&rfc3339(t))
    );
    let req = format!(
        "POST /update HTTP/1.1\r\nHost: api.thingspeak.com\r\nConnection: close\r\nX-THINGSPEAKAPIKEY: {key}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    entry(&s.raw(req.as_bytes()));
    assert_eq!(
        readings(&s, "ts", "N3"),
        format!("time,N3\n{},1\n", rfc3339(t))
    );
}

#[test]
fn the_esp8266_examples_are_stored() {
    let s = TestServer::start();
    let key = s.create_device("esp");
    // The classic ESP8266 DHT example: bare LF lines, the key bare as the
    // body's first segment and in the header, "\r\n\r\n" after the body.
    let body = format!("{key}&field1=23.40&field2=41.00\r\n\r\n");
    let req = format!(
        "POST /update HTTP/1.1\nHost: api.thingspeak.com\nConnection: close\nX-THINGSPEAKAPIKEY: {key}\nContent-Type: application/x-www-form-urlencoded\nContent-Length: {}\n\n{body}",
        body.len()
    );
    entry(&s.raw(req.as_bytes()));
    // The GET examples, HTTP/1.1 with api_key and HTTP/1.0 with key.
    let t = hour_ago();
    let r = s.raw(
        format!("GET /update?api_key={key}&field1=1&created_at={t} HTTP/1.1\r\nHost: api.thingspeak.com\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    entry(&r);
    let r = s.raw(
        format!(
            "GET /update?key={key}&field1=2&created_at={} HTTP/1.0\r\n\r\n",
            t + 1
        )
        .as_bytes(),
    );
    assert!(
        r.status_line.starts_with("HTTP/1.0 200"),
        "{}",
        r.status_line
    );
    entry(&r);
    let csv = readings(&s, "esp", "N1,N2");
    assert!(
        csv.contains(&format!("{},1,\n{},2,\n", rfc3339(t), rfc3339(t + 1))),
        "{csv}"
    );
    assert!(csv.contains(",23.4,41\n"), "{csv}");
    // update.json answers the entry as JSON.
    let r = s.get(&format!(
        "/update.json?api_key={key}&field2=5&created_at={}",
        t + 2
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(r.body.contains("\"channel_id\":\"esp\""), "{}", r.body);
    assert!(r.body.contains("\"field2\":\"5\""), "{}", r.body);
    assert!(r.body.contains("\"entry_id\":"), "{}", r.body);
}

#[test]
fn fields_map_to_configured_sensors_and_failures_answer_zero() {
    let s = TestServer::start_with(|c| {
        let map = ["N1", "N2", "I3", "L4", "", "", "", "S8"]
            .iter()
            .map(|n| SensorId::parse(n).ok())
            .collect();
        c.thingspeak.devices.insert("w".into(), FieldMap(map));
    });
    let key = s.create_device("w");
    let t = hour_ago();
    let get = |q: &str| s.get(&format!("/update?api_key={key}&{q}"));
    entry(&get(&format!(
        "field3=7&field4=1&field8=open&created_at={}",
        common::enc(&format!("{} +0000", &rfc3339(t)[..19].replace('T', " ")))
    )));
    assert_eq!(
        readings(&s, "w", "I3,L4,S8"),
        format!("time,I3,L4,S8\n{},7,true,open\n", rfc3339(t))
    );
    // Unmapped, bad and unsupported fields: 400 and "0", nothing stored.
    refused(&get("field5=1"), 400, "bad_parameter");
    refused(
        &get(&format!("field1=2&field3=1.5&created_at={}", t + 5)),
        400,
        "bad_value",
    );
    assert!(get("field3=x")
        .header("Overlord-Error")
        .unwrap()
        .contains("field3"));
    // A detail with UTF-8 in it still reaches the (ASCII) header.
    let r = get("field3=%C3%A9");
    refused(&r, 400, "bad_value");
    assert!(
        r.header("Overlord-Error").unwrap().contains("field3: '?'"),
        "{:?}",
        r.headers
    );
    refused(&get("field1=1&status=hello"), 400, "bad_parameter");
    refused(&get("field9=1"), 400, "bad_parameter");
    refused(&get("headers=false"), 400, "missing_field");
    refused(&get("field1=1&created_at=yesterday"), 400, "bad_time");
    assert_eq!(readings(&s, "w", "N1"), "time,N1\n");
    // Wrong key, no key, a user's key.
    refused(
        &s.get("/update?api_key=0123456789abcdef0123456789abcdef&field1=1"),
        401,
        "unauthorized",
    );
    refused(&s.get("/update?field1=1"), 401, "unauthorized");
    refused(
        &s.get(&format!("/update?api_key={}&field1=1", s.admin)),
        403,
        "forbidden",
    );
}

#[test]
fn bulk_updates_are_one_request() {
    let s = TestServer::start();
    let key = s.create_device("b");
    let t = hour_ago();
    let bulk = |body: &str| {
        s.post(
            "/channels/999990/bulk_update.json",
            "application/json",
            body.as_bytes(),
            "",
        )
    };
    // Absolute times (ISO 8601 and MySQL style), then relative ones.
    let body = format!(
        r#"{{"write_api_key":"{key}","updates":[{{"created_at":"{}","field1":1.5}},{{"delta_t":4,"field1":"2"}},{{"created_at":"{}","field2":3}}]}}"#,
        rfc3339(t),
        rfc3339(t + 10)[..19].replace('T', " ")
    );
    let r = bulk(&body);
    assert_eq!((r.status, r.body.as_str()), (202, "{\"success\":true}"));
    assert_eq!(
        readings(&s, "b", "N1,N2"),
        format!(
            "time,N1,N2\n{},1.5,\n{},2,\n{},,3\n",
            rfc3339(t),
            rfc3339(t + 4),
            rfc3339(t + 10)
        )
    );
    // Only delta_t: the last entry is at the receive time, the others
    // before it; their spacing is kept.
    let body = format!(
        r#"{{"write_api_key":"{key}","updates":[{{"delta_t":0,"field3":1}},{{"delta_t":2,"field3":2}}]}}"#
    );
    assert_eq!(bulk(&body).status, 202);
    let csv = readings(&s, "b", "N3");
    let times: Vec<i64> = csv
        .lines()
        .skip(1)
        .map(|l| overlord::codec::timefmt::parse_instant(l.split(',').next().unwrap()).unwrap())
        .collect();
    assert_eq!(times.len(), 2, "{csv}");
    assert_eq!(times[1] - times[0], 2_000_000);
    // One bad entry refuses the whole body, naming it.
    let body = format!(
        r#"{{"write_api_key":"{key}","updates":[{{"created_at":"{}","field4":1}},{{"created_at":"{}","field4":"warm"}}]}}"#,
        rfc3339(t),
        rfc3339(t + 1)
    );
    let r = bulk(&body);
    assert_eq!((r.status, r.error_code()), (400, "bad_value"));
    assert!(r.body.contains("/updates/1/field4"), "{}", r.body);
    assert_eq!(readings(&s, "b", "N4"), "time,N4\n");
    for (body, status, code) in [
        (r#"{"updates":[]}"#.to_string(), 401, "unauthorized"),
        (
            format!(r#"{{"write_api_key":"{key}","updates":[{{"field1":1}}]}}"#),
            400,
            "bad_value",
        ),
        (
            format!(
                r#"{{"write_api_key":"{key}","updates":[{{"created_at":"{t}","delta_t":1,"field1":1}}]}}"#
            ),
            400,
            "bad_value",
        ),
        (
            format!(
                r#"{{"write_api_key":"{key}","updates":[{{"created_at":"{t}","field1":1,"field1":2}}]}}"#
            ),
            400,
            "duplicate_field",
        ),
        (
            format!(r#"{{"write_api_key":"{key}","extra":1,"updates":[]}}"#),
            400,
            "bad_json",
        ),
        (
            format!(r#"{{"write_api_key":"wrong","updates":[{{"created_at":"{t}","field1":1}}]}}"#),
            401,
            "unauthorized",
        ),
    ] {
        let r = bulk(&body);
        assert_eq!(
            (r.status, r.error_code()),
            (status, code),
            "{body}: {}",
            r.body
        );
    }
}
