//! A channel message that names a notification target: the member
//! devices' inbox rows and the webhook are queued in one transaction, so
//! both happen or neither does.

mod common;
mod webhook_receiver;

use common::{column, TestServer};
use webhook_receiver::{Answer, Receiver};

#[test]
fn a_channel_message_can_also_go_to_a_target() {
    let rx = Receiver::start(&[], Answer::Status(200));
    let s = TestServer::start_with(|c| {
        c.notify.allow_private_targets = true;
        c.limits.max_inbox = 1;
    });
    s.create_device("v1");
    let r = s.admin_form("POST", "/v1/channels", "name=valves");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.admin_form("POST", "/v1/channels/valves/members", "device=v1&sensor=L3");
    assert_eq!(r.status, 201, "{}", r.body);
    let url = common::enc(&rx.url("/c"));
    let r = s.admin_form("POST", "/v1/targets", &format!("name=log&url={url}"));
    assert_eq!(r.status, 201, "{}", r.body);
    let send = |to: &str| {
        s.admin_form(
            "POST",
            "/v1/channels/valves/messages",
            &format!("kind=command&sensor=L3&value=false&to_target={to}"),
        )
    };
    assert_eq!(send("nope").error_code(), "unknown_target");
    let r = send("log");
    assert_eq!((r.status, r.body.as_str()), (201, "ok,1\n"));
    let got = rx.until("the channel's webhook", |g| !g.is_empty());
    let j: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(j["type"], "command");
    assert_eq!(j["source"], "valves");
    assert_eq!(j["sensor"], "L3");
    assert_eq!(j["value"], "false");
    // The inbox (max_inbox = 1) is full now: the message is refused whole,
    // and no webhook is queued for it.
    let r = send("log");
    assert_eq!((r.status, r.error_code()), (409, "inbox_full"));
    let r = s.admin_form("POST", "/v1/targets/log/test", "");
    assert_eq!(r.status, 201, "{}", r.body);
    let test_id = r.body.lines().nth(1).unwrap().to_string();
    // The test notification is the next event: nothing came between.
    let got = rx.until("the test notification", |g| g.len() >= 2);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].event(), test_id);
    assert_eq!(got[0].event(), "evt-1");
    assert_eq!(test_id, "evt-2", "the refused message used no event");
    let h = s.admin_until("/v1/targets/log/deliveries", |b| b.lines().count() >= 3);
    assert_eq!(column(&h.body, "event"), ["evt-1", "evt-2"]);
}

#[test]
fn a_full_outbox_refuses_new_notifications_and_the_event_says_so() {
    let rx = Receiver::start(&[Answer::Hold], Answer::Status(200));
    let s = TestServer::start_with(|c| {
        c.notify.allow_private_targets = true;
        c.notify.timeout_secs = 60;
        c.notify.max_waiting = 2;
    });
    let tok = s.create_device("gh");
    let url = common::enc(&rx.url("/"));
    let r = s.admin_form("POST", "/v1/targets", &format!("name=slow&url={url}"));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.admin_form(
        "POST",
        "/v1/alerts",
        "name=hot&device=gh&sensor=N1&max=10&to_device=none&to_target=slow",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for _ in 0..2 {
        assert_eq!(
            s.admin_form("POST", "/v1/targets/slow/test", "").status,
            201
        );
    }
    rx.until("the first, held", |g| !g.is_empty());
    let r = s.admin_form("POST", "/v1/targets/slow/test", "");
    assert_eq!(
        (r.status, r.error_code()),
        (409, "target_full"),
        "{}",
        r.body
    );
    assert_eq!(column(&s.get_admin("/v1/targets").body, "waiting"), ["2"]);
    // An alert firing meanwhile is recorded, and says where it did not go.
    let t = common::hour_ago();
    let r = s.get(&format!(
        "/v1/readings?device=gh&token={tok}&N1=20&time={t}"
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = s.admin_until("/v1/alerts/hot/events", |b| b.lines().count() >= 2);
    assert_eq!(column(&ev.body, "delivery"), ["target_full:slow"]);
    // Once the receiver answers, the two waiting ones are delivered.
    rx.release();
    let h = s.admin_until("/v1/targets/slow/deliveries", |b| {
        b.matches(",delivered,").count() >= 2
    });
    assert_eq!(
        column(&h.body, "event")[1..],
        ["evt-1", "evt-2"],
        "{}",
        h.body
    );
    assert_eq!(column(&s.get_admin("/v1/targets").body, "waiting"), ["0"]);
}
