//! The server on PostgreSQL (`[store] kind = "postgres"`, issue 20), as a
//! user runs it: the real binary, talking HTTP/1.0 on loopback, on a
//! throw-away PostgreSQL. A `200` means committed there: every
//! acknowledged reading is stored exactly once after the node is killed
//! with `SIGKILL` under load, after PostgreSQL itself is killed and
//! started again under load (the node answers `503` with `Retry-After`
//! meanwhile and recovers without a restart), and after a failover to a
//! synchronous standby. One node serves a database at a time; the
//! offline commands and `GET /v1/admin/backup` work on the database.

#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nodes::{
    admin_req, create_device, http, load, run, store_section, until_writes_succeed, OnBroken, Seen,
    UnderLoad,
};
use common::pg::Pg;
use common::process::{assert_all_stored_once, Proc};

#[test]
fn one_node_serves_a_database_and_its_commands_and_backup_work_there() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("node");
    let url = pg.url("node");
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let mut a = Proc::start(dir_a.path(), &store_section(&url));
    let admin = a
        .admin
        .clone()
        .expect("the first start on an empty database");
    let token = create_device(&a, &admin, "crash");
    let r = http(
        a.addr,
        &format!("POST /v1/readings?device=crash&token={token} HTTP/1.0\r\nContent-Type: text/csv\r\nContent-Length: 14\r\n\r\ntime,I1\n100,5\n"),
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
    // No data file: the readings are in PostgreSQL.
    assert!(!dir_a.path().join("o.redb").exists());
    let rows = pg.value("node", "SELECT count(*) FROM devices");
    assert_eq!(rows, "1", "the device is a row in PostgreSQL");

    // A second node on the same database is refused, as a second server
    // on a data file is.
    std::fs::write(
        dir_b.path().join("overlord.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ndata_file = \"{}\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n{}",
            dir_b.path().join("o.redb").display(),
            store_section(&url)
        ),
    )
    .unwrap();
    let cfg_b = dir_b.path().join("overlord.toml");
    let (ok, _, err) = run(&cfg_b, &[]);
    assert!(!ok, "a second node must not start");
    assert!(
        err.contains("another Overlord node serves this database"),
        "{err}"
    );
    // So are the offline commands while a node serves it.
    let (ok, _, err) = run(&cfg_b, &["user", "token", "admin"]);
    assert!(!ok && err.contains("served by a running node"), "{err}");
    // The commands that need a data file say so instead of making one.
    for args in [
        &["check"][..],
        &["compact"],
        &["init"],
        &["backup", "x.redb"],
    ] {
        let (ok, _, err) = run(&cfg_b, args);
        assert!(
            !ok && err.contains("serves from PostgreSQL"),
            "{args:?}: {err}"
        );
    }
    assert!(!dir_b.path().join("o.redb").exists(), "no data file made");

    // The backup of a node on PostgreSQL is a data file holding it.
    let mut s = TcpStream::connect(a.addr).unwrap();
    s.write_all(
        format!("GET /v1/admin/backup HTTP/1.0\r\nAuthorization: Bearer {admin}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let backup = dir_b.path().join("backup.redb");
    std::fs::write(&backup, &raw[split + 4..]).unwrap();
    let copy = overlord::store::Store::open(&backup).expect("a data file");
    let devices = copy.load_devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].id, "crash");
    drop(copy);

    // Killed, the node frees the database at once for the next one.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let (ok, out, err) = run(&cfg_b, &["user", "token", "ann"]);
    assert!(ok, "{err}");
    let ann = out
        .lines()
        .nth(1)
        .unwrap()
        .split_once(',')
        .unwrap()
        .1
        .to_string();
    let b = Proc::start(dir_b.path(), &store_section(&url));
    assert!(b.admin.is_none(), "the database has its administrator");
    let body = admin_req(
        &b,
        &admin,
        "GET",
        "/v1/devices/crash/readings?sensors=I1",
        "",
    );
    assert!(body.lines().nth(1).unwrap().ends_with(",5"), "{body}");
    // The token the offline command issued works on the node.
    let r = http(
        b.addr,
        &format!("GET /v1/devices HTTP/1.0\r\nAuthorization: Bearer {ann}\r\n\r\n"),
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.0 200"), "{r}");
}

#[test]
fn sigkill_of_the_node_under_load_loses_no_acknowledged_reading() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("crash");
    let extra = store_section(&pg.url("crash"));
    let tmp = tempfile::tempdir().unwrap();
    let mut p = Proc::start(tmp.path(), &extra);
    let admin = p.admin.clone().unwrap();
    let token = create_device(&p, &admin, "crash");
    let base = common::hour_ago() - 86_400;
    let mut acked = BTreeMap::new();
    for cycle in 0..3 {
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = load(
            &[p.addr],
            token.clone(),
            base,
            cycle * 20_000,
            stop.clone(),
            seen.clone(),
            OnBroken::Stop,
        );
        // Not a wait for the server: the kill lands this far into the
        // load, a different moment each cycle.
        std::thread::sleep(Duration::from_millis(400 + 150 * cycle as u64));
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            seen.other.lock().unwrap().is_empty(),
            "{:?}",
            seen.other.lock().unwrap()
        );
        acked.extend(seen.acked.lock().unwrap().clone());
        p = Proc::start(tmp.path(), &extra);
    }
    assert!(
        acked.len() > 20,
        "the load got acknowledgements: {}",
        acked.len()
    );
    assert_all_stored_once(&p, &admin, base, &acked);
}

