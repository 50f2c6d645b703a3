//! Sensor labels through HTTP: a device (or its owner) names its sensors
//! and gives their units; `/sensors?labels=1` and `labels=1` on readings
//! queries show them; the wire names stay the keys.

mod common;

use common::{as_user, hour_ago, rfc3339, TestServer};

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn a_device_labels_its_sensors_and_queries_show_them() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");
    // The device itself, with its token only.
    let r = s.post(
        "/v1/devices/gh3/sensors/N1",
        FORM,
        format!("token={tok}&label=Temperature&unit=%C2%B0C").as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "sensor,label,unit,description\nN1,Temperature,°C,\n"
    );
    // The owner adds a description; the label and unit stay.
    let r = s.admin_form(
        "POST",
        "/v1/devices/gh3/sensors/n1",
        "description=Air+by+the+door%2C+1+m+up",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "sensor,label,unit,description\nN1,Temperature,°C,\"Air by the door, 1 m up\"\n"
    );
    // A sensor may be described before its first reading.
    let r = s.admin_form("POST", "/v1/devices/gh3/sensors/L2", "label=Door+open");
    assert_eq!(r.status, 200, "{}", r.body);

    let t = hour_ago();
    let body = format!(
        "time,N1,I3\n{},21.5,1\n{},21.7,2\n",
        rfc3339(t),
        rfc3339(t + 60)
    );
    let r = s.post(
        "/v1/readings",
        "text/csv",
        body.as_bytes(),
        &common::basic("gh3", &tok),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Without labels=1 the columns are the usual ones.
    let plain = s.get_admin("/v1/devices/gh3/sensors");
    assert_eq!(
        plain.body,
        format!(
            "sensor,time,value\nI3,{0},2\nN1,{0},21.7\n",
            rfc3339(t + 60)
        )
    );
    let labelled = s.get_admin("/v1/devices/gh3/sensors?labels=1");
    assert_eq!(
        labelled.body,
        format!(
            "sensor,time,value,label,unit,description\nI3,{0},2,,,\nL2,,,Door open,,\nN1,{0},21.7,Temperature,°C,\"Air by the door, 1 m up\"\n",
            rfc3339(t + 60)
        )
    );

    // The readings query: comment lines before the usual header.
    let q = format!(
        "/v1/devices/gh3/readings?sensors=N1,I3&from={}&labels=1",
        rfc3339(t)
    );
    let r = s.get_admin(&q);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        format!(
            "# sensor,label,unit,description\n# N1,Temperature,°C,\"Air by the door, 1 m up\"\ntime,N1,I3\n{},21.5,1\n{},21.7,2\n",
            rfc3339(t),
            rfc3339(t + 60)
        )
    );
    let r = s.get_admin(&q.replace("&labels=1", ""));
    assert!(r.body.starts_with("time,N1,I3\n"), "{}", r.body);
    // Buckets name the sensor of their _min/_max columns once.
    let r = s.get_admin(&format!(
        "/v1/devices/gh3/readings?sensors=N1&from={}&to={}&buckets=2&labels=1",
        rfc3339(t),
        rfc3339(t + 120)
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.starts_with("# sensor,label,unit,description\n# N1,Temperature,°C,\"Air by the door, 1 m up\"\ntime,N1_min,N1_max\n"),
        "{}",
        r.body
    );

    // Clearing every field removes the labels.
    let r = s.admin_form("POST", "/v1/devices/gh3/sensors/L2", "label=");
    assert_eq!(r.body, "sensor,label,unit,description\nL2,,,\n");
    let labelled = s.get_admin("/v1/devices/gh3/sensors?labels=1");
    assert!(!labelled.body.contains("\nL2,"), "{}", labelled.body);

    // And they survive a restart.
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |_| {});
    let r = s.get_admin("/v1/devices/gh3/sensors?labels=1");
    assert!(r.body.contains(",21.7,Temperature,°C,"), "{}", r.body);
}

