//! The dashboard tells the truth (issue 19), in real headless Chromium
//! (`web/e2e-truth.mjs`; see `tests/common/browser.rs` for what it needs).
//!
//! Regressions, each of which the dashboard once got wrong:
//! - after a restart the API said a gateway was offline and the devices
//!   behind it unreachable, and the tree drew those devices green: the
//!   presence poll replayed the feed's history over the device list, and
//!   the page did not know that a device behind an offline gateway is
//!   unreachable;
//! - zoomed in on Amsterdam the map drew Europe, Africa and Asia as sea
//!   (their outline is stored one world-width to the west and that copy
//!   was culled);
//! - a boolean sensor was drawn as a zig-zag on the temperature axis;
//! - the list of sent commands was empty after a reload;
//! - on a phone the page was the desktop page shrunk.
//! - channels (their descriptions, member labels and items) were not shown
//!   at all.

mod common;

use common::browser::{expect_pass, require_browser, user};
use common::TestServer;

const FORM: &str = "application/x-www-form-urlencoded";

/// Create a device as `bearer` with the form `fields`; its token.
fn device(s: &TestServer, bearer: &str, fields: &str) -> String {
    let r = s.post("/v1/devices", FORM, fields.as_bytes(), bearer);
    assert_eq!(r.status, 201, "{}", r.body);
    common::token_of(&r.body)
}

