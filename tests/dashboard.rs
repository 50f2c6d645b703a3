//! The dashboard end to end in real headless Chromium (`web/e2e.mjs`,
//! playwright-core): log in, see the tree (and a device come online in it
//! without a reload), open the map, draw a chart of
//! seeded readings, send a command that a simulated device acknowledges,
//! log out. Screenshots go to `target/dashboard/`.
//!
//! Needs `/usr/bin/chromium` and `npm ci` in `web/`; without them the test
//! prints why and passes, unless `REQUIRE_BROWSER=1` or `CI` is set
//! (`.ci/run` installs both), where it fails (`common::browser`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::browser::{out_dir, require_browser, run_node, user};
use common::{hour_ago, TestServer};

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn log_in_tree_map_chart_command_log_out() {
    if !require_browser() {
        return;
    }
    let s = TestServer::start_with(|c| {
        c.limits.device_requests_per_sec = 0.0;
    });
    let ann = user(&s);
    let bearer = format!("Authorization: Bearer {ann}\r\n");
    let r = s.post(
        "/v1/devices",
        FORM,
        b"id=gw1&name=Gateway+1&gateway=true&latitude=52.37&longitude=4.89",
        &bearer,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.post(
        "/v1/devices",
        FORM,
        b"id=gh1&name=Greenhouse+1&parent=gw1&latitude=-33.9&longitude=18.4&tags=greenhouse",
        &bearer,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token = common::token_of(&r.body);
    // A device not heard from yet (the page sees it come online).
    let r = s.post(
        "/v1/devices",
        FORM,
        b"id=gh2&name=Greenhouse+2&latitude=40.4&longitude=-3.7",
        &bearer,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token2 = common::token_of(&r.body);
    // An hour of readings, one a minute: a sine wave.
    let t0 = hour_ago();
    let mut csv = String::from("time,N1\n");
    for i in 0..60 {
        let v = 20.0 + 5.0 * (f64::from(i) / 6.0).sin();
        csv.push_str(&format!("{},{v:.2}\n", t0 + i64::from(i) * 60));
    }
    let r = s.post(
        &format!("/v1/readings?device=gh1&token={token}"),
        "text/csv",
        csv.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Its sensor has a name and a unit (the tree and the legend show them).
    let r = s.post(
        "/v1/devices/gh1/sensors/N1",
        FORM,
        "label=Air+temperature&unit=%C2%B0C".as_bytes(),
        &bearer,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The gateway checks in too, so both are online.
    let gw_token = common::token_of(&s.admin_form("POST", "/v1/devices/gw1/token", "").body);
    let r = s.get(&format!("/v1/readings?device=gw1&token={gw_token}"));
    assert_eq!(r.status, 200, "{}", r.body);

    // The simulated gateway board: gh1 is behind gw1, so gh1's rows wait in
    // gw1's inbox with a `device` column. It polls and acknowledges what it
    // finds, as a board would, and notes the command for gh1.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicBool::new(false));
    let addr = s.addr;
    let device = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let token = gw_token.clone();
        std::thread::spawn(move || {
            let mut first_seen: Option<std::time::Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                let r = common::raw(
                    addr,
                    format!("GET /v1/inbox?device=gw1&token={token} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
                );
                let mut last = None;
                if r.body.lines().count() > 1 && first_seen.is_none() {
                    first_seen = Some(std::time::Instant::now());
                }
                // A slow board: it acts 2 s after a row arrives, so the page
                // must show the row queued before it shows it acknowledged.
                // (Its sleeps are the board's pace, not waits for the server.)
                if first_seen.is_none_or(|t| t.elapsed() < Duration::from_secs(2)) {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                first_seen = None;
                for line in r.body.lines().skip(1) {
                    // seq,kind,time,from,sensor,value,device
                    let f: Vec<&str> = line.split(',').collect();
                    if f.len() == 7
                        && f[1] == "command"
                        && f[4] == "L1"
                        && f[5] == "true"
                        && f[6] == "gh1"
                    {
                        acked.store(true, Ordering::Relaxed);
                    }
                    last = f[0].parse::<u64>().ok().max(last);
                }
                if let Some(seq) = last {
                    let r = common::raw(
                        addr,
                        format!("GET /v1/inbox/ack?device=gw1&token={token}&upto={seq} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
                    );
                    assert_eq!(r.status, 200, "{}", r.body);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let out = run_node(
        &s,
        "e2e.mjs",
        &[
            ("OVERLORD_DEVICE", "gh1".into()),
            ("OVERLORD_GATEWAY", "gw1".into()),
            ("OVERLORD_DEVICE2", "gh2".into()),
            ("OVERLORD_DEVICE2_TOKEN", token2),
        ],
    );
    stop.store(true, Ordering::Relaxed);
    device.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed (screenshots in {}):\n{stdout}\n{stderr}",
        out_dir().display()
    );
    assert!(
        acked.load(Ordering::Relaxed),
        "the gateway received the command for gh1 (and acknowledged it)"
    );
    assert!(stdout.contains("ok - the simulated device acknowledged the command"));
    for shot in [
        "1-tree.png",
        "2-map.png",
        "3-chart.png",
        "4-command.png",
        "5-logged-out.png",
    ] {
        let meta = std::fs::metadata(out_dir().join(shot)).expect(shot);
        assert!(meta.len() > 1000, "{shot} is a real picture");
    }
}

/// P7: tree and map of 20,000 devices. A measurement, not a check of the
/// clock: `cargo test --release --test dashboard -- --ignored --nocapture`
/// prints the numbers recorded in BENCHMARKS.md.
#[test]
#[ignore]
fn p7_tree_and_map_of_20000_devices() {
    if !require_browser() {
        return;
    }
    const N: usize = 20_000;
    let s = TestServer::start();
    let ann = user(&s);
    let bearer = format!("Authorization: Bearer {ann}\r\n");
    // 200 gateways with 99 devices each, spread over the land masses'
    // latitudes (deterministic pseudo-random positions).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rng = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut rows: Vec<String> = Vec::with_capacity(N);
    for i in 0..N {
        let lat = -50.0 + rng() * 110.0;
        let lon = -180.0 + rng() * 360.0;
        let (parent, gateway) = if i % 100 == 0 {
            (String::new(), "true")
        } else {
            (format!("dev-{}", i / 100 * 100), "false")
        };
        rows.push(format!(
            "dev-{i},{lat:.4},{lon:.4},{parent},{gateway},tag{}",
            i % 17
        ));
    }
    // Gateways first, in their own request, so every parent exists; at
    // most 10,000 rows a request.
    let (gateways, others): (Vec<String>, Vec<String>) =
        rows.into_iter().partition(|r| r.contains(",true,"));
    for chunk in std::iter::once(&gateways[..]).chain(others.chunks(10_000)) {
        let body = format!(
            "id,latitude,longitude,parent,gateway,tags\n{}\n",
            chunk.join("\n")
        );
        let r = s.post("/v1/devices", "text/csv", body.as_bytes(), &bearer);
        assert_eq!(r.status, 201, "{}", &r.body[..r.body.len().min(300)]);
    }
    let out = run_node(&s, "e2e.mjs", &[("OVERLORD_BENCH", N.to_string())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
