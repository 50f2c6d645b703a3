//! Durability: `200` means fsynced. A load client records which readings
//! were acknowledged; the server process is killed with SIGKILL while the
//! load runs, restarted on the same data file, and every acknowledged
//! reading must be there exactly once, with the right value. Bounded: a
//! few cycles of well under a second of load each.

#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Proc {
    child: Child,
    addr: SocketAddr,
    admin: Option<String>,
}

fn start(dir: &std::path::Path) -> Proc {
    let cfg = dir.join("overlord.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_file = \"{}\"\n",
            dir.join("o.redb").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_overlord"))
        .arg("--config")
        .arg(&cfg)
        .env("OVERLORD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start overlord");
    // From here on, Drop kills and reaps the process on any failure.
    let mut p = Proc {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin: None,
    };
    let out = p.child.stdout.take().expect("piped stdout");
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(t) = line.strip_prefix("admin token: ") {
            p.admin = Some(t.to_string());
        }
        if let Some(a) = line.strip_prefix("listening on ") {
            p.addr = a.parse().expect("address");
            return p;
        }
    }
    panic!("the server exited before listening");
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(addr: SocketAddr, req: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = start(tmp.path());
    let admin = p.admin.clone().expect("first start shows the admin token");
    let created = http(
        p.addr,
        &format!("POST /v1/devices HTTP/1.0\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\nid=crash"),
    )
    .unwrap();
    let token = created
        .lines()
        .last()
        .unwrap()
        .split_once(',')
        .unwrap()
        .1
        .to_string();
    let base = common::hour_ago() - 86_400;
    // Acknowledged reading number -> value sent.
    let acked: Arc<Mutex<BTreeMap<i64, i64>>> = Arc::default();
    let mut next: i64 = 0;
    const CYCLES: usize = 4;
    const THREADS: i64 = 4;
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for th in 0..THREADS {
            let (acked, stop, token, addr) = (acked.clone(), stop.clone(), token.clone(), p.addr);
            let first = next + th;
            threads.push(std::thread::spawn(move || {
                let mut k = first;
                // Bounded: at most 2,000 requests per thread per cycle.
                for _ in 0..2_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let req = format!(
                        "GET /v1/readings?device=crash&token={token}&I1={}&time={} HTTP/1.0\r\n\r\n",
                        k * 7,
                        base + k
                    );
                    match http(addr, &req) {
                        Ok(r) if r.starts_with("HTTP/1.0 200") && r.ends_with("ok,1,0\n") => {
                            acked.lock().unwrap().insert(k, k * 7);
                        }
                        Ok(_) => {}
                        Err(_) => break, // the server is gone
                    }
                    k += THREADS;
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(300 + 100 * cycle as u64));
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        next += THREADS * 2_000;
        p = start(tmp.path());
        assert!(p.admin.is_none(), "restart must not create a second admin");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "the load got some acknowledgements: {}",
        acked.len()
    );

    let reply = http(
        p.addr,
        &format!("GET /v1/devices/crash/readings?sensors=I1&limit=1000000 HTTP/1.0\r\nAuthorization: Bearer {admin}\r\n\r\n"),
    )
    .unwrap();
    let body = reply.split_once("\r\n\r\n").unwrap().1;
    let mut stored: BTreeMap<String, i64> = BTreeMap::new();
    for line in body.lines().skip(1) {
        let (t, v) = line.split_once(',').unwrap();
        let prev = stored.insert(t.to_string(), v.parse().unwrap());
        assert!(prev.is_none(), "reading at {t} stored twice");
    }
    for (k, v) in &acked {
        let t = common::rfc3339(base + k);
        assert_eq!(
            stored.get(&t),
            Some(v),
            "acknowledged reading {k} at {t} lost"
        );
    }
    // The digest hand-off survived the kills too: the device's last
    // contact was recorded (replayed from the digest log if need be).
    let list = http(
        p.addr,
        &format!("GET /v1/devices HTTP/1.0\r\nAuthorization: Bearer {admin}\r\n\r\n"),
    )
    .unwrap();
    let row = list
        .lines()
        .find(|l| l.starts_with("crash,"))
        .expect("device listed");
    assert!(!row.ends_with(','), "last_seen recorded: {row}");
}
