//! MQTT helpers: the real clients (mosquitto_pub/sub, paho-mqtt through
//! python3) and hand-made packets for hostile input.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// mosquitto_pub and mosquitto_sub are installed (in CI they must be).
pub fn have_mosquitto() -> bool {
    super::have("mosquitto_pub") && super::have("mosquitto_sub")
}

/// python3 with paho-mqtt is installed (in CI it must be).
pub fn have_paho() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with paho-mqtt must be installed in CI"
        );
        println!("note: paho-mqtt is not installed; skipping what needs it");
    }
    ok
}

/// What a client program did.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `mosquitto_pub` to the server at `addr` as `user`/`pass`, with `args`
/// (`-t`, `-m`, `-q`, `-V`, ...); bounded to 20 s.
pub fn mpub(addr: SocketAddr, user: &str, pass: &str, args: &[&str]) -> Ran {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "mosquitto_pub", "-h", "127.0.0.1", "-p"])
        .arg(addr.port().to_string())
        .args(["-u", user, "-P", pass, "-i", "t-pub"])
        .args(args);
    let o = cmd.output().expect("mosquitto_pub");
    Ran {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A running client whose output lines are read as they come.
pub struct Lines {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Lines {
    /// Start `cmd` with stdout piped (stderr joins it).
    pub fn spawn(mut cmd: Command) -> Lines {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::piped())
            .spawn()
            .expect("client");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {l}"));
            }
        });
        Lines { child, rx }
    }

    /// The next line within `wait`.
    pub fn next(&self, wait: Duration) -> Option<String> {
        self.rx.recv_timeout(wait).ok()
    }

    /// Lines until one contains `needle` (returned), within `wait`; panics
    /// with what was seen otherwise.
    pub fn until(&self, needle: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(l) => seen.push(l),
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} within {wait:?}; saw {seen:#?}");
    }

    /// Write a line to the client's stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_sub -d -v` (debug lines show the SUBACK, the barrier that
/// the subscription is live; message lines are `topic payload`).
pub fn msub(addr: SocketAddr, user: &str, pass: &str, args: &[&str]) -> Lines {
    // Line-buffered: its debug lines (the SUBACK) are the barrier.
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p"])
        .arg(addr.port().to_string())
        .args(["-u", user, "-P", pass, "-d", "-v"])
        .args(args);
    Lines::spawn(cmd)
}

/// Run a paho-mqtt script with `python3 -u -c` and `args`.
pub fn paho(script: &str, args: &[String]) -> Lines {
    let mut cmd = Command::new("python3");
    cmd.arg("-u").arg("-c").arg(script).args(args);
    Lines::spawn(cmd)
}

/// MQTT's variable byte integer.
pub fn remaining(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A CONNECT of protocol `level` (4 or 5) with a login and keep-alive,
/// and a client id of its own (`raw-N`).
pub fn connect_packet(level: u8, user: &str, pass: &str, keep_alive: u16) -> Vec<u8> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    connect_as(&format!("raw-{n}"), level, user, pass, keep_alive)
}

/// A CONNECT with the client id `client`.
pub fn connect_as(client: &str, level: u8, user: &str, pass: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(level);
    body.push(0b1100_0010); // username, password, clean session
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    string(client.as_bytes(), &mut body);
    string(user.as_bytes(), &mut body);
    string(pass.as_bytes(), &mut body);
    let mut p = vec![0x10];
    remaining(body.len(), &mut p);
    p.extend(body);
    p
}

/// A PUBLISH (QoS 0 or 1) for protocol `level`.
pub fn publish_packet(level: u8, topic: &str, payload: &[u8], qos: u8, pkid: u16) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic.as_bytes(), &mut body);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    let mut p = vec![0x30 | (qos << 1)];
    remaining(body.len(), &mut p);
    p.extend(body);
    p
}

/// Read one packet: `(first byte, body)`, or `None` on close, error or
/// `wait` passing.
pub fn read_packet(s: &mut TcpStream, wait: Duration) -> Option<(u8, Vec<u8>)> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).ok()?;
    let mut len = 0usize;
    for i in 0..4 {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).ok()?;
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((first[0], body))
}

/// Connect, send a CONNECT, and return the stream and its CONNACK.
pub fn raw_connect(
    addr: SocketAddr,
    level: u8,
    user: &str,
    pass: &str,
    keep_alive: u16,
) -> (TcpStream, Option<(u8, Vec<u8>)>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&connect_packet(level, user, pass, keep_alive))
        .unwrap();
    let ack = read_packet(&mut s, Duration::from_secs(10));
    (s, ack)
}

/// Whether the server closed `s` (EOF or reset) within `wait`, reading
/// and dropping anything it still sends; packets read are returned.
pub fn closed_within(s: &mut TcpStream, wait: Duration) -> (bool, Vec<u8>) {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(_) => return (true, got),
        }
    }
    (false, got)
}
