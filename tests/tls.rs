//! HTTPS (`[tls]`) as users reach it: a certificate made by `overlord tls
//! self-signed`, then curl with `--cacert`, Python's `ssl`, `openssl
//! s_client` (TLS 1.0/1.1 refused, 1.2/1.3 accepted), a rustls client;
//! plain HTTP and HTTPS mixed up on each other's ports; the session
//! cookie and HSTS on HTTPS only; HTTPS alone with `listen = ""`.

mod common;
mod tls_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::have;
use tls_support::{self_signed, Conn, Server};

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn self_signed_writes_an_owner_only_key_and_prints_the_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tls");
    let (cert, fp) = self_signed(&out);
    let key = out.join("key.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");
    }
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("PRIVATE KEY"));
    // The fingerprint printed is the certificate's, as openssl sees it.
    if have("openssl") {
        let o = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-text", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains(&format!("Fingerprint={fp}")),
            "{fp} in {text}"
        );
        assert!(
            text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"),
            "{text}"
        );
    }
    // It never overwrites a key devices may have pinned.
    let again = Command::new(env!("CARGO_BIN_EXE_overlord"))
        .args(["tls", "self-signed", "--host", "x.lan", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    // A host that is neither a name nor an address is refused.
    let bad = Command::new(env!("CARGO_BIN_EXE_overlord"))
        .args(["tls", "self-signed", "--host", "a b", "--out"])
        .arg(tmp.path().join("bad"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(!tmp.path().join("bad").join("key.pem").exists());
}

/// `curl --cacert` stores a reading and reads it back over HTTPS, while
/// plain HTTP keeps serving on its port; the certificate verifies by name
/// and by address.
#[test]
fn curl_with_cacert_works_over_https_beside_plain_http() {
    if !have("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let s = Server::start(tmp.path(), "127.0.0.1:0", "", &[]);
    let port = s.https.port();
    let curl = |args: &[&str]| tls_support::curl(&cert, args);
    let tok = tls_support::device_and_reading(&cert, port, &s.admin);
    let back = curl(&[&format!(
        "https://localhost:{port}/v1/devices/th1/readings?token={tok}&sensors=N1"
    )]);
    assert!(back.contains("21.5"), "{back}");
    // Plain HTTP on its own port is the same server.
    let plain = common::raw(
        s.plain.unwrap(),
        format!("GET /v1/devices/th1/readings?token={tok}&sensors=N1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(plain.body.contains("21.5"), "{}", plain.body);
    // Without the certificate, curl refuses the server (exit 60).
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(format!("https://localhost:{port}/healthz"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(60),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Python's standard `ssl` module, verifying the certificate and the
/// host name, and refused when it insists on TLS 1.1.
#[test]
fn python_ssl_verifies_and_old_versions_are_refused() {
    if !have("python3") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let s = Server::start(tmp.path(), "127.0.0.1:0", "", &[]);
    let script = r#"
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
        print(s.version(), reply.split(b"\r\n")[0].decode(), reply.split(b"\r\n\r\n")[1].decode().strip())
old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
old.load_verify_locations(cafile)
old.minimum_version = ssl.TLSVersion.TLSv1_1
old.maximum_version = ssl.TLSVersion.TLSv1_1
try:
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        with old.wrap_socket(raw, server_hostname="localhost") as s:
            print("TLS 1.1 accepted", s.version())
except (ssl.SSLError, ConnectionError) as e:
    print("TLS 1.1 refused:", getattr(e, "reason", e))
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(s.https.port().to_string())
        .arg(&cert)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("TLSv1.3 HTTP/1.1 200 OK ok"), "{out}");
    // Refused by the server (its alert), not by the client's own policy.
    assert!(
        out.contains("TLS 1.1 refused: SSLV3_ALERT_HANDSHAKE_FAILURE"),
        "{out}"
    );
    assert!(s
        .log_until("TLS: handshake failed")
        .contains("TLS: handshake failed"));
}

/// `openssl s_client`: TLS 1.0 and 1.1 get no session, 1.2 and 1.3 do
/// and verify against the certificate.
#[test]
fn openssl_s_client_sees_only_tls_1_2_and_1_3() {
    if !have("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let s = Server::start(tmp.path(), "127.0.0.1:0", "", &[]);
    let connect = s.https.to_string();
    for (flag, accepted) in [
        ("-tls1", false),
        ("-tls1_1", false),
        ("-tls1_2", true),
        ("-tls1_3", true),
    ] {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &connect,
                "-servername",
                "localhost",
                flag,
            ])
            .arg("-CAfile")
            .arg(&cert)
            .arg("-cipher")
            .arg("ALL:@SECLEVEL=0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Closing stdin ends s_client once the handshake is done.
        drop(child.stdin.take());
        let o = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        if accepted {
            assert!(o.status.success(), "{flag}: {out}");
            assert!(out.contains("Verify return code: 0 (ok)"), "{flag}: {out}");
        } else {
            assert!(!o.status.success(), "{flag} must be refused: {out}");
            assert!(out.contains("Cipher is (NONE)"), "{flag}: {out}");
            // By the server's alert, not by the client's own policy.
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("alert handshake failure"), "{flag}: {err}");
        }
    }
    let log = s.log_until("SignatureAlgorithmsExtensionRequired");
    assert!(log.contains("TLS: handshake failed"), "{log}");
}

/// Plain HTTP sent to the HTTPS port gets a plain `400 https_required`
/// and a close; a TLS ClientHello sent to the plain port gets a close
/// (no bytes, no hang); each leaves a log line.
#[test]
fn plain_and_tls_on_each_others_port_close_cleanly_with_a_log_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let s = Server::start(tmp.path(), "127.0.0.1:0", "", &[]);
    let r = common::raw(s.https, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_code(), "https_required");
    assert!(s
        .log_until("plain HTTP sent to the HTTPS port")
        .contains("plain HTTP sent to the HTTPS port"));

    // A real TLS client against the plain port: the handshake fails
    // promptly (read timeout 15 s: a hang would fail the test).
    let config = tls_support::client(&cert);
    let err = Conn::open(s.plain.unwrap(), &config)
        .err()
        .expect("no TLS on the plain port");
    assert_ne!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
    assert_ne!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    // Raw: a ClientHello-looking record gets no reply at all, and a FIN.
    let mut raw = TcpStream::connect(s.plain.unwrap()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    raw.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0, 0, 1, 0])
        .unwrap();
    let mut got = Vec::new();
    raw.read_to_end(&mut got)
        .expect("closed, not reset or hung");
    assert!(got.is_empty(), "{got:?}");
    assert!(s
        .log_until("TLS sent to the plain HTTP port")
        .contains("TLS sent to the plain HTTP port"));
    // Garbage on the HTTPS port: closed, logged.
    let mut raw = TcpStream::connect(s.https).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    raw.write_all(b"\x00\x01\x02garbage").unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    assert!(s
        .log_until("not a TLS handshake")
        .contains("not a TLS handshake"));
    // Both ports still serve.
    let mut c = Conn::open(s.https, &config).unwrap();
    assert_eq!(c.get("/healthz", "").unwrap().body, "ok\n");
    assert_eq!(
        common::raw(s.plain.unwrap(), b"GET /healthz HTTP/1.0\r\n\r\n").status,
        200
    );
}

/// Log in from the dashboard over HTTPS: the session cookie is `Secure`;
/// over plain HTTP (same server, `secure_cookie` off) it is not. HSTS is
/// on HTTPS replies when `[tls] hsts`, never on plain ones.
#[test]
fn session_cookie_is_secure_and_hsts_sent_on_https_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let s = Server::start(tmp.path(), "127.0.0.1:0", "hsts = true\n", &[]);
    let plain = s.plain.unwrap();
    let form = "name=ann&role=user&password=correct+horse";
    let r = common::raw(
        plain,
        format!(
            "POST /v1/users HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: {FORM}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            s.admin,
            form.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let login = "name=ann&password=correct+horse";
    let req = format!(
        "POST /v1/login HTTP/1.1\r\nHost: localhost\r\nX-Overlord-CSRF: \r\nContent-Type: {FORM}\r\nContent-Length: {}\r\n\r\n{login}",
        login.len()
    );
    let mut c = Conn::open(s.https, &tls_support::client(&cert)).unwrap();
    let r = c.request(req.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let cookie = r.header("Set-Cookie").expect("a session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert_eq!(
        r.header("Strict-Transport-Security"),
        Some("max-age=31536000")
    );
    // The session works over the same HTTPS connection.
    let session = cookie.split(';').next().unwrap();
    let me = c
        .get("/v1/session", &format!("Cookie: {session}\r\n"))
        .unwrap();
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body.contains("ann,user"), "{}", me.body);
    assert!(me.header("Strict-Transport-Security").is_some());
    // Logging out over HTTPS clears it with a Secure cookie too.
    let out = c
        .request(
            format!(
                "POST /v1/logout HTTP/1.1\r\nHost: localhost\r\nCookie: {session}\r\nX-Overlord-CSRF: {}\r\nContent-Length: 0\r\n\r\n",
                r.header("Overlord-CSRF").unwrap()
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.header("Set-Cookie").unwrap().contains("; Secure"));
    // Plain HTTP: no Secure (a browser would drop it), no HSTS.
    let r = common::raw(
        plain,
        req.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.header("Set-Cookie").unwrap().contains("Secure"));
    assert!(r.header("Strict-Transport-Security").is_none());
}

/// HSTS is off by default; `listen = ""` with the files from the
/// environment serves HTTPS alone.
#[test]
fn https_only_from_the_environment_and_no_hsts_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, fp) = self_signed(tmp.path());
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let cfg_cert = tmp.path().join("cert.pem");
    let cfg_key = tmp.path().join("key.pem");
    // The config names files that do not exist; the environment wins.
    std::fs::rename(&cfg_cert, other.join("cert.pem")).unwrap();
    std::fs::rename(&cfg_key, other.join("key.pem")).unwrap();
    let env_cert = other.join("cert.pem").display().to_string();
    let env_key = other.join("key.pem").display().to_string();
    let s = Server::start(
        tmp.path(),
        "",
        "",
        &[
            ("OVERLORD_TLS__CERT_FILE", &env_cert),
            ("OVERLORD_TLS__KEY_FILE", &env_key),
        ],
    );
    assert!(s.plain.is_none(), "plain HTTP is off");
    let mut c = Conn::open(s.https, &tls_support::client(&other.join("cert.pem"))).unwrap();
    assert_eq!(c.fingerprint(), fp);
    let r = c.get("/healthz", "").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("Strict-Transport-Security").is_none());
}

/// A certificate that does not load stops the start with a message that
/// names the file, before any data file is made; so does a key without
/// its certificate.
#[test]
fn a_bad_certificate_stops_the_start_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    self_signed(dir);
    std::fs::write(dir.join("cert.pem"), "not a certificate\n").unwrap();
    let cfg = dir.join("o.toml");
    for tls in [
        format!(
            "cert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"",
            dir.display()
        ),
        format!("key_file = \"{}/key.pem\"", dir.display()),
    ] {
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_file = \"{}/o.redb\"\n[tls]\nlisten = \"127.0.0.1:0\"\n{tls}\n",
                dir.display()
            ),
        )
        .unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_overlord"))
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(err.contains("cert"), "{err}");
        assert!(!err.contains("PRIVATE KEY"), "no key material: {err}");
        assert!(!dir.join("o.redb").exists());
    }
}

/// Without `[tls]`, `SIGHUP` (what `systemctl reload` sends) is logged and
/// the server keeps serving; it used to stop it.
#[test]
fn sighup_without_tls_does_not_stop_the_server() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::config_file(&tmp.path().join("o.redb"));
    let log = tmp.path().join("stderr.log");
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_overlord"))
            .arg("--config")
            .arg(&cfg)
            .env("OVERLORD_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let out = child.0.stdout.take().unwrap();
    let addr: std::net::SocketAddr = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(|a| a.parse().unwrap()))
        .expect("listening");
    let pid = libc::pid_t::try_from(child.0.id()).unwrap();
    // SAFETY: a signal to our own live child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("SIGHUP: nothing to reload")
    {
        assert!(std::time::Instant::now() < deadline, "no log line");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        common::raw(addr, b"GET /healthz HTTP/1.0\r\n\r\n").status,
        200
    );
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
}

