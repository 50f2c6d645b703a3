//! Readings over real HTTP: what curl, wget and a board rely on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{enc, hour_ago, rfc3339, TestServer};

#[test]
fn get_round_trip_and_retry_stores_once() {
    let s = TestServer::start();
    let tok = s.create_device("gh3");
    let t = hour_ago();
    let path = format!("/v1/readings?device=gh3&token={tok}&N1=21.5&L2=1&time={t}");
    let r = s.get(&path);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "ok,2,0\n");
    assert!(r.header("Content-Type").unwrap().starts_with("text/csv"));
    // The same request again (a board that lost the reply) is acknowledged
    // the same way and stored once.
    assert_eq!(s.get(&path).body, "ok,2,0\n");
    let q = s.get(&format!(
        "/v1/devices/gh3/readings?token={tok}&sensors=N1,L2"
    ));
    assert_eq!(q.status, 200);
    assert_eq!(q.body, format!("time,N1,L2\n{},21.5,true\n", rfc3339(t)));
}

#[test]
fn csv_post_round_trip_with_gaps_and_quotes() {
    let s = TestServer::start();
    let tok = s.create_device("d1");
    let t = hour_ago();
    let body = format!(
        "time,N1,I2,S3\r\n{},21.5,3,\"door, open\"\n{},21.7,,\n",
        rfc3339(t),
        t + 60
    );
    let r = s.post(
        &format!("/v1/readings?device=d1&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "ok,4,0\n");
    let q = s.get(&format!(
        "/v1/devices/d1/readings?token={tok}&sensors=N1,I2,S3&from={}&to={}",
        enc(&rfc3339(t)),
        t + 60
    ));
    assert_eq!(
        q.body,
        format!(
            "time,N1,I2,S3\n{},21.5,3,\"door, open\"\n{},21.7,,\n",
            rfc3339(t),
            rfc3339(t + 60)
        )
    );
    // Posting the same body again stores nothing new.
    let r = s.post(
        &format!("/v1/readings?device=d1&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.body, "ok,4,0\n");
    let all = s.get(&format!("/v1/devices/d1/readings?token={tok}"));
    assert_eq!(all.body.lines().count(), 3, "{}", all.body);
}

#[test]
fn form_post_and_basic_auth_work_like_get() {
    let s = TestServer::start();
    let tok = s.create_device("d1");
    let t = hour_ago();
    // busybox wget --post-data sends a form.
    let r = s.post(
        "/v1/readings",
        "application/x-www-form-urlencoded",
        format!("device=d1&token={tok}&N1=1.25&time={t}").as_bytes(),
        "",
    );
    assert_eq!(r.body, "ok,1,0\n");
    // curl -u d1:TOKEN
    let basic = base64(&format!("d1:{tok}"));
    let r = s.post(
        "/v1/readings",
        "text/csv",
        format!("time,N1\n{}\n", format_args!("{},2.5", t + 1)).as_bytes(),
        &format!("Authorization: Basic {basic}\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let q = s.raw(
        format!(
            "GET /v1/devices/d1/readings?sensors=N1 HTTP/1.1\r\nAuthorization: Basic {basic}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(
        q.body,
        format!("time,N1\n{},1.25\n{},2.5\n", rfc3339(t), rfc3339(t + 1))
    );
}

#[test]
fn board_http10_lf_only_reply_fits_512_bytes_and_closes() {
    let s = TestServer::start();
    let tok = s.create_device("board");
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Exactly what a sketch writes: HTTP/1.0, bare \n line endings.
    let req = format!(
        "GET /v1/readings?device=board&token={tok}&N1=23.5&I2=7 HTTP/1.0\nHost: overlord\n\n"
    );
    sock.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let mut n = 0;
    loop {
        let k = sock.read(&mut buf[n..]).unwrap();
        if k == 0 {
            break; // the server closed: HTTP/1.0 without keep-alive
        }
        n += k;
        assert!(n < buf.len(), "the reply must fit a 512-byte buffer");
    }
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(
        text.contains("\r\nContent-Length: 7\r\n"),
        "title-case Content-Length: {text}"
    );
    assert!(text.ends_with("\r\n\r\nok,2,0\n"), "{text}");
}

#[test]
fn half_closed_client_still_gets_its_reply() {
    let s = TestServer::start();
    let tok = s.create_device("nc");
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let req = format!("GET /v1/readings?device=nc&token={tok}&N1=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    sock.write_all(req.as_bytes()).unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap(); // like `nc -N`
    let mut out = String::new();
    sock.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.ends_with("ok,1,0\n"), "{out}");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let s = TestServer::start();
    let tok = s.create_device("ka");
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = hour_ago();
    for i in 0..3 {
        let req = format!(
            "GET /v1/readings?device=ka&token={tok}&I1={i}&time={} HTTP/1.1\r\nHost: x\r\n\r\n",
            t + i
        );
        sock.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.read(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.ends_with("ok,1,0\n"), "{text}");
    }
}

#[test]
fn restart_keeps_everything_acknowledged() {
    let s = TestServer::start();
    let tok = s.create_device("keep");
    let t = hour_ago();
    let mut body = String::from("time,I1\n");
    for i in 0..500 {
        body.push_str(&format!("{},{i}\n", t + i));
    }
    let r = s.post(
        &format!("/v1/readings?device=keep&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.body, "ok,500,0\n");
    let before = s
        .get(&format!("/v1/devices/keep/readings?token={tok}"))
        .body;
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |_| {});
    let after = s
        .get(&format!("/v1/devices/keep/readings?token={tok}"))
        .body;
    assert_eq!(after.lines().count(), 501);
    assert_eq!(before, after);
    // And the device still authenticates after the restart.
    assert_eq!(
        s.get(&format!("/v1/readings?device=keep&token={tok}&I1=9"))
            .status,
        200
    );
}

#[test]
fn query_limit_and_continuation() {
    let s = TestServer::start();
    let tok = s.create_device("q");
    let t = hour_ago();
    let mut body = String::from("time,N1,N2\n");
    for i in 0..10 {
        // N2 only on even seconds: odd rows have an empty N2 field.
        let n2 = if i % 2 == 0 {
            format!("{i}")
        } else {
            String::new()
        };
        body.push_str(&format!("{},{i}.5,{n2}\n", t + i));
    }
    assert_eq!(
        s.post(
            &format!("/v1/readings?device=q&token={tok}"),
            "text/csv",
            body.as_bytes(),
            ""
        )
        .status,
        200
    );
    let r = s.get(&format!(
        "/v1/devices/q/readings?token={tok}&sensors=N1,N2&limit=4"
    ));
    let rows: Vec<&str> = r.body.lines().collect();
    assert_eq!(rows[0], "time,N1,N2");
    assert_eq!(
        &rows[1..],
        &[
            format!("{},0.5,0", rfc3339(t)).as_str(),
            format!("{},1.5,", rfc3339(t + 1)).as_str(),
            format!("{},2.5,2", rfc3339(t + 2)).as_str(),
            format!("{},3.5,", rfc3339(t + 3)).as_str(),
        ]
    );
    let next = r
        .header("Overlord-Next-From")
        .expect("a cut result says where to go on");
    let r2 = s.get(&format!(
        "/v1/devices/q/readings?token={tok}&sensors=N1,N2&limit=100&from={}",
        enc(next)
    ));
    assert_eq!(r2.body.lines().count(), 1 + 6);
    assert!(r2.header("Overlord-Next-From").is_none());
    // from/to are inclusive.
    let r3 = s.get(&format!(
        "/v1/devices/q/readings?token={tok}&sensors=N1&from={}&to={}",
        t + 2,
        t + 3
    ));
    assert_eq!(r3.body.lines().count(), 3);
    // Without sensors=, every sensor the device has, in name order.
    let r4 = s.get(&format!("/v1/devices/q/readings?token={tok}&limit=1"));
    assert_eq!(r4.body.lines().next(), Some("time,N1,N2"));
}

#[test]
fn devices_see_only_themselves() {
    let s = TestServer::start();
    let a = s.create_device("a");
    let _b = s.create_device("b");
    let r = s.get(&format!("/v1/devices/b/readings?device=a&token={a}"));
    assert_eq!(
        r.status, 404,
        "another device's data is invisible: {}",
        r.body
    );
    assert_eq!(r.error_code(), "unknown_device");
    let r = s.post(
        &format!("/v1/readings?device=a&token={a}"),
        "text/csv",
        format!("time,device,N1\n{},b,1\n", hour_ago()).as_bytes(),
        "",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // The administrator may write for many devices in one CSV body.
    let r = s.post(
        "/v1/readings",
        "text/csv",
        format!("time,device,N1\n{t},a,1\n{t},b,2\n", t = hour_ago()).as_bytes(),
        &format!("Authorization: Bearer {}\r\n", s.admin),
    );
    assert_eq!(r.body, "ok,2,0\n");
    let list = s.get_admin("/v1/devices");
    assert!(
        list.body
            .starts_with("id,name,owner,created,last_seen,state,parent,gateway,kind,latitude,longitude,location,tags,offline_after,description\na,a,admin,"),
        "{}",
        list.body
    );
}

#[test]
fn token_rotation_keeps_the_previous_token_until_the_next() {
    let s = TestServer::start();
    let t0 = s.create_device("r");
    let rotate = |s: &TestServer| {
        let r = s.post(
            "/v1/devices/r/token",
            "application/x-www-form-urlencoded",
            b"",
            &format!("Authorization: Bearer {}\r\n", s.admin),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        common::token_of(&r.body)
    };
    let send = |tok: &str| {
        s.get(&format!("/v1/readings?device=r&token={tok}&N1=1"))
            .status
    };
    let t1 = rotate(&s);
    assert_eq!(send(&t1), 200);
    assert_eq!(send(&t0), 200, "previous token still valid");
    let t2 = rotate(&s);
    assert_eq!(send(&t2), 200);
    assert_eq!(send(&t1), 200);
    assert_eq!(send(&t0), 401, "token from two rotations ago is dead");
}

fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
