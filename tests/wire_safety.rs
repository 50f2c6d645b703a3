//! Promises to clients that a hostile or careless other client must not
//! break (issue 14): nothing sent can forge a line in what a device reads;
//! spreadsheet-safe exports; every device operation as `GET` and as a form
//! `POST`, with credentials never mixed; `/metrics` device gauges that
//! agree with `GET /v1/devices`.

mod common;

use std::collections::BTreeMap;

use common::{m, scrape_until, TestServer};

/// Column `name` of every data row of a CSV body (no quoted fields).
fn column(body: &str, name: &str) -> Vec<String> {
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

/// States shown by `GET /v1/devices`, counted.
fn api_states(s: &TestServer) -> BTreeMap<String, usize> {
    let r = s.get_admin("/v1/devices");
    assert_eq!(r.status, 200, "{}", r.body);
    let mut out = BTreeMap::new();
    for st in column(&r.body, "state") {
        *out.entry(st).or_insert(0) += 1;
    }
    out
}

// ---------------------------------------------------------------------
// Item 21: /metrics device gauges = the states of GET /v1/devices.
// ---------------------------------------------------------------------

#[test]
fn device_gauges_equal_the_states_the_api_shows() {
    let s = TestServer::start_with(|c| c.limits.device_requests_per_sec = 0.0);
    let admin = |form: &str| {
        let r = s.admin_form("POST", "/v1/devices", form);
        assert_eq!(r.status, 201, "{form}: {}", r.body);
        common::token_of(&r.body)
    };
    // A gateway that falls silent after 1 s, two devices behind it that
    // would stay online for 300 s on their own; one device that stays
    // online, one that goes offline, one never heard from.
    let gw = admin("id=gw&gateway=true&offline_after=1");
    let c1 = admin("id=c1&parent=gw");
    let c2 = admin("id=c2&parent=gw");
    let on = admin("id=on");
    let off = admin("id=off&offline_after=1");
    admin("id=never");
    for (id, tok) in [
        ("c1", &c1),
        ("c2", &c2),
        ("gw", &gw),
        ("on", &on),
        ("off", &off),
    ] {
        let r = s.get(&format!("/v1/readings?device={id}&token={tok}"));
        assert_eq!(r.status, 200, "heartbeat {id}: {}", r.body);
    }
    let want: BTreeMap<String, usize> = [
        ("offline", 2),     // gw, off
        ("online", 1),      // on
        ("unknown", 1),     // never
        ("unreachable", 2), // c1, c2
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Bounded wait for the 1 s deadlines to pass and be swept.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while api_states(&s) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "states never settled: {:?}",
            api_states(&s)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let gauge = |g: &BTreeMap<String, f64>, st: &str| m(g, &format!("overlord_devices_{st}"));
    let got = scrape_until(&s, |g| {
        want.iter()
            .all(|(st, n)| g.get(&format!("overlord_devices_{st}")) == Some(&(*n as f64)))
    });
    for (st, n) in &want {
        assert_eq!(gauge(&got, st), *n as f64, "overlord_devices_{st}");
    }
    // Every device in exactly one gauge, and the API agrees right now.
    let sum: f64 = ["online", "offline", "unreachable", "unknown"]
        .iter()
        .map(|st| gauge(&got, st))
        .sum();
    assert_eq!(sum, 6.0);
    assert_eq!(api_states(&s), want);
}
