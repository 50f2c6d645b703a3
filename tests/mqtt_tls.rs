//! MQTT over TLS (`[mqtt] tls_listen`) with the real clients:
//! `mosquitto_pub`/`mosquitto_sub --cafile` and a certificate from
//! `overlord tls self-signed`. A QoS 1 publish over TLS is stored (read
//! back over HTTP), inbox rows reach a subscriber over TLS, and plain MQTT
//! and TLS sent to each other's ports are closed promptly, not hung.

mod common;
mod tls_support;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::mqtt::{closed_within, connect_packet, have_mosquitto, Lines};
use tls_support::{self_signed, Server};

const WAIT: Duration = Duration::from_secs(15);

/// `mosquitto_pub` over TLS (`--cafile`, host `localhost`), bounded to
/// 20 s: its exit code (124: timed out) and its stderr.
fn mpub_tls(
    addr: SocketAddr,
    ca: Option<&Path>,
    user: &str,
    pass: &str,
    args: &[&str],
) -> (Option<i32>, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "mosquitto_pub", "-h", "localhost", "-p"])
        .arg(addr.port().to_string())
        .args(["-u", user, "-P", pass, "-i", "t-pub-tls"]);
    if let Some(ca) = ca {
        cmd.arg("--cafile").arg(ca);
    }
    let o = cmd.args(args).output().expect("mosquitto_pub");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `mosquitto_sub --cafile` on device `dev`'s inbox over TLS, `-d -v`
/// (its debug lines show the SUBACK), read line by line.
fn sub_inbox_tls(
    mqtts: std::net::SocketAddr,
    cert: &std::path::Path,
    dev: &str,
    tok: &str,
) -> Lines {
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", "mosquitto_sub", "-h", "localhost", "-p"])
        .arg(mqtts.port().to_string())
        .arg("--cafile")
        .arg(cert)
        .args(["-u", dev, "-P", tok, "-d", "-v", "-t"])
        .arg(format!("overlord/{dev}/inbox"));
    Lines::spawn(cmd)
}

