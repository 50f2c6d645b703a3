//! Sealed chunks through the real interface: readings older than their
//! hour are re-encoded into the compact form by the writer's background
//! work, and queries, `buckets=`, `/sensors`, retries, late readings and
//! `overlord export` give exactly what they gave on the hot chunks, also
//! for a data file written before (its chunks are sealed after a start).

mod common;

use common::{cli, enc, hour_ago, m, rfc3339, scrape_until, TestServer};

const ROWS: i64 = 900; // 2.5 hours, 10 s apart: 3 chunks per sensor

/// One row: time, N1, I2, S3, L4.
type Row = (i64, f64, i64, &'static str, bool);

/// The rows of the test: N1 a random walk in tenths, I2 a counter, S3 one
/// of three states, L4 alternating.
fn rows(t0: i64) -> (String, Vec<Row>) {
    let mut body = String::from("time,N1,I2,S3,L4\n");
    let mut rows = Vec::new();
    let mut walk: i64 = 215;
    let mut x: u64 = 12345;
    for i in 0..ROWS {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        walk += (x >> 33) as i64 % 5 - 2;
        let n = walk as f64 / 10.0;
        let s = ["open", "closed", "ajar"][(i % 3) as usize];
        let row = (t0 + i * 10, n, i * 3 - 1000, s, i % 2 == 0);
        body.push_str(&format!(
            "{},{},{},{},{}\n",
            row.0, row.1, row.2, row.3, row.4
        ));
        rows.push(row);
    }
    (body, rows)
}

/// The start of an hour a day ago: every chunk's hour is long over.
fn day_ago_hour() -> i64 {
    (hour_ago() - 86_400) / 3600 * 3600
}

fn post(s: &TestServer, tok: &str, body: &str) -> common::Reply {
    s.post(
        &format!("/v1/readings?device=sd&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    )
}

/// Wait until every chunk is sealed (at least `chunks` were) and return
/// the metrics then.
fn sealed(s: &TestServer, chunks: f64) -> std::collections::BTreeMap<String, f64> {
    let got = scrape_until(s, |g| {
        g.get("overlord_seal_pending_sensors") == Some(&0.0)
            && g.get("overlord_chunks_sealed_total")
                .is_some_and(|n| *n >= chunks)
    });
    assert_eq!(m(&got, "overlord_seal_pending_sensors"), 0.0, "all sealed");
    assert!(m(&got, "overlord_chunks_sealed_total") >= chunks, "{got:?}");
    got
}

/// The queries whose answers must not change when chunks are sealed.
fn queries(s: &TestServer, t0: i64) -> Vec<String> {
    let to = t0 + ROWS * 10;
    [
        format!("/v1/devices/sd/readings?sensors=N1,I2,S3,L4&from={t0}&to={to}&limit=100000"),
        format!(
            "/v1/devices/sd/readings?sensors=N1&from={}&to={}",
            t0 + 3000,
            t0 + 4000
        ),
        format!("/v1/devices/sd/readings?sensors=N1,I2,L4&from={t0}&to={to}&buckets=7"),
        "/v1/devices/sd/sensors".to_string(),
    ]
    .iter()
    .map(|q| {
        let r = s.get_admin(q);
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        r.body
    })
    .collect()
}

#[test]
fn sealed_chunks_answer_like_hot_ones_and_old_files_are_sealed_on_start() {
    // Written with sealing off: every chunk stays hot, as in a file from
    // before sealing existed.
    let s = TestServer::start_with(|c| c.storage.seal_chunks_per_step = 0);
    let tok = s.create_device("sd");
    let t0 = day_ago_hour();
    let (body, _) = rows(t0);
    assert_eq!(post(&s, &tok, &body).body, format!("ok,{},0\n", ROWS * 4));
    let hot = queries(&s, t0);
    assert_eq!(hot[0].lines().count() as i64, ROWS + 1);
    let data = s.dir.join("overlord.redb");
    let (tmp, admin) = s.stop();
    let (ok, exported_hot, err) = cli(&data, &["export", "--device", "sd"], &[], None);
    assert!(ok, "{err}");

    // A start seals them (idle 0: as soon as it looks).
    let s = TestServer::restart(tmp, admin, |c| c.storage.seal_idle_secs = 0);
    sealed(&s, 12.0); // 4 sensors x 3 hours
    assert_eq!(queries(&s, t0), hot, "sealed chunks answer the same");
    let (tmp, _admin) = s.stop();
    assert_eq!(tables(&data), (0, 0, 12), "every chunk in the sealed table");
    let (ok, exported, err) = cli(&data, &["export", "--device", "sd"], &[], None);
    assert!(ok, "{err}");
    assert_eq!(exported, exported_hot, "export reads sealed chunks");
    drop(tmp);
}

#[test]
fn retries_and_late_readings_meet_sealed_chunks() {
    let s = TestServer::start_with(|c| c.storage.seal_idle_secs = 0);
    let tok = s.create_device("sd");
    let t0 = day_ago_hour();
    let (body, rows) = rows(t0);
    assert_eq!(post(&s, &tok, &body).body, format!("ok,{},0\n", ROWS * 4));
    let before = sealed(&s, 12.0);
    let stored = m(&before, "overlord_readings_stored_total");
    assert_eq!(stored, (ROWS * 4) as f64);

    // Values on sealed chunks, checked against what was sent.
    let all = queries(&s, t0);
    let mut lines = all[0].lines();
    assert_eq!(lines.next(), Some("time,N1,I2,S3,L4"));
    for ((t, n, i, st, l), line) in rows.iter().zip(lines) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[0], rfc3339(*t));
        assert_eq!(f[1].parse::<f64>().unwrap(), *n, "{line}");
        assert_eq!(f[2].parse::<i64>().unwrap(), *i, "{line}");
        assert_eq!((f[3], f[4]), (*st, if *l { "true" } else { "false" }));
    }
    // buckets=1: the smallest and largest of all.
    let b = s.get_admin(&format!(
        "/v1/devices/sd/readings?sensors=N1,I2&from={t0}&to={}&buckets=1",
        t0 + ROWS * 10
    ));
    let (lo, hi) = rows
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r.1), b.max(r.1)));
    let want: Vec<String> = vec![
        lo.to_string(),
        hi.to_string(),
        "-1000".into(),
        (3 * (ROWS - 1) - 1000).to_string(),
    ];
    let got: Vec<String> = b
        .body
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .skip(1)
        .map(String::from)
        .collect();
    assert_eq!(got, want, "{}", b.body);
    // /sensors: the latest of each, from the last sealed chunk.
    let last = rows.last().unwrap();
    assert!(
        all[3].contains(&format!("N1,{},{}\n", rfc3339(last.0), last.1)),
        "{}",
        all[3]
    );

    // The whole upload again: acknowledged, nothing stored twice.
    assert_eq!(post(&s, &tok, &body).body, format!("ok,{},0\n", ROWS * 4));
    let after = scrape_until(&s, |_| true);
    assert_eq!(m(&after, "overlord_readings_stored_total"), stored);
    assert_eq!(queries(&s, t0), all, "a retry changes nothing");

    // A late reading inside the first (sealed) chunk: stored, in order;
    // its retry is not stored again.
    let late = format!("time,N1\n{},99.5\n", t0 + 5);
    for _ in 0..2 {
        assert_eq!(post(&s, &tok, &late).body, "ok,1,0\n");
    }
    let after = sealed(&s, 12.0);
    assert_eq!(m(&after, "overlord_readings_stored_total"), stored + 1.0);
    let q = s.get_admin(&format!(
        "/v1/devices/sd/readings?sensors=N1&from={t0}&to={}",
        t0 + 10
    ));
    assert_eq!(
        q.body,
        format!(
            "time,N1\n{},{}\n{},99.5\n{},{}\n",
            rfc3339(t0),
            rows[0].1,
            rfc3339(t0 + 5),
            rfc3339(t0 + 10),
            rows[1].1
        )
    );
    let total = s.get_admin(&format!(
        "/v1/devices/sd/readings?sensors=N1&from={t0}&to={}&limit=100000",
        t0 + ROWS * 10
    ));
    assert_eq!(total.body.lines().count() as i64, ROWS + 2);

    // What no chunk may hold is refused at the door, nothing stored.
    let r = s.get(&format!(
        "/v1/readings?device=sd&token={tok}&time={}&N1=NaN",
        t0 + 7
    ));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_code(), "bad_value");
    let q = s.get_admin(&format!(
        "/v1/devices/sd/readings?sensors=N1&from={}&to={}",
        enc(&rfc3339(t0 + 7)),
        t0 + 7
    ));
    assert_eq!(q.body, "time,N1\n");
}

