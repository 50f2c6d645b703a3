//! Nodes on PostgreSQL as processes, under load: the `[store]` section,
//! HTTP/1.0 requests as a board sends them, and a load whose every
//! acknowledged reading is checked afterwards (`tests/pg_node.rs`,
//! `tests/pg_cluster.rs`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::process::{assert_all_stored_once, Proc};

/// The `[store]` section serving from `url`.
pub fn store_section(url: &str) -> String {
    format!("[store]\nkind = \"postgres\"\npostgres_url = \"{url}\"\ntimeout_secs = 5\n")
}

/// One request on a new connection; all the answer.
pub fn http(addr: SocketAddr, req: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// An administrator's form request to `addr` that must succeed; its body.
pub fn admin_at(addr: SocketAddr, admin: &str, method: &str, path: &str, form: &str) -> String {
    let r = http(
        addr,
        &format!(
            "{method} {path} HTTP/1.0\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.0 2"), "{method} {path}: {r}");
    r.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// [`admin_at`] the node `p`.
pub fn admin_req(p: &Proc, admin: &str, method: &str, path: &str, form: &str) -> String {
    admin_at(p.addr, admin, method, path, form)
}

/// Create device `id`; its token.
pub fn create_device(p: &Proc, admin: &str, id: &str) -> String {
    let body = admin_req(p, admin, "POST", "/v1/devices", &format!("id={id}"));
    super::token_of(&body)
}

/// Run `overlord --config CFG ARGS` to its end (bounded); status and
/// stdout and stderr.
pub fn run(cfg: &Path, args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_overlord"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env("OVERLORD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("overlord {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the load saw.
#[derive(Default)]
pub struct Seen {
    /// Reading number -> value, for every `200`.
    pub acked: Mutex<BTreeMap<i64, i64>>,
    /// `503` answers with `Retry-After`.
    pub busy: AtomicU64,
    /// Connections that broke before a whole answer (a node killed).
    pub broken: AtomicU64,
    /// Anything else (neither `200` nor `503` with `Retry-After`).
    pub other: Mutex<Vec<String>>,
}

impl Seen {
    /// Wait (at most 30 s) until `n` readings were acknowledged; `what`
    /// says what did not happen otherwise.
    pub fn until_acked(&self, n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A `503` with `Retry-After`: from the node, or from a follower while no
/// node serves (which answers before reading the request, so in its own
/// HTTP version).
pub fn busy(r: &str) -> bool {
    (r.starts_with("HTTP/1.0 503") || r.starts_with("HTTP/1.1 503"))
        && r.contains("\r\nRetry-After: ")
}

/// After a broken connection: a load thread stops (its node was killed),
/// or, going through a node that carries on (a follower whose serving
/// node was killed), goes on after a pause.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnBroken {
    /// The thread ends.
    Stop,
    /// The thread pauses 20 ms and sends the next reading.
    GoOn,
}

/// Readings from `THREADS` clients, one HTTP/1.0 connection each, device
/// `crash`, reading `k` with value `7k` at `base + k`, until `stop` (or
/// 3,000 requests a thread). Thread `i` sends to `addrs[i % len]`. A
/// board's way: each request stands alone; a reading whose answer did
/// not come is not sent again (its number is not reused).
pub fn load(
    addrs: &[SocketAddr],
    token: String,
    base: i64,
    first: i64,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    on_broken: OnBroken,
) -> Vec<std::thread::JoinHandle<()>> {
    const THREADS: i64 = 4;
    (0..THREADS)
        .map(|th| {
            let (token, stop, seen) = (token.clone(), stop.clone(), seen.clone());
            let addr = addrs[th as usize % addrs.len()];
            std::thread::spawn(move || {
                let mut k = first + th;
                for _ in 0..3_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let req = format!(
                        "GET /v1/readings?device=crash&token={token}&I1={}&time={} HTTP/1.0\r\n\r\n",
                        k * 7,
                        base + k
                    );
                    // No answer at all (a node killed mid-answer, or
                    // before it) reads as an empty one.
                    let r = http(addr, &req).unwrap_or_default();
                    if r.starts_with("HTTP/1.0 200") && r.contains("\r\n\r\nok,1,") {
                        seen.acked.lock().unwrap().insert(k, k * 7);
                    } else if busy(&r) {
                        seen.busy.fetch_add(1, Ordering::Relaxed);
                        // A board waits before it tries again.
                        std::thread::sleep(Duration::from_millis(20));
                    } else if r.is_empty() {
                        seen.broken.fetch_add(1, Ordering::Relaxed);
                        if on_broken == OnBroken::Stop {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    } else {
                        seen.other.lock().unwrap().push(r);
                    }
                    k += THREADS;
                }
            })
        })
        .collect()
}

/// A load from the start of a test to its end: device `crash`, its
/// readings a day ago.
pub struct UnderLoad {
    pub token: String,
    pub base: i64,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl UnderLoad {
    /// Create device `crash` on `p` and load the node.
    pub fn start(p: &Proc, admin: &str) -> UnderLoad {
        let token = create_device(p, admin, "crash");
        UnderLoad::on(&[p.addr], token, OnBroken::Stop)
    }

    /// Load `addrs` with device `crash` (token `token`).
    pub fn on(addrs: &[SocketAddr], token: String, on_broken: OnBroken) -> UnderLoad {
        let base = super::hour_ago() - 86_400;
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = load(
            addrs,
            token.clone(),
            base,
            0,
            stop.clone(),
            seen.clone(),
            on_broken,
        );
        UnderLoad {
            token,
            base,
            seen,
            stop,
            threads,
        }
    }

    /// Stop the load; every answer was a `200` or a `503` with
    /// `Retry-After`, and every acknowledged reading is stored once (read
    /// through `p`). What the load saw, for more checks.
    pub fn finish(self, p: &Proc, admin: &str) -> Arc<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let other = self.seen.other.lock().unwrap().clone();
        assert!(other.is_empty(), "{other:?}");
        let acked = self.seen.acked.lock().unwrap().clone();
        assert_all_stored_once(p, admin, self.base, &acked);
        self.seen
    }
}

/// Wait (bounded) until a reading is acknowledged again through `p`: the
/// database takes writes.
pub fn until_writes_succeed(p: &Proc, token: &str, t: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http(
            p.addr,
            &format!("GET /v1/readings?device=crash&token={token}&I2=1&time={t} HTTP/1.0\r\n\r\n"),
        )
        .unwrap_or_default();
        if r.starts_with("HTTP/1.0 200") {
            return;
        }
        assert!(
            r.is_empty() || busy(&r),
            "while the database comes back: {r}"
        );
        assert!(
            Instant::now() < deadline,
            "writes did not resume within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
