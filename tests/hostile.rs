//! Every hostile or malformed request gets a 4xx and one
//! `error,<code>,<detail>` line, nothing is stored, and the server keeps
//! serving. One case per line.

mod common;

use common::TestServer;

/// (what, request bytes with `{tok}` for the device token, status, code)
type Case = (&'static str, String, u16, &'static str);

fn get(q: &str) -> String {
    format!("GET /v1/readings?device=d&token={{tok}}&{q} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
}

fn csv(body: &[u8]) -> String {
    // Bodies are carried as Latin-1-safe text: invalid UTF-8 bytes are
    // written through `raw_body` below.
    format!(
        "POST /v1/readings?device=d&token={{tok}} HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    )
}

fn cases(t: i64) -> Vec<Case> {
    vec![
        ("unknown letter", get("X1=1"), 400, "bad_sensor_name"),
        ("not a sensor", get("temperature=1"), 400, "bad_sensor_name"),
        ("number too big", get("N99999999=1"), 400, "bad_sensor_name"),
        ("NaN", get("N1=NaN"), 400, "bad_value"),
        ("infinity", get("N1=inf"), 400, "bad_value"),
        ("huge integer", get("I1=99999999999999999999"), 400, "bad_value"),
        ("bad boolean", get("L1=maybe"), 400, "bad_value"),
        ("odd hex", get("B1=abc"), 400, "bad_value"),
        ("repeated parameter", get("N1=1&N1=2"), 400, "duplicate_field"),
        ("repeated, other case", get("N1=1&n1=2"), 400, "duplicate_field"),
        ("broken escape", get("S1=%zz"), 400, "bad_encoding"),
        ("escaped invalid UTF-8", get("S1=%ff%fe"), 400, "bad_encoding"),
        ("escaped NUL in string", get("S1=a%00b"), 400, "bad_value"),
        ("time garbage", get("N1=1&time=yesterday"), 400, "bad_time"),
        ("time far future", get(&format!("N1=1&time={}", t + 86_400 * 365)), 400, "bad_time"),
        ("time before 1970", get("N1=1&time=1969-12-31T23:59:59Z"), 400, "bad_time"),
        ("empty body", csv(b""), 400, "bad_csv"),
        ("header only", csv(b"time,N1\n"), 400, "bad_csv"),
        ("BOM only", csv(b"\xEF\xBB\xBF"), 400, "bad_csv"),
        ("multi-row without time", csv(b"N1\n1\n2\n"), 400, "missing_time"),
        ("duplicate column", csv(format!("time,N1,N1\n{t},1,2\n").as_bytes()), 400, "duplicate_field"),
        ("unknown column letter", csv(format!("time,Q1\n{t},1\n").as_bytes()), 400, "bad_sensor_name"),
        ("ragged row", csv(format!("time,N1\n{t},1,2\n").as_bytes()), 400, "bad_csv"),
        ("NaN in CSV", csv(format!("time,N1\n{t},NaN\n").as_bytes()), 400, "bad_value"),
        ("huge integer in CSV", csv(format!("time,I1\n{t},99999999999999999999\n").as_bytes()), 400, "bad_value"),
        ("unknown device column", csv(format!("time,device,N1\n{t},zz,1\n").as_bytes()), 404, "unknown_device"),
        ("wrong token", "GET /v1/readings?device=d&token=0000&N1=1 HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 401, "unauthorized"),
        ("unknown device", "GET /v1/readings?device=nobody&token={tok}&N1=1 HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 401, "unauthorized"),
        ("no credentials", "GET /v1/readings?N1=1 HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 401, "unauthorized"),
        ("token without device", "GET /v1/readings?token={tok}&N1=1 HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 401, "unauthorized"),
        ("garbage Authorization", "GET /v1/readings?N1=1 HTTP/1.1\r\nAuthorization: Digest x\r\nConnection: close\r\n\r\n".into(), 401, "unauthorized"),
        ("XML body", "POST /v1/readings?device=d&token={tok} HTTP/1.1\r\nContent-Type: application/xml\r\nContent-Length: 4\r\nConnection: close\r\n\r\n<a/>".into(), 415, "unsupported_media_type"),
        ("declared too large", "POST /v1/readings?device=d&token={tok} HTTP/1.1\r\nContent-Type: text/csv\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n".into(), 413, "too_large"),
        ("unknown route", "GET /v2/nothing HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 404, "not_found"),
        ("wrong method", "DELETE /v1/readings HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 405, "method_not_allowed"),
        ("query: bad sensor", "GET /v1/devices/d/readings?token={tok}&sensors=Q1 HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 400, "bad_sensor_name"),
        ("query: bad limit", "GET /v1/devices/d/readings?token={tok}&limit=0 HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 400, "bad_limit"),
        ("query: bad from", "GET /v1/devices/d/readings?token={tok}&from=soon HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 400, "bad_time"),
        ("query: unknown parameter", "GET /v1/devices/d/readings?token={tok}&order=desc HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 400, "bad_parameter"),
    ]
}

#[test]
fn every_hostile_request_gets_its_code_and_the_server_survives() {
    let s = TestServer::start();
    let tok = s.create_device("d");
    let t = common::hour_ago() + 3600;
    for (what, req, status, code) in cases(t) {
        let r = s.raw(req.replace("{tok}", &tok).as_bytes());
        assert_eq!(r.status, status, "{what}: {}", r.body);
        if status >= 400 {
            assert_eq!(r.error_code(), code, "{what}");
            assert_eq!(r.body.lines().count(), 1, "{what}: exactly one line");
            assert!(
                r.header("Content-Type").unwrap().starts_with("text/csv"),
                "{what}"
            );
        }
        if status == 401 {
            assert_eq!(
                r.header("WWW-Authenticate"),
                Some("Basic realm=\"overlord\""),
                "{what}"
            );
        }
        assert_eq!(
            s.get("/healthz").body,
            "ok\n",
            "server still up after {what}"
        );
    }
    // Nothing from any of them was stored.
    let q = s.get(&format!("/v1/devices/d/readings?token={tok}"));
    assert_eq!(q.body, "time\n");
}

#[test]
fn errors_say_where() {
    let s = TestServer::start();
    let tok = s.create_device("d");
    let t = common::hour_ago();
    let body = format!("time,N1,I2\n{t},1,2\n{},1,x\n", t + 1);
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(
        r.body,
        "error,bad_value,line 3 column 3: I2: 'x' is not a 64-bit integer\n"
    );
    // The request is atomic: its good first row was not stored either.
    assert_eq!(
        s.get(&format!("/v1/devices/d/readings?token={tok}")).body,
        "time\n"
    );
}

#[test]
fn invalid_utf8_and_oversized_values_in_csv() {
    let s = TestServer::start();
    let tok = s.create_device("d");
    let t = common::hour_ago();
    let mut body = format!("time,S1\n{t},").into_bytes();
    body.extend_from_slice(b"\xff\xfe\n");
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "text/csv",
        &body,
        "",
    );
    assert_eq!((r.status, r.error_code()), (400, "bad_encoding"));
    // A 900 KB line (under the body limit) is a bad value, not a crash.
    let body = format!("time,S1\n{t},{}\n", "x".repeat(900_000));
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!((r.status, r.error_code()), (400, "bad_value"));
    // A body over the limit (1 MiB in tests) is refused whole.
    let body = format!("time,S1\n{t},{}\n", "x".repeat(2 << 20));
    let r = s.post(
        &format!("/v1/readings?device=d&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!((r.status, r.error_code()), (413, "too_large"));
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn smuggling_and_broken_heads_are_refused() {
    let s = TestServer::start();
    // Both Content-Length and Transfer-Encoding: framed by the chunked
    // encoding alone (RFC 9112 6.3), so the empty chunked body is the whole
    // request and it is judged on its own (no credentials: 401). The stale
    // Content-Length cannot make the server read past the message.
    let r = common::raw_status(
        s.addr,
        b"POST /v1/readings HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(r, Some(401));
    // Transfer-Encoding is not allowed in HTTP/1.0.
    let r = common::raw_status(
        s.addr,
        b"POST /v1/readings HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert!(r.is_none_or(|st| st == 400), "{r:?}");
    // A head larger than the limit.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let r = common::raw_status(s.addr, big.as_bytes());
    assert!(r.is_none_or(|st| st == 431 || st == 400), "{r:?}");
    // NUL bytes in the request line.
    let r = common::raw_status(s.addr, b"GET /heal\0thz HTTP/1.1\r\n\r\n");
    assert!(r.is_none_or(|st| st == 400), "{r:?}");
    assert_eq!(s.get("/healthz").status, 200);
}
