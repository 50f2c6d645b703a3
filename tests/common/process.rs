//! The real binary as a process: `overlord --config` on free loopback
//! ports, for the tests that kill it (`SIGKILL`) or signal it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// A running `overlord` process; dropping it kills and reaps it.
pub struct Proc {
    /// The process.
    pub child: std::process::Child,
    /// Where it serves HTTP.
    pub addr: SocketAddr,
    /// Where it serves MQTT.
    pub mqtt: SocketAddr,
    /// Where it serves HTTPS, when `[tls]` is on.
    pub https: Option<SocketAddr>,
    /// The administrator's token, when this start created the data file.
    pub admin: Option<String>,
}

impl Proc {
    /// Start on `dir/o.redb` with HTTP and MQTT on free loopback ports, no
    /// per-device request limit, and `extra` appended to the config file
    /// (more sections); returns once it listens. Panics if it exits first.
    pub fn start(dir: &Path, extra: &str) -> Proc {
        Proc::start_with(dir, extra, &[])
    }

    /// [`Proc::start`] with environment variables `env` set too.
    pub fn start_with(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Proc {
        let cfg = dir.join("overlord.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_file = \"{}\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[limits]\ndevice_requests_per_sec = 0.0\n{extra}",
                dir.join("o.redb").display()
            ),
        )
        .unwrap();
        // `PROC_STDERR=<log filter>` (e.g. `info`) shows the processes'
        // logs, to see what a failing test's nodes did.
        let shown = std::env::var("PROC_STDERR").ok();
        let child = Command::new(env!("CARGO_BIN_EXE_overlord"))
            .arg("--config")
            .arg(&cfg)
            .env("OVERLORD_LOG", shown.as_deref().unwrap_or("warn"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(match shown {
                Some(_) => Stdio::inherit(),
                None => Stdio::null(),
            })
            .spawn()
            .expect("start overlord");
        // From here on, Drop kills and reaps the process on any failure.
        let unset = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut p = Proc {
            child,
            addr: unset,
            mqtt: unset,
            https: None,
            admin: None,
        };
        let out = p.child.stdout.take().expect("piped stdout");
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(t) = line.strip_prefix("admin token: ") {
                p.admin = Some(t.to_string());
            } else if let Some(a) = line.strip_prefix("mqtt listening on ") {
                p.mqtt = a.parse().expect("mqtt address");
            } else if let Some(a) = line.strip_prefix("listening on https://") {
                p.https = Some(a.parse().expect("https address"));
            } else if let Some(a) = line.strip_prefix("listening on ") {
                p.addr = a.parse().expect("address");
            }
            if p.addr != unset && p.mqtt != unset {
                return p;
            }
        }
        panic!("the server exited before listening");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every acknowledged reading of device `crash`'s sensor `I1` stored
/// exactly once, with its value: `acked` maps reading `k` (at `base + k`
/// seconds) to the value a `200` acknowledged. The crash tests' check.
pub fn assert_all_stored_once(
    p: &Proc,
    admin: &str,
    base: i64,
    acked: &std::collections::BTreeMap<i64, i64>,
) {
    let r = super::raw(
        p.addr,
        format!(
            "GET /v1/devices/crash/readings?sensors=I1&limit=1000000 HTTP/1.0\r\nAuthorization: Bearer {admin}\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut stored: std::collections::BTreeMap<String, i64> = Default::default();
    for line in r.body.lines().skip(1) {
        let (t, v) = line.split_once(',').unwrap();
        let prev = stored.insert(t.to_string(), v.parse().unwrap());
        assert!(prev.is_none(), "reading at {t} stored twice");
    }
    for (k, v) in acked {
        let t = super::rfc3339(base + k);
        assert_eq!(
            stored.get(&t),
            Some(v),
            "acknowledged reading {k} at {t} lost"
        );
    }
}
