//! SIGKILL while paho-mqtt publishes QoS 1 readings over MQTT: every
//! reading the server PUBACKed is there after a restart, exactly once
//! (a PUBACK is the MQTT `200`: sent only after the fsync).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::mqtt::{have_paho, paho};

use common::process::Proc;

fn start(dir: &std::path::Path) -> Proc {
    Proc::start(dir, "")
}

fn http(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Publish `time=base+k&I1=k` for k in `first..first+count` with QoS 1
/// (32 in flight), printing `ack k` for each PUBACK, until the server
/// goes away.
const PUBLISHER: &str = r#"
import os, sys, paho.mqtt.client as mqtt
port, tok, base, first, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mids = {}
def on_publish(c, u, mid, rc, props):
    if mid in mids:
        print("ack", mids[mid], flush=True)
def on_disconnect(c, u, flags, rc, props):
    print("gone", flush=True)
    os._exit(0)
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crash", protocol=mqtt.MQTTv311)
c.username_pw_set("crash", tok)
c.max_inflight_messages_set(32)
c.max_queued_messages_set(0)
c.on_publish = on_publish
c.on_disconnect = on_disconnect
c.connect("127.0.0.1", port, keepalive=30)
c.loop_start()
print("connected", flush=True)
for k in range(first, first + count):
    info = c.publish("overlord/crash/readings", "time=%d&I1=%d" % (base + k, k), qos=1)
    mids[info.mid] = k
import time
# Not a wait for the server: the client stays up until the test kills it.
time.sleep(60)
"#;

#[test]
fn sigkill_loses_no_puback_ed_reading() {
    if !have_paho() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut p = start(tmp.path());
    let admin = p.admin.clone().expect("admin token");
    let r = http(
        p.addr,
        &format!("POST /v1/devices HTTP/1.0\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\nid=crash"),
    );
    assert!(r.starts_with("HTTP/1.0 201"), "{r}");
    let token = common::token_of(r.split("\r\n\r\n").nth(1).unwrap());
    // Two cycles of at most 1,500 readings, one a second, all in the past.
    let base = common::hour_ago() - 4000;
    let mut acked: BTreeMap<i64, ()> = BTreeMap::new();
    // Two kill/restart cycles, each killing mid-stream.
    for cycle in 0..2i64 {
        let first = cycle * 2000;
        let args = vec![
            p.mqtt.port().to_string(),
            token.clone(),
            base.to_string(),
            first.to_string(),
            "1500".to_string(),
        ];
        let publisher = paho(PUBLISHER, &args);
        let first_line = publisher.next(Duration::from_secs(15));
        assert_eq!(
            first_line.as_deref(),
            Some("connected"),
            "cycle {cycle}: {r}"
        );
        // Kill once some acks are in: mid-stream, with more in flight.
        let mut seen = 0;
        while seen < 100 {
            let Some(line) = publisher.next(Duration::from_secs(30)) else {
                panic!("acks stopped after {seen} (cycle {cycle})");
            };
            assert!(!line.starts_with("stderr: "), "{line}");
            if let Some(k) = line.strip_prefix("ack ") {
                acked.insert(k.parse().unwrap(), ());
                seen += 1;
            }
        }
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        // The acks that were already on their way before the kill.
        while let Some(line) = publisher.next(Duration::from_secs(10)) {
            if let Some(k) = line.strip_prefix("ack ") {
                acked.insert(k.parse().unwrap(), ());
            }
            if line == "gone" {
                break;
            }
        }
        drop(publisher);
        p = start(tmp.path());
    }
    let q = http(
        p.addr,
        &format!(
            "GET /v1/devices/crash/readings?sensors=I1&from={}&limit=1000000 HTTP/1.0\r\nAuthorization: Bearer {admin}\r\n\r\n",
            common::rfc3339(base - 1)
        ),
    );
    let body = q.split("\r\n\r\n").nth(1).unwrap();
    let mut stored: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in body.lines().skip(1) {
        let (t, v) = line.split_once(',').unwrap();
        stored.entry(t.to_string()).or_default().push(v.to_string());
    }
    assert!(acked.len() >= 200, "{} acks", acked.len());
    for k in acked.keys() {
        let t = common::rfc3339(base + k);
        assert_eq!(
            stored.get(&t),
            Some(&vec![k.to_string()]),
            "acknowledged reading {k} must be stored exactly once"
        );
    }
}
