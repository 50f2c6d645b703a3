//! The zero-library examples in `examples/`, run against a live server as
//! their users would run them. A missing compiler or interpreter skips
//! that example with a note (and fails under CI=true, where `.ci/run`
//! installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{enc, hour_ago, TestServer};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        o.status,
        text(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o)
}

/// Send a command to a device's inbox as the administrator.
fn command(s: &TestServer, dev: &str, value: &str) {
    let r = s.admin_form(
        "POST",
        &format!("/v1/devices/{dev}/inbox"),
        &format!("kind=command&sensor=I1&value={value}"),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn board_c_sends_reads_and_acknowledges_its_inbox() {
    if !common::have("cc") {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("board");
    for v in 1..=5 {
        command(&s, "board", &v.to_string());
    }
    let tmp = tempfile::tempdir().unwrap();
    let bin = build_board(tmp.path()).expect("cc is installed (checked above)");
    let t = hour_ago();
    let out = ok(
        Command::new(&bin)
            .args(["127.0.0.1", &s.addr.port().to_string(), "board", &tok])
            .args(["N1=21.5", "L2=1", &format!("time={t}")])
            .output()
            .unwrap(),
        "board",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ok,2,5"), "{out}");
    // All five commands acted on, in order, then acknowledged.
    let acted: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("inbox "))
        .map(|row| row.rsplit(',').next().unwrap())
        .collect();
    assert_eq!(acted, ["1", "2", "3", "4", "5"], "{out}");
    assert!(out.lines().any(|l| l.ends_with(",0")), "a final ack: {out}");
    let r = s.get_admin("/v1/devices/board/inbox");
    assert_eq!(r.body.lines().count(), 1, "inbox emptied: {}", r.body);
    let r = s.get_admin("/v1/devices/board/readings?sensors=N1,L2");
    assert_eq!(
        r.body.lines().nth(1).unwrap().split_once(',').unwrap().1,
        "21.5,true"
    );
    // A wrong token: refused, non-zero exit, nothing acknowledged.
    command(&s, "board", "6");
    let o = Command::new(&bin)
        .args([
            "127.0.0.1",
            &s.addr.port().to_string(),
            "board",
            "wrong",
            "N1=1",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("error,unauthorized"));
    assert_eq!(
        s.get_admin("/v1/devices/board/inbox").body.lines().count(),
        2
    );
}

/// Compile `examples/board.c` as the tests do; `None` without a compiler.
fn build_board(dir: &Path) -> Option<PathBuf> {
    if !common::have("cc") {
        return None;
    }
    let bin = dir.join("board");
    ok(
        Command::new("cc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o"])
            .arg(&bin)
            .arg(example("board.c"))
            .output()
            .unwrap(),
        "cc board.c",
    );
    Some(bin)
}

/// Everything the server can put in an inbox row reaches board.c as one
/// row: values with commas and quotes are unquoted, not split; a row
/// longer than its 512-byte buffer is not acted on but confirmed; a value
/// with a forged line is refused by the server. Each row is acted on once
/// and the inbox ends empty.
#[test]
fn board_c_acts_on_exactly_the_rows_it_was_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bin) = build_board(tmp.path()) else {
        return;
    };
    let s = TestServer::start();
    let tok = s.create_device("b2");
    let send = |form: String| {
        let r = s.admin_form("POST", "/v1/devices/b2/inbox", &form);
        assert_eq!(r.status, 201, "{form}: {}", r.body);
    };
    send(format!(
        "kind=command&sensor=S1&value={}",
        enc("x,command,L1,true")
    ));
    send(format!(
        "kind=command&sensor=S2&value={}",
        enc("say \"hi\", ok")
    ));
    send(format!("kind=message&value={}", "m".repeat(600)));
    send("kind=command&sensor=L1&value=false".into());
    let forged = "hi\n9999,command,2026-11-23T10:00:00Z,user:admin,L1,true";
    let r = s.admin_form(
        "POST",
        "/v1/devices/b2/inbox",
        &format!("kind=message&value={}", enc(forged)),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let out = ok(
        Command::new(&bin)
            .args(["127.0.0.1", &s.addr.port().to_string(), "b2", &tok])
            .output()
            .unwrap(),
        "board",
    );
    let acted: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("set ") || l.starts_with("skipped "))
        .collect();
    assert_eq!(
        acted,
        [
            "set S1=x,command,L1,true",
            "set S2=say \"hi\", ok",
            "skipped 3: longer than the buffer",
            "set L1=false",
        ],
        "{out}"
    );
    assert!(!out.contains("9999"), "{out}");
    let r = s.get_admin("/v1/devices/b2/inbox");
    assert_eq!(r.body.lines().count(), 1, "inbox emptied: {}", r.body);
}

#[test]
fn cron_sh_sends_with_each_client() {
    if !common::have("sh") {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("cron");
    let t = hour_ago();
    let mut sent = 0;
    for (i, client) in ["curl", "wget", "busybox"].iter().enumerate() {
        if !common::have(client) {
            continue;
        }
        let out = ok(
            Command::new("sh")
                .arg(example("cron.sh"))
                .args([format!("N1={i}.5"), format!("time={}", t + i as i64)])
                .env("OVERLORD", format!("http://{}", s.addr))
                .env("DEVICE", "cron")
                .env("TOKEN", &tok)
                .env("CLIENT", client)
                .output()
                .unwrap(),
            client,
        );
        assert_eq!(out, "ok,1,0\n", "{client}");
        sent += 1;
    }
    let r = s.get_admin("/v1/devices/cron/readings?sensors=N1");
    assert_eq!(r.body.lines().count(), 1 + sent, "{}", r.body);
    // A refusal is a failure exit with the error line.
    let o = Command::new("sh")
        .arg(example("cron.sh"))
        .arg("N1=x")
        .env("OVERLORD", format!("http://{}", s.addr))
        .env("DEVICE", "cron")
        .env("TOKEN", &tok)
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn offline_buffer_sh_spools_while_the_server_is_down() {
    if !common::have("sh") || !common::have("curl") {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("buf");
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool.csv");
    // A port nobody listens on: the server is "down".
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let t = hour_ago();
    let run = |addr: std::net::SocketAddr, now: i64, values: &[&str]| {
        Command::new("sh")
            .arg(example("offline_buffer.sh"))
            .args(values)
            .env("OVERLORD", format!("http://{addr}"))
            .env("DEVICE", "buf")
            .env("TOKEN", &tok)
            .env("SENSORS", "N1 I2")
            .env("SPOOL", &spool)
            .env("NOW", now.to_string())
            .env("CLIENT", "curl")
            .output()
            .unwrap()
    };
    for i in 0..3 {
        let o = run(down, t + i, &["20.5", &i.to_string()]);
        assert!(!o.status.success(), "down: must fail");
        assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("{} rows spooled", i + 1)));
    }
    assert_eq!(std::fs::read_to_string(&spool).unwrap().lines().count(), 4);
    // Back up: the backlog and the new row go in one CSV POST.
    let out = ok(run(s.addr, t + 3, &["21", ""]), "offline_buffer.sh");
    assert_eq!(out, "ok,7,0\n");
    assert!(!spool.exists(), "the spool is emptied");
    assert!(!tmp.path().join("spool.csv.sending").exists());
    let r = s.get_admin("/v1/devices/buf/readings?sensors=N1,I2");
    let rows: Vec<&str> = r
        .body
        .lines()
        .skip(1)
        .map(|l| l.split_once(',').unwrap().1)
        .collect();
    assert_eq!(rows, ["20.5,0", "20.5,1", "20.5,2", "21,"], "{}", r.body);
}

#[test]
fn follow_channel_py_long_polls_and_resumes() {
    if !common::have("python3") {
        return;
    }
    let s = TestServer::start();
    let tok = s.create_device("f1");
    for (path, form) in [
        ("/v1/channels", "name=room"),
        ("/v1/channels/room/members", "device=f1&sensor=N1"),
    ] {
        assert_eq!(s.admin_form("POST", path, form).status, 201);
    }
    let t = hour_ago();
    let send = |i: i64| {
        let r = s.get(&format!(
            "/v1/readings?device=f1&token={tok}&N1={i}&time={}",
            t + i
        ));
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("room.idx");
    let follow = |count: u32| {
        Command::new("python3")
            .arg(example("follow_channel.py"))
            .args(["--url", &format!("http://{}", s.addr), "--channel", "room"])
            .args(["--token", &s.admin, "--wait", "5"])
            .args(["--count", &count.to_string(), "--state"])
            .arg(&state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let values = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.rsplit(',').next().unwrap().to_string())
            .collect()
    };
    send(1);
    send(2);
    s.admin_until("/v1/channels/room/items", |b| b.lines().count() == 3);
    let out = ok(wait(follow(2)), "follow 1");
    assert_eq!(values(&out), ["1", "2"], "{out}");
    assert!(out.starts_with("1,"), "index first: {out}");
    // Resumes after index 2, and long-polls for what is not there yet.
    let child = follow(2);
    // Barrier: the client is waiting in its long-poll.
    let g = common::scrape_until(&s, |g| common::m(g, "overlord_long_polls_waiting") >= 1.0);
    assert_eq!(
        common::m(&g, "overlord_long_polls_waiting"),
        1.0,
        "never long-polled"
    );
    send(3);
    send(4);
    let out = ok(wait(child), "follow 2");
    assert_eq!(
        values(&out),
        ["3", "4"],
        "nothing missed, nothing twice: {out}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), "4");
}

/// Wait for a child at most 60 s.
fn wait(mut child: std::process::Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("timed out: {}", String::from_utf8_lossy(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_systemd_unit_names_what_exists() {
    let unit = std::fs::read_to_string(example("overlord.service")).unwrap();
    for key in [
        "ExecStart=",
        "OVERLORD_LISTEN=",
        "OVERLORD_DATA_FILE=",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(key), "{key}");
    }
    // Every OVERLORD_ variable it sets is a real configuration key.
    let vars: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(!vars.is_empty());
    overlord::config::Config::from_toml_and_env(overlord::config::DEFAULT_TOML, vars)
        .expect("the unit's environment is a valid configuration");
}
