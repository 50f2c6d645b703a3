//! E-mail targets against a tiny SMTP sink written here (a few lines of
//! SMTP over a TcpListener): an alert's firing arrives as a mail, a
//! refused `DATA` is retried with the same Message-ID, and the history
//! tells both.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{column, hour_ago, TestServer};

/// The sink: answers each message's end of `DATA` from `plan`, then 250;
/// keeps every message it was given.
struct Sink {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    fn start(plan: &[&'static str]) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(Mutex::new(plan.iter().copied().collect::<VecDeque<_>>()));
        let m = mails.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let (m, plan) = (m.clone(), plan.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut w = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    let _ = w.write_all(b"220 sink ESMTP\r\n");
                    let mut line = String::new();
                    while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        let reply: String = match verb.as_str() {
                            "EHLO" | "HELO" => "250-sink\r\n250 8BITMIME\r\n".into(),
                            "DATA" => {
                                let _ = w.write_all(b"354 go on\r\n");
                                let mut mail = String::new();
                                let mut l = String::new();
                                while r.read_line(&mut l).is_ok_and(|n| n > 0) {
                                    if l == ".\r\n" {
                                        break;
                                    }
                                    mail.push_str(&l);
                                    l.clear();
                                }
                                m.lock().unwrap().push(mail);
                                let answer = plan.lock().unwrap().pop_front().unwrap_or("250 ok");
                                format!("{answer}\r\n")
                            }
                            "QUIT" => {
                                let _ = w.write_all(b"221 bye\r\n");
                                return;
                            }
                            _ => "250 ok\r\n".into(),
                        };
                        let _ = w.write_all(reply.as_bytes());
                        line.clear();
                    }
                });
            }
        });
        Sink { addr, mails }
    }

    fn until(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.mails.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "sink: {} of {n} mails: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn header<'a>(mail: &'a str, name: &str) -> &'a str {
    mail.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} in {mail}"))
}

#[test]
fn an_alert_reaches_an_email_target_and_a_refused_mail_is_retried() {
    let sink = Sink::start(&["451 4.3.0 try again later"]);
    let s = TestServer::start_with(|c| {
        c.notify.retry_min_ms = 50;
        c.notify.retry_max_secs = 1;
        c.notify.timeout_secs = 5;
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = sink.addr.port();
        c.smtp.security = "none".into();
        c.smtp.from = "overlord@example.com".into();
    });
    let tok = s.create_device("gh");
    for (body, code) in [
        ("name=m&kind=email&address=not-an-address", "bad_value"),
        ("name=m&kind=email", "missing_field"),
        (
            "name=m&kind=email&address=a%40b.c&url=http%3A%2F%2Fx%2F",
            "bad_parameter",
        ),
        (
            "name=m&kind=email&address=a%40b.c&secret=k",
            "bad_parameter",
        ),
    ] {
        let r = s.admin_form("POST", "/v1/targets", body);
        assert_eq!(
            (r.status, r.error_code()),
            (400, code),
            "{body}: {}",
            r.body
        );
    }
    let r = s.admin_form(
        "POST",
        "/v1/targets",
        "name=mail&kind=email&address=ann%40example.com",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let list = s.get_admin("/v1/targets");
    assert_eq!(column(&list.body, "kind"), ["email"]);
    assert_eq!(column(&list.body, "to"), ["ann@example.com"]);
    let r = s.admin_form(
        "POST",
        "/v1/alerts",
        "name=hot&device=gh&sensor=N1&max=10&to_device=none&to_target=mail",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let t = hour_ago();
    let r = s.get(&format!(
        "/v1/readings?device=gh&token={tok}&N1=31.5&time={t}"
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let mails = sink.until(2);
    assert_eq!(mails.len(), 2, "refused once, then accepted");
    let id = header(&mails[0], "Message-ID");
    assert!(id.starts_with("<evt-1."), "{id}");
    assert_eq!(
        header(&mails[1], "Message-ID"),
        id,
        "a retry is the same mail"
    );
    for m in &mails {
        assert_eq!(header(m, "To"), "ann@example.com");
        assert_eq!(header(m, "From"), "overlord@example.com");
        assert!(
            header(m, "Subject").starts_with("[Overlord] alert hot: hot (31.5 > 10)"),
            "{m}"
        );
        assert!(m.contains("Event: evt-1\r\n"), "{m}");
        assert!(m.contains("Device: gh\r\n"), "{m}");
    }
    let h = s.admin_until("/v1/targets/mail/deliveries", |b| b.contains(",delivered,"));
    assert_eq!(
        column(&h.body, "outcome"),
        ["failed", "delivered"],
        "{}",
        h.body
    );
    assert_eq!(column(&h.body, "status"), ["451", "250"], "{}", h.body);
    assert!(h.body.contains("try again later"), "{}", h.body);
    let ev = s.get_admin("/v1/alerts/hot/events");
    assert_eq!(column(&ev.body, "delivery"), ["target:mail:evt-1"]);
}
