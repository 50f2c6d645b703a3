//! Test harness: a real server on 127.0.0.1:0 in its own runtime thread,
//! a temp data dir removed on drop, and a raw-bytes HTTP client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use overlord::app::OpenOptions;
use overlord::config::Config;

pub mod browser;
pub mod mqtt;
pub mod nodes;
pub mod pg;
pub mod process;

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The MQTT listener's address (`[mqtt] listen` is `127.0.0.1:0` in
    /// tests; `None` when a test turned it off).
    pub mqtt: Option<SocketAddr>,
    /// The administrator's API token (from the first start in this dir).
    pub admin: String,
    pub dir: PathBuf,
    /// The server's clock: `clock.advance(d)` lets time pass for presence
    /// and retention without sleeping.
    pub clock: overlord::clock::Clock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// xorshift64*: small, deterministic, no dependency; the same sequence
/// for a seed on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One of `from`.
    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// The store a test server with data file `data` used, opened again to
/// look inside it (the server stopped): the redb file, or with
/// `TEST_STORE=postgres` its PostgreSQL database.
pub fn open_store(data: &Path) -> overlord::store::Store {
    match pg::store_for(data) {
        Some(url) => overlord::store::Store::open_postgres(
            overlord::pg::Target::parse(&url).unwrap(),
            2,
            Duration::from_secs(30),
        )
        .expect("open the test database"),
        None => overlord::store::Store::open(data).expect("open the data file"),
    }
}

/// Default test config: small limits so the bounds are reachable.
pub fn config(dir: &Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".into(),
        data_file: dir.join("overlord.redb"),
        ..Config::default()
    };
    c.mqtt.listen = "127.0.0.1:0".into();
    c.limits.max_body_bytes = 1 << 20;
    c.limits.shutdown_grace_secs = 5;
    c
}

