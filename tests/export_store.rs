//! `overlord export-store` (issue 20): a store built through HTTP goes
//! into a throw-away PostgreSQL and back into a new data file row for row,
//! and a server on the copy answers as the original did; what must be
//! refused is refused with nothing changed, and a password never shows.

mod common;

use std::path::Path;

use common::pg::Pg;
use common::{cli, hour_ago, TestServer};
use overlord::app::OpenOptions;
use redb::ReadableDatabase;

/// Every table's rows and their hash (`ops::fingerprint`).
fn fingerprint(data: &Path) -> Vec<(String, u64, [u8; 32])> {
    let store = overlord::store::Store::open(data).expect("open");
    let txn = store.db().unwrap().begin_read().unwrap();
    overlord::ops::fingerprint(&txn).unwrap()
}

fn export(data: &Path, args: &[&str], url: &str) -> (bool, String, String) {
    let mut all = vec!["export-store"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--url", url]);
    cli(data, &all, &[], None)
}

/// A file of `n` bytes that no run of the same bytes hides a misplaced
/// part in.
fn content(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + i / 1000) % 36])
        .collect()
}

/// The one uploaded file's content in the files directory beside
/// `dir/overlord.redb` (named by its SHA-256: 64 hex digits).
fn blob_in(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("overlord.redb.files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().len() == 64)
        .expect("the blob")
}

struct Built {
    queries: Vec<(String, String)>,
    sensor_token: String,
    file: Vec<u8>,
}

/// A store with something in most tables, built as clients would: users,
/// devices, readings over several hours (sealed and hot chunks), a
/// channel fed by the digest, an alert that fired, an inbox message and a
/// command, sensor labels, retention, a file of three parts.
fn build(s: &TestServer) -> Built {
    let tok = s.create_device("gh3");
    s.create_device("gh4");
    let ann = s.admin_form("POST", "/v1/users", "name=ann&password=correct+horse");
    assert_eq!(ann.status, 201, "{}", ann.body);
    for (path, form) in [
        ("/v1/channels", "name=greenhouse&description=Both+houses"),
        (
            "/v1/channels/greenhouse/members",
            "device=gh3&sensor=N1&label=North",
        ),
        ("/v1/alerts", "name=hot&device=gh3&sensor=N1&max=30"),
        (
            "/v1/devices/gh3/inbox",
            "kind=message&value=Water+the+tomatoes",
        ),
        ("/v1/devices/gh3/inbox", "kind=command&sensor=L1&value=true"),
        ("/v1/devices/gh3/sensors/N1", "label=Air&unit=C"),
        ("/v1/devices/gh4/retention", "keep_days=400"),
    ] {
        let r = s.admin_form("POST", path, form);
        assert!(r.status == 200 || r.status == 201, "{path}: {}", r.body);
    }
    // Three hours of readings a minute apart: older hours are sealed,
    // the last may stay hot. The last reading (31.5) fires the alert.
    let t0 = (hour_ago() - 3 * 3600) / 3600 * 3600;
    let mut body = String::from("time,N1,I2\n");
    for i in 0..180 {
        let n = if i == 179 {
            31.5
        } else {
            20.0 + (i % 7) as f64 / 4.0
        };
        body.push_str(&format!("{},{n},{}\n", t0 + i * 60, i * 3));
    }
    let r = s.post(
        &format!("/v1/readings?device=gh3&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Barrier: the digest has put every reading into the channel and the
    // alert fired on the last one.
    let items = s.admin_until("/v1/channels/greenhouse/items?after=0&limit=1000", |b| {
        b.lines().count() == 181
    });
    assert_eq!(items.body.lines().count(), 181, "{}", items.body);
    let events = s.admin_until("/v1/alerts/hot/events", |b| b.lines().count() == 2);
    assert_eq!(events.body.lines().count(), 2, "{}", events.body);
    // Three parts; the same content under a second name (stored once);
    // an empty file; one of exactly one part.
    let file = content((2 << 20) + 12345);
    for (name, body) in [
        ("fw.bin", file.clone()),
        ("fw-copy.bin", file.clone()),
        ("empty", Vec::new()),
        ("one-part", content(1 << 20)),
    ] {
        let r = s.post(
            &format!("/v1/files/{name}"),
            "application/octet-stream",
            &body,
            &format!("Authorization: Bearer {}\r\n", s.admin),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let to = t0 + 3 * 3600;
    let queries = [
        format!("/v1/devices/gh3/readings?sensors=N1,I2&from={t0}&to={to}&limit=1000"),
        format!("/v1/devices/gh3/readings?sensors=N1&from={t0}&to={to}&buckets=6"),
        "/v1/devices/gh3/sensors".to_string(),
        "/v1/channels/greenhouse/items?after=0&limit=1000".to_string(),
        "/v1/channels/greenhouse/members".to_string(),
        "/v1/alerts/hot/events".to_string(),
        "/v1/devices/gh3/inbox".to_string(),
        "/v1/devices/gh4/retention".to_string(),
        "/v1/devices".to_string(),
        "/v1/users".to_string(),
        "/v1/files".to_string(),
    ]
    .into_iter()
    .map(|q| {
        let r = s.get_admin(&q);
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        (q, r.body)
    })
    .collect();
    Built {
        queries,
        sensor_token: tok,
        file,
    }
}

#[test]
fn a_store_goes_to_postgresql_and_back_row_for_row() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("ov");
    let url = pg.url("ov");

    let s = TestServer::start_with(|c| c.storage.seal_idle_secs = 0);
    let built = build(&s);
    let (tmp, admin) = s.stop();
    let data = tmp.path().join("overlord.redb");
    let before = fingerprint(&data);
    let rows: u64 = before.iter().map(|t| t.1).sum();
    let has = |name: &str| before.iter().find(|t| t.0 == name).unwrap().1 > 0;
    for t in [
        "sealed",
        "devices",
        "users",
        "channel_items",
        "alert_events",
        "inbox",
        "commands",
        "files",
        "sensor_labels",
        "retention",
        "channel_labels",
        "meta",
    ] {
        assert!(has(t), "the test's store has no '{t}' rows: {before:?}");
    }

    let sha = |p: &Path| {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(p).unwrap())
    };
    let source = sha(&data);
    let (ok, out, err) = export(&data, &["--to", "postgres"], &url);
    assert!(ok, "{err}");
    assert_eq!(sha(&data), source, "the source is only read");
    let file_len = built.file.len() + (1 << 20);
    assert_eq!(out, format!("ok,{rows},3,{file_len}\n"));

    // What PostgreSQL holds, read with SQL.
    assert_eq!(
        pg.value("ov", "SELECT max(version) FROM schema_version"),
        overlord::pg::migrate::latest().to_string()
    );
    assert_eq!(
        pg.value("ov", "SELECT string_agg(id, ',' ORDER BY id) FROM devices"),
        "gh3,gh4"
    );
    let chunks: u64 = pg
        .value(
            "ov",
            "SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM sealed)",
        )
        .parse()
        .unwrap();
    let redb_chunks: u64 = before
        .iter()
        .filter(|t| t.0 == "readings" || t.0 == "sealed")
        .map(|t| t.1)
        .sum();
    assert_eq!(chunks, redb_chunks);
    assert_eq!(
        pg.value(
            "ov",
            "SELECT count(*) || ',' || sum(length(bytes)) FROM file_blobs"
        ),
        format!("5,{file_len}")
    );

    // And back, into a new data file beside the old one; as a database
    // written by the first release (schema version 1) is read too.
    pg.sql("ov", "DELETE FROM schema_version WHERE version > 1");
    let copy = tmp.path().join("copy.redb");
    let (ok, out, err) = export(&data, &["--to", "redb", copy.to_str().unwrap()], &url);
    assert!(ok, "{err}");
    assert_eq!(out, format!("ok,{rows},3,{file_len}\n"));
    assert_eq!(fingerprint(&copy), before, "every table, byte for byte");

    // A server on the copy answers every query as the original did, and
    // its devices, files and administrator carry on.
    let mut c = common::config(tmp.path());
    c.data_file = copy.clone();
    let s = TestServer::open(OpenOptions::new(c), Some(admin));
    for (q, body) in &built.queries {
        let r = s.get_admin(q);
        assert_eq!(&r.body, body, "{q}");
    }
    let r = s.raw(
        format!(
            "GET /v1/files/fw.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            s.admin
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert!(r.body.as_bytes() == built.file, "the file's content");
    for (name, len) in [
        ("fw-copy.bin", built.file.len()),
        ("empty", 0),
        ("one-part", 1 << 20),
    ] {
        let r = s.raw(
            format!(
                "GET /v1/files/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                s.admin
            )
            .as_bytes(),
        );
        assert_eq!((r.status, r.body.len()), (200, len), "{name}");
    }
    let r = s.get(&format!(
        "/v1/readings?device=gh3&token={}&N1=22.5",
        built.sensor_token
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    drop(s);
    drop(tmp);
}

#[test]
fn export_store_refuses_what_it_must_and_changes_nothing() {
    let Some(pg) = Pg::start() else { return };
    let s = TestServer::start();
    s.create_device("gh3");
    let file = content(1000);
    let r = s.post(
        "/v1/files/fw.bin",
        "application/octet-stream",
        &file,
        &format!("Authorization: Bearer {}\r\n", s.admin),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let (tmp, _) = s.stop();
    let data = tmp.path().join("overlord.redb");
    let devices = |db: &str| pg.value(db, "SELECT count(*) FROM devices");

    // Into a database that already holds Overlord data.
    pg.create_db("filled");
    let (ok, _, err) = export(&data, &["--to", "postgres"], &pg.url("filled"));
    assert!(ok, "{err}");
    let (ok, _, err) = export(&data, &["--to", "postgres"], &pg.url("filled"));
    assert!(!ok);
    assert!(err.contains("already has rows"), "{err}");
    assert_eq!(devices("filled"), "1", "the first copy is untouched");

    // Back into a file or a files directory that exists.
    let (ok, _, err) = export(
        &data,
        &["--to", "redb", data.to_str().unwrap()],
        &pg.url("filled"),
    );
    assert!(!ok && err.contains("exists"), "{err}");
    let other = tmp.path().join("other.redb");
    std::fs::create_dir(tmp.path().join("other.redb.files")).unwrap();
    std::fs::write(tmp.path().join("other.redb.files/x"), b"x").unwrap();
    let (ok, _, err) = export(
        &data,
        &["--to", "redb", other.to_str().unwrap()],
        &pg.url("filled"),
    );
    assert!(!ok && err.contains("not empty"), "{err}");
    assert!(!other.exists());

    // From a database with no Overlord schema, and from a newer schema.
    pg.create_db("empty");
    let (ok, _, err) = export(
        &data,
        &["--to", "redb", "/nonexistent/x.redb"],
        &pg.url("empty"),
    );
    assert!(!ok && err.contains("no Overlord schema"), "{err}");
    let latest = overlord::pg::migrate::latest();
    pg.sql(
        "filled",
        &format!("UPDATE schema_version SET version = 99 WHERE version = {latest}"),
    );
    let fresh = tmp.path().join("fresh.redb");
    for args in [
        vec!["--to", "postgres"],
        vec!["--to", "redb", fresh.to_str().unwrap()],
    ] {
        let (ok, _, err) = export(&data, &args, &pg.url("filled"));
        assert!(!ok, "{args:?}");
        assert!(
            err.contains(&format!(
                "schema version 99 is newer than this overlord ({latest})"
            )),
            "{err}"
        );
    }
    assert!(!fresh.exists());

    // A damaged file content is refused, and nothing is committed.
    pg.create_db("damaged");
    let blob = blob_in(tmp.path());
    std::fs::write(&blob, content(999)).unwrap();
    let (ok, _, err) = export(&data, &["--to", "postgres"], &pg.url("damaged"));
    assert!(!ok && err.contains("does not match its SHA-256"), "{err}");
    assert_eq!(
        pg.value("damaged", "SELECT (to_regclass('devices') IS NULL)::text"),
        "true",
        "all or nothing: not even the schema is left"
    );

    // A database whose file contents are missing: `--to redb` fails and
    // leaves nothing behind, neither the file nor a temp name.
    pg.sql(
        "filled",
        &format!("UPDATE schema_version SET version = {latest} WHERE version = 99; DELETE FROM file_blobs"),
    );
    let gap = tmp.path().join("gap.redb");
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing();
    let (ok, _, err) = export(
        &data,
        &["--to", "redb", gap.to_str().unwrap()],
        &pg.url("filled"),
    );
    assert!(!ok && err.contains("is not in file_blobs"), "{err}");
    assert_eq!(listing(), before);

    // A password is never printed, whatever fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (ok, out, err) = export(
        &data,
        &["--to", "postgres"],
        &format!("host=127.0.0.1 port={port} user=ov password=Sup3rSecret dbname=ov"),
    );
    assert!(!ok);
    assert!(
        err.contains(&format!("host=127.0.0.1 port={port}")),
        "{err}"
    );
    assert!(
        !err.contains("Sup3rSecret") && !out.contains("Sup3rSecret"),
        "{err}"
    );
    // Nor when the server refuses the password.
    pg.sql("postgres", "CREATE ROLE ov LOGIN PASSWORD 'right-one'");
    let (ok, _, err) = cli(
        &data,
        &["export-store", "--to", "postgres"],
        &[(
            "OVERLORD_STORE__POSTGRES_URL",
            &format!("postgresql://ov:Sup3rSecret@127.0.0.1:{}/empty", pg.port),
        )],
        None,
    );
    assert!(!ok);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("Sup3rSecret"), "{err}");
    drop(tmp);
}

/// A nightly copy from cron with the server running: `--server` takes a
/// consistent copy over HTTP, `--replace` swaps the previous night's for
/// it in one transaction, and a failed night keeps the last good copy.
#[test]
fn a_running_server_is_copied_into_postgresql_night_after_night() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("nightly");
    let url = pg.url("nightly");
    let s = TestServer::start();
    let data = s.dir.join("overlord.redb");
    let server = format!("http://{}", s.addr);
    let admin = s.admin.clone();
    let night = |extra: &[&str], token: &str| {
        let mut args = vec![
            "export-store",
            "--to",
            "postgres",
            "--server",
            &server,
            "--url",
            &url,
        ];
        args.extend_from_slice(extra);
        cli(&data, &args, &[("OVERLORD_TOKEN", token)], None)
    };
    let tok = s.create_device("gh3");
    let reading = |t: i64, v: f64| {
        let r = s.get(&format!(
            "/v1/readings?device=gh3&token={tok}&time={t}&N1={v}"
        ));
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let t0 = hour_ago();
    reading(t0, 20.5);
    let r = s.post(
        "/v1/files/fw.bin",
        "application/octet-stream",
        &content(5000),
        &format!("Authorization: Bearer {admin}\r\n"),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // The running server's file itself is refused: the copy comes over
    // HTTP or not at all.
    let (ok, _, err) = export(&data, &["--to", "postgres"], &url);
    assert!(!ok && err.contains("stop it first"), "{err}");
    // Without the administrator's token the server refuses the copy.
    let (ok, _, err) = night(&[], "0123456789abcdef0123456789abcdef");
    assert!(!ok, "{err}");
    let (ok, out, err) = night(&[], &admin);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("ok,") && out.ends_with(",1,5000\n"),
        "{out}"
    );
    let devices = || {
        pg.value(
            "nightly",
            "SELECT string_agg(id, ',' ORDER BY id) FROM devices",
        )
    };
    assert_eq!(devices(), "gh3");

    // The next night: more data; a plain copy is refused, --replace swaps.
    s.create_device("gh4");
    reading(t0 + 60, 21.5);
    let (ok, _, err) = night(&[], &admin);
    assert!(!ok && err.contains("already has rows"), "{err}");
    assert_eq!(devices(), "gh3");
    let (ok, _, err) = night(&["--replace"], &admin);
    assert!(ok, "{err}");
    assert_eq!(devices(), "gh3,gh4");

    // A night that fails (a file's content damaged) keeps the last copy.
    let blob = blob_in(&s.dir);
    let good = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, b"damaged").unwrap();
    s.create_device("gh5");
    let (ok, _, err) = night(&["--replace"], &admin);
    assert!(!ok && err.contains("does not match its SHA-256"), "{err}");
    assert_eq!(devices(), "gh3,gh4", "the last good copy stays");
    std::fs::write(&blob, good).unwrap();
    // No downloaded copy is left beside the data file.
    let leftovers: Vec<String> = std::fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // What PostgreSQL holds answers as the server does.
    let query = format!(
        "/v1/devices/gh3/readings?sensors=N1&from={t0}&to={}",
        t0 + 120
    );
    let live = s.get_admin(&query).body;
    let copy = s.dir.join("copy.redb");
    let (ok, _, err) = export(&data, &["--to", "redb", copy.to_str().unwrap()], &url);
    assert!(ok, "{err}");
    let (tmp, admin) = s.stop();
    let mut c = common::config(tmp.path());
    c.data_file = copy;
    let s = TestServer::open(OpenOptions::new(c), Some(admin));
    assert_eq!(s.get_admin(&query).body, live);
    drop(s);
    drop(tmp);
}

/// A data file left by a crash is refused (a read-only copy cannot repair
/// it), with what to do; once the server has started and stopped on it,
/// the copy goes through.
#[test]
fn a_data_file_left_by_a_crash_is_refused_until_repaired() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("crashed");
    let url = pg.url("crashed");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("o.redb");
    let mut p = common::process::Proc::start(dir.path(), "");
    let admin = p.admin.clone().expect("first start");
    let r = common::raw(
        p.addr,
        format!(
            "POST /v1/devices HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\nConnection: close\r\n\r\nid=gh3"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    drop(p);

    let (ok, _, err) = export(&data, &["--to", "postgres"], &url);
    assert!(!ok && err.contains("not closed cleanly"), "{err}");
    assert_eq!(
        pg.value("crashed", "SELECT (to_regclass('devices') IS NULL)::text"),
        "true"
    );

    // Start and stop (SIGTERM) once: redb repairs the file on start.
    let p = common::process::Proc::start(dir.path(), "");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    let mut p = p;
    let code = p.child.wait().unwrap();
    assert!(code.success(), "exit status {code:?}");
    drop(p);
    let (ok, _, err) = export(&data, &["--to", "postgres"], &url);
    assert!(ok, "{err}");
    assert_eq!(
        pg.value("crashed", "SELECT string_agg(id, ',') FROM devices"),
        "gh3"
    );
}