/// Retention on sealed chunks: the cut falls inside a sealed chunk, which
/// keeps exactly its readings from the cut minute on; what goes is
/// aggregated minute by minute, nothing twice or lost.
#[test]
fn retention_trims_and_aggregates_sealed_chunks() {
    let s = TestServer::start_with(|c| {
        c.storage.seal_idle_secs = 0;
        c.retention.sweep_secs = 1;
        c.retention.aggregate_keep_days = 10;
    });
    let tok = s.create_device("sd");
    // One reading a minute for an hour around "a day ago" (keep_days = 1
    // cuts inside it); the cut moves on while the test runs, so it is
    // read back from what was kept.
    let t0 = (hour_ago() + 3600) / 60 * 60;
    let first = t0 - 86_400 - 1800;
    let mut body = String::from("time,N1\n");
    for k in 0..61i64 {
        body.push_str(&format!("{},{k}.5\n", first + k * 60));
    }
    assert_eq!(post(&s, &tok, &body).body, "ok,61,0\n");
    sealed(&s, 2.0);
    let r = s.admin_form("POST", "/v1/devices/sd/retention", "keep_days=1");
    assert_eq!(r.status, 200, "{}", r.body);
    let all = |path: &str| -> Vec<String> {
        let r = s.get_admin(path);
        assert_eq!(r.status, 200, "{}", r.body);
        r.body.lines().skip(1).map(String::from).collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (kept, aggs) = loop {
        let kept = all("/v1/devices/sd/readings?sensors=N1");
        let aggs = all("/v1/devices/sd/aggregates?sensors=N1");
        if (kept.len() < 61 && kept.len() + aggs.len() == 61)
            || std::time::Instant::now() > deadline
        {
            break (kept, aggs);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(kept.len() < 61 && !kept.is_empty(), "{kept:?}");
    assert_eq!(kept.len() + aggs.len(), 61, "{kept:?} {aggs:?}");
    let gone = aggs.len() as i64;
    for (k, line) in kept.iter().enumerate() {
        let k = gone + k as i64;
        assert_eq!(line, &format!("{},{k}.5", rfc3339(first + k * 60)));
    }
    for (k, line) in aggs.iter().enumerate() {
        let k = k as i64;
        assert_eq!(
            line,
            &format!("{},1,{k}.5,{k}.5,{k}.5", rfc3339(first + k * 60))
        );
    }
}

/// Where the chunks of a stopped server's data file are: `(hot chunks in
/// readings, sealed chunks in readings, sealed chunks in sealed)`; a hot
/// chunk in `sealed` fails the test.
fn tables(data: &std::path::Path) -> (usize, usize, usize) {
    use overlord::store::{sealed as form, Store, READINGS, SEALED};
    use redb::{ReadableDatabase, ReadableTable};
    let store = Store::open(data).unwrap();
    let db = store.db().unwrap();
    let txn = db.begin_read().unwrap();
    let (mut hot, mut old, mut new) = (0, 0, 0);
    for row in txn.open_table(READINGS).unwrap().iter().unwrap() {
        let (_, v) = row.unwrap();
        if form::is_sealed(v.value()) {
            old += 1;
        } else {
            hot += 1;
        }
    }
    for row in txn.open_table(SEALED).unwrap().iter().unwrap() {
        let (k, v) = row.unwrap();
        assert!(
            form::is_sealed(v.value()),
            "hot chunk {:?} in sealed",
            k.value()
        );
        new += 1;
    }
    (hot, old, new)
}

/// Turn a stopped server's data file into the format before the `sealed`
/// table: every chunk sealed in place in `readings`, no `sealed` table.
fn to_previous_format(data: &std::path::Path) {
    use overlord::codec::SensorId;
    use overlord::store::{chunk, sealed as form, READINGS, SEALED};
    use redb::ReadableTable;
    let db = redb::Database::open(data).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(READINGS).unwrap();
        let mut all = Vec::new();
        for row in t.iter().unwrap() {
            let (k, v) = row.unwrap();
            let key = k.value();
            let kind = SensorId::from_code(key.1).unwrap().kind;
            let mut entries = Vec::new();
            chunk::decode(v.value(), kind, |o, val| entries.push((o, val))).unwrap();
            let mut buf = Vec::new();
            form::encode(&entries, kind, &mut buf);
            all.push((key, buf));
        }
        for (k, buf) in all {
            t.insert(k, buf.as_slice()).unwrap();
        }
    }
    assert!(txn.delete_table(SEALED).unwrap(), "the table was there");
    txn.commit().unwrap();
}

/// A data file from before the `sealed` table (sealed chunks in
/// `readings`) opens and answers the same, takes late readings and
/// retries into those chunks, and its chunks move to `sealed` after a
/// start, still answering the same.
#[test]
fn a_file_with_sealed_chunks_in_readings_reads_the_same_and_moves_over() {
    let s = TestServer::start_with(|c| c.storage.seal_chunks_per_step = 0);
    let tok = s.create_device("sd");
    let t0 = day_ago_hour();
    let (body, _) = rows(t0);
    assert_eq!(post(&s, &tok, &body).body, format!("ok,{},0\n", ROWS * 4));
    let hot = queries(&s, t0);
    let data = s.dir.join("overlord.redb");
    let (tmp, admin) = s.stop();
    let (ok, exported_hot, err) = cli(&data, &["export", "--device", "sd"], &[], None);
    assert!(ok, "{err}");
    to_previous_format(&data);
    assert_eq!(
        tables(&data),
        (0, 12, 0),
        "4 sensors x 3 hours, sealed in readings"
    );
    let (ok, exported, err) = cli(&data, &["export", "--device", "sd"], &[], None);
    assert!(ok, "{err}");
    assert_eq!(exported, exported_hot);

    // Read as they are (no sealing step runs: they stay in readings).
    let s = TestServer::restart(tmp, admin, |c| c.storage.seal_chunks_per_step = 0);
    assert_eq!(
        queries(&s, t0),
        hot,
        "sealed chunks in readings answer the same"
    );
    let late = format!("time,N1\n{},99.5\n", t0 + 5);
    for _ in 0..2 {
        assert_eq!(post(&s, &tok, &late).body, "ok,1,0\n");
    }
    assert_eq!(post(&s, &tok, &body).body, format!("ok,{},0\n", ROWS * 4));
    let got = scrape_until(&s, |_| true);
    assert_eq!(
        m(&got, "overlord_readings_stored_total"),
        1.0,
        "stored once"
    );
    let with_late = queries(&s, t0);
    assert_ne!(with_late, hot);
    assert!(
        with_late[1] == hot[1] && with_late[3] == hot[3],
        "only hour 1 changed"
    );
    let (tmp, admin) = s.stop();
    assert_eq!(tables(&data), (0, 12, 0), "re-sealed in place");

    // A start with sealing on moves them to the sealed table.
    let s = TestServer::restart(tmp, admin, |c| c.storage.seal_idle_secs = 0);
    sealed(&s, 12.0);
    assert_eq!(queries(&s, t0), with_late, "moved chunks answer the same");
    let (tmp, _admin) = s.stop();
    assert_eq!(tables(&data), (0, 0, 12));
    drop(tmp);
}

/// One reading a second (the second set's shape): the full parts of the
/// open hour go to the sealed table while the hour is open (no idle wait),
/// the last part stays hot, and queries, retries and late readings into
/// those parts answer as before.
#[test]
fn full_parts_of_the_open_hour_are_sealed_at_once() {
    let s = TestServer::start_with(|c| c.storage.seal_idle_secs = 3600);
    let tok = s.create_device("sd");
    let t0 = day_ago_hour();
    let mut body = String::from("time,N1\n");
    for i in 0..1200i64 {
        body.push_str(&format!("{},{}.{}\n", t0 + i, 20 + i % 7, i % 10));
    }
    assert_eq!(post(&s, &tok, &body).body, "ok,1200,0\n");
    let q = format!("/v1/devices/sd/readings?sensors=N1&from={t0}&limit=100000");
    let before = s.get_admin(&q).body;
    assert_eq!(before.lines().count(), 1201);
    // 1,200 readings: parts of 512, 512 and 176; the first two sealed.
    let got = scrape_until(&s, |g| {
        g.get("overlord_chunks_sealed_total")
            .is_some_and(|n| *n >= 2.0)
    });
    assert_eq!(m(&got, "overlord_chunks_sealed_total"), 2.0, "{got:?}");
    assert_eq!(
        m(&got, "overlord_seal_pending_sensors"),
        1.0,
        "the hour is open"
    );
    assert_eq!(s.get_admin(&q).body, before);
    assert_eq!(post(&s, &tok, &body).body, "ok,1200,0\n", "a retry");
    // Half a second after the 700th reading: inside the sealed part 1.
    let half = rfc3339(t0 + 700).replace('Z', ".5Z");
    let late = format!("time,N1\n{half},99.5\n");
    let r = post(&s, &tok, &late);
    assert_eq!(r.status, 200, "{}", r.body);
    let got = scrape_until(&s, |_| true);
    assert_eq!(m(&got, "overlord_readings_stored_total"), 1201.0);
    let after = s.get_admin(&q).body;
    assert_eq!(after.lines().count(), 1202);
    assert!(after.contains(&format!("{half},99.5\n")), "{after}");
    let data = s.dir.join("overlord.redb");
    let (_tmp, _admin) = s.stop();
    assert_eq!(tables(&data), (1, 0, 2));
}

/// An upload of past hours grows the data file (redb doubles it as it
/// grows, and keeps what it had); once the writer has been idle for
/// `compact_idle_secs` (by the server's clock, moved here), the server
/// compacts the file in place: smaller on disk, every reading the same,
/// retries still stored once, and `overlord compact` afterwards finds
/// next to nothing left to give back.
#[test]
fn an_idle_server_compacts_its_data_file_and_loses_nothing() {
    let s = TestServer::start_with(|c| {
        c.storage.compact_idle_secs = 600;
        c.storage.seal_idle_secs = 0; // every hour is over: all sealed at once
    });
    let t0 = day_ago_hour() - 6 * 3600;
    let mut bodies = Vec::new();
    for d in 0..40 {
        let tok = s.create_device(&format!("dev{d}"));
        // Six hours, 10 s apart, four sensors, in POSTs of 100 minutes.
        let mut walk = 200 + d;
        for part in 0..4i64 {
            let mut body = String::from("time,N1,N2,I3,N4\n");
            for i in part * 600..(part * 600 + 600).min(2160) {
                walk += (i * 7 + d) % 5 - 2;
                let t = t0 + i * 10;
                body.push_str(&format!(
                    "{t},{}.{},{},{},{}\n",
                    walk / 10,
                    walk.rem_euclid(10),
                    walk - 3,
                    i,
                    walk * 2
                ));
            }
            let r = post_as(&s, &format!("dev{d}"), &tok, &body);
            assert_eq!(r.status, 200, "{}", r.body);
            bodies.push((format!("dev{d}"), tok.clone(), body));
        }
    }
    let q = |d: &str| {
        let r = s.get_admin(&format!(
            "/v1/devices/{d}/readings?sensors=N1,N2,I3,N4&from={t0}&limit=100000"
        ));
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    let before: Vec<String> = (0..40).map(|d| q(&format!("dev{d}"))).collect();
    assert_eq!(before[0].lines().count(), 2161);
    let data = s.dir.join("overlord.redb");
    let grown = std::fs::metadata(&data).unwrap().len();
    let got = scrape_until(&s, |_| true);
    assert_eq!(m(&got, "overlord_compactions_total"), 0.0, "not idle yet");

    s.clock.advance(std::time::Duration::from_secs(601));
    let got = scrape_until(&s, |g| {
        g.get("overlord_compactions_total")
            .is_some_and(|n| *n >= 1.0)
    });
    assert_eq!(m(&got, "overlord_compactions_total"), 1.0, "{got:?}");
    let compacted = std::fs::metadata(&data).unwrap().len();
    // How much it gives back depends on how far sealing had kept pace
    // (the store test shows the shrink itself); it never grows, and what
    // is left is compact (below).
    assert!(compacted <= grown, "{grown} -> {compacted}");
    let after: Vec<String> = (0..40).map(|d| q(&format!("dev{d}"))).collect();
    assert!(after == before, "the same readings after compaction");
    // Retries after compaction: stored once.
    for (dev, tok, body) in bodies.iter().take(8) {
        let r = post_as(&s, dev, tok, body);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let got = scrape_until(&s, |_| true);
    assert_eq!(
        m(&got, "overlord_readings_stored_total"),
        (40 * 2160 * 4) as f64
    );
    assert!((0..40).map(|d| q(&format!("dev{d}"))).eq(before));
    let (_tmp, _admin) = s.stop();
    let (before, after) = common::cli_compact(&data);
    // What the server reached while idle is within a tenth of what the
    // offline compaction reaches (the retries' commits may have added a
    // few pages since).
    assert!(
        after * 10 >= compacted * 9,
        "little left to give back: {compacted} by the server; {before} -> {after} offline"
    );
}

fn post_as(s: &TestServer, dev: &str, tok: &str, body: &str) -> common::Reply {
    s.post(
        &format!("/v1/readings?device={dev}&token={tok}"),
        "text/csv",
        body.as_bytes(),
        "",
    )
}
