//! Shared by the HTTPS tests (`tls.rs`, `tls_reload.rs`): a spawned
//! `overlord serve` with `[tls]` on, certificates made by `overlord tls
//! self-signed`, and a small rustls client that speaks raw HTTP/1.1 over
//! one connection (keep-alive) and tells which certificate it was shown.

#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// `curl -sS --max-time 20 --cacert CERT ARGS`, which must succeed; its
/// output.
pub fn curl(cert: &Path, args: &[&str]) -> String {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(cert)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Over HTTPS on `port`, trusting only `cert`: create device `th1` as the
/// administrator (by the name `localhost`), then send it a reading `N1 =
/// 21.5` (by the address `127.0.0.1`); the device's token.
pub fn device_and_reading(cert: &Path, port: u16, admin: &str) -> String {
    let auth = format!("Authorization: Bearer {admin}");
    let made = curl(
        cert,
        &[
            "-H",
            &auth,
            "-d",
            "id=th1",
            &format!("https://localhost:{port}/v1/devices"),
        ],
    );
    let tok = made
        .lines()
        .nth(1)
        .and_then(|l| l.split_once(','))
        .unwrap_or_else(|| panic!("no id,token row in {made:?}"))
        .1
        .to_string();
    let ok = curl(
        cert,
        &[&format!(
            "https://127.0.0.1:{port}/v1/readings?device=th1&token={tok}&N1=21.5"
        )],
    );
    assert!(ok.starts_with("ok,1,"), "{ok}");
    tok
}

/// Run `overlord tls self-signed --host localhost --host 127.0.0.1 --out
/// DIR`; the certificate's path and the fingerprint it printed.
pub fn self_signed(dir: &Path) -> (PathBuf, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_overlord"))
        .args([
            "tls",
            "self-signed",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--out",
        ])
        .arg(dir)
        .output()
        .expect("run overlord tls self-signed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fp = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sha256 fingerprint: "))
        .unwrap_or_else(|| panic!("no fingerprint in {stdout}"))
        .to_string();
    (dir.join("cert.pem"), fp)
}

/// A spawned `overlord serve`, killed on drop.
pub struct Server {
    pub child: Child,
    /// Plain HTTP, unless `listen = ""`.
    pub plain: Option<SocketAddr>,
    pub https: SocketAddr,
    /// MQTT, plain and over TLS (both on free ports unless `env` turns
    /// them off).
    pub mqtt: Option<SocketAddr>,
    pub mqtts: Option<SocketAddr>,
    pub admin: String,
    /// Its stderr (the log, at `info`).
    pub log: PathBuf,
    pub dir: PathBuf,
}

impl Server {
    /// Start with a config of `listen`, the data file in `dir`, the
    /// certificate in `dir/cert.pem` and `dir/key.pem`, and `extra`
    /// appended inside `[tls]`; `env` on top.
    pub fn start(dir: &Path, listen: &str, extra: &str, env: &[(&str, &str)]) -> Server {
        let cfg = dir.join("overlord.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = \"{listen}\"\ndata_file = \"{}\"\n[limits]\ndevice_requests_per_sec = 0.0\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nlisten = \"127.0.0.1:0\"\n{extra}",
                dir.join("o.redb").display(),
                dir.join("cert.pem").display(),
                dir.join("key.pem").display(),
            ),
        )
        .unwrap();
        let log = dir.join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_overlord"));
        cmd.arg("--config")
            .arg(&cfg)
            .env("OVERLORD_LOG", "info")
            // A free MQTT port: 1883 is not the test's to take.
            .env("OVERLORD_MQTT__LISTEN", "127.0.0.1:0")
            .env("OVERLORD_MQTT__TLS_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut s = Server {
            child: cmd.spawn().expect("start overlord"),
            plain: None,
            https: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt: None,
            mqtts: None,
            admin: String::new(),
            log,
            dir: dir.to_path_buf(),
        };
        // The lines come in this order: HTTP, HTTPS, MQTT, MQTT over TLS.
        let off = |k: &str| env.iter().any(|(key, v)| *key == k && v.is_empty());
        let want_mqtt = !off("OVERLORD_MQTT__LISTEN");
        let want_mqtts = !off("OVERLORD_MQTT__TLS_LISTEN");
        let mut https = false;
        let out = s.child.stdout.take().unwrap();
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(t) = line.strip_prefix("admin token: ") {
                s.admin = t.to_string();
            } else if let Some(a) = line.strip_prefix("mqtt listening on mqtts://") {
                s.mqtts = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("mqtt listening on ") {
                s.mqtt = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("listening on https://") {
                s.https = a.parse().unwrap();
                https = true;
            } else if let Some(a) = line.strip_prefix("listening on ") {
                s.plain = Some(a.parse().unwrap());
            }
            if https && s.mqtt.is_some() == want_mqtt && s.mqtts.is_some() == want_mqtts {
                return s;
            }
        }
        panic!(
            "the server exited before listening on HTTPS: {}",
            s.log_text()
        );
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll the log until it has a line containing `what` (10 s at most).
    pub fn log_until(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log_text();
            if log.contains(what) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send `SIGHUP`.
    pub fn hangup(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: sending a signal to our own child, which is alive (we
        // reap it only on drop).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rustls client configuration trusting only the certificate in `ca`.
pub fn client(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A rustls client that accepts any certificate and remembers none: for
/// checking which certificate a server presents after a reload.
pub fn any_cert_client() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AnyCert(rustls::crypto::WebPkiSupportedAlgorithms);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.supported_schemes()
        }
    }
    let provider = rustls::crypto::ring::default_provider();
    let verifier = AnyCert(provider.signature_verification_algorithms);
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    )
}

/// One HTTPS connection (`localhost`), kept alive across requests.
pub struct Conn {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    /// Connect and finish the handshake.
    pub fn open(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn =
            rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Conn {
            tls,
            buf: Vec::new(),
        })
    }

    /// The SHA-256 fingerprint of the certificate the server showed,
    /// `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        let cert = &self.tls.conn.peer_certificates().expect("a certificate")[0];
        use sha2::Digest;
        sha2::Sha256::digest(cert.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.conn.protocol_version()
    }

    /// Send one request (raw bytes) and read its reply (`Content-Length`
    /// framed), keeping the connection.
    pub fn request(&mut self, req: &[u8]) -> std::io::Result<super::common::Reply> {
        self.tls.write_all(req)?;
        self.tls.flush()?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if self.buf.len() >= end + 4 + len {
                    let reply: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return Ok(super::common::parse(&reply));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.tls.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// `GET path` with `extra` header lines, keep-alive.
    pub fn get(&mut self, path: &str, extra: &str) -> std::io::Result<super::common::Reply> {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n").as_bytes())
    }
}
