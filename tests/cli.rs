//! The CLI works on the data file while the server is stopped, and refuses
//! clearly while it runs.

mod common;

use std::process::Command;

/// The binary with a config in `dir`; `(ok, stdout, stderr)`.
fn overlord(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    common::cli(&dir.join("o.redb"), args, &[], stdin.map(str::as_bytes))
}

#[test]
fn users_and_devices_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    // Only `init` (and `serve`) create the data file.
    let (ok, out, err) = overlord(tmp.path(), &["init"], None);
    assert!(ok, "{err}");
    assert!(out.starts_with("created,"), "{out}");
    let (ok, out, err) = overlord(tmp.path(), &["user", "token", "ann"], None);
    assert!(ok, "{err}");
    assert!(out.starts_with("user,token\nann,"), "{out}");
    let (ok, _, err) = overlord(
        tmp.path(),
        &["user", "password", "ann"],
        Some("a good password\n"),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = overlord(tmp.path(), &["user", "password", "ann"], Some("short\n"));
    assert!(!ok && err.contains("at least 8"), "{err}");
    let (ok, out, err) = overlord(
        tmp.path(),
        &[
            "device",
            "create",
            "--id",
            "gh3",
            "--name",
            "Greenhouse 3",
            "--owner",
            "ann",
        ],
        None,
    );
    assert!(ok, "{err}");
    let token = common::token_of(&out);
    assert_eq!(token.len(), 32);
    let (ok, out, _) = overlord(tmp.path(), &["device", "list"], None);
    assert!(ok);
    assert!(
        out.starts_with("id,name,owner,created,last_seen,state,parent,gateway,kind,latitude,longitude,location,tags,offline_after,description\ngh3,Greenhouse 3,ann,"),
        "{out}"
    );
    assert!(out.contains(",,unknown,,false,"), "never heard from: {out}");
    // Metadata from the command line, and a bulk import with a gateway.
    let (ok, _, err) = overlord(
        tmp.path(),
        &[
            "device",
            "set",
            "gh3",
            "location=north wall",
            "latitude=52.5",
            "gateway=true",
            "tags=glass;north",
        ],
        None,
    );
    assert!(ok, "{err}");
    let csv = tmp.path().join("import.csv");
    std::fs::write(
        &csv,
        "id,name,parent,offline_after\nt1,Thermo 1,gh3,90\nt2,Thermo 2,gh3,\n",
    )
    .unwrap();
    let (ok, out, err) = overlord(
        tmp.path(),
        &["device", "import", csv.to_str().unwrap(), "--owner", "ann"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let (ok, _, err) = overlord(
        tmp.path(),
        &["device", "import", csv.to_str().unwrap(), "--owner", "ann"],
        None,
    );
    assert!(
        !ok && err.contains("device_exists"),
        "all or none, and no duplicates: {err}"
    );
    let (ok, out, _) = overlord(tmp.path(), &["device", "list"], None);
    assert!(ok);
    assert!(out.contains("gh3,Greenhouse 3,ann,"), "{out}");
    assert!(
        out.contains(",true,,52.5,,north wall,glass;north,,"),
        "{out}"
    );
    assert!(
        out.contains("t1,Thermo 1,ann,") && out.contains(",gh3,false,,,,,,90,"),
        "{out}"
    );
    let (ok, _, err) = overlord(tmp.path(), &["device", "set", "t2", "latitude=91"], None);
    assert!(!ok && err.contains("bad_value"), "{err}");
    let (ok, _, err) = overlord(
        tmp.path(),
        &["device", "create", "--id", "gh3", "--owner", "ann"],
        None,
    );
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, _, err) = overlord(
        tmp.path(),
        &["device", "create", "--id", "bad id", "--owner", "ann"],
        None,
    );
    assert!(!ok && err.contains("1-64"), "{err}");
    // The first serve still creates an administrator, since the CLI made
    // none; it is killed once it has said so.
    let cfg = tmp.path().join("o.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_overlord"))
        .arg("--config")
        .arg(&cfg)
        .env("OVERLORD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let lines: Vec<String> = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.starts_with("listening on"))
        .collect();
    // While it runs, the CLI refuses with a clear message.
    let (ok, _, err) = overlord(tmp.path(), &["device", "list"], None);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.starts_with("admin token: ")),
        "{lines:?}"
    );
    assert!(!ok && err.contains("in use by a running server"), "{err}");
}

