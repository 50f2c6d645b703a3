//! Several nodes on one PostgreSQL database (`[store] node_listen`, issue
//! 20), as a user runs them: the real binary, HTTP/1.0 clients on
//! loopback, a throw-away PostgreSQL. One node serves; the others forward
//! every connection to it (`src/server/forward.rs`). Whichever node a
//! client reaches, it sees one server: its writes read back on the other
//! node at once, the digest runs once per reading, a long-poll on one
//! node wakes for a reading sent to the other, a revoked token is refused
//! by both at once. Killing a follower under load changes nothing for
//! the rest; killing the serving node makes a follower take over, and
//! no acknowledged reading is lost or stored twice; PostgreSQL killed
//! and started again under load is ridden out by both nodes without a
//! restart, the serving node keeping the database; and a failover to a
//! synchronous standby under load is followed by both nodes. A serving
//! node frozen long enough is taken over by a follower (its port still
//! takes connections, but it answers no probe), and stops by itself once
//! it thaws and finds its claim taken; a follower stopped with SIGTERM
//! exits cleanly. HTTPS passes through a follower to the serving node.

#![cfg(unix)]

mod common;
mod tls_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::nodes::{admin_at, http, store_section, until_writes_succeed, OnBroken, UnderLoad};
use common::pg::Pg;
use common::process::Proc;

/// Nodes on one database, each in its own directory (as on its own
/// machine): the first serves, the others follow.
struct Cluster {
    pg: Pg,
    db: &'static str,
    nodes: Vec<Option<Proc>>,
    _dirs: Vec<tempfile::TempDir>,
    admin: String,
    /// Settings every node gets from its environment.
    env: Vec<(&'static str, &'static str)>,
}

impl Cluster {
    /// A database `db` and `n` nodes on it, started one after the other.
    fn start(db: &'static str, n: usize) -> Option<Cluster> {
        Cluster::start_with(db, n, &[])
    }

    /// [`Cluster::start`], the nodes with settings `env`.
    fn start_with(
        db: &'static str,
        n: usize,
        env: &[(&'static str, &'static str)],
    ) -> Option<Cluster> {
        let pg = Pg::start()?;
        pg.create_db(db);
        let mut c = Cluster {
            pg,
            db,
            nodes: Vec::new(),
            _dirs: Vec::new(),
            admin: String::new(),
            env: env.to_vec(),
        };
        for _ in 0..n {
            c.add();
        }
        c.admin = c
            .node(0)
            .admin
            .clone()
            .expect("the first node made the administrator");
        Some(c)
    }

    /// Start one more node; its number.
    fn add(&mut self) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!(
            "{}node_listen = \"127.0.0.1:0\"\n",
            store_section(&self.pg.url(self.db))
        );
        self.nodes
            .push(Some(Proc::start_with(dir.path(), &extra, &self.env)));
        self._dirs.push(dir);
        self.nodes.len() - 1
    }

    fn node(&self, i: usize) -> &Proc {
        self.nodes[i].as_ref().expect("a live node")
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.node(i).addr
    }

    /// `SIGKILL` node `i`.
    fn kill(&mut self, i: usize) {
        let mut p = self.nodes[i].take().expect("a live node");
        p.child.kill().unwrap();
        p.child.wait().unwrap();
    }

    /// Where the serving node takes forwarded connections, as published.
    fn forward_to(&self) -> String {
        self.pg
            .value(self.db, "SELECT forward_to FROM node_hold WHERE id = 1")
    }

    fn admin(&self, i: usize, method: &str, path: &str, form: &str) -> String {
        admin_at(self.addr(i), &self.admin, method, path, form)
    }
}

