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