#[test]
fn retention_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, err) = overlord(tmp.path(), &["init"], None);
    assert!(ok, "{err}");
    let (ok, _, err) = overlord(tmp.path(), &["user", "token", "ann"], None);
    assert!(ok, "{err}");
    let (ok, _, err) = overlord(
        tmp.path(),
        &["device", "create", "--id", "gh3", "--owner", "ann"],
        None,
    );
    assert!(ok, "{err}");
    let run = |args: &[&str]| overlord(tmp.path(), args, None);
    let (ok, out, err) = run(&["retention", "list"]);
    assert!(ok, "{err}");
    assert_eq!(out, "device,sensor,keep_days\n*,*,0\n");
    // The device, then one of its sensors; the reply is the HTTP one.
    let (ok, out, err) = run(&["retention", "set", "gh3", "30"]);
    assert!(ok, "{err}");
    assert_eq!(out, "sensor,keep_days\n*,30\ndefault,0\n");
    let (ok, out, err) = run(&["retention", "set", "gh3", "n2", "0"]);
    assert!(ok, "{err}");
    assert_eq!(out, "sensor,keep_days\n*,30\nN2,0\ndefault,0\n");
    let (ok, out, _) = run(&["retention", "list"]);
    assert!(ok);
    assert_eq!(out, "device,sensor,keep_days\ngh3,*,30\ngh3,N2,0\n*,*,0\n");
    // The rules of POST /v1/devices/ID/retention; nothing changes.
    for (args, why) in [
        (&["retention", "set", "gh3", "abc"][..], "bad_value"),
        (&["retention", "set", "gh3", "-1"], "bad_value"),
        (&["retention", "set", "gh3", "99999999"], "bad_value"),
        (&["retention", "set", "gh3", ""], "DAYS"),
        (&["retention", "set", "gh3", "X1", "1"], "bad_sensor_name"),
        (&["retention", "set", "nope", "1"], "no device 'nope'"),
    ] {
        let (ok, _, err) = run(args);
        assert!(!ok && err.contains(why), "{args:?}: {err}");
    }
    let (ok, _, err) = run(&["retention", "set", "gh3", "N1", "2", "3"]);
    assert!(!ok && !err.is_empty(), "too many arguments");
    // `default` removes a setting.
    let (ok, out, err) = run(&["retention", "set", "gh3", "default"]);
    assert!(ok, "{err}");
    assert_eq!(out, "sensor,keep_days\nN2,0\ndefault,0\n");
    let (ok, out, _) = run(&["retention", "list"]);
    assert!(ok);
    assert_eq!(out, "device,sensor,keep_days\ngh3,N2,0\n*,*,0\n");
}

/// Run `overlord --config CFG serve` until it exits or 20 s pass (then it
/// is killed, and counts as "still running"). Returns `(exited with
/// success, exited at all, stdout, stderr)`.
fn serve_bounded(cfg: &std::path::Path) -> (bool, bool, String, String) {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_overlord"))
        .arg("--config")
        .arg(cfg)
        .arg("serve")
        .env("OVERLORD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on threads so a chatty child never blocks.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.is_some_and(|s| s.success()),
        status.is_some(),
        out.join().unwrap(),
        err.join().unwrap(),
    )
}