/// A client that comes back resumes its session (TLS 1.3 and 1.2),
/// skipping the certificate and its signature: what a board on a battery
/// saves on every reconnection.
#[test]
fn sessions_resume_with_tickets() {
    if !have("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(tmp.path());
    let s = Server::start(tmp.path(), "127.0.0.1:0", "", &[]);
    let connect = s.https.to_string();
    for flag in ["-tls1_3", "-tls1_2"] {
        let sess = tmp.path().join(format!("session{flag}"));
        let run = |io: &str| {
            let mut child = Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &connect,
                    "-servername",
                    "localhost",
                    flag,
                ])
                .arg("-CAfile")
                .arg(&cert)
                .arg(io)
                .arg(&sess)
                // Wait for the reply and the server's close after stdin ends.
                .arg("-ign_eof")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // A request, so a TLS 1.3 client reads the tickets sent after
            // the handshake before it closes.
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .unwrap();
            let o = child.wait_with_output().unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let first = run("-sess_out");
        assert!(first.contains("New, TLSv1."), "{flag}: {first}");
        assert!(first.contains("\r\n\r\nok"), "{flag}: {first}");
        let again = run("-sess_in");
        assert!(again.contains("Reused, TLSv1."), "{flag}: {again}");
        assert!(again.contains("\r\n\r\nok"), "{flag}: {again}");
    }
}