impl TestServer {
    /// Start on a fresh temp dir.
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// Start on a fresh temp dir with a tweaked config.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = config(tmp.path());
        tweak(&mut c);
        let mut s = Self::open(OpenOptions::new(c), None);
        s.dir = tmp.path().to_path_buf();
        s._tmp = Some(tmp);
        s
    }

    /// Start on a fresh temp dir with the data file behind the
    /// fault-injecting storage backend switched by `disk`.
    pub fn start_disk(
        disk: overlord::store::faults::DiskFaults,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = config(tmp.path());
        tweak(&mut c);
        let mut s = Self::open(
            OpenOptions {
                disk_faults: Some(disk),
                ..OpenOptions::new(c)
            },
            None,
        );
        s._tmp = Some(tmp);
        s
    }

    /// Start with `options` (what `app::open` takes: the config and any
    /// test seams); `admin` is the token from an earlier start. Every
    /// other constructor comes here.
    pub fn open(mut options: OpenOptions, admin: Option<String>) -> TestServer {
        let dir = options.config.data_file.parent().unwrap().to_path_buf();
        if options.config.store.kind == overlord::config::StoreKind::Redb {
            if let Some(url) = pg::store_for(&options.config.data_file) {
                options.config.store.kind = overlord::config::StoreKind::Postgres;
                options.config.store.postgres_url = url;
                options.config.store.timeout_secs = 30;
            }
        }
        let mqtt_listener = overlord::mqtt::bind(&options.config.mqtt).expect("mqtt port");
        let mqtt = mqtt_listener.as_ref().map(|l| l.local_addr().unwrap());
        let clock = options.clock.clone();
        let mut opened = overlord::app::open(options).expect("open");
        opened.mqtt.plain = mqtt_listener;
        let admin = opened.admin_token.clone().or(admin).expect("admin token");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                overlord::server::run(listener, opened, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server address");
        TestServer {
            addr,
            mqtt,
            admin,
            dir,
            clock,
            stop: Some(stop),
            thread: Some(thread),
            _tmp: None,
        }
    }

    /// Stop gracefully and keep the temp dir for a restart.
    pub fn stop(mut self) -> (tempfile::TempDir, String) {
        self.shutdown();
        (
            self._tmp.take().expect("owned temp dir"),
            self.admin.clone(),
        )
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Restart on a kept temp dir.
    pub fn restart(
        tmp: tempfile::TempDir,
        admin: String,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        Self::restart_at(tmp, admin, overlord::clock::Clock::system(), tweak)
    }

    /// Restart on a kept temp dir with `clock` (the stopped server's,
    /// perhaps moved forward while it was down).
    pub fn restart_at(
        tmp: tempfile::TempDir,
        admin: String,
        clock: overlord::clock::Clock,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut c = config(tmp.path());
        tweak(&mut c);
        let mut s = Self::open(
            OpenOptions {
                clock,
                ..OpenOptions::new(c)
            },
            Some(admin),
        );
        s._tmp = Some(tmp);
        s
    }

    /// Send raw bytes, read until the server closes, parse the reply.
    pub fn raw(&self, bytes: &[u8]) -> Reply {
        raw(self.addr, bytes)
    }

    /// `GET path` over HTTP/1.1 with `Connection: close`.
    pub fn get(&self, path: &str) -> Reply {
        self.raw(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
    }

    /// `GET path` as the administrator.
    pub fn get_admin(&self, path: &str) -> Reply {
        self.raw(
            format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                self.admin
            )
            .as_bytes(),
        )
    }

    /// `POST path` with a body and optional extra header lines.
    pub fn post(&self, path: &str, content_type: &str, body: &[u8], extra: &str) -> Reply {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.raw(&req)
    }

    /// Create a device as the administrator; returns its token.
    pub fn create_device(&self, id: &str) -> String {
        let r = self.post(
            "/v1/devices",
            "application/x-www-form-urlencoded",
            format!("id={id}").as_bytes(),
            &format!("Authorization: Bearer {}\r\n", self.admin),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let line = r.body.lines().nth(1).expect("id,token row").to_string();
        let (got_id, token) = line.split_once(',').unwrap();
        assert_eq!(got_id, id);
        token.to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A parsed reply.
#[derive(Debug)]
pub struct Reply {
    pub status_line: String,
    pub status: u16,
    /// Header lines exactly as sent (name case preserved).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// A header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `<code>` of an `error,<code>,<detail>` body.
    pub fn error_code(&self) -> &str {
        let mut it = self.body.splitn(3, ',');
        assert_eq!(
            it.next(),
            Some("error"),
            "not an error line: {:?}",
            self.body
        );
        it.next().unwrap_or("")
    }
}

/// Send raw bytes to `addr`, read to EOF, parse.
///
/// A server may answer before it has read the whole request (`413` on a
/// declared length over the limit) and close: the rest of our write then
/// fails (EPIPE/ECONNRESET) and the close may arrive as a reset after the
/// reply. Both are fine; the reply is what is checked.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Reply {
    use std::io::ErrorKind;
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if let Err(e) = s.write_all(bytes) {
        assert!(
            matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
            "write: {e}"
        );
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A signal (a test's child process exiting) interrupted the
            // read: nothing was lost, read again.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !buf.is_empty() => break,
            // A signal (a client program the test ran exiting) is no reply.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("read reply: {e}"),
        }
    }
    parse(&buf)
}

/// Parse one HTTP/1.x reply.
pub fn parse(buf: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let r = Reply {
        status_line,
        status,
        headers,
        body: body.to_string(),
    };
    // A 204 has no body and, by RFC 9110, no Content-Length.
    let len: usize = match r.header("Content-Length") {
        None if status == 204 => 0,
        l => l.expect("Content-Length on every reply").parse().unwrap(),
    };
    // Counted in bytes: a binary body (a backup) is not UTF-8.
    let raw_len = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |i| buf.len() - i - 4);
    assert_eq!(len, raw_len, "Content-Length matches the body");
    assert!(r.header("Transfer-Encoding").is_none(), "never chunked");
    r
}

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Unix seconds for "an hour ago", a safe past base for test readings.
pub fn hour_ago() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600
}

/// Format unix seconds as RFC 3339 UTC, as the server writes times.
pub fn rfc3339(secs: i64) -> String {
    overlord::codec::timefmt::format_time(secs * 1_000_000)
}

/// Send raw bytes and return the status code if the server answered with
/// a status line at all (it may also just close a broken connection).
pub fn raw_status(addr: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1).and_then(|c| c.parse().ok())
}

