//! Operations: `/metrics` after traffic, backup while serving and restore,
//! retention through HTTP while ingest goes on, and the offline CLI
//! (export, import, compact, backup, restore).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cli, hour_ago, m, rfc3339, scrape, scrape_until, TestServer};

fn route(name: &str, class: &str) -> String {
    format!("overlord_http_requests_total{{route=\"{name}\",status=\"{class}\"}}")
}

#[test]
fn metrics_follow_the_traffic() {
    let s = TestServer::start();
    let before = scrape(&s);
    for key in [
        "overlord_devices_online",
        "overlord_devices_offline",
        "overlord_inbox_rows_pending",
        "overlord_digest_backlog_batches",
        "overlord_digest_oldest_age_seconds",
        "overlord_digest_queue_depth",
        "overlord_ingest_queue_depth",
        "overlord_commit_seconds_count",
    ] {
        m(&before, key);
    }
    assert_eq!(m(&before, "overlord_devices_online"), 0.0);
    let token = s.create_device("gh1");
    let t = hour_ago();
    for i in 0..3 {
        let r = s.get(&format!(
            "/v1/readings?device=gh1&token={token}&N1={i}&I2={i}&time={}",
            t + i
        ));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Wrong token (4xx on ReadingsGet), and a path no endpoint has.
    assert_eq!(s.get("/v1/readings?device=gh1&token=nope&N1=1").status, 401);
    assert_eq!(s.get("/no/such/path/12345").status, 404);
    let r = s.admin_form("POST", "/v1/devices/gh1/inbox", "kind=message&value=hi");
    assert_eq!(r.status, 201, "{}", r.body);

    let after = scrape_until(&s, |a| {
        a.get("overlord_devices_online") == Some(&1.0)
            && a.get("overlord_digest_backlog_batches") == Some(&0.0)
    });
    let d = |k: &str| m(&after, k) - before.get(k).copied().unwrap_or(0.0);
    assert_eq!(d(&route("ReadingsGet", "2xx")), 3.0);
    assert_eq!(d(&route("ReadingsGet", "4xx")), 1.0);
    assert_eq!(d(&route("none", "4xx")), 1.0);
    assert_eq!(d(&route("DeviceCreate", "2xx")), 1.0);
    assert_eq!(d(&route("DeviceInboxSend", "2xx")), 1.0);
    assert_eq!(d("overlord_ingest_readings_total"), 6.0);
    assert_eq!(d("overlord_readings_stored_total"), 6.0);
    assert_eq!(d("overlord_commit_readings_count"), 3.0);
    assert_eq!(d("overlord_commit_readings_sum"), 6.0);
    assert_eq!(d("overlord_commit_requests_count"), 3.0);
    assert!(d("overlord_commit_seconds_count") >= 3.0);
    assert_eq!(m(&after, "overlord_devices_online"), 1.0);
    assert_eq!(m(&after, "overlord_inbox_rows_pending"), 1.0);
    assert_eq!(m(&after, "overlord_inboxes_pending"), 1.0);
    assert_eq!(m(&after, "overlord_digest_oldest_age_seconds"), 0.0);
    // Labels come from the router's table, never from request paths.
    let body = s.get("/metrics").body;
    assert!(!body.contains("/no/such"), "raw path leaked into labels");
    assert!(!body.contains("gh1"), "ids never appear in metrics");
    // A retry is accepted but not stored again.
    let r = s.get(&format!(
        "/v1/readings?device=gh1&token={token}&N1=0&I2=0&time={t}"
    ));
    assert_eq!(r.status, 200);
    let again = scrape(&s);
    assert_eq!(
        m(&again, "overlord_ingest_readings_total") - m(&after, "overlord_ingest_readings_total"),
        2.0
    );
    assert_eq!(
        m(&again, "overlord_readings_stored_total"),
        m(&after, "overlord_readings_stored_total")
    );
}

#[test]
fn backup_while_ingesting_restores_every_acknowledged_reading() {
    let s = TestServer::start_with(|c| c.limits.device_requests_per_sec = 0.0);
    let token = s.create_device("gh1");
    let base = hour_ago();
    // Acknowledged readings: (second offset) in order of their 200s.
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (acked, stop, addr, token) = (acked.clone(), stop.clone(), s.addr, token.clone());
        std::thread::spawn(move || {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let mut body = String::from("time,N1\n");
                for k in 0..20 {
                    body.push_str(&format!("{},{}\n", base + i * 20 + k, i * 20 + k));
                }
                let req = format!(
                    "POST /v1/readings?device=gh1&token={token} HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let r = common::raw(addr, req.as_bytes());
                assert_eq!(r.status, 200, "{}", r.body);
                acked.lock().unwrap().extend((0..20).map(|k| i * 20 + k));
                i += 1;
            }
        })
    };
    // Let ingest run, then back up while it keeps going.
    while acked.lock().unwrap().len() < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before: BTreeSet<i64> = acked.lock().unwrap().iter().copied().collect();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("backup.redb");
    let url = format!("http://{}", s.addr);
    let (ok, stdout, err) = cli(
        &s.dir.join("overlord.redb"),
        &["backup", file.to_str().unwrap(), "--url", &url],
        &[("OVERLORD_TOKEN", &s.admin)],
        None,
    );
    assert!(ok, "{err}");
    assert!(stdout.starts_with("ok,"), "{stdout}");
    let during = acked.lock().unwrap().len();
    // Bounded poll: ingest goes on after the backup.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() <= during && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    assert!(
        acked.lock().unwrap().len() > during,
        "ingest went on after the backup"
    );

    // A non-administrator gets 403; a running server's data file cannot
    // be restored over or backed up offline.
    let (ok, _, err) = cli(
        &s.dir.join("overlord.redb"),
        &[
            "backup",
            out.path().join("b2.redb").to_str().unwrap(),
            "--url",
            &url,
        ],
        &[("OVERLORD_TOKEN", "wrong")],
        None,
    );
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = cli(
        &s.dir.join("overlord.redb"),
        &["restore", file.to_str().unwrap()],
        &[],
        None,
    );
    assert!(!ok && err.contains("in use"), "{err}");
    let (ok, _, err) = cli(
        &s.dir.join("overlord.redb"),
        &["backup", out.path().join("b3.redb").to_str().unwrap()],
        &[],
        None,
    );
    assert!(!ok && err.contains("--url"), "{err}");
    let admin = s.admin.clone();
    drop(s);

    // Restore into a fresh data dir and serve it.
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("overlord.redb");
    let (ok, stdout, err) = cli(&data, &["restore", file.to_str().unwrap()], &[], None);
    assert!(ok, "{err}");
    assert!(stdout.starts_with("ok,"), "{stdout}");
    let s2 = TestServer::open(common::config(fresh.path()).into(), Some(admin));
    let r = s2.get_admin(&format!(
        "/v1/devices/gh1/readings?sensors=N1&from={}&limit=1000000",
        rfc3339(base)
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let got: BTreeSet<i64> = r
        .body
        .lines()
        .skip(1)
        .map(|l| l.split_once(',').unwrap().1.parse().unwrap())
        .collect();
    let missing: Vec<_> = before.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, missing after restore: {missing:?}"
    );
    // The device's token still works against the restored file.
    assert_eq!(
        s2.get(&format!("/v1/readings?device=gh1&token={token}&N1=1"))
            .status,
        200
    );
}