#[test]
fn bad_labels_and_strangers_are_refused() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");
    let other = s.create_device("gh4");
    for (path, form, status, code) in [
        (
            "/v1/devices/gh3/sensors/N1",
            "label=".to_string() + &"x".repeat(65),
            400,
            "bad_value",
        ),
        (
            "/v1/devices/gh3/sensors/N1",
            "unit=%0A".into(),
            400,
            "bad_value",
        ),
        (
            "/v1/devices/gh3/sensors/N1",
            "description=%E2%80%AEevil".into(),
            400,
            "bad_value",
        ),
        (
            "/v1/devices/gh3/sensors/X1",
            "label=a".into(),
            400,
            "bad_sensor_name",
        ),
        (
            "/v1/devices/gh3/sensors/N1",
            "".into(),
            400,
            "missing_field",
        ),
        (
            "/v1/devices/gh3/sensors/N1",
            "colour=red".into(),
            400,
            "bad_parameter",
        ),
        (
            "/v1/devices/nope/sensors/N1",
            "label=a".into(),
            404,
            "unknown_device",
        ),
    ] {
        let r = s.admin_form("POST", path, &form);
        assert_eq!(
            (r.status, r.error_code()),
            (status, code),
            "{path} {form}: {}",
            r.body
        );
    }
    // Another device may not label this one's sensors, nor may a user
    // without control of it.
    let r = s.post(
        "/v1/devices/gh3/sensors/N1",
        FORM,
        b"label=mine",
        &common::basic("gh4", &other),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let u = s.admin_form("POST", "/v1/users", "name=ann");
    let ann = common::token_of(&u.body);
    let r = as_user(&s, &ann, "POST", "/v1/devices/gh3/sensors/N1", "label=mine");
    assert_eq!(r.status, 404, "{}", r.body);
    let r = s.admin_form(
        "POST",
        "/v1/grants",
        "resource=device:gh3&to=user:ann&level=read",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = as_user(&s, &ann, "POST", "/v1/devices/gh3/sensors/N1", "label=mine");
    assert_eq!(r.status, 403, "a read grant does not label: {}", r.body);
    let r = s.get_admin("/v1/devices/gh3/sensors?labels=2");
    assert_eq!((r.status, r.error_code()), (400, "bad_parameter"));
    let r = s.get(&format!("/v1/devices/gh3/sensors?token={tok}&labels=1"));
    assert_eq!(
        r.body, "sensor,time,value,label,unit,description\n",
        "nothing stored"
    );
}

#[test]
fn a_bulk_import_brings_sensor_labels() {
    let s = TestServer::start();
    let admin = format!("Authorization: Bearer {}\r\n", s.admin);
    // All or none: a bad sensor column creates no device.
    for (body, code) in [
        (&b"id,N1.colour\nt1,red\n"[..], "bad_csv"),
        (b"id,X1.label\nt1,a\n", "bad_sensor_name"),
        (b"id,N1.label,n1.label\nt1,a,b\n", "bad_csv"),
        (b"id,N1.unit\nt1,much too long a unit\n", "bad_value"),
    ] {
        let r = s.post("/v1/devices", "text/csv", body, &admin);
        assert_eq!(
            (r.status, r.error_code()),
            (400, code),
            "{}: {}",
            String::from_utf8_lossy(body),
            r.body
        );
    }
    assert_eq!(s.get_admin("/v1/devices/t1").status, 404);
    let r = s.post(
        "/v1/devices",
        "text/csv",
        "id,name,N1.label,n1.unit,L2.label\nt1,Thermo 1,Temperature,°C,\nt2,Thermo 2,,,Door open\n"
            .as_bytes(),
        &admin,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        s.get_admin("/v1/devices/t1/sensors?labels=1").body,
        "sensor,time,value,label,unit,description\nN1,,,Temperature,°C,\n"
    );
    assert_eq!(
        s.get_admin("/v1/devices/t2/sensors?labels=1").body,
        "sensor,time,value,label,unit,description\nL2,,,Door open,,\n"
    );
}

/// `labels=1` on a readings query adds CSV comment lines; asked for JSON
/// (`format=json` or `Accept`) it is a clear 400, never JSON behind a `#`
/// line that no JSON parser reads. The labels are in `/sensors` JSON.
#[test]
fn labels_on_a_json_readings_query_are_refused_not_garbled() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");
    let r = s.get(&format!("/v1/readings?device=gh3&token={tok}&N1=21.5"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.admin_form("POST", "/v1/devices/gh3/sensors/N1", "label=Temperature");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.get_admin("/v1/devices/gh3/readings?labels=1&format=json");
    assert_eq!(
        (r.status, r.error_code()),
        (400, "bad_parameter"),
        "{}",
        r.body
    );
    let r = s.raw(
        format!(
            "GET /v1/devices/gh3/readings?labels=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            s.admin
        )
        .as_bytes(),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (400, "bad_parameter"),
        "{}",
        r.body
    );
    // Without labels the JSON is JSON; with CSV the comments are there.
    let r = s.get_admin("/v1/devices/gh3/readings?format=json");
    assert!(r.body.starts_with('['), "{}", r.body);
    let r = s.get_admin("/v1/devices/gh3/readings?labels=1");
    assert!(
        r.body
            .starts_with("# sensor,label,unit,description\n# N1,Temperature,,\ntime,N1\n"),
        "{}",
        r.body
    );
    let r = s.get_admin("/v1/devices/gh3/sensors?labels=1&format=json");
    assert!(r.body.contains("\"label\":\"Temperature\""), "{}", r.body);
}