impl TestServer {
    /// `method path` as the administrator with a form body.
    pub fn admin_form(&self, method: &str, path: &str, form: &str) -> Reply {
        self.raw(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                self.admin,
                form.len()
            )
            .as_bytes(),
        )
    }

    /// Poll `path` as the administrator until `done(body)` or 20 s pass
    /// (a generous bound: the digest is asynchronous but quick).
    pub fn admin_until(&self, path: &str, done: impl Fn(&str) -> bool) -> Reply {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.get_admin(path);
            if done(&r.body) || std::time::Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An `Authorization: Basic` header line for `id:secret`.
pub fn basic(id: &str, secret: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{id}:{secret}");
    let mut out = String::new();
    for c in raw.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    format!("Authorization: Basic {out}\r\n")
}

/// Parse the first HTTP/1.x reply in `buf` (more may follow it, e.g. after
/// pipelined or smuggled requests): `Content-Length` is required, never
/// chunked, and the body is exactly that long.
pub fn parse_first(buf: &[u8]) -> Reply {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..end]).expect("UTF-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let mut r = Reply {
        status_line,
        status,
        headers,
        body: String::new(),
    };
    // A 204 has no body and, by RFC 9110, no Content-Length.
    let len: usize = match r.header("Content-Length") {
        None if status == 204 => 0,
        l => l.expect("Content-Length on every reply").parse().unwrap(),
    };
    assert!(r.header("Transfer-Encoding").is_none(), "never chunked");
    let rest = &buf[end + 4..];
    assert!(rest.len() >= len, "body shorter than Content-Length");
    r.body = String::from_utf8_lossy(&rest[..len]).into_owned();
    r
}

/// The token in a `...,token` reply's second line (`id,token`,
/// `user,token`).
pub fn token_of(body: &str) -> String {
    body.lines()
        .nth(1)
        .and_then(|l| l.split_once(','))
        .unwrap_or_else(|| panic!("no id,token row in {body:?}"))
        .1
        .to_string()
}

/// Whether `tool` is installed; in CI a missing tool is a failure, not a
/// skip.
pub fn have(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} must be installed in CI"
        );
        println!("note: {tool} is not installed; skipping what needs it");
    }
    found
}

/// Write `<data>.toml` beside `data`: a config naming that data file and
/// an ephemeral loopback port (with `TEST_STORE=postgres`, and the
/// database a test server on `data` uses). Returns its path.
pub fn config_file(data: &std::path::Path) -> PathBuf {
    let cfg = data.with_extension("toml");
    let store = match pg::store_for(data) {
        Some(url) => format!("[store]\nkind = \"postgres\"\npostgres_url = \"{url}\"\n"),
        None => String::new(),
    };
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_file = \"{}\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n{store}",
            data.display()
        ),
    )
    .unwrap();
    cfg
}

/// `overlord compact` on `data` (server stopped): the file's length
/// before and after, as it prints them.
pub fn cli_compact(data: &std::path::Path) -> (u64, u64) {
    let (ok, out, err) = cli(data, &["compact"], &[], None);
    assert!(ok, "{err}");
    assert!(out.starts_with("before,after\n"), "{out}");
    let sizes: Vec<u64> = out
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    (sizes[0], sizes[1])
}

/// Run the binary with a config naming `data`; `(ok, stdout, stderr)`.
pub fn cli(
    data: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> (bool, String, String) {
    use std::io::Write;
    let cfg = config_file(data);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_overlord"));
    cmd.arg("--config").arg(&cfg).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Send `bytes`, half-close, and read until the server closes; a reset
/// counts as the close. A failed write is fine (the server may answer a
/// broken head before reading it all): the reply is what counts. `Err` on
/// a read that times out (15 s) or fails otherwise.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::ErrorKind;
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(buf),
            Err(e) => return Err(e),
        }
    }
}

/// Metric samples by full name including labels.
pub fn scrape(s: &TestServer) -> BTreeMap<String, f64> {
    let r = s.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    r.body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

pub fn m(map: &BTreeMap<String, f64>, key: &str) -> f64 {
    *map.get(key)
        .unwrap_or_else(|| panic!("no metric {key} in {map:#?}"))
}

/// Poll `/metrics` until `done` holds (the digest and presence are
/// asynchronous); 20 s at most.
pub fn scrape_until(
    s: &TestServer,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = scrape(s);
        if done(&got) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Column `name` of every data row of a CSV body (no quoted fields).
pub fn column(body: &str, name: &str) -> Vec<String> {
    let mut lines = body.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let i = header
        .iter()
        .position(|h| *h == name)
        .unwrap_or_else(|| panic!("no column {name} in {body}"));
    lines
        .map(|l| l.split(',').nth(i).unwrap_or("").to_string())
        .collect()
}

/// `method path` with `Authorization: Bearer tok` and a form body.
pub fn as_user(s: &TestServer, tok: &str, method: &str, path: &str, form: &str) -> Reply {
    s.raw(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        )
        .as_bytes(),
    )
}

/// `POST /v1/login` with a name and a (form-encoded) password.
pub fn login(s: &TestServer, name: &str, password: &str) -> Reply {
    s.post(
        "/v1/login",
        "application/x-www-form-urlencoded",
        format!("name={name}&password={password}").as_bytes(),
        "",
    )
}