#[test]
fn an_empty_data_file_stops_the_server_instead_of_starting_afresh() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("o.redb");
    std::fs::write(&data, b"").unwrap();
    let cfg = common::config_file(&data);
    let (ok, exited, out, err) = serve_bounded(&cfg);
    assert!(
        exited && !ok,
        "the server must refuse to start: {out} {err}"
    );
    assert!(err.contains("empty"), "a clear message: {err}");
    assert!(!out.contains("admin token"), "no new administrator: {out}");
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 0, "file unchanged");
    // The management commands refuse it too.
    let (ok, out, err) = overlord(tmp.path(), &["user", "token", "ann"], None);
    assert!(!ok && err.contains("empty"), "{out} {err}");
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 0, "file unchanged");
}

#[test]
fn a_taken_mqtt_port_stops_the_server_before_it_creates_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let data = tmp.path().join("o.redb");
    let cfg = tmp.path().join("o.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_file = \"{}\"\n[mqtt]\nlisten = \"127.0.0.1:{port}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let (ok, exited, out, err) = serve_bounded(&cfg);
    drop(taken);
    assert!(
        exited && !ok,
        "the server must refuse to start: {out} {err}"
    );
    assert!(
        err.contains(&format!("cannot listen for MQTT on 127.0.0.1:{port}"))
            && err.contains("OVERLORD_MQTT__LISTEN="),
        "a clear message that says how to turn it off: {err}"
    );
    assert!(!out.contains("admin token"), "no token printed: {out}");
    assert!(!data.exists(), "no data file created");
}

#[test]
fn a_taken_port_stops_the_server_before_it_creates_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let data = tmp.path().join("o.redb");
    let cfg = tmp.path().join("o.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_file = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let (ok, exited, out, err) = serve_bounded(&cfg);
    drop(taken);
    assert!(
        exited && !ok,
        "the server must refuse to start: {out} {err}"
    );
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && err.to_lowercase().contains("address already in use"),
        "a clear message: {err}"
    );
    assert!(!out.contains("admin token"), "no token printed: {out}");
    assert!(!data.exists(), "no data file created");
}

/// A command run where there is no data file (the wrong directory, a
/// mistyped `--config`) says so and exits non-zero; it used to create an
/// empty data file there and carry on as if nothing were wrong.
#[test]
fn offline_commands_do_not_create_a_data_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("o.redb");
    let csv = tmp.path().join("r.csv");
    std::fs::write(&csv, "time,device,N1\n2026-11-23T10:00:00Z,gh3,1\n").unwrap();
    let csv = csv.to_str().unwrap();
    let backup = tmp.path().join("b.redb");
    let commands: &[&[&str]] = &[
        &["user", "token", "ann"],
        &["user", "revoke", "ann"],
        &["device", "create", "--id", "gh3"],
        &["device", "list"],
        &["device", "import", csv],
        &["device", "set", "gh3", "name=x"],
        &["device", "token", "gh3"],
        &["export", "--device", "gh3"],
        &["import", csv],
        &["retention", "list"],
        &["retention", "set", "gh3", "3"],
        &["check"],
        &["compact"],
        &["backup", backup.to_str().unwrap()],
    ];
    for args in commands {
        let (ok, out, err) = overlord(tmp.path(), args, None);
        assert!(!ok, "{args:?} succeeded without a data file: {out}");
        assert!(
            err.contains(&format!("no data file at {}", data.display())),
            "{args:?}: {err}"
        );
        assert!(!data.exists(), "{args:?} created {}", data.display());
        assert!(!backup.exists(), "{args:?} wrote a backup");
    }
    // `init` creates it once, and refuses to replace it.
    let (ok, out, err) = overlord(tmp.path(), &["init"], None);
    assert!(ok, "{err}");
    assert_eq!(out, format!("created,{}\n", data.display()));
    let (ok, _, err) = overlord(tmp.path(), &["device", "list"], None);
    assert!(ok, "{err}");
    let (ok, _, err) = overlord(tmp.path(), &["init"], None);
    assert!(!ok && err.contains("exists already"), "{err}");
}