/// One reading now, as the device.
fn report(s: &TestServer, id: &str, token: &str) {
    let r = s.get(&format!("/v1/readings?device={id}&token={token}&N1=20"));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn tree_and_map_colours_match_the_api_after_a_restart() {
    if !require_browser() {
        return;
    }
    let s = TestServer::start_with(|c| c.limits.device_requests_per_sec = 0.0);
    let bearer = format!("Authorization: Bearer {}\r\n", user(&s));
    // A gateway that is offline 1 s after its last word, two devices
    // behind it, one on its own, and one that reports later. Far apart,
    // so each has its own dot on the map.
    let gw = device(
        &s,
        &bearer,
        "id=gw1&gateway=true&offline_after=1&latitude=52.37&longitude=4.89",
    );
    let gh1 = device(
        &s,
        &bearer,
        "id=gh1&parent=gw1&latitude=40.4&longitude=-3.7",
    );
    let gh2 = device(
        &s,
        &bearer,
        "id=gh2&parent=gw1&latitude=41.9&longitude=12.5",
    );
    let solo = device(&s, &bearer, "id=solo&latitude=-1.29&longitude=36.82");
    let late = device(&s, &bearer, "id=late&latitude=28.61&longitude=77.21");
    for (id, token) in [("gw1", &gw), ("gh1", &gh1), ("gh2", &gh2), ("solo", &solo)] {
        report(&s, id, token);
    }
    // Down for two seconds (on the server's clock: no sleeping).
    let clock = s.clock.clone();
    let (tmp, admin) = s.stop();
    clock.advance(std::time::Duration::from_secs(2));
    let s = TestServer::restart_at(tmp, admin, clock, |c| {
        c.limits.device_requests_per_sec = 0.0;
    });
    // The gateway, silent for over its 1 s, is reported offline once the
    // server has loaded the stored states (a bounded poll).
    let r = s.admin_until("/v1/devices", |b| {
        b.lines()
            .any(|l| l.starts_with("gw1,") && l.contains(",offline,"))
    });
    let states = common::column(&r.body, "state");
    let ids = common::column(&r.body, "id");
    let state_of = |id: &str| states[ids.iter().position(|i| i == id).unwrap()].clone();
    assert_eq!(state_of("gw1"), "offline", "{}", r.body);
    assert_eq!(state_of("gh1"), "unreachable", "{}", r.body);
    assert_eq!(state_of("solo"), "online", "{}", r.body);
    // From now on the gateway stays up once it is back.
    let r = s.admin_form("POST", "/v1/devices/gw1", "offline_after=300");
    assert_eq!(r.status, 200, "{}", r.body);
    expect_pass(
        &s,
        "e2e-truth.mjs",
        &[
            ("OVERLORD_SCENARIO", "restart".into()),
            ("OVERLORD_GATEWAY", "gw1".into()),
            ("OVERLORD_CHILDREN", "gh1,gh2".into()),
            ("OVERLORD_LATE", "late".into()),
            ("OVERLORD_GATEWAY_TOKEN", gw),
            ("OVERLORD_LATE_TOKEN", late),
        ],
    );
}

/// Inland places on every continent with land (Amsterdam is the one the
/// issue saw as sea).
const PLACES: &[(&str, f64, f64)] = &[
    ("amsterdam", 52.37, 4.89),
    ("nairobi", -1.29, 36.82),
    ("delhi", 28.61, 77.21),
    ("yakutsk", 62.03, 129.73),
    ("brasilia", -15.79, -47.88),
    ("alice-springs", -23.70, 133.88),
    ("denver", 39.74, -104.99),
];

#[test]
fn the_map_draws_land_on_every_continent_at_every_zoom() {
    if !require_browser() {
        return;
    }
    let s = TestServer::start();
    let bearer = format!("Authorization: Bearer {}\r\n", user(&s));
    for (id, lat, lon) in PLACES {
        device(
            &s,
            &bearer,
            &format!("id={id}&latitude={lat}&longitude={lon}"),
        );
    }
    let places: Vec<String> = PLACES
        .iter()
        .map(|(id, lat, lon)| format!("{id}:{lat}:{lon}"))
        .collect();
    expect_pass(
        &s,
        "e2e-truth.mjs",
        &[
            ("OVERLORD_SCENARIO", "map".into()),
            ("OVERLORD_PLACES", places.join(",")),
        ],
    );
}

#[test]
fn a_chart_gives_a_boolean_and_numbers_of_other_scales_their_own_axes() {
    if !require_browser() {
        return;
    }
    let s = TestServer::start();
    let bearer = format!("Authorization: Bearer {}\r\n", user(&s));
    let token = device(&s, &bearer, "id=gh1");
    // An hour, one reading a minute: a temperature (18..25), a pressure
    // (~1013) and a pump switched every 10 minutes.
    let t0 = common::hour_ago();
    let mut csv = String::from("time,N1,N3,L2\n");
    for i in 0..60 {
        let x = f64::from(i) / 6.0;
        let pump = u8::from(i / 10 % 2 == 1);
        csv.push_str(&format!(
            "{},{:.2},{:.1},{pump}\n",
            t0 + i64::from(i) * 60,
            21.5 + 3.5 * x.sin(),
            1013.0 + 8.0 * x.cos()
        ));
    }
    let r = s.post(
        &format!("/v1/readings?device=gh1&token={token}"),
        "text/csv",
        csv.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    expect_pass(
        &s,
        "e2e-truth.mjs",
        &[
            ("OVERLORD_SCENARIO", "chart".into()),
            ("OVERLORD_DEVICE", "gh1".into()),
        ],
    );
}

#[test]
fn sent_commands_are_listed_after_a_reload() {
    if !require_browser() {
        return;
    }
    let s = TestServer::start();
    let bearer = format!("Authorization: Bearer {}\r\n", user(&s));
    let gw = device(&s, &bearer, "id=gw1&gateway=true");
    device(&s, &bearer, "id=gh1&parent=gw1");
    expect_pass(
        &s,
        "e2e-truth.mjs",
        &[
            ("OVERLORD_SCENARIO", "commands".into()),
            ("OVERLORD_DEVICE", "gh1".into()),
            ("OVERLORD_GATEWAY", "gw1".into()),
            ("OVERLORD_GATEWAY_TOKEN", gw),
        ],
    );
}

#[test]
fn a_phone_gets_one_column_without_sideways_scrolling() {
    if !require_browser() {
        return;
    }
    let s = TestServer::start();
    let bearer = format!("Authorization: Bearer {}\r\n", user(&s));
    let token = device(
        &s,
        &bearer,
        "id=greenhouse-with-a-long-name&name=Greenhouse+by+the+south+wall&latitude=52.37&longitude=4.89&tags=greenhouse,tomatoes",
    );
    let t0 = common::hour_ago();
    let mut csv = String::from("time,N1\n");
    for i in 0..60 {
        csv.push_str(&format!("{},{}\n", t0 + i64::from(i) * 60, 20 + i % 5));
    }
    let r = s.post(
        &format!("/v1/readings?device=greenhouse-with-a-long-name&token={token}"),
        "text/csv",
        csv.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // An alert, so the alerts table has a wide row.
    let r = s.post(
        "/v1/alerts",
        FORM,
        b"name=too-hot-in-the-greenhouse&device=greenhouse-with-a-long-name&sensor=N1&max=30&message=Open+the+windows+of+the+greenhouse+now",
        &bearer,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    expect_pass(
        &s,
        "e2e-truth.mjs",
        &[
            ("OVERLORD_SCENARIO", "phone".into()),
            ("OVERLORD_DEVICE", "greenhouse-with-a-long-name".into()),
        ],
    );
}

#[test]
fn the_channels_panel_shows_a_description_a_label_and_the_latest_item() {
    if !require_browser() {
        return;
    }
    let s = TestServer::start();
    let bearer = format!("Authorization: Bearer {}\r\n", user(&s));
    let token = device(&s, &bearer, "id=gh3");
    // Markup in the texts: the page must show it as text, not build it.
    let created = |path: &str, form: &str| {
        let r = s.post(path, FORM, form.as_bytes(), &bearer);
        assert_eq!(r.status, 201, "{path}: {}", r.body);
    };
    created(
        "/v1/channels",
        "name=greenhouse&description=Greenhouse+3%2C+north+wall+%3Cb%3Ebold%3C%2Fb%3E",
    );
    created(
        "/v1/channels/greenhouse/members",
        "device=gh3&sensor=N1&label=North+%3Ci%3Ewall%3C%2Fi%3E",
    );
    // One reading (N1=20), in the channel once digested.
    report(&s, "gh3", &token);
    let r = s.admin_until("/v1/channels/greenhouse/items", |b| {
        b.lines().any(|l| l.ends_with(",gh3,N1,20"))
    });
    assert!(r.body.contains(",gh3,N1,20"), "{}", r.body);
    expect_pass(
        &s,
        "e2e-truth.mjs",
        &[
            ("OVERLORD_SCENARIO", "channels".into()),
            ("OVERLORD_CHANNEL", "greenhouse".into()),
            (
                "OVERLORD_DESCRIPTION",
                "Greenhouse 3, north wall <b>bold</b>".into(),
            ),
            ("OVERLORD_LABEL", "North <i>wall</i>".into()),
            ("OVERLORD_VALUE", "20".into()),
        ],
    );
}