/// How node `p` ended, once it has by itself (within 30 s, else `what`).
fn exit_of(mut p: Proc, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET` with the administrator's token; status and body.
fn get(addr: SocketAddr, admin: &str, path: &str) -> (u16, String) {
    let r = common::raw(
        addr,
        format!("GET {path} HTTP/1.0\r\nAuthorization: Bearer {admin}\r\n\r\n").as_bytes(),
    );
    (r.status, r.body)
}

/// A reading as a board sends it: HTTP/1.0, lines ended by LF alone.
fn board_reading(addr: SocketAddr, token: &str, sensor: &str, value: i64, t: i64) -> String {
    http(
        addr,
        &format!("GET /v1/readings?device=d1&token={token}&{sensor}={value}&time={t} HTTP/1.0\nHost: o\n\n"),
    )
    .unwrap()
}

/// The value of metric `name` on `addr`.
fn metric(addr: SocketAddr, name: &str) -> i64 {
    let r = common::raw(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics")) as i64
}

#[test]
fn two_nodes_on_one_database_answer_as_one_server() {
    let Some(mut c) = Cluster::start("two", 2) else {
        return;
    };
    let (a, b) = (c.addr(0), c.addr(1));
    assert!(
        !c.forward_to().is_empty(),
        "the serving node published where it takes forwarded connections"
    );

    // Created through the follower, used through the serving node.
    let body = c.admin(1, "POST", "/v1/devices", "id=d1");
    let token = common::token_of(&body);
    let t0 = common::hour_ago();
    let r = board_reading(b, &token, "N1", 21, t0);
    assert!(
        r.starts_with("HTTP/1.0 200") && r.contains("\r\n\r\nok,1,"),
        "{r}"
    );
    // Read back at once on the other node: committed means visible.
    let (st, rows) = get(a, &c.admin, "/v1/devices/d1/readings?sensors=N1");
    assert_eq!(st, 200, "{rows}");
    assert!(
        rows.contains(&format!("{},21", common::rfc3339(t0))),
        "{rows}"
    );

    // A channel set up on both nodes, then followed on the follower.
    c.admin(0, "POST", "/v1/channels", "name=room");
    c.admin(
        1,
        "POST",
        "/v1/channels/room/members",
        "device=d1&sensor=N1",
    );
    let admin = c.admin.clone();
    let poll = std::thread::spawn(move || {
        let began = Instant::now();
        let r = get(b, &admin, "/v1/channels/room/items?after=0&wait=30");
        (r, began.elapsed())
    });
    // Barrier: the long-poll is waiting (on the serving node, where the
    // follower forwarded it) before the reading that wakes it is sent.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(a, "overlord_long_polls_waiting") < 1 {
        assert!(Instant::now() < deadline, "the long-poll never waited");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = board_reading(a, &token, "N1", 22, t0 + 1);
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    let ((st, items), took) = poll.join().unwrap();
    assert_eq!(st, 200, "{items}");
    assert!(
        items.contains(&format!("1,{},d1,N1,22", common::rfc3339(t0 + 1))),
        "{items}"
    );
    assert!(
        took < Duration::from_secs(25),
        "woken by the reading, not by the end of its wait: {took:?}"
    );

    // The digest runs once per reading, whichever node took it: 40 more
    // readings, half through each node, make 40 more items, indexes dense.
    for k in 0..40 {
        let to = if k % 2 == 0 { a } else { b };
        let r = board_reading(to, &token, "N1", 100 + k, t0 + 2 + k);
        assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    }
    // Barrier: the last index exists.
    let (st, last) = get(b, &c.admin, "/v1/channels/room/items?after=40&wait=30");
    assert_eq!(st, 200);
    assert!(
        last.lines().nth(1).is_some_and(|l| l.starts_with("41,")),
        "{last}"
    );
    let (_, all) = get(a, &c.admin, "/v1/channels/room/items?after=0&limit=1000");
    let rows: Vec<&str> = all.lines().skip(1).collect();
    assert_eq!(rows.len(), 41, "one item per reading: {all}");
    for (i, row) in rows.iter().enumerate() {
        assert!(
            row.starts_with(&format!("{},", i + 1)),
            "dense indexes: {all}"
        );
    }
    for k in 0..40 {
        let v = format!(",d1,N1,{}", 100 + k);
        assert_eq!(all.matches(&format!("{v}\n")).count(), 1, "{v} once: {all}");
    }

    // MQTT through the follower: the PUBACK means stored, on the database
    // both nodes read.
    // (In CI the clients must be installed: `have` fails there otherwise.)
    if common::mqtt::have_mosquitto() {
        let payload = format!("time={}&N2=5.5", t0 + 50);
        let ran = common::mqtt::mpub(
            c.node(1).mqtt,
            "d1",
            &token,
            &["-q", "1", "-t", "overlord/d1/readings", "-m", &payload],
        );
        assert_eq!(ran.code, Some(0), "{ran:?}");
        let (_, rows) = get(a, &c.admin, "/v1/devices/d1/readings?sensors=N2");
        assert!(
            rows.contains(&format!("{},5.5", common::rfc3339(t0 + 50))),
            "{rows}"
        );
    }

    // Revoked through one node: refused by both at once.
    c.admin(1, "POST", "/v1/devices/d1/revoke", "");
    for to in [a, b] {
        let r = board_reading(to, &token, "N1", 1, t0 + 100);
        assert!(r.starts_with("HTTP/1.0 401"), "{r}");
    }

    // The serving node counts what comes through the follower: each
    // connection once (read on its own door, which is not forwarded).
    let m0 = metric(a, "overlord_forwarded_connections_total");
    assert!(m0 >= 20, "at least the 20 readings sent through it: {m0}");
    for _ in 0..3 {
        let r = common::raw(b, b"GET /healthz HTTP/1.0\r\n\r\n");
        assert_eq!(r.status, 200);
    }
    assert_eq!(metric(a, "overlord_forwarded_connections_total"), m0 + 3);

    // A SIGHUP (`systemctl reload`) does not stop a follower.
    // SAFETY: signals a child this test spawned and has not reaped.
    unsafe { libc::kill(c.node(1).child.id() as i32, libc::SIGHUP) };
    let r = common::raw(b, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(c.nodes[1]
        .as_mut()
        .unwrap()
        .child
        .try_wait()
        .unwrap()
        .is_none());

    // A follower stopped as a service manager stops it (SIGTERM) exits
    // cleanly; the serving node is untouched.
    let f = c.nodes[1].take().unwrap();
    // SAFETY: signals a child this test spawned and has not reaped.
    unsafe { libc::kill(f.child.id() as i32, libc::SIGTERM) };
    let status = exit_of(f, "the follower did not stop");
    assert!(status.success(), "{status:?}");
    let (st, _) = get(a, &c.admin, "/v1/devices/d1");
    assert_eq!(st, 200);
}

#[test]
fn only_a_node_with_the_key_may_forward_a_connection() {
    // One connection per source, to see which source the node counts.
    let one = [("OVERLORD_LIMITS__MAX_CONNECTIONS_PER_SOURCE", "1")];
    let Some(c) = Cluster::start_with("key", 1, &one) else {
        return;
    };
    let to: SocketAddr = c.forward_to().parse().unwrap();
    let key =
        c.pg.value(c.db, "SELECT forward_key FROM node_hold WHERE id = 1");
    assert_eq!(key.len(), 64);
    let from = |client: &str, key: &str| {
        let mut p = format!("OVERLORD-FORWARD/1 http {client} {key}").into_bytes();
        p.resize(159, b' ');
        p.push(b'\n');
        p
    };
    let preamble = |key: &str| from("192.0.2.7:4000", key);
    let ask = |preamble: Vec<u8>| {
        let mut s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&preamble).unwrap();
        let _ = s.write_all(
            format!(
                "GET /v1/devices HTTP/1.0\r\nAuthorization: Bearer {}\r\n\r\n",
                c.admin
            )
            .as_bytes(),
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    // A made-up key: closed without a byte of an answer.
    assert_eq!(ask(preamble(&"0".repeat(64))), "");
    // Plain HTTP without a preamble: the same.
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("{:<200}", "GET /v1/devices HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert_eq!(out, "");
    // The published key: served as if it came to the HTTP door.
    let r = ask(preamble(&key));
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");

    // ...and from the client it names: with a connection of 192.0.2.9
    // open (a keep-alive request answered), another from it is over the
    // cap of one per source, while one from 192.0.2.10 is served. (Sources
    // of their own: a connection just closed may hold its slot a moment.)
    let mut open = TcpStream::connect(to).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    open.write_all(&from("192.0.2.9:4000", &key)).unwrap();
    open.write_all(b"GET /healthz HTTP/1.1\r\nHost: o\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = open.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let again = ask(from("192.0.2.9:4001", &key));
    assert!(
        again.starts_with("HTTP/1.1 503") && again.contains("too many connections"),
        "{again}"
    );
    let other = ask(from("192.0.2.10:4000", &key));
    assert!(other.starts_with("HTTP/1.0 200"), "{other}");
    drop(open);
}

#[test]
fn killing_a_follower_then_the_serving_node_under_load_loses_no_acknowledged_reading() {
    let Some(mut c) = Cluster::start("kill", 3) else {
        return;
    };
    let token = common::token_of(&c.admin(1, "POST", "/v1/devices", "id=crash"));
    // Load through both followers (two threads each).
    let run = UnderLoad::on(&[c.addr(1), c.addr(2)], token.clone(), OnBroken::GoOn);
    run.seen
        .until_acked(100, "no load got through the followers");

    // A follower dies: the serving node and the other follower carry on.
    c.kill(2);
    let n = run.seen.acked.lock().unwrap().len();
    run.seen
        .until_acked(n + 100, "the load through the other follower stopped");

    // The serving node dies: the follower left takes over.
    let before = c.forward_to();
    c.kill(0);
    until_writes_succeed(c.node(1), &token, run.base - 1);
    let n = run.seen.acked.lock().unwrap().len();
    run.seen
        .until_acked(n + 100, "the load did not resume after the take-over");
    assert_ne!(
        c.forward_to(),
        before,
        "the new serving node published its own address"
    );

    // A node started now follows the new one.
    let d = c.add();
    let body = c.admin(d, "POST", "/v1/devices", "id=late");
    assert!(body.contains("late,"), "{body}");

    let seen = run.finish(c.node(1), &c.admin);
    assert!(
        seen.broken.load(std::sync::atomic::Ordering::Relaxed)
            + seen.busy.load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the take-over happened under load: some requests were cut or refused"
    );
}

#[test]
fn postgres_restarted_under_load_two_nodes_ride_it_out_and_the_serving_node_keeps_serving() {
    let Some(c) = Cluster::start("away", 2) else {
        return;
    };
    let token = common::token_of(&c.admin(0, "POST", "/v1/devices", "id=crash"));
    let before = c.forward_to();
    let run = UnderLoad::on(&[c.addr(0), c.addr(1)], token.clone(), OnBroken::Stop);
    run.seen.until_acked(50, "no load got through");
    c.pg.stop_immediate();
    let busy = run.seen.busy.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.seen.busy.load(std::sync::atomic::Ordering::Relaxed) < busy + 20 {
        assert!(
            Instant::now() < deadline,
            "no 503 while PostgreSQL was away"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = run.seen.acked.lock().unwrap().len();
    c.pg.start_again();
    until_writes_succeed(c.node(1), &token, run.base - 1);
    run.seen.until_acked(n + 50, "the load did not resume");
    // The serving node took its claim back; the follower did not take it.
    assert_eq!(c.forward_to(), before);
    run.finish(c.node(1), &c.admin);
}

#[test]
fn failover_to_a_synchronous_standby_under_load_two_nodes_carry_on() {
    // Both hosts: the nodes keep to the one that takes writes.
    let Some((primary, standby, url)) = Pg::with_standby("fo") else {
        return;
    };
    let extra = format!("{}node_listen = \"127.0.0.1:0\"\n", store_section(&url));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = Proc::start(dirs[0].path(), &extra);
    let b = Proc::start(dirs[1].path(), &extra);
    let admin = a.admin.clone().unwrap();
    let token = common::token_of(&admin_at(b.addr, &admin, "POST", "/v1/devices", "id=crash"));
    let run = UnderLoad::on(&[a.addr, b.addr], token.clone(), OnBroken::Stop);
    run.seen.until_acked(50, "no load got through");
    // The primary dies; an operator (here: the test) promotes the standby.
    primary.stop_immediate();
    standby.promote();
    until_writes_succeed(&b, &token, run.base - 1);
    let n = run.seen.acked.lock().unwrap().len();
    run.seen.until_acked(n + 50, "the load did not resume");
    // Read through the follower, from the promoted standby: everything
    // acknowledged before the failover reached it, nothing twice.
    let seen = run.finish(&b, &admin);
    assert!(
        seen.busy.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the failover happened under load"
    );
}

#[test]
fn a_frozen_serving_node_is_taken_over_and_stops_when_it_thaws() {
    let Some(mut c) = Cluster::start("fence", 2) else {
        return;
    };
    let token = common::token_of(&c.admin(0, "POST", "/v1/devices", "id=crash"));
    let before = c.forward_to();
    // The serving node freezes (a stalled VM, a stopped process) and
    // PostgreSQL drops its lock's session meanwhile: its port still takes
    // connections, but it answers nothing, not even the follower's probe.
    let a = c.node(0).child.id() as i32;
    // SAFETY: signals a child this test spawned and has not reaped.
    unsafe { libc::kill(a, libc::SIGSTOP) };
    c.pg.sql(
        c.db,
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'",
    );
    // The follower takes the database over (bounded wait on what it
    // publishes, then on a write through it).
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.forward_to() == before {
        assert!(Instant::now() < deadline, "the follower did not take over");
        std::thread::sleep(Duration::from_millis(50));
    }
    until_writes_succeed(c.node(1), &token, common::hour_ago());
    // Thawed, the old node finds its claim taken (the follower holds the
    // lock now) and stops by itself with a non-zero status, for its
    // service manager to start it again as a follower.
    // SAFETY: as above.
    unsafe { libc::kill(a, libc::SIGCONT) };
    let status = exit_of(c.nodes[0].take().unwrap(), "the fenced node kept running");
    assert!(!status.success());
    until_writes_succeed(c.node(1), &token, common::hour_ago() + 1);
}

#[test]
fn https_passes_through_a_follower_to_the_serving_node() {
    if !common::have("curl") {
        return;
    }
    let Some(pg) = Pg::start() else { return };
    pg.create_db("tls");
    // Each node its own certificate: a client that trusts only the
    // serving node's gets through the follower, so the handshake is the
    // serving node's (the follower passes the bytes through).
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let extra = |dir: &std::path::Path| {
        let (cert, _) = tls_support::self_signed(&dir.join("tls"));
        let conf = format!(
            "{}node_listen = \"127.0.0.1:0\"\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nlisten = \"127.0.0.1:0\"\n",
            store_section(&pg.url("tls")),
            cert.display(),
            dir.join("tls/key.pem").display()
        );
        (cert, conf)
    };
    let ((cert, conf_a), (_, conf_b)) = (extra(dirs[0].path()), extra(dirs[1].path()));
    let env = [("OVERLORD_MQTT__TLS_LISTEN", "127.0.0.1:0")];
    let a = Proc::start_with(dirs[0].path(), &conf_a, &env);
    let b = Proc::start_with(dirs[1].path(), &conf_b, &env);
    let admin = a.admin.clone().unwrap();
    let port = b.https.expect("the follower listens for HTTPS").port();
    tls_support::device_and_reading(&cert, port, &admin);
    // Stored where the serving node's plain door reads it.
    let (st, rows) = get(a.addr, &admin, "/v1/devices/th1/readings?sensors=N1");
    assert_eq!(st, 200);
    assert!(rows.ends_with(",21.5\n"), "{rows}");
}
