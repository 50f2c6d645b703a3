//! Deleting a device's readings in a time range through HTTP
//! (`DELETE /v1/devices/ID/readings`) and the CLI: `from` included, `to`
//! not; only the sensors named; in hot and in sealed chunks (a trimmed
//! sealed chunk stays sealed); aggregates removed or kept; `/sensors`
//! never shows a removed reading; a reading sent again afterwards is
//! stored again; bad input is 4xx and strangers get 404.

mod common;

use common::{as_user, hour_ago, m, rfc3339, scrape_until, TestServer};
use overlord::store::{sealed, READINGS, SEALED};

/// Rows 10 s apart from `t0`: `N1` = i, `L2` = i odd, `I3` = 2i.
const ROWS: i64 = 900; // 2.5 hours: 3 chunks per sensor

fn body(t0: i64) -> String {
    let mut b = String::from("time,N1,L2,I3\n");
    for i in 0..ROWS {
        b.push_str(&format!("{},{i},{},{}\n", t0 + i * 10, i % 2 == 1, 2 * i));
    }
    b
}

/// The start of an hour a day ago (every chunk's hour is over).
fn day_ago_hour() -> i64 {
    (hour_ago() - 86_400) / 3600 * 3600
}

fn post(s: &TestServer, tok: &str, b: &str) -> String {
    let r = s.post(
        &format!("/v1/readings?device=gh1&token={tok}"),
        "text/csv",
        b.as_bytes(),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The times (seconds) of `sensor`'s stored readings.
fn times(s: &TestServer, sensor: &str, t0: i64) -> Vec<i64> {
    let r = s.get_admin(&format!(
        "/v1/devices/gh1/readings?sensors={sensor}&from={t0}&limit=100000&format=csv"
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .skip(1)
        .map(|l| {
            let v: i64 = l.split(',').nth(1).unwrap().parse().unwrap_or(-1);
            // N1 = i, I3 = 2i: back to the row's time.
            let i = if sensor == "I3" { v / 2 } else { v };
            t0 + i * 10
        })
        .collect()
}

fn delete(s: &TestServer, query: &str) -> common::Reply {
    s.admin_form("DELETE", &format!("/v1/devices/gh1/readings?{query}"), "")
}

/// Every chunk in a stopped server's data file (hot ones in `readings`,
/// sealed ones in `sealed`), and how many are sealed.
fn chunk_forms(data: &std::path::Path) -> (usize, usize) {
    let store = common::open_store(data);
    let mut all = 0;
    let mut sealed_n = 0;
    store
        .read(|txn| {
            for (table, want_sealed) in [(READINGS, false), (SEALED, true)] {
                for row in txn.open_table(table)?.iter()? {
                    let (_, v) = row?;
                    let is = sealed::is_sealed(v.value());
                    assert_eq!(is, want_sealed, "a chunk in the wrong table");
                    all += 1;
                    sealed_n += usize::from(is);
                }
            }
            Ok::<_, overlord::store::StoreError>(())
        })
        .unwrap();
    (all, sealed_n)
}

#[test]
fn a_range_goes_from_hot_chunks_for_the_sensors_named() {
    let s = TestServer::start_with(|c| c.storage.seal_chunks_per_step = 0);
    let tok = s.create_device("gh1");
    let t0 = day_ago_hour();
    post(&s, &tok, &body(t0));
    let all: Vec<i64> = (0..ROWS).map(|i| t0 + i * 10).collect();
    assert_eq!(times(&s, "N1", t0), all);

    // [t0+1000, t0+5000): rows 100..=499, crossing a chunk boundary
    // (t0+3600) and straddling both ends' chunks; N1 and L2 only.
    let (from, to) = (t0 + 1000, t0 + 5000);
    let r = delete(&s, &format!("from={from}&to={}&sensors=N1,L2", rfc3339(to)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "ok,800\n", "400 readings each of N1 and L2");
    // Right after the reply: gone; `from` removed, `to` kept.
    let kept: Vec<i64> = all
        .iter()
        .copied()
        .filter(|t| *t < from || *t >= to)
        .collect();
    assert_eq!(times(&s, "N1", t0), kept);
    let l2 = s.get_admin(&format!(
        "/v1/devices/gh1/readings?sensors=L2&from={t0}&limit=100000"
    ));
    assert_eq!(l2.body.lines().count() - 1, kept.len(), "L2 too");
    assert_eq!(times(&s, "I3", t0), all, "I3 was not named: untouched");
    // The same range again: nothing left to remove.
    assert_eq!(
        delete(&s, &format!("from={from}&to={to}&sensors=N1")).body,
        "ok,0\n"
    );

    // /sensors: deleting the newest readings shows the one before.
    let last = t0 + (ROWS - 1) * 10;
    let r = delete(&s, &format!("from={}&to={}", last - 15, last + 1));
    assert_eq!(r.body, "ok,6\n", "rows 898 and 899 of three sensors");
    let latest = s.get_admin("/v1/devices/gh1/sensors");
    assert_eq!(latest.status, 200, "{}", latest.body);
    let want = rfc3339(last - 20);
    for sensor in ["N1", "L2", "I3"] {
        let line = latest
            .body
            .lines()
            .find(|l| l.starts_with(&format!("{sensor},")))
            .unwrap_or_else(|| panic!("{sensor} in {}", latest.body));
        assert!(line.contains(&want), "{line}: latest is {want}");
    }
    assert!(
        latest.body.contains(&format!("N1,{want},897")),
        "{}",
        latest.body
    );

    // Sent again after the deletion: stored again, as new readings (and
    // only those: the rest are retries).
    let before = m(&common::scrape(&s), "overlord_readings_stored_total");
    post(&s, &tok, &body(t0));
    let after = m(&common::scrape(&s), "overlord_readings_stored_total");
    assert_eq!(after - before, 806.0);
    assert_eq!(times(&s, "N1", t0), all);
    assert_eq!(times(&s, "I3", t0), all);
}

#[test]
fn sealed_chunks_are_trimmed_and_stay_sealed() {
    let s = TestServer::start_with(|c| c.storage.seal_idle_secs = 0);
    let tok = s.create_device("gh1");
    let t0 = day_ago_hour();
    post(&s, &tok, &body(t0));
    let got = scrape_until(&s, |g| {
        g.get("overlord_seal_pending_sensors") == Some(&0.0)
            && g.get("overlord_chunks_sealed_total")
                .is_some_and(|n| *n >= 9.0)
    });
    assert!(m(&got, "overlord_chunks_sealed_total") >= 9.0, "{got:?}");
    // Inside the first chunk, then the whole second hour and into the third.
    let r = delete(&s, &format!("from={}&to={}", t0 + 600, t0 + 1200));
    assert_eq!(r.body, "ok,180\n", "60 rows of 3 sensors");
    let r = delete(
        &s,
        &format!("from={}&to={}&sensors=I3", t0 + 3600, t0 + 7300),
    );
    assert_eq!(r.body, "ok,370\n", "rows 360..=729 of I3");
    let all: Vec<i64> = (0..ROWS).map(|i| t0 + i * 10).collect();
    let n1: Vec<i64> = all
        .iter()
        .copied()
        .filter(|t| !(t0 + 600..t0 + 1200).contains(t))
        .collect();
    assert_eq!(times(&s, "N1", t0), n1);
    let i3: Vec<i64> = n1
        .iter()
        .copied()
        .filter(|t| !(t0 + 3600..t0 + 7300).contains(t))
        .collect();
    assert_eq!(times(&s, "I3", t0), i3);
    let dir = s.dir.clone();
    let (_tmp, _) = s.stop();
    // I3's second chunk is gone; every other chunk is still sealed.
    assert_eq!(chunk_forms(&dir.join("overlord.redb")), (8, 8));
}

#[test]
fn aggregates_are_removed_by_default_or_kept() {
    let s = TestServer::start_with(|c| {
        c.retention.sweep_secs = 1;
        c.retention.aggregate_keep_days = 10;
    });
    let tok = s.create_device("gh1");
    let old = (hour_ago() - 3 * 86_400) / 60 * 60;
    // Four old minutes, two N1 readings each.
    let mut b = String::from("time,N1\n");
    for k in 0..4 {
        b.push_str(&format!(
            "{},{k}\n{},{k}.5\n",
            old + k * 60,
            old + k * 60 + 30
        ));
    }
    post(&s, &tok, &b);
    let r = s.admin_form("POST", "/v1/devices/gh1/retention", "keep_days=1");
    assert_eq!(r.status, 200, "{}", r.body);
    let aggs = |s: &TestServer| -> Vec<String> {
        let r = s.get_admin("/v1/devices/gh1/aggregates");
        r.body
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().to_string())
            .collect()
    };
    let minutes =
        |ks: &[i64]| -> Vec<String> { ks.iter().map(|k| rfc3339(old + k * 60)).collect() };
    let r = s.admin_until("/v1/devices/gh1/aggregates", |b| b.lines().count() == 5);
    assert_eq!(aggs(&s), minutes(&[0, 1, 2, 3]), "{}", r.body);
    // keep: the readings are gone already, the aggregates stay.
    let r = delete(&s, &format!("from={old}&to={}&aggregates=keep", old + 240));
    assert_eq!(r.body, "ok,0\n");
    assert_eq!(aggs(&s), minutes(&[0, 1, 2, 3]));
    // remove (the default): minutes wholly inside [old+50, old+190) are
    // 1 and 2; minutes 0 and 3 are only partly inside and stay.
    let r = delete(&s, &format!("from={}&to={}", old + 50, old + 190));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(aggs(&s), minutes(&[0, 3]));
}

#[test]
fn bad_input_is_4xx_and_strangers_get_404() {
    let s = TestServer::start();
    let ann = common::token_of(&s.admin_form("POST", "/v1/users", "name=ann").body);
    let bob = common::token_of(&s.admin_form("POST", "/v1/users", "name=bob").body);
    let eve = common::token_of(&s.admin_form("POST", "/v1/users", "name=eve").body);
    let tok = common::token_of(&as_user(&s, &ann, "POST", "/v1/devices", "id=gh1").body);
    let t0 = day_ago_hour();
    post(&s, &tok, &body(t0));
    for (query, code) in [
        ("to=2026-01-01T00:00:00Z", "missing_field"),
        ("from=0", "missing_field"),
        ("from=yesterday&to=1", "bad_time"),
        ("from=10&to=10", "empty_range"),
        ("from=20&to=10", "empty_range"),
        ("from=0&to=10&sensors=X9", "bad_sensor_name"),
        ("from=0&to=10&sensors=,", "bad_sensor"),
        ("from=0&to=10&aggregates=maybe", "bad_parameter"),
        ("from=0&to=10&colour=red", "bad_parameter"),
    ] {
        let r = delete(&s, query);
        assert!(r.status == 400, "{query}: {} {}", r.status, r.body);
        assert_eq!(r.error_code(), code, "{query}: {}", r.body);
        assert!(r.body.starts_with(&format!("error,{code},")), "{}", r.body);
    }
    let q = format!("/v1/devices/gh1/readings?from={t0}&to={}", t0 + 100);
    // Strangers and unknown devices: 404; the device itself: 403;
    // no credentials: 401. Nothing was removed by any of them.
    assert_eq!(as_user(&s, &eve, "DELETE", &q, "").status, 404);
    let r = as_user(
        &s,
        &ann,
        "DELETE",
        "/v1/devices/nope/readings?from=0&to=1",
        "",
    );
    assert_eq!(r.status, 404);
    let r = s.raw(
        format!(
            "DELETE {q}&device=gh1&token={tok} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r =
        s.raw(format!("DELETE {q} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(times(&s, "N1", t0).len(), ROWS as usize);
    // A read grant: 403; a control grant deletes; the owner deletes.
    let g = |level: &str| {
        let f = format!("resource=device:gh1&to=user:bob&level={level}");
        assert_eq!(as_user(&s, &ann, "POST", "/v1/grants", &f).status, 201);
    };
    g("read");
    assert_eq!(as_user(&s, &bob, "DELETE", &q, "").status, 403);
    g("control");
    let r = as_user(&s, &bob, "DELETE", &q, "");
    assert_eq!(r.body, "ok,30\n", "rows 0..=9 of three sensors");
    let q = format!("/v1/devices/gh1/readings?from={t0}&to={}", t0 + 1000);
    let r = as_user(&s, &ann, "DELETE", &q, "");
    assert_eq!(r.body, "ok,270\n", "rows 10..=99 of three sensors");
    assert_eq!(times(&s, "N1", t0).len(), ROWS as usize - 100);
}

#[test]
fn the_cli_deletes_a_range_with_the_server_stopped() {
    let s = TestServer::start();
    let tok = s.create_device("gh1");
    let t0 = day_ago_hour();
    post(&s, &tok, &body(t0));
    let dir = s.dir.clone();
    let (tmp, admin) = s.stop();
    let data = dir.join("overlord.redb");
    let (from, to) = (rfc3339(t0 + 100), rfc3339(t0 + 200));
    let args = [
        "device",
        "delete-readings",
        "gh1",
        "--from",
        &from,
        "--to",
        &to,
    ];
    let (ok, out, err) = common::cli(
        &data,
        &[&args[..], &["--sensors", "N1"]].concat(),
        &[],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, "ok,10\n", "rows 10..=19 of N1");
    let (ok, _, err) = common::cli(
        &data,
        &[
            "device",
            "delete-readings",
            "nope",
            "--from",
            "0",
            "--to",
            "1",
        ],
        &[],
        None,
    );
    assert!(!ok && err.contains("no device 'nope'"), "{err}");
    let (ok, _, err) = common::cli(
        &data,
        &[
            "device",
            "delete-readings",
            "gh1",
            "--from",
            "5",
            "--to",
            "1",
        ],
        &[],
        None,
    );
    assert!(!ok && err.contains("empty_range"), "{err}");
    let s = TestServer::restart(tmp, admin, |_| {});
    let got = times(&s, "N1", t0);
    assert_eq!(got.len(), ROWS as usize - 10);
    assert!(!got.contains(&(t0 + 100)) && got.contains(&(t0 + 200)));
    assert_eq!(times(&s, "I3", t0).len(), ROWS as usize);
}

/// Two overlapping deletions while a board writes into the range: every
/// request ends `200` or `503` (nothing done), and no reading is lost or
/// counted twice: what is left in the range plus what the deletions say
/// they removed is exactly what was acknowledged; every reading
/// acknowledged before the deletions began is gone.
#[test]
fn concurrent_deletions_and_ingest_account_for_every_reading() {
    let s = TestServer::start();
    let tok = s.create_device("gh1");
    let t0 = day_ago_hour();
    post(&s, &tok, &body(t0));
    let end = t0 + ROWS * 10;
    let (acked, removed) = std::thread::scope(|sc| {
        let board = sc.spawn(|| {
            let mut acked = 0u64;
            for k in 0..60 {
                // New times (5 s past a row), N1 values no row has.
                let t = t0 + 5 + k * 150;
                let r = s.get(&format!(
                    "/v1/readings?device=gh1&token={tok}&N1={}&time={t}",
                    100_000 + k
                ));
                assert!(r.status == 200 || r.status == 503, "{}", r.body);
                acked += u64::from(r.status == 200);
            }
            acked
        });
        let whole = sc.spawn(|| delete(&s, &format!("from={t0}&to={end}")));
        let part = sc.spawn(|| {
            delete(
                &s,
                &format!("from={}&to={end}&sensors=N1,I3", rfc3339(t0 + 3000)),
            )
        });
        let mut removed = 0u64;
        for r in [whole.join().unwrap(), part.join().unwrap()] {
            assert!(r.status == 200 || r.status == 503, "{}", r.body);
            if r.status == 200 {
                removed += r
                    .body
                    .trim()
                    .strip_prefix("ok,")
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        (board.join().unwrap(), removed)
    });
    let r = s.get_admin(&format!(
        "/v1/devices/gh1/readings?sensors=N1,L2,I3&from={t0}&to={}&limit=100000",
        end - 1
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut left = 0u64;
    for line in r.body.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        // Only the board's readings can be left: N1 >= 100000, no L2, I3.
        assert!(f[1].parse::<f64>().unwrap() >= 100_000.0, "{line}");
        assert!(f[2].is_empty() && f[3].is_empty(), "{line}");
        left += 1;
    }
    assert_eq!(
        left + removed,
        3 * ROWS as u64 + acked,
        "left {left}, removed {removed}, board acked {acked}"
    );
}

/// `from` and `to` in each accepted form (RFC 3339 with `Z` or an offset
/// and fractions, Unix seconds with a fraction) name the same instants:
/// `from` included, `to` not, to the microsecond.
#[test]
fn times_in_every_accepted_form_bound_the_range_exactly() {
    let s = TestServer::start();
    let tok = s.create_device("gh1");
    let t0 = day_ago_hour();
    post(&s, &tok, &body(t0));
    // t0+100 written at +02:00 (a '+' is %2B in a query) .. t0+200.5.
    let from = {
        let z = rfc3339(t0 + 100 + 7200);
        format!("{}%2B02:00", z.trim_end_matches('Z'))
    };
    let r = delete(&s, &format!("from={from}&to={}.5&sensors=N1", t0 + 200));
    assert_eq!(r.body, "ok,11\n", "rows 10..=20 of N1");
    // to = t0+300 exactly (with a fraction of zeros): 300 itself stays.
    let to = format!("{}.000000Z", rfc3339(t0 + 300).trim_end_matches('Z'));
    let r = delete(&s, &format!("from={}.000001&to={to}&sensors=N1", t0 + 290));
    assert_eq!(r.body, "ok,0\n", "nothing in (290, 300)");
    let r = delete(
        &s,
        &format!("from={}&to={}.000001&sensors=N1", t0 + 300, t0 + 300),
    );
    assert_eq!(r.body, "ok,1\n", "300 alone");
    let n1 = times(&s, "N1", t0);
    assert!(!n1.contains(&(t0 + 100)) && !n1.contains(&(t0 + 200)));
    assert!(n1.contains(&(t0 + 90)) && n1.contains(&(t0 + 210)));
    assert!(n1.contains(&(t0 + 290)) && !n1.contains(&(t0 + 300)));
    assert_eq!(n1.len(), ROWS as usize - 12);
}