#[test]
fn postgres_killed_under_load_gives_503_then_the_node_recovers_by_itself() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("away");
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::start(tmp.path(), &store_section(&pg.url("away")));
    let admin = p.admin.clone().unwrap();
    let run = UnderLoad::start(&p, &admin);
    let (token, base, seen) = (&run.token, run.base, &run.seen);
    // Under load: wait until some readings are in, then kill PostgreSQL.
    seen.until_acked(50, "no load got through");
    pg.stop_immediate();
    // While it is away, writes are refused with 503 and Retry-After (the
    // load counts them; anything else is a failure below).
    let busy_before = seen.busy.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.busy.load(Ordering::Relaxed) < busy_before + 20 {
        assert!(
            Instant::now() < deadline,
            "no 503 while PostgreSQL was away"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let acked_while_away = seen.acked.lock().unwrap().len();
    pg.start_again();
    // The same process: it reconnects by itself.
    until_writes_succeed(&p, token, base - 1);
    seen.until_acked(acked_while_away + 50, "the load did not resume");
    run.finish(&p, &admin);
}

#[test]
fn failover_to_a_synchronous_standby_loses_no_acknowledged_reading() {
    // Both hosts: the node keeps to the one that takes writes.
    let Some((primary, standby, url)) = Pg::with_standby("fo") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::start(tmp.path(), &store_section(&url));
    let admin = p.admin.clone().unwrap();
    let run = UnderLoad::start(&p, &admin);
    let (token, base, seen) = (&run.token, run.base, &run.seen);
    seen.until_acked(50, "no load got through");
    // The primary dies; an operator (here: the test) promotes the standby.
    primary.stop_immediate();
    standby.promote();
    until_writes_succeed(&p, token, base - 1);
    let resumed = seen.acked.lock().unwrap().len();
    seen.until_acked(resumed + 50, "the load did not resume");
    // Read on the promoted standby: what the node acknowledged before the
    // failover reached it (synchronous replication) and nothing twice.
    let seen = run.finish(&p, &admin);
    assert!(
        seen.busy.load(Ordering::Relaxed) > 0,
        "the failover happened under load: some writes were refused while no primary took them"
    );
}

/// Send `head` and `body` on a new connection; the status line and
/// headers, and the body, as bytes.
fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a reply");
    (
        String::from_utf8_lossy(&raw[..split]).into_owned(),
        raw[split + 4..].to_vec(),
    )
}

#[test]
fn uploaded_files_live_in_the_database_and_a_node_on_a_new_machine_serves_them() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("files");
    let extra = store_section(&pg.url("files"));
    // Two "machines": each node has a files directory of its own.
    let (box_a, box_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Proc::start(box_a.path(), &extra);
    let admin = a.admin.clone().unwrap();
    // Over two of the database's 1 MiB parts, bytes that show a misplaced
    // part.
    let mut rng = common::Rng(0x9e37_79b9_7f4a_7c15);
    let content: Vec<u8> = (0..2_500_000).map(|_| rng.next() as u8).collect();
    let put = |p: &Proc, name: &str, body: &[u8]| {
        let (head, reply) = exchange(
            p.addr,
            &format!(
                "PUT /v1/files/{name} HTTP/1.0\r\nAuthorization: Bearer {admin}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
            body,
        );
        assert!(
            head.starts_with("HTTP/1.0 20"),
            "{head}\n{}",
            String::from_utf8_lossy(&reply)
        );
    };
    put(&a, "fw.bin", &content);
    put(&a, "same.bin", &content);
    put(&a, "gone.bin", b"short-lived");
    assert_eq!(
        pg.value("files", "SELECT count(DISTINCT sha256) FROM file_blobs"),
        "2",
        "one copy per distinct content"
    );
    assert_eq!(
        pg.value("files", "SELECT count(*) FROM file_blobs"),
        "4",
        "3 parts + 1"
    );
    // The box dies; a node starts on another one, with an empty directory.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let b = Proc::start(box_b.path(), &extra);
    let get = |p: &Proc, name: &str, range: &str| {
        exchange(
            p.addr,
            &format!(
                "GET /v1/files/{name} HTTP/1.0\r\nAuthorization: Bearer {admin}\r\n{range}\r\n"
            ),
            b"",
        )
    };
    let (head, body) = get(&b, "fw.bin", "");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(body == content, "the whole content, from the database");
    // A resumed download across the boundary of two parts.
    let (head, body) = get(&b, "fw.bin", "Range: bytes=1048000-2100000\r\n");
    assert!(head.starts_with("HTTP/1.0 206"), "{head}");
    assert!(body == content[1_048_000..=2_100_000], "the range's bytes");
    // Replacing one of two files with the same content keeps it; deleting
    // the last user of a content removes it from the database.
    put(&b, "same.bin", b"new content");
    assert_eq!(
        pg.value("files", "SELECT count(DISTINCT sha256) FROM file_blobs"),
        "3"
    );
    let (head, _) = exchange(
        b.addr,
        &format!("DELETE /v1/files/gone.bin HTTP/1.0\r\nAuthorization: Bearer {admin}\r\n\r\n"),
        b"",
    );
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert_eq!(
        pg.value("files", "SELECT count(DISTINCT sha256) FROM file_blobs"),
        "2"
    );
    let (head, body) = get(&b, "same.bin", "");
    assert!(
        head.starts_with("HTTP/1.0 200") && body == b"new content",
        "{head}"
    );
}