#[test]
fn retention_removes_old_readings_while_ingest_goes_on() {
    let s = TestServer::start_with(|c| {
        c.limits.device_requests_per_sec = 0.0;
        c.retention.sweep_secs = 1;
        c.retention.chunks_per_commit = 3;
    });
    let token = s.create_device("gh1");
    let now = hour_ago() + 3600;
    let old = now - 3 * 86_400;
    // 10 hours of old readings (N1 and N2): a chunk spans at most an
    // hour, so 10 chunks for the sweep's steps of 3; and 5 recent ones.
    let mut body = String::from("time,N1,N2\n");
    for k in 0..10 {
        body.push_str(&format!("{},{k},{k}\n", old + k * 3600));
    }
    for k in 0..5 {
        body.push_str(&format!("{},{},{}\n", now - 600 + k * 60, 100 + k, 100 + k));
    }
    let post = |body: &str| {
        s.post(
            &format!("/v1/readings?device=gh1&token={token}"),
            "text/csv",
            body.as_bytes(),
            "",
        )
    };
    assert_eq!(post(&body).status, 200);
    let query = |sensor: &str| -> Vec<String> {
        let r = s.get_admin(&format!("/v1/devices/gh1/readings?sensors={sensor}"));
        assert_eq!(r.status, 200, "{}", r.body);
        r.body.lines().skip(1).map(str::to_string).collect()
    };
    assert_eq!(query("N1").len(), 15);

    // Bad settings are 4xx, nothing changes.
    for (form, code) in [
        ("keep_days=abc", "bad_value"),
        ("keep_days=-1", "bad_value"),
        ("keep_days=99999999", "bad_value"),
        ("sensor=X1&keep_days=1", "bad_sensor_name"),
        ("sensor=N1", "missing_field"),
        ("days=1", "bad_parameter"),
    ] {
        let r = s.admin_form("POST", "/v1/devices/gh1/retention", form);
        assert_eq!(r.status, 400, "{form}: {}", r.body);
        assert_eq!(r.error_code(), code, "{form}");
    }
    let r = s.admin_form("POST", "/v1/devices/nope/retention", "keep_days=1");
    assert_eq!(r.status, 404);

    // Ingest keeps going while the sweep runs.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (stop, addr, token) = (stop.clone(), s.addr, token.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = common::raw(
                    addr,
                    format!(
                        "GET /v1/readings?device=gh1&token={token}&I3={n} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
                assert_eq!(r.status, 200, "{}", r.body);
                n += 1;
                // Not a wait for the server: the feeder paces itself.
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };
    // N2 is kept forever whatever the device says; the device keeps a day.
    let r = s.admin_form("POST", "/v1/devices/gh1/retention", "sensor=n2&keep_days=0");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.admin_form("POST", "/v1/devices/gh1/retention", "keep_days=1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "sensor,keep_days\n*,1\nN2,0\ndefault,0\n");
    assert_eq!(s.get_admin("/v1/devices/gh1/retention").body, r.body);

    let deadline = Instant::now() + Duration::from_secs(20);
    while query("N1").len() != 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = feeder.join().unwrap();
    let n1 = query("N1");
    assert_eq!(n1.len(), 5, "old N1 readings removed, recent kept: {n1:?}");
    assert!(
        n1.iter()
            .all(|l| l.split(',').nth(1).unwrap().parse::<i64>().unwrap() >= 100),
        "{n1:?}"
    );
    assert_eq!(query("N2").len(), 15, "N2 is kept forever");
    assert_eq!(
        query("I3").len(),
        sent,
        "every reading sent meanwhile is stored"
    );
    let met = scrape(&s);
    assert_eq!(m(&met, "overlord_retention_readings_deleted_total"), 10.0);
    assert_eq!(m(&met, "overlord_retention_chunks_deleted_total"), 10.0);

    // Back to the default (forever): an old reading sent now stays.
    let r = s.admin_form("POST", "/v1/devices/gh1/retention", "keep_days=");
    assert_eq!(r.body, "sensor,keep_days\nN2,0\ndefault,0\n");
    // Another device keeps a policy, so passes go on over every sensor.
    s.create_device("other");
    let r = s.admin_form("POST", "/v1/devices/other/retention", "keep_days=1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(post(&format!("time,N1\n{old},7\n")).status, 200);
    // Barrier: two more retention passes finish (the second one started
    // after the reading was stored), then it must still be there.
    let passes = m(&scrape(&s), "overlord_retention_passes_total");
    let got = scrape_until(&s, |g| {
        m(g, "overlord_retention_passes_total") >= passes + 2.0
    });
    assert!(m(&got, "overlord_retention_passes_total") >= passes + 2.0);
    assert_eq!(query("N1").len(), 6);
}

#[test]
fn offline_cli_export_import_compact_backup_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("o.redb");
    for d in [&data, &tmp.path().join("other/o.redb")] {
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        let (ok, _, err) = cli(d, &["init"], &[], None);
        assert!(ok, "{err}");
        let (ok, _, err) = cli(d, &["user", "token", "admin", "--admin"], &[], None);
        assert!(ok, "{err}");
        let (ok, _, err) = cli(d, &["device", "create", "--id", "gh1"], &[], None);
        assert!(ok, "{err}");
    }
    let t = hour_ago();
    let mut csv = String::from("time,N1,S2\n");
    for k in 0..300 {
        csv.push_str(&format!("{},{}.5,\n", rfc3339(t + k), k));
    }
    csv.push_str(&format!("{},,\"door, open\"\n", rfc3339(t + 1000)));
    let file = tmp.path().join("in.csv");
    std::fs::write(&file, &csv).unwrap();
    let (ok, out, err) = cli(
        &data,
        &["import", file.to_str().unwrap(), "--device", "gh1"],
        &[],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, "ok,301,301\n");
    // Again: retries, stored once.
    let (ok, out, err) = cli(
        &data,
        &["import", "-", "--device", "gh1"],
        &[],
        Some(csv.as_bytes()),
    );
    assert!(ok, "{err}");
    assert_eq!(out, "ok,301,0\n");
    // Bad input: the HTTP validation, with line and column; nothing stored.
    let (ok, _, err) = cli(
        &data,
        &["import", "-", "--device", "gh1"],
        &[],
        Some(format!("time,N1\n{},1\n{},x\n", t + 500, t + 501).as_bytes()),
    );
    assert!(
        !ok && err.contains("bad_value") && err.contains("line 3"),
        "{err}"
    );
    let (ok, _, err) = cli(
        &data,
        &["import", "-", "--device", "nope"],
        &[],
        Some(b"time,N1\n1,1\n"),
    );
    assert!(!ok && err.contains("no device"), "{err}");

    let (ok, exported, err) = cli(&data, &["export", "--device", "gh1"], &[], None);
    assert!(ok, "{err}");
    assert_eq!(exported.lines().count(), 302, "{exported}");
    assert!(exported.starts_with("time,N1,S2\n"), "{exported}");
    assert!(exported.ends_with(",,\"door, open\"\n"), "{exported}");
    // A time range and one sensor.
    let (ok, part, err) = cli(
        &data,
        &[
            "export",
            "--device",
            "gh1",
            "--sensors",
            "N1",
            "--from",
            &(t + 10).to_string(),
            "--to",
            &(t + 19).to_string(),
        ],
        &[],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(part.lines().count(), 11, "{part}");
    assert_eq!(
        part.lines().nth(1).unwrap(),
        format!("{},10.5", rfc3339(t + 10))
    );

    // Export, import into another file, export again: the same CSV.
    let other = tmp.path().join("other/o.redb");
    let (ok, _, err) = cli(
        &other,
        &["import", "-", "--device", "gh1"],
        &[],
        Some(exported.as_bytes()),
    );
    assert!(ok, "{err}");
    let (_, again, _) = cli(&other, &["export", "--device", "gh1"], &[], None);
    assert_eq!(again, exported);

    let (before, after) = common::cli_compact(&data);
    assert!(
        before > 0 && after > 0 && after <= before,
        "{before} -> {after}"
    );

    let backup = tmp.path().join("b.redb");
    let (ok, _, err) = cli(&data, &["backup", backup.to_str().unwrap()], &[], None);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&data, &["backup", backup.to_str().unwrap()], &[], None);
    assert!(!ok && err.contains("exists"), "{err}");
    // Restore over a file with other contents; the old one is kept.
    let extra = format!("time,N1\n{},9\n", t + 1500);
    let (ok, _, err) = cli(
        &other,
        &["import", "-", "--device", "gh1"],
        &[],
        Some(extra.as_bytes()),
    );
    assert!(ok, "{err}");
    let (_, differs, _) = cli(&other, &["export", "--device", "gh1"], &[], None);
    assert_ne!(differs, exported);
    let (ok, out, err) = cli(&other, &["restore", backup.to_str().unwrap()], &[], None);
    assert!(ok, "{err}");
    let kept_first = out.trim().rsplit(',').next().unwrap().to_string();
    assert!(kept_first.contains(".pre-restore-"), "{out}");
    // A second restore keeps its own copy: the first one's is not
    // overwritten, and it still holds the data it was taken of.
    let (ok, out, err) = cli(&other, &["restore", backup.to_str().unwrap()], &[], None);
    assert!(ok, "{err}");
    let kept_second = out.trim().rsplit(',').next().unwrap().to_string();
    assert!(kept_second.contains(".pre-restore-"), "{out}");
    assert_ne!(kept_first, kept_second);
    let (_, first_held, _) = cli(
        std::path::Path::new(&kept_first),
        &["export", "--device", "gh1"],
        &[],
        None,
    );
    assert_eq!(first_held, differs, "the first kept copy was overwritten");
    let (_, restored, _) = cli(&other, &["export", "--device", "gh1"], &[], None);
    assert_eq!(restored, exported);
    // Not a data file: refused, nothing replaced.
    std::fs::write(tmp.path().join("junk"), b"not redb").unwrap();
    let (ok, _, err) = cli(
        &other,
        &["restore", tmp.path().join("junk").to_str().unwrap()],
        &[],
        None,
    );
    assert!(!ok, "{err}");
    let (_, still, _) = cli(&other, &["export", "--device", "gh1"], &[], None);
    assert_eq!(still, exported);
}

#[test]
fn every_endpoint_has_its_own_metrics_slot() {
    let names = overlord::api::endpoint_names();
    let slots: BTreeSet<usize> = names.iter().map(|(i, _)| *i).collect();
    assert_eq!(slots.len(), names.len());
    // The last slot is `none` (no endpoint matched).
    assert!(slots
        .iter()
        .all(|i| *i < overlord::metrics::ROUTE_SLOTS - 1));
}
