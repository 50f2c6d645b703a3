//! Per-minute aggregates through HTTP: the retention sweep keeps count,
//! min, max and mean of the `N` and `I` minutes it removes
//! (`[retention] aggregate_keep_days`), removes them after that many
//! days, and makes none when the setting is 0.

mod common;

use std::time::{Duration, Instant};

use common::{hour_ago, rfc3339, TestServer};

fn post(s: &TestServer, token: &str, body: &str) {
    let r = s.post(
        &format!("/v1/readings?device=gh1&token={token}"),
        "text/csv",
        body.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Data rows of a readings or aggregates query.
fn rows(s: &TestServer, path: &str) -> Vec<String> {
    let r = s.get_admin(path);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body.lines().skip(1).map(str::to_string).collect()
}

/// Poll until `rows(path)` has `n` rows (the sweep is asynchronous).
fn until_rows(s: &TestServer, path: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = rows(s, path);
        if got.len() == n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The start of the minute `secs` falls in.
fn minute_of(secs: i64) -> i64 {
    secs - secs.rem_euclid(60)
}

#[test]
fn the_sweep_keeps_exact_minute_aggregates_of_what_it_removes() {
    let s = TestServer::start_with(|c| {
        c.limits.device_requests_per_sec = 0.0;
        c.retention.sweep_secs = 1;
        // Several steps per pass, so minutes are spread over commits.
        c.retention.chunks_per_commit = 3;
        c.retention.aggregate_keep_days = 10;
    });
    let token = s.create_device("gh1");
    let now = hour_ago() + 3600;
    let old = minute_of(now - 3 * 86_400);
    let ancient = minute_of(now - 20 * 86_400);
    // Four old minutes of N1, I2, L3, S4: three readings a minute.
    let mut body = String::from("time,N1,I2,L3,S4\n");
    for k in 0..4i64 {
        let m = old + k * 60;
        body.push_str(&format!("{m},{}.5,{k},true,a\n", k + 1));
        body.push_str(&format!("{},{}.5,{},false,b\n", m + 10, k + 2, k + 3));
        body.push_str(&format!("{},{},{},true,c\n", m + 20, k + 5, k + 6));
    }
    // Older than aggregate_keep_days: removed without an aggregate.
    body.push_str(&format!("{ancient},1,1,,\n"));
    // Recent: kept as it is.
    body.push_str(&format!("{},100,100,,\n", now - 600));
    post(&s, &token, &body);
    assert_eq!(rows(&s, "/v1/devices/gh1/readings?sensors=N1").len(), 14);
    // Nothing is aggregated while readings are kept.
    let r = s.get_admin("/v1/devices/gh1/aggregates");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "time,I2_count,I2_min,I2_max,I2_mean,N1_count,N1_min,N1_max,N1_mean\n"
    );

    // Bad requests are 4xx with their code.
    for (query, status, code) in [
        ("sensors=L3", 400, "bad_sensor"),
        ("sensors=N1,S4", 400, "bad_sensor"),
        ("sensors=X1", 400, "bad_sensor_name"),
        ("sensors=N1,N1", 400, "duplicate_field"),
        ("limit=0", 400, "bad_limit"),
        ("from=yesterday", 400, "bad_time"),
        ("every=1m", 400, "bad_parameter"),
    ] {
        let r = s.get_admin(&format!("/v1/devices/gh1/aggregates?{query}"));
        assert_eq!(r.status, status, "{query}: {}", r.body);
        assert_eq!(r.error_code(), code, "{query}");
        assert!(r.body.starts_with(&format!("error,{code},")), "{}", r.body);
    }
    assert_eq!(s.get_admin("/v1/devices/nope/aggregates").status, 404);
    assert_eq!(s.get("/v1/devices/gh1/aggregates").status, 401);
    let r = s.get(&format!("/v1/devices/gh1/aggregates?token={token}"));
    assert_eq!(r.status, 200, "the device reads its own: {}", r.body);

    // Keep a day: the old minutes go, their aggregates stay.
    let r = s.admin_form("POST", "/v1/devices/gh1/retention", "keep_days=1");
    assert_eq!(r.status, 200, "{}", r.body);
    let n1 = until_rows(&s, "/v1/devices/gh1/readings?sensors=N1", 1);
    assert_eq!(n1, [format!("{},100", rfc3339(now - 600))]);
    let all = until_rows(&s, "/v1/devices/gh1/aggregates", 4);
    let want: Vec<String> = (0..4i64)
        .map(|k| {
            format!(
                "{},3,{k},{},{},3,{}.5,{},{}",
                rfc3339(old + k * 60),
                k + 6,
                k + 3,
                k + 1,
                k + 5,
                k + 3
            )
        })
        .collect();
    assert_eq!(all, want);
    for sensor in ["N1", "I2", "L3", "S4"] {
        let path = format!(
            "/v1/devices/gh1/readings?sensors={sensor}&to={}",
            now - 3600
        );
        assert_eq!(rows(&s, &path), Vec::<String>::new(), "{sensor} removed");
    }
    // Only N and I have aggregates; L3 and S4 are simply gone.
    assert_eq!(
        s.get_admin("/v1/devices/gh1/aggregates?sensors=N1&limit=1")
            .body
            .lines()
            .next(),
        Some("time,N1_count,N1_min,N1_max,N1_mean")
    );

    // Paging and time ranges, as for readings.
    let r = s.get_admin("/v1/devices/gh1/aggregates?sensors=N1&limit=3");
    assert_eq!(r.body.lines().count(), 4, "{}", r.body);
    let next = r
        .header("Overlord-Next-From")
        .expect("next-from")
        .to_string();
    let rest = rows(
        &s,
        &format!("/v1/devices/gh1/aggregates?sensors=N1&from={next}"),
    );
    assert_eq!(rest, [format!("{},3,4.5,8,6", rfc3339(old + 180))]);
    let one = rows(
        &s,
        &format!(
            "/v1/devices/gh1/aggregates?sensors=I2&from={}&to={}",
            old + 60,
            old + 60
        ),
    );
    assert_eq!(one, [format!("{},3,1,7,4", rfc3339(old + 60))]);

    // A late reading of a removed minute is folded into its aggregate.
    post(&s, &token, &format!("time,N1\n{},100\n", old + 30));
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = format!("{},4,1.5,100,27.25", rfc3339(old));
    loop {
        let got = rows(&s, "/v1/devices/gh1/aggregates?sensors=N1&limit=1");
        if got == [want.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        rows(
            &s,
            &format!("/v1/devices/gh1/readings?sensors=N1&to={}", now - 3600)
        ),
        Vec::<String>::new()
    );
}

#[test]
fn aggregates_go_after_aggregate_keep_days_and_none_are_made_when_off() {
    let s = TestServer::start_with(|c| {
        c.retention.sweep_secs = 1;
        c.retention.aggregate_keep_days = 10;
    });
    let token = s.create_device("gh1");
    let now = hour_ago() + 3600;
    let five = minute_of(now - 5 * 86_400);
    let two = minute_of(now - 2 * 86_400);
    post(
        &s,
        &token,
        &format!("time,N1\n{five},1\n{},3\n{two},7\n", five + 1),
    );
    let r = s.admin_form("POST", "/v1/devices/gh1/retention", "keep_days=1");
    assert_eq!(r.status, 200, "{}", r.body);
    let got = until_rows(&s, "/v1/devices/gh1/aggregates", 2);
    assert_eq!(
        got,
        [
            format!("{},2,1,3,2", rfc3339(five)),
            format!("{},1,7,7,7", rfc3339(two))
        ]
    );

    // Keep aggregates 3 days: the 5-day-old one goes, the other stays.
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |c| {
        c.retention.sweep_secs = 1;
        c.retention.aggregate_keep_days = 3;
    });
    let got = until_rows(&s, "/v1/devices/gh1/aggregates", 1);
    assert_eq!(got, [format!("{},1,7,7,7", rfc3339(two))]);

    // Off (0): removed minutes leave no aggregate.
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |c| {
        c.retention.sweep_secs = 1;
        c.retention.aggregate_keep_days = 0;
    });
    let three = minute_of(now - 3 * 86_400);
    post(&s, &token, &format!("time,N1,I2\n{three},5,5\n"));
    let n1 = format!("/v1/devices/gh1/readings?sensors=N1,I2&to={}", now - 3600);
    assert_eq!(until_rows(&s, &n1, 0), Vec::<String>::new());
    // An aggregate would have been written in the removal's transaction.
    assert_eq!(
        rows(&s, "/v1/devices/gh1/aggregates"),
        [format!("{},,,,,1,7,7,7", rfc3339(two))],
        "only the aggregate made while they were on"
    );
}

/// A chunk spans up to an hour, so the retention cut can fall inside one:
/// the sweep then keeps the chunk's newer readings and removes (and
/// aggregates) exactly the minutes before the cut.
#[test]
fn the_cut_inside_a_chunk_keeps_its_newer_readings() {
    let s = TestServer::start_with(|c| {
        c.limits.device_requests_per_sec = 0.0;
        c.retention.sweep_secs = 1;
        c.retention.aggregate_keep_days = 10;
    });
    let token = s.create_device("gh1");
    let t0 = hour_ago() + 3600;
    // One reading a minute for an hour around "a day ago" (the cut of
    // keep_days = 1): at most two chunks, the cut inside one of them.
    let first = minute_of(t0 - 86_400 - 1800);
    let mut body = String::from("time,N1\n");
    for k in 0..61i64 {
        body.push_str(&format!("{},{k}\n", first + k * 60));
    }
    post(&s, &token, &body);
    let r = s.admin_form("POST", "/v1/devices/gh1/retention", "keep_days=1");
    assert_eq!(r.status, 200, "{}", r.body);
    // Wait until the minutes before the cut as of t0 are gone.
    let cut0 = minute_of(t0 - 86_400);
    let deadline = Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let kept = rows(&s, "/v1/devices/gh1/readings?sensors=N1");
        let oldest = kept
            .first()
            .map(|l| l.split(',').next().unwrap().to_string());
        if oldest.as_deref() >= Some(rfc3339(cut0).as_str()) || Instant::now() > deadline {
            break kept;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let t1 = hour_ago() + 3600;
    // Kept: whole minutes from the cut on (the cut moved on by at most
    // t1 - t0), in order, and every one of them.
    let cut1 = minute_of(t1 - 86_400);
    let times: Vec<String> = kept
        .iter()
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    assert!(times.first() >= Some(&rfc3339(cut0)), "{times:?}");
    let newest_cut = rfc3339(cut1);
    let must_keep = (0..61i64)
        .map(|k| first + k * 60)
        .filter(|t| rfc3339(*t) >= newest_cut)
        .count();
    assert!(kept.len() >= must_keep, "{} < {must_keep}", kept.len());
    assert!(kept.len() < 61, "nothing removed");
    assert_eq!(times.last(), Some(&rfc3339(first + 60 * 60)));
    // What went is aggregated minute by minute, nothing twice or lost.
    let aggs = until_rows(&s, "/v1/devices/gh1/aggregates?sensors=N1", 61 - kept.len());
    assert_eq!(aggs.len() + kept.len(), 61, "{aggs:?}");
    for (k, line) in aggs.iter().enumerate() {
        assert_eq!(
            line,
            &format!("{},1,{k},{k},{k}", rfc3339(first + k as i64 * 60)),
            "{aggs:?}"
        );
    }
}

/// Retention reads the server's clock (`TestServer::clock`, the seam
/// tests move instead of sleeping): readings of two minutes ago are kept
/// by a one-day policy; once a day and an hour have passed on that clock,
/// the next scheduled pass (not a kick) removes them and keeps their
/// minute's aggregate.
#[test]
fn readings_go_once_their_days_have_passed_on_the_servers_clock() {
    let s = TestServer::start_with(|c| {
        c.retention.sweep_secs = 60;
        c.retention.aggregate_keep_days = 10;
    });
    let token = s.create_device("gh1");
    let now = hour_ago() + 3600;
    let t = minute_of(now - 120);
    post(&s, &token, &format!("time,N1\n{t},4\n{},6\n", t + 1));
    // Setting a policy starts a pass at once: nothing is old enough.
    let r = s.admin_form("POST", "/v1/devices/gh1/retention", "keep_days=1");
    assert_eq!(r.status, 200, "{}", r.body);
    let n1 = format!(
        "/v1/devices/gh1/readings?sensors=N1&from={}&to={}",
        t - 60,
        now + 60
    );
    assert_eq!(rows(&s, &n1).len(), 2);
    s.clock.advance(Duration::from_secs(25 * 3600));
    assert_eq!(until_rows(&s, &n1, 0), Vec::<String>::new());
    assert_eq!(
        until_rows(&s, "/v1/devices/gh1/aggregates", 1),
        [format!("{},2,4,6,5", rfc3339(t))]
    );
}
