//! The MQTT listener through the real clients: mosquitto_pub and
//! mosquitto_sub (Debian `mosquitto-clients`) and paho-mqtt (PyPI), for
//! MQTT 3.1.1 and 5. What a device relies on: a QoS 1 PUBACK means the
//! readings are stored (queried over HTTP right after), QoS 0 goes the
//! same way, bad credentials are refused with the CONNACK codes, a bad
//! payload is never acknowledged and is told (errors topic, MQTT 5 reason
//! code), inbox rows arrive as they are queued and leave only when acked,
//! across reconnects and restarts, channel items arrive to subscribers.

mod common;

use std::time::{Duration, Instant};

use common::mqtt::{have_mosquitto, have_paho, mpub, msub, paho};
use common::{hour_ago, rfc3339, TestServer};

const WAIT: Duration = Duration::from_secs(15);

/// The device's N1 readings, as the CSV rows the HTTP query gives.
fn n1_rows(s: &TestServer, dev: &str) -> Vec<String> {
    let r = s.get_admin(&format!(
        "/v1/devices/{dev}/readings?sensors=N1&from={}",
        rfc3339(hour_ago() - 7200)
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.lines().skip(1).map(str::to_string).collect()
}

fn port(s: &TestServer) -> std::net::SocketAddr {
    s.mqtt.expect("mqtt listener")
}

#[test]
fn a_qos1_puback_means_stored_in_both_versions_and_formats() {
    if !have_mosquitto() {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let t = hour_ago();
    let cases = [
        ("mqttv311", format!("time={t}&N1=21.5&L2=1"), 21.5),
        ("mqttv5", format!("time={}&N1=22.5", t + 1), 22.5),
        (
            "mqttv311",
            format!("time,N1\n{},23.5\n{},24.5\n", t + 2, t + 3),
            24.5,
        ),
        (
            "mqttv5",
            format!("{{\"time\":{},\"N1\":25.5}}", t + 4),
            25.5,
        ),
    ];
    for (i, (version, payload, _)) in cases.iter().enumerate() {
        let ran = mpub(
            port(&s),
            "dev1",
            &tok,
            &[
                "-V",
                version,
                "-q",
                "1",
                "-t",
                "overlord/dev1/readings",
                "-m",
                payload,
            ],
        );
        assert_eq!(ran.code, Some(0), "case {i}: {ran:?}");
        // The PUBACK came: the readings are there now, no waiting.
        let rows = n1_rows(&s, "dev1");
        let last = cases[i].2;
        assert!(
            rows.iter().any(|r| r.ends_with(&format!(",{last}"))),
            "case {i}: {rows:?}"
        );
    }
    assert_eq!(n1_rows(&s, "dev1").len(), 5);
    // The same reading again is a retry: acknowledged, stored once.
    let again = format!("time={t}&N1=21.5");
    let ran = mpub(
        port(&s),
        "dev1",
        &tok,
        &["-q", "1", "-t", "overlord/dev1/readings", "-m", &again],
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(n1_rows(&s, "dev1").len(), 5);
}

#[test]
fn qos0_goes_the_same_path_without_an_ack() {
    if !have_mosquitto() {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let t = hour_ago();
    for version in ["mqttv311", "mqttv5"] {
        let payload = format!("time={t}&N1=7");
        let ran = mpub(
            port(&s),
            "dev1",
            &tok,
            &[
                "-V",
                version,
                "-q",
                "0",
                "-t",
                "overlord/dev1/readings",
                "-m",
                &payload,
            ],
        );
        assert_eq!(ran.code, Some(0), "{ran:?}");
    }
    let deadline = Instant::now() + WAIT;
    while n1_rows(&s, "dev1").is_empty() {
        assert!(Instant::now() < deadline, "QoS 0 reading never stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(n1_rows(&s, "dev1"), vec![format!("{},7", rfc3339(t))]);
}

#[test]
fn bad_or_missing_credentials_get_connack_refusals() {
    if !have_mosquitto() {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let args = ["-q", "1", "-t", "overlord/dev1/readings", "-m", "N1=1"];
    // mosquitto_pub exits with the CONNACK code: 4 (3.1.1 "bad user name
    // or password"), 0x86 (MQTT 5), 5 ("not authorised").
    let v3 = mpub(port(&s), "dev1", "0000", &args);
    assert_eq!(v3.code, Some(4), "{v3:?}");
    assert!(v3.stderr.contains("bad user name or password"), "{v3:?}");
    let mut v5_args = vec!["-V", "mqttv5"];
    v5_args.extend(args);
    let v5 = mpub(port(&s), "dev1", "0000", &v5_args);
    assert_eq!(v5.code, Some(0x86), "{v5:?}");
    assert!(v5.stderr.contains("Bad User Name or Password"), "{v5:?}");
    // An unknown id is the same answer as a wrong token.
    let nobody = mpub(port(&s), "nobody", &tok, &args);
    assert_eq!(nobody.stderr, v3.stderr);
    // No credentials at all: not authorised.
    let anon = mpub(port(&s), "", "", &args);
    assert_eq!(anon.code, Some(5), "{anon:?}");
    assert!(anon.stderr.contains("not authorised"), "{anon:?}");
    assert!(n1_rows(&s, "dev1").is_empty());
    // A user (name and API token) writes for a device they may write.
    let ok = mpub(port(&s), "admin", &s.admin, &args);
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert_eq!(n1_rows(&s, "dev1").len(), 1);
}

#[test]
fn a_bad_payload_is_told_and_never_acknowledged() {
    if !have_mosquitto() {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let tok2 = s.create_device("dev2");
    // A watcher on dev1's errors topic (another connection).
    let errors = msub(port(&s), "dev1", &tok, &["-t", "overlord/dev1/errors"]);
    errors.until("received SUBACK", WAIT);
    // MQTT 5: a PUBACK with a reason code and the error line as reason.
    let v5 = mpub(
        port(&s),
        "dev1",
        &tok,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "overlord/dev1/readings",
            "-m",
            "N1=warm",
        ],
    );
    assert!(v5.stderr.contains("Payload format invalid"), "{v5:?}");
    assert!(v5.stderr.contains("error,bad_value,"), "{v5:?}");
    let line = errors.until("overlord/dev1/errors ", WAIT);
    assert!(line.contains("error,bad_value,"), "{line}");
    // MQTT 3.1.1 has no negative PUBACK: the connection is closed, the
    // publish never acknowledged.
    let v3 = mpub(
        port(&s),
        "dev1",
        &tok,
        &["-q", "1", "-t", "overlord/dev1/readings", "-m", "N1=warm"],
    );
    assert_ne!(v3.code, Some(0), "{v3:?}");
    errors.until("error,bad_value,", WAIT);
    // Another device's topic: not authorised, nothing stored.
    let other = mpub(
        port(&s),
        "dev2",
        &tok2,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "overlord/dev1/readings",
            "-m",
            "N1=1",
        ],
    );
    assert!(other.stderr.contains("failed"), "{other:?}");
    assert!(n1_rows(&s, "dev1").is_empty());
    let m = common::scrape(&s);
    assert_eq!(common::m(&m, "overlord_mqtt_publish_failures_total"), 3.0);
    // dev2 may not watch dev1's errors: SUBACK failure.
    let nosy = msub(port(&s), "dev2", &tok2, &["-t", "overlord/dev1/errors"]);
    let ack = nosy.until("Subscribed", WAIT);
    assert!(ack.contains("128") || ack.contains("135"), "{ack}");
}

/// Send a message to `dev`'s inbox over HTTP; its seq.
fn message(s: &TestServer, dev: &str, text: &str) -> u64 {
    let r = common::as_user(
        s,
        &s.admin,
        "POST",
        &format!("/v1/devices/{dev}/inbox"),
        &format!("kind=message&value={}", common::enc(text)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.body.trim().strip_prefix("ok,").unwrap().parse().unwrap()
}

/// The device's pending inbox over HTTP (rows without header).
fn inbox_http(s: &TestServer, dev: &str, tok: &str) -> Vec<String> {
    let r = s.get(&format!("/v1/inbox?device={dev}&token={tok}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn inbox_rows_arrive_live_and_leave_only_when_acked_over_mqtt() {
    if !have_mosquitto() {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let first = message(&s, "dev1", "water the tomatoes");
    let sub = msub(port(&s), "dev1", &tok, &["-t", "overlord/dev1/inbox"]);
    let row = sub.until("overlord/dev1/inbox ", WAIT);
    assert!(
        row.ends_with(",message,") || row.contains(&format!(" {first},message,")),
        "{row}"
    );
    assert!(row.ends_with(",user:admin,,water the tomatoes"), "{row}");
    // Queued while subscribed: delivered as it arrives.
    let second = message(&s, "dev1", "and the basil");
    let row = sub.until("and the basil", WAIT);
    assert!(row.contains(&format!(" {second},message,")), "{row}");
    // Delivery removes nothing; the ack does.
    assert_eq!(inbox_http(&s, "dev1", &tok).len(), 2);
    let ack = format!("upto={first}");
    let ran = mpub(
        port(&s),
        "dev1",
        &tok,
        &["-q", "1", "-t", "overlord/dev1/inbox/ack", "-m", &ack],
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let left = inbox_http(&s, "dev1", &tok);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(&format!("{second},")), "{left:?}");
    drop(sub);
    // A new connection gets what is still pending, and only that.
    let again = msub(port(&s), "dev1", &tok, &["-t", "overlord/dev1/inbox"]);
    let row = again.until("overlord/dev1/inbox ", WAIT);
    assert!(row.contains("and the basil"), "{row}");
    // Only the device itself may read or ack its inbox.
    let tok2 = s.create_device("dev2");
    let nosy = msub(port(&s), "dev2", &tok2, &["-t", "overlord/dev1/inbox"]);
    let ack = nosy.until("Subscribed", WAIT);
    assert!(ack.contains("128"), "{ack}");
    let v5 = mpub(
        port(&s),
        "dev2",
        &tok2,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "overlord/dev1/inbox/ack",
            "-m",
            "upto=99",
        ],
    );
    assert!(v5.stderr.contains("Not authorized"), "{v5:?}");
    assert_eq!(inbox_http(&s, "dev1", &tok).len(), 1);
}

#[test]
fn an_alert_firing_reaches_the_inbox_subscriber_as_it_is_stored() {
    if !have_mosquitto() {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let r = common::as_user(
        &s,
        &s.admin,
        "POST",
        "/v1/alerts",
        "name=too-hot&device=dev1&sensor=N1&max=100&to_device=dev1&message=too hot",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let sub = msub(port(&s), "dev1", &tok, &["-t", "overlord/dev1/inbox"]);
    sub.until("received SUBACK", WAIT);
    // The writer stores the firing (digest, then its commit) and rings
    // the inbox: the row arrives without any other traffic.
    let ran = mpub(
        port(&s),
        "dev1",
        &tok,
        &["-q", "1", "-t", "overlord/dev1/readings", "-m", "N1=150"],
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let row = sub.until("overlord/dev1/inbox ", WAIT);
    assert!(row.contains(",alert,"), "{row}");
    assert!(row.contains(",alert:too-hot,N1,"), "{row}");
}

#[test]
fn the_inbox_survives_a_restart_until_acked() {
    if !have_mosquitto() {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let seq = message(&s, "dev1", "reboot at noon");
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |_| {});
    let sub = msub(port(&s), "dev1", &tok, &["-t", "overlord/dev1/inbox"]);
    let row = sub.until("reboot at noon", WAIT);
    assert!(row.contains(&format!(" {seq},message,")), "{row}");
    drop(sub);
    let ack = format!("upto={seq}");
    let ran = mpub(
        port(&s),
        "dev1",
        &tok,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "overlord/dev1/inbox/ack",
            "-m",
            &ack,
        ],
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |_| {});
    assert!(inbox_http(&s, "dev1", &tok).is_empty());
}

#[test]
fn a_gateway_gets_the_rows_of_the_devices_below_it() {
    if !have_mosquitto() {
        return;
    }
    let s = TestServer::start();
    let r = common::as_user(&s, &s.admin, "POST", "/v1/devices", "id=gw&gateway=true");
    assert_eq!(r.status, 201, "{}", r.body);
    let gw_tok = common::token_of(&r.body);
    let r = common::as_user(&s, &s.admin, "POST", "/v1/devices", "id=leaf&parent=gw");
    assert_eq!(r.status, 201, "{}", r.body);
    message(&s, "leaf", "for the leaf");
    let sub = msub(port(&s), "gw", &gw_tok, &["-t", "overlord/gw/inbox"]);
    let row = sub.until("for the leaf", WAIT);
    // The gateway format: the device it is for in the last column.
    assert!(row.ends_with(",for the leaf,leaf"), "{row}");
}

#[test]
fn channel_subscribers_get_each_new_item() {
    if !have_mosquitto() {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let r = common::as_user(&s, &s.admin, "POST", "/v1/channels", "name=greenhouse");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = common::as_user(
        &s,
        &s.admin,
        "POST",
        "/v1/channels/greenhouse/members",
        "device=dev1&sensor=N1",
    );
    assert!(r.status < 300, "{}", r.body);
    let sub = msub(
        port(&s),
        "admin",
        &s.admin,
        &["-t", "overlord/channels/greenhouse"],
    );
    sub.until("received SUBACK", WAIT);
    let t = hour_ago();
    for (i, v) in [1.5, 2.5].iter().enumerate() {
        let payload = format!("time={}&N1={v}", t + i as i64);
        let ran = mpub(
            port(&s),
            "dev1",
            &tok,
            &["-q", "1", "-t", "overlord/dev1/readings", "-m", &payload],
        );
        assert_eq!(ran.code, Some(0), "{ran:?}");
    }
    let first = sub.until("overlord/channels/greenhouse ", WAIT);
    assert_eq!(
        first,
        format!("overlord/channels/greenhouse 1,{},dev1,N1,1.5", rfc3339(t))
    );
    let second = sub.until("overlord/channels/greenhouse ", WAIT);
    assert_eq!(
        second,
        format!(
            "overlord/channels/greenhouse 2,{},dev1,N1,2.5",
            rfc3339(t + 1)
        )
    );
    // A device without a grant on the channel is refused.
    let nosy = msub(
        port(&s),
        "dev1",
        &tok,
        &["-t", "overlord/channels/greenhouse"],
    );
    let ack = nosy.until("Subscribed", WAIT);
    assert!(ack.contains("128"), "{ack}");
}

#[test]
fn an_mqtt_connection_is_contact() {
    if !have_mosquitto() {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let state = || {
        let r = s.get_admin("/v1/devices");
        let i = common::column(&r.body, "state");
        i.first().cloned().unwrap_or_default()
    };
    assert_eq!(state(), "unknown");
    let sub = msub(port(&s), "dev1", &tok, &["-t", "overlord/dev1/inbox"]);
    sub.until("received CONNACK", WAIT);
    assert_eq!(state(), "online");
}

const PAHO: &str = r#"
import sys, time, paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
port, user, pw, version, t = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
acks = {}
def on_publish(c, u, mid, rc, props):
    acks[mid] = rc
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-" + version, protocol=proto)
c.username_pw_set(user, pw)
c.on_publish = on_publish
def on_connect(c, u, flags, rc, props):
    print("connack", rc, getattr(props, "ReceiveMaximum", "-"))
c.on_connect = on_connect
c.connect("127.0.0.1", port, keepalive=30)
c.loop_start()
good = c.publish("overlord/%s/readings" % user, "time=%d&N1=1.25" % t, qos=1)
good.wait_for_publish(10)
print("good", good.is_published(), acks.get(good.mid))
json = c.publish("overlord/%s/readings" % user, '[{"time":%d,"N1":2.25}]' % (t + 1), qos=1)
json.wait_for_publish(10)
print("json", json.is_published(), acks.get(json.mid))
if version == "5":
    bad = c.publish("overlord/%s/readings" % user, "N1=lots", qos=1)
    bad.wait_for_publish(10)
    print("bad", acks.get(bad.mid))
c.disconnect()
c.loop_stop()
"#;

#[test]
fn paho_clients_publish_and_read_reason_codes() {
    if !have_paho() {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("dev1");
    let t = hour_ago();
    for (i, version) in ["311", "5"].iter().enumerate() {
        let start = t + 10 * i as i64;
        let args: Vec<String> = vec![
            port(&s).port().to_string(),
            "dev1".into(),
            tok.clone(),
            version.to_string(),
            start.to_string(),
        ];
        let p = paho(PAHO, &args);
        let connack = p.until("connack", WAIT);
        assert!(connack.starts_with("connack Success"), "{connack}");
        if *version == "5" {
            // Receive Maximum: the in-flight bound, told to the client.
            assert!(connack.ends_with(" 32"), "{connack}");
        }
        let good = p.until("good ", WAIT);
        assert!(good.starts_with("good True Success"), "{good}");
        let json = p.until("json ", WAIT);
        assert!(json.starts_with("json True Success"), "{json}");
        if *version == "5" {
            let bad = p.until("bad ", WAIT);
            assert_eq!(bad, "bad Payload format invalid");
        }
        let rows = n1_rows(&s, "dev1");
        assert!(
            rows.contains(&format!("{},1.25", rfc3339(start))),
            "{rows:?}"
        );
        assert!(
            rows.contains(&format!("{},2.25", rfc3339(start + 1))),
            "{rows:?}"
        );
    }
}