/// An HTTP request as the administrator on the plain port.
fn admin(s: &Server, method: &str, path: &str, body: &str) -> common::Reply {
    common::raw(
        s.plain.unwrap(),
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            s.admin,
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn qos1_over_tls_is_stored_and_the_inbox_arrives_over_tls() {
    if !have_mosquitto() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let s = Server::start(tmp.path(), "127.0.0.1:0", "", &[]);
    let mqtts = s.mqtts.expect("MQTT over TLS listening");
    let made = admin(&s, "POST", "/v1/devices", "id=th1");
    assert_eq!(made.status, 201, "{}", made.body);
    let tok = common::token_of(&made.body);
    // QoS 1: mosquitto_pub exits 0 only after the PUBACK (= fsynced).
    for version in ["mqttv311", "mqttv5"] {
        let n1 = if version == "mqttv5" { "22.5" } else { "21.5" };
        let (code, err) = mpub_tls(
            mqtts,
            Some(&cert),
            "th1",
            &tok,
            &[
                "-V",
                version,
                "-q",
                "1",
                "-t",
                "overlord/th1/readings",
                "-m",
                &format!("N1={n1}"),
            ],
        );
        assert_eq!(code, Some(0), "{version}: {err}");
        let back = admin(&s, "GET", "/v1/devices/th1/readings?sensors=N1", "");
        assert_eq!(back.status, 200, "{}", back.body);
        assert!(back.body.contains(n1), "{version}: {}", back.body);
    }
    // A client offering ALPN `mqtt` is served (not refused for want of
    // HTTPS's `http/1.1`).
    let (code, err) = mpub_tls(
        mqtts,
        Some(&cert),
        "th1",
        &tok,
        &[
            "--tls-alpn",
            "mqtt",
            "-q",
            "1",
            "-t",
            "overlord/th1/readings",
            "-m",
            "N1=23.5",
        ],
    );
    assert_eq!(code, Some(0), "alpn: {err}");
    let back = admin(&s, "GET", "/v1/devices/th1/readings?sensors=N1", "");
    assert!(back.body.contains("23.5"), "alpn: {}", back.body);
    // The inbox over TLS: queued over HTTP, delivered to the subscriber.
    let r = admin(
        &s,
        "POST",
        "/v1/devices/th1/inbox",
        "kind=message&value=over+tls",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let sub = sub_inbox_tls(mqtts, &cert, "th1", &tok);
    let row = sub.until("overlord/th1/inbox ", WAIT);
    assert!(row.ends_with(",over tls"), "{row}");
    // Queued while subscribed: delivered live, over the same connection.
    let r = admin(
        &s,
        "POST",
        "/v1/devices/th1/inbox",
        "kind=message&value=live",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let row = sub.until("overlord/th1/inbox ", WAIT);
    assert!(row.ends_with(",live"), "{row}");
}

#[test]
fn plain_mqtt_and_tls_on_each_others_port_close_promptly() {
    if !have_mosquitto() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let s = Server::start(tmp.path(), "127.0.0.1:0", "", &[]);
    let (mqtt, mqtts) = (s.mqtt.unwrap(), s.mqtts.unwrap());
    let made = admin(&s, "POST", "/v1/devices", "id=th1");
    let tok = common::token_of(&made.body);
    // Plain MQTT to the TLS port: closed at once, logged, nothing sent.
    let mut raw = TcpStream::connect(mqtts).unwrap();
    std::io::Write::write_all(&mut raw, &connect_packet(4, "th1", &tok, 60)).unwrap();
    let (closed, got) = closed_within(&mut raw, WAIT);
    assert!(closed && got.is_empty(), "closed {closed}, got {got:?}");
    assert!(s
        .log_until("not a TLS handshake")
        .contains("not a TLS handshake"));
    // The real client, plain, to the TLS port: fails, does not hang.
    let (code, err) = mpub_tls(
        mqtts,
        None,
        "th1",
        &tok,
        &["-q", "1", "-t", "overlord/th1/readings", "-m", "N1=1"],
    );
    assert!(code != Some(0) && code != Some(124), "{code:?} {err}");
    // TLS to the plain MQTT port: the client fails, does not hang.
    let (code, err) = mpub_tls(
        mqtt,
        Some(&cert),
        "th1",
        &tok,
        &["-q", "1", "-t", "overlord/th1/readings", "-m", "N1=2"],
    );
    assert!(code != Some(0) && code != Some(124), "{code:?} {err}");
    assert!(s
        .log_until("TLS sent to the plain MQTT port")
        .contains("TLS sent to the plain MQTT port; use [mqtt] tls_listen"));
    // Raw ClientHello-looking bytes to the plain port: closed, no reply.
    let mut raw = TcpStream::connect(mqtt).unwrap();
    std::io::Write::write_all(&mut raw, &[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0, 0, 1, 0]).unwrap();
    let (closed, got) = closed_within(&mut raw, WAIT);
    assert!(closed && got.is_empty(), "closed {closed}, got {got:?}");
    // Nothing was stored by either mix-up, and both ports still serve.
    let back = admin(&s, "GET", "/v1/devices/th1/readings?sensors=N1", "");
    assert_eq!(back.body.lines().count(), 1, "{}", back.body);
    let (code, err) = mpub_tls(
        mqtts,
        Some(&cert),
        "th1",
        &tok,
        &["-q", "1", "-t", "overlord/th1/readings", "-m", "N1=3"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = mpub_tls(
        mqtt,
        None,
        "th1",
        &tok,
        &["-q", "1", "-t", "overlord/th1/readings", "-m", "N1=4"],
    );
    assert_eq!(code, Some(0), "{err}");
}

/// `[mqtt] max_connections` counts plain and TLS connections together:
/// with a cap of 1, a subscriber held over TLS makes a plain publish get
/// "server busy" (mosquitto_pub fails), and once it leaves the publish
/// goes through.
#[test]
fn plain_and_tls_share_the_connection_cap() {
    if !have_mosquitto() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let env = [("OVERLORD_MQTT__MAX_CONNECTIONS", "1")];
    let s = Server::start(tmp.path(), "127.0.0.1:0", "", &env);
    let (mqtt, mqtts) = (s.mqtt.unwrap(), s.mqtts.unwrap());
    let made = admin(&s, "POST", "/v1/devices", "id=th1");
    let tok = common::token_of(&made.body);
    let sub = sub_inbox_tls(mqtts, &cert, "th1", &tok);
    sub.until("SUBACK", WAIT);
    let publish = ["-q", "1", "-t", "overlord/th1/readings", "-m", "N1=5"];
    let (code, err) = mpub_tls(mqtt, None, "th1", &tok, &publish);
    assert!(code != Some(0) && code != Some(124), "{code:?} {err}");
    assert!(err.contains("unavailable"), "refused as busy: {err}");
    drop(sub);
    // The slot comes back when the subscriber's connection is gone.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (code, err) = mpub_tls(mqtt, None, "th1", &tok, &publish);
        if code == Some(0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{code:?} {err}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
