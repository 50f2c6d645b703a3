//! A real HTTP receiver for webhook tests: it records every request and
//! answers from a plan (a status, a stall past the sender's timeout, or
//! holding the request until the test releases it).

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// This status at once.
    Status(u16),
    /// Nothing for this long, then close (past the sender's timeout).
    Stall(Duration),
    /// Nothing until [`Receiver::release`], then `503`.
    Hold,
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Got {
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub path: String,
    /// What it was answered.
    pub answer: Answer,
}

impl Got {
    pub fn event(&self) -> &str {
        self.headers
            .get("overlord-event-id")
            .map_or("", |s| s.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct State {
    got: Mutex<Vec<Got>>,
    plan: Mutex<VecDeque<Answer>>,
    default: Mutex<Answer>,
    released: (Mutex<bool>, Condvar),
    stop: AtomicBool,
}

/// The receiver; stops on drop.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Receiver {
    /// Listen on loopback, answering `plan` in order, then `default`.
    pub fn start(plan: &[Answer], default: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            got: Mutex::new(Vec::new()),
            plan: Mutex::new(plan.iter().copied().collect()),
            default: Mutex::new(default),
            released: (Mutex::new(false), Condvar::new()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Receiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn got(&self) -> Vec<Got> {
        self.state.got.lock().unwrap().clone()
    }

    /// Answer every later request (after the plan) this way.
    pub fn set_default(&self, a: Answer) {
        *self.state.default.lock().unwrap() = a;
    }

    /// Let every held request go (answered `503`).
    pub fn release(&self) {
        let (m, c) = &self.state.released;
        *m.lock().unwrap() = true;
        c.notify_all();
    }

    /// Wait (bounded: 30 s) until `done(requests)`; returns them.
    pub fn until(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.got();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver: timed out waiting for {what}; got {:#?}",
                got.iter()
                    .map(|g| (g.event().to_string(), g.answer))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Event ids answered `2xx`, in the order they were received.
    pub fn delivered(&self) -> Vec<String> {
        self.got()
            .iter()
            .filter(|g| matches!(g.answer, Answer::Status(s) if (200..300).contains(&s)))
            .map(|g| g.event().to_string())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        self.release();
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut conn: TcpStream, st: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(len);
    let answer = st
        .plan
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(*st.default.lock().unwrap());
    st.got.lock().unwrap().push(Got {
        headers,
        body,
        path,
        answer,
    });
    let status = match answer {
        Answer::Status(s) => s,
        Answer::Stall(d) => {
            // Not a wait for the server: a receiver that is slow on
            // purpose (the sender's timeout is under test).
            std::thread::sleep(d);
            return;
        }
        Answer::Hold => {
            let (m, c) = &st.released;
            let mut r = m.lock().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !*r && Instant::now() < deadline {
                r = c.wait_timeout(r, Duration::from_millis(100)).unwrap().0;
            }
            503
        }
    };
    let text = format!("status {status}");
    let _ = conn.write_all(
        format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
        .as_bytes(),
    );
}
