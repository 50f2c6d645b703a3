//! The server's log, as an operator reads it: `[log] format = "json"`
//! gives one JSON object per line; the request log names the caller and
//! the remote address; `[log] requests` sets its level apart from the
//! rest; no token, password or session ever reaches it.

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{basic, enc};

/// The binary serving with `log` as its `[log]` section and its stderr
/// in a file; killed on drop.
struct Server {
    child: std::process::Child,
    addr: SocketAddr,
    admin: String,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, log: &str) -> Server {
    let cfg = dir.join("overlord.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_file = \"{}\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[log]\n{log}\n",
            dir.join("o.redb").display()
        ),
    )
    .unwrap();
    let path = dir.join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_overlord"))
        .arg("--config")
        .arg(&cfg)
        .env_remove("OVERLORD_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&path).unwrap())
        .spawn()
        .expect("start overlord");
    let out = child.stdout.take().unwrap();
    // Killed and waited for on drop, whatever happens below.
    let mut s = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin: String::new(),
        log: path,
    };
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(t) = line.strip_prefix("admin token: ") {
            s.admin = t.to_string();
        }
        if let Some(a) = line.strip_prefix("listening on ") {
            s.addr = a.parse().unwrap();
            return s;
        }
    }
    panic!("the server exited before listening");
}

impl Server {
    fn req(&self, method: &str, path: &str, headers: &str, form: &str) -> common::Reply {
        common::raw(
            self.addr,
            format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            )
            .as_bytes(),
        )
    }

    fn admin(&self, method: &str, path: &str, form: &str) -> common::Reply {
        let bearer = format!("Authorization: Bearer {}\r\n", self.admin);
        self.req(method, path, &bearer, form)
    }

    /// The log once `done` holds for it (bounded: 20 s).
    fn log_until(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if done(&text) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Device, user and session requests, each authenticated another way.
/// Returns every secret used.
fn traffic(s: &Server) -> Vec<String> {
    let r = s.admin("POST", "/v1/devices", "id=gh3");
    assert_eq!(r.status, 201, "{}", r.body);
    let tok = common::token_of(&r.body);
    let r = s.req(
        "GET",
        &format!("/v1/readings?device=gh3&token={tok}&N1=21.5"),
        "",
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.req("POST", "/v1/readings", &basic("gh3", &tok), "N1=21.6");
    assert_eq!(r.status, 200, "{}", r.body);
    let password = "correct horse battery";
    let r = s.admin(
        "POST",
        "/v1/users/admin/password",
        &format!("password={}", enc(password)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.req(
        "POST",
        "/v1/login",
        "",
        &format!("name=admin&password={}", enc(password)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let session = common::token_of(&r.body);
    let r = s.req(
        "GET",
        "/v1/session",
        &format!("Cookie: overlord_session={session}\r\n"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A wrong token is logged as a 401 without a caller.
    let r = s.req(
        "GET",
        "/v1/readings?device=gh3&token=0123456789abcdef&N1=1",
        "",
        "",
    );
    assert_eq!(r.status, 401);
    vec![
        tok,
        s.admin.clone(),
        password.into(),
        enc(password),
        session,
        "0123456789abcdef".into(),
    ]
}

#[test]
fn a_json_log_names_callers_and_holds_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), "format = \"json\"");
    let secrets = traffic(&s);
    // The wrong token's 401 is the last request: its line is the barrier.
    let text = s.log_until(|t| t.contains("\"status\":401"));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let requests: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "overlord::request")
        .collect();
    let caller_of = |path: &str, status: u64| -> Vec<String> {
        requests
            .iter()
            .filter(|l| l["fields"]["path"] == path && l["fields"]["status"] == status)
            .map(|l| l["fields"]["caller"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        caller_of("/v1/readings", 200),
        ["device:gh3", "device:gh3"],
        "{text}"
    );
    assert_eq!(caller_of("/v1/devices", 201), ["user:admin"], "{text}");
    assert_eq!(caller_of("/v1/session", 200), ["user:admin"], "{text}");
    assert_eq!(caller_of("/v1/readings", 401), ["-"], "{text}");
    for l in &requests {
        assert_eq!(l["fields"]["remote"], "127.0.0.1", "{l}");
        assert_eq!(l["level"], "INFO", "{l}");
    }
    // The audit log is JSON too.
    assert!(
        lines.iter().any(|l| l["target"] == "overlord::audit"),
        "{text}"
    );
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{secret:?} reached the log:\n{text}"
        );
    }
}

#[test]
fn the_request_log_has_its_own_level() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), "format = \"text\"\nrequests = \"warn\"");
    let secrets = traffic(&s);
    // The audit lines (info) are still written; every request line is
    // written before its reply, so none can come later.
    let text = s.log_until(|t| t.contains("overlord::audit: login"));
    assert!(text.contains("overlord::audit: login"), "{text}");
    assert!(text.contains("device created"), "{text}");
    assert!(text.contains("INFO"), "{text}");
    // ...but no request line at all.
    assert!(!text.contains("overlord::request"), "{text}");
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{secret:?} reached the log:\n{text}"
        );
    }
    // A bad value stops the start with a message.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("bad.toml"),
        "listen = \"127.0.0.1:0\"\n[log]\nformat = \"xml\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_overlord"))
        .arg("--config")
        .arg(tmp.path().join("bad.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad configuration") && err.contains("xml"),
        "{err}"
    );
}
