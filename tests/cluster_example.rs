//! `examples/cluster/up.sh` as a user runs it: it starts a throw-away
//! PostgreSQL primary with a synchronous standby and two nodes on them,
//! prints `node http://...` for each and `admin token: ...`, serves until
//! interrupted (either node answers for both), and then stops everything
//! it started and removes its temp dir. A node count it cannot start is
//! refused.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The running script; dropped (a failed assertion too), it is
/// interrupted as a user would, so it stops what it started.
struct Up(std::process::Child);

impl Up {
    /// SIGINT, then wait (bounded) for it to finish; whether it did.
    fn interrupt(&mut self) -> bool {
        // SAFETY: signals a child we spawned and have not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.0.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() && !self.interrupt() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn script() -> Command {
    let mut c = Command::new("bash");
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cluster/up.sh"
    ))
    .env("OVERLORD_BIN", env!("CARGO_BIN_EXE_overlord"));
    c
}

/// Is PostgreSQL there to run it? In CI it must be.
fn have_postgres() -> bool {
    let found = std::path::Path::new("/usr/lib/postgresql").exists() || common::have("pg_ctl");
    assert!(
        found || std::env::var_os("CI").is_none(),
        "PostgreSQL must be installed in CI"
    );
    found
}

#[test]
fn up_starts_two_nodes_on_postgresql_and_stops_everything_when_interrupted() {
    if !have_postgres() {
        return;
    }
    for bad in ["0", "17", "two"] {
        let refused = script().arg(bad).output().unwrap();
        assert_eq!(refused.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&refused.stderr).contains("usage:"));
    }

    let mut up = Up(script()
        .arg("2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    // Its lines, read on a thread so that a script that hangs fails the
    // test (the Drop above stops it) instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = up.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || {
        rx.recv_timeout(Duration::from_secs(180))
            .expect("up.sh printed its lines within 180 s")
    };
    let nodes: Vec<SocketAddr> = (0..2)
        .map(|_| {
            let node = next_line();
            node.strip_prefix("node http://")
                .unwrap_or_else(|| panic!("{node}"))
                .parse()
                .unwrap()
        })
        .collect();
    let (addr, other) = (nodes[0], nodes[1]);
    let admin = next_line();
    let admin = admin.strip_prefix("admin token: ").unwrap().to_string();
    let mut err = BufReader::new(up.0.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let state = first
        .split("(state in ")
        .nth(1)
        .and_then(|s| s.strip_suffix(").\n"))
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    assert!(std::path::Path::new(&state).is_dir());

    // It serves, from PostgreSQL: a device and a reading.
    let s = common::raw(
        addr,
        format!(
            "POST /v1/devices HTTP/1.0\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\n\r\nid=gh3"
        )
        .as_bytes(),
    );
    assert_eq!(s.status, 201, "{}", s.body);
    let tok = common::token_of(&s.body);
    let r = common::raw(
        addr,
        format!("GET /v1/readings?device=gh3&token={tok}&N1=21.5 HTTP/1.0\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The other node answers for the same database at once.
    let r = common::raw(
        other,
        format!("GET /v1/devices/gh3/readings?sensors=N1 HTTP/1.0\r\nAuthorization: Bearer {admin}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.ends_with(",21.5\n"), "{}", r.body);

    // Interrupted, it stops what it started and removes its dir.
    assert!(up.interrupt(), "up.sh did not stop within 60 s");
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert!(
        !std::path::Path::new(&state).exists(),
        "temp dir left: {rest}"
    );
    for a in nodes {
        assert!(TcpStream::connect(a).is_err(), "a node still listens");
    }
}
