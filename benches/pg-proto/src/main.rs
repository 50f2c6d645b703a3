//! pg-proto: compare.sh's P2 data shape (DEVICES devices x 4 sensors, a
//! reading every 10 s, 100,000 CSV rows = 400,000 readings per
//! transaction) written into PostgreSQL the ways `docs/scale-out.md`
//! weighs, with `synchronous_commit = on`:
//!
//! - `chunks`: the store's chunk bytes (`bytea`) per (device, sensor,
//!   hour window): each transaction locks the chunks it touches
//!   (`SELECT ... FOR UPDATE`), merges the new readings into them on the
//!   client (a reading already there is a retry and is skipped) and
//!   upserts them back (`INSERT ... ON CONFLICT DO UPDATE`);
//! - `rows`: a row per reading, binary `COPY` straight into the table
//!   (no retry handling: a retried reading would fail the whole COPY);
//! - `rows-dedup`: a row per reading, binary `COPY` into a temporary
//!   table, then `INSERT ... SELECT ... ON CONFLICT DO NOTHING` (what a
//!   store that must store a retry once would do);
//! - `rows-unnest`: a row per reading, one `INSERT ... SELECT FROM
//!   unnest($1, $2, $3, $4) ON CONFLICT DO NOTHING` with array
//!   parameters (the form for small group commits, where a COPY and a
//!   temporary table cost more than they save).
//!
//! Values are generated exactly like `benches/load` (same random walks),
//! before the clock starts. Chunk bytes use the hot chunk form of
//! `src/store/chunk.rs` for this shape (whole seconds, `N` values at a
//! fixed scale): `unit count {offset_delta value}*`, the first value
//! `(zigzag(mantissa) << 4 | scale) << 1 | 1`, later ones
//! `zigzag(delta) << 1`. A row's value is that lone-value encoding.
//!
//! CPU is read from /proc: the postmaster's own and reaped children's
//! time plus every live child's, so checkpointer, WAL writer and
//! autovacuum count too. Output: one `key=value` line per mode.
//!
//! `--query RUNS`: afterwards, read device 1's sensor 1 over the whole
//! time range RUNS times (P3's shape with `--devices 1 --step 1 --steps
//! 86400`): the rows or chunks selected, decoded, merged by time and
//! written as CSV text, and report the median and p90 milliseconds.
//!
//! ```text
//! pg-proto --url URL --postmaster PID --mode chunks|rows|rows-dedup|rows-unnest
//!          [--devices 1000] [--steps 1000] [--rows-per-post 100000]
//!          [--start UNIX_S] [--step SECS] [--seal] [--query RUNS]
//! ```
//!
//! `--seal` (row modes): afterwards, fold every (device, sensor, hour)
//! of rows into one chunk row and delete the rows (the sealing step of a
//! store that keeps recent readings as rows and older ones as chunks),
//! and report that step's cost on a line of its own.
//!
//! ```text
//! ```

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::time::Instant;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

type Res<T> = Result<T, String>;

/// (decimals, start, min, max, largest step): `benches/load`'s sensors.
const KINDS: [(u32, i64, i64, i64, i64); 4] = [
    (1, 215, -100, 450, 2),
    (1, 480, 50, 990, 5),
    (2, 101_325, 95_000, 105_000, 7),
    (3, 3_300, 2_900, 3_400, 2),
];
const SENSORS: usize = 4;
/// Seconds one chunk spans (an hour, as `chunk::SPAN_MINUTES`).
const WINDOW_S: i64 = 3600;

/// One reading: device, sensor code, unix seconds, mantissa, scale.
#[derive(Clone, Copy)]
struct Reading {
    dev: i32,
    sensor: i32,
    t: i64,
    m: i64,
    scale: u8,
}

/// `benches/load`'s generator: per (device, sensor) random walks.
struct Gen {
    state: Vec<i64>,
    rng: u64,
}

impl Gen {
    fn new(devices: usize) -> Gen {
        let mut state = Vec::with_capacity(devices * SENSORS);
        for d in 0..devices {
            for k in KINDS {
                state.push(k.1 + (d as i64 % 17) * k.4);
            }
        }
        Gen {
            state,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next_rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn row(&mut self, t: i64, d: usize, out: &mut Vec<Reading>) {
        for (s, k) in KINDS.iter().enumerate() {
            let r = self.next_rand();
            let delta = (r % (2 * k.4 as u64 + 1)) as i64 - k.4;
            let v = (self.state[d * SENSORS + s] + delta).clamp(k.2, k.3);
            self.state[d * SENSORS + s] = v;
            out.push(Reading {
                dev: d as i32 + 1,
                sensor: s as i32 + 1,
                t,
                m: v,
                scale: k.0 as u8,
            });
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], i: &mut usize) -> Res<u64> {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = *b.get(*i).ok_or("truncated varint")?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
        shift += 7;
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// A lone `N` value (a row's value; a chunk's first).
fn lone_value(out: &mut Vec<u8>, m: i64, scale: u8) {
    put_varint(out, ((zigzag(m) << 4) | u64::from(scale)) << 1 | 1);
}

/// Entry of a chunk: offset in seconds from the window start, mantissa,
/// scale.
type Entry = (u32, i64, u8);

/// The hot chunk form for entries sorted by offset (unit 2: seconds).
fn encode_chunk(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * 2);
    out.push(2);
    put_varint(&mut out, entries.len() as u64);
    let (mut last_off, mut prev): (u32, Option<(i64, u8)>) = (0, None);
    for &(off, m, scale) in entries {
        put_varint(&mut out, u64::from(off - last_off));
        last_off = off;
        match prev {
            Some((pm, ps)) if ps == scale => put_varint(&mut out, zigzag(m - pm) << 1),
            _ => lone_value(&mut out, m, scale),
        }
        prev = Some((m, scale));
    }
    out
}

fn decode_chunk(b: &[u8]) -> Res<Vec<Entry>> {
    if b.first() != Some(&2) {
        return Err("unexpected chunk unit".into());
    }
    let mut i = 1;
    let n = get_varint(b, &mut i)? as usize;
    let mut out = Vec::with_capacity(n);
    let (mut off, mut prev): (u32, (i64, u8)) = (0, (0, 0));
    for _ in 0..n {
        off += get_varint(b, &mut i)? as u32;
        let tag = get_varint(b, &mut i)?;
        prev = if tag & 1 == 1 {
            ((unzigzag(tag >> 5)), ((tag >> 1) & 0xf) as u8)
        } else {
            (prev.0 + unzigzag(tag >> 1), prev.1)
        };
        out.push((off, prev.0, prev.1));
    }
    Ok(out)
}

/// Merge `new` into `old` (both sorted by offset); an offset already
/// present keeps its first value (a retry). Returns how many were new.
fn merge(old: Vec<Entry>, new: &[Entry]) -> (Vec<Entry>, usize) {
    let mut out = Vec::with_capacity(old.len() + new.len());
    let (mut i, mut j, mut added) = (0, 0, 0);
    while i < old.len() || j < new.len() {
        if j == new.len() || (i < old.len() && old[i].0 <= new[j].0) {
            if j < new.len() && old[i].0 == new[j].0 {
                j += 1;
            }
            out.push(old[i]);
            i += 1;
        } else {
            out.push(new[j]);
            added += 1;
            j += 1;
        }
    }
    (out, added)
}

/// CPU ticks of a postmaster and all its processes (reaped ones through
/// its cutime/cstime).
fn pg_ticks(postmaster: u32) -> Res<u64> {
    let fields = |pid: &str| -> Option<Vec<String>> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        Some(rest.split(' ').map(str::to_string).collect())
    };
    // After the ')': field 3 (state) is index 0, so field N is N - 3.
    let own = fields(&postmaster.to_string()).ok_or("postmaster is gone")?;
    let num = |f: &[String], n: usize| f[n - 3].parse::<u64>().unwrap_or(0);
    let mut total = num(&own, 14) + num(&own, 15) + num(&own, 16) + num(&own, 17);
    let pm = postmaster.to_string();
    for e in std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Some(f) = fields(&name) {
            if f[1] == pm {
                total += num(&f, 14) + num(&f, 15);
            }
        }
    }
    Ok(total)
}

fn self_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rfind(')').map(|i| &s[i + 2..]).unwrap_or("");
    let f: Vec<&str> = rest.split(' ').collect();
    let n = |k: usize| {
        f.get(k - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(14) + n(15)
}

fn hz() -> f64 {
    // CLK_TCK is 100 on every Linux this runs on; getconf confirms it in
    // run.sh's output.
    100.0
}

struct Opts {
    url: String,
    postmaster: u32,
    mode: String,
    devices: usize,
    steps: usize,
    per_post: usize,
    start: i64,
    step: i64,
    seal: bool,
    query: usize,
}

fn opts() -> Res<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| -> Option<String> {
        args.iter()
            .position(|a| a == &format!("--{k}"))
            .and_then(|i| args.get(i + 1).cloned())
    };
    let num = |k: &str, d: i64| -> Res<i64> {
        get(k).map_or(Ok(d), |v| {
            v.parse().map_err(|_| format!("--{k}: not a number"))
        })
    };
    Ok(Opts {
        url: get("url").ok_or("--url is required")?,
        postmaster: num("postmaster", 0)? as u32,
        mode: get("mode").ok_or("--mode is required")?,
        devices: num("devices", 1000)?.clamp(1, 100_000) as usize,
        steps: num("steps", 1000)?.clamp(1, 1_000_000) as usize,
        per_post: num("rows-per-post", 100_000)?.clamp(1, 1_000_000) as usize,
        start: num("start", 1_700_000_000)?,
        step: num("step", 10)?.clamp(1, 3600),
        seal: args.iter().any(|a| a == "--seal"),
        query: num("query", 0)?.clamp(0, 1000) as usize,
    })
}

mod extra;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `--experiment ...`: the step-4 measurements of src/extra.rs.
    let r = if std::env::args().any(|a| a == "--experiment") {
        extra::run().await
    } else {
        run().await
    };
    if let Err(e) = r {
        eprintln!("pg-proto: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Res<()> {
    let o = opts()?;
    let (mut client, conn) = tokio_postgres::connect(&o.url, NoTls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("pg-proto: connection: {e}");
        }
    });
    let sql = sql_err;
    schema(&client, &o.mode).await?;
    let st = Stmts::prepare(&client, &o.mode).await?;
    // Pregenerate every post's readings (time-major, like benches/load).
    let mut g = Gen::new(o.devices);
    let total_rows = o.devices * o.steps;
    let mut posts: Vec<Vec<Reading>> = Vec::new();
    let mut row = 0;
    while row < total_rows {
        let end = (row + o.per_post).min(total_rows);
        let mut v = Vec::with_capacity((end - row) * SENSORS);
        while row < end {
            g.row(
                o.start + (row / o.devices) as i64 * o.step,
                row % o.devices,
                &mut v,
            );
            row += 1;
        }
        posts.push(v);
    }
    let readings: usize = posts.iter().map(Vec::len).sum();
    let lsn0: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(sql)?
        .get(0);
    let (pg0, me0, t0) = (pg_ticks(o.postmaster)?, self_ticks(), Instant::now());
    let mut stored = 0u64;
    for p in &posts {
        stored += write_post(&mut client, &st, &o.mode, p).await?;
    }
    let ingest_secs = t0.elapsed().as_secs_f64();
    let (pg1, me1) = (pg_ticks(o.postmaster)?, self_ticks());
    // What the writes leave to do: vacuum (dead chunk versions) and the
    // checkpoint that writes the pages.
    client
        .batch_execute(&format!("VACUUM {}", table(&o.mode)))
        .await
        .map_err(sql)?;
    client.batch_execute("CHECKPOINT").await.map_err(sql)?;
    let pg2 = pg_ticks(o.postmaster)?;
    let wal: i64 = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::int8",
            &[&lsn0],
        )
        .await
        .map_err(sql)?
        .get(0);
    let size: i64 = client
        .query_one(
            &format!("SELECT pg_total_relation_size('{}')", table(&o.mode)),
            &[],
        )
        .await
        .map_err(sql)?
        .get(0);
    let counted = count(&client, &o.mode).await?;
    if counted != readings as u64 || stored != readings as u64 {
        return Err(format!(
            "stored {stored}, counted {counted}, sent {readings} readings"
        ));
    }
    // A retry of the first post stores nothing (modes that keep retries
    // out; `rows` would fail the COPY on the primary key).
    let retry = if o.mode == "rows" {
        "n/a".to_string()
    } else {
        write_post(&mut client, &st, &o.mode, &posts[0])
            .await?
            .to_string()
    };
    let m = readings as f64 / 1e6;
    if o.seal {
        seal_report(&mut client, o.postmaster, readings).await?;
    }
    if o.query > 0 {
        let to = o.start + (o.steps as i64 - 1) * o.step;
        query_report(&client, &o.mode, o.postmaster, o.start, to, o.query).await?;
    }
    println!(
        "mode={} readings_per_txn={} readings={readings} rows={total_rows} txns={} secs={ingest_secs:.2} rows_per_sec={:.0} readings_per_sec={:.0} \
         pg_cpu_s_per_1M_readings={:.2} pg_cpu_s_per_1M_with_vacuum_checkpoint={:.2} client_cpu_s_per_1M_readings={:.2} \
         bytes_per_reading={:.2} wal_bytes_per_reading={:.2} retry_of_first_txn_stored={retry}",
        o.mode,
        o.per_post * SENSORS,
        posts.len(),
        total_rows as f64 / ingest_secs,
        readings as f64 / ingest_secs,
        (pg1 - pg0) as f64 / hz() / m,
        (pg2 - pg0) as f64 / hz() / m,
        (me1 - me0) as f64 / hz() / m,
        size as f64 / readings as f64,
        wal as f64 / readings as f64,
    );
    Ok(())
}

/// A driver error with the server's message, when there is one.
fn sql_err(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("sql: {db}"),
        None => format!("sql: {e}"),
    }
}

fn table(mode: &str) -> &'static str {
    if mode == "chunks" {
        "chunks"
    } else {
        "readings"
    }
}

async fn schema(c: &Client, mode: &str) -> Res<()> {
    let ddl = match mode {
        "chunks" => {
            "DROP TABLE IF EXISTS chunks;
             CREATE TABLE chunks (device int4 NOT NULL, sensor int4 NOT NULL, minute int4 NOT NULL,
                 part int2 NOT NULL, data bytea NOT NULL, PRIMARY KEY (device, sensor, minute, part))"
        }
        "rows" | "rows-dedup" | "rows-unnest" => {
            "DROP TABLE IF EXISTS readings;
             CREATE TABLE readings (device int4 NOT NULL, sensor int4 NOT NULL, t int8 NOT NULL,
                 v bytea NOT NULL, PRIMARY KEY (device, sensor, t));
             DROP TABLE IF EXISTS chunks;
             CREATE TABLE chunks (device int4 NOT NULL, sensor int4 NOT NULL, minute int4 NOT NULL,
                 part int2 NOT NULL, data bytea NOT NULL, PRIMARY KEY (device, sensor, minute, part));
             CREATE TEMP TABLE stage (device int4, sensor int4, t int8, v bytea) ON COMMIT DELETE ROWS"
        }
        other => return Err(format!("unknown mode '{other}'")),
    };
    c.batch_execute(ddl)
        .await
        .map_err(|e| format!("schema: {e}"))
}

/// The statements, prepared once per connection (as the store would,
/// through its pool's statement cache).
struct Stmts {
    lock: Statement,
    upsert: Statement,
    unnest: Statement,
    dedup: Statement,
}

impl Stmts {
    async fn prepare(c: &Client, mode: &str) -> Res<Stmts> {
        // A mode's statements only; the others are a placeholder never run.
        let p = |q: &'static str| async move { c.prepare(q).await.map_err(sql_err) };
        let dummy = "SELECT 1";
        Ok(Stmts {
            lock: p(if mode == "chunks" { LOCK_SQL } else { dummy }).await?,
            upsert: p(if mode == "chunks" { UPSERT_SQL } else { dummy }).await?,
            unnest: p(if mode == "rows-unnest" {
                UNNEST_SQL
            } else {
                dummy
            })
            .await?,
            dedup: p(if mode == "rows-dedup" {
                DEDUP_SQL
            } else {
                dummy
            })
            .await?,
        })
    }
}

const LOCK_SQL: &str = "SELECT c.device, c.sensor, c.minute, c.data FROM chunks c
             JOIN unnest($1::int4[], $2::int4[], $3::int4[]) AS k(d, s, m)
               ON c.device = k.d AND c.sensor = k.s AND c.minute = k.m AND c.part = 0
             ORDER BY 1, 2, 3 FOR UPDATE OF c";
const UPSERT_SQL: &str = "INSERT INTO chunks (device, sensor, minute, part, data)
         SELECT d, s, m, 0, x FROM unnest($1::int4[], $2::int4[], $3::int4[], $4::bytea[]) AS u(d, s, m, x)
         ON CONFLICT (device, sensor, minute, part) DO UPDATE SET data = EXCLUDED.data";
const UNNEST_SQL: &str = "INSERT INTO readings (device, sensor, t, v)
                 SELECT * FROM unnest($1::int4[], $2::int4[], $3::int8[], $4::bytea[])
                 ON CONFLICT DO NOTHING";
const DEDUP_SQL: &str = "INSERT INTO readings SELECT * FROM stage ON CONFLICT DO NOTHING";

/// One transaction: the post's readings. Returns how many were new.
async fn write_post(c: &mut Client, st: &Stmts, mode: &str, p: &[Reading]) -> Res<u64> {
    let sql = sql_err;
    let txn = c.transaction().await.map_err(sql)?;
    let new = match mode {
        "chunks" => write_chunks(&txn, st, p).await?,
        "rows-unnest" => {
            let (mut ds, mut ss, mut ts, mut vs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for r in p {
                let mut v = Vec::with_capacity(3);
                lone_value(&mut v, r.m, r.scale);
                ds.push(r.dev);
                ss.push(r.sensor);
                ts.push(r.t * 1_000_000);
                vs.push(v);
            }
            txn.execute(&st.unnest, &[&ds, &ss, &ts, &vs])
                .await
                .map_err(sql)?
        }
        _ => {
            let target = if mode == "rows" { "readings" } else { "stage" };
            let sink = txn
                .copy_in(&format!(
                    "COPY {target} (device, sensor, t, v) FROM STDIN BINARY"
                ))
                .await
                .map_err(sql)?;
            let types = [Type::INT4, Type::INT4, Type::INT8, Type::BYTEA];
            let mut w = pin!(BinaryCopyInWriter::new(sink, &types));
            let mut v = Vec::with_capacity(4);
            for r in p {
                v.clear();
                lone_value(&mut v, r.m, r.scale);
                let t_us = r.t * 1_000_000;
                w.as_mut()
                    .write(&[&r.dev, &r.sensor, &t_us, &v.as_slice()])
                    .await
                    .map_err(sql)?;
            }
            let n = w.finish().await.map_err(sql)?;
            if mode == "rows" {
                n
            } else {
                txn.execute(&st.dedup, &[]).await.map_err(sql)?
            }
        }
    };
    txn.commit().await.map_err(sql)?;
    Ok(new)
}

/// Lock the chunks the readings go to, merge, upsert.
async fn write_chunks(
    txn: &tokio_postgres::Transaction<'_>,
    st: &Stmts,
    p: &[Reading],
) -> Res<u64> {
    let sql = sql_err;
    // (device, sensor, window minute) -> new entries, sorted by offset.
    let mut by_key: BTreeMap<(i32, i32, i32), Vec<Entry>> = BTreeMap::new();
    for r in p {
        let w = r.t.div_euclid(WINDOW_S) * WINDOW_S;
        by_key
            .entry((r.dev, r.sensor, (w / 60) as i32))
            .or_default()
            .push(((r.t - w) as u32, r.m, r.scale));
    }
    let (mut ds, mut ss, mut ms) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in by_key.iter_mut() {
        v.sort_by_key(|e| e.0);
        ds.push(k.0);
        ss.push(k.1);
        ms.push(k.2);
    }
    let rows = txn.query(&st.lock, &[&ds, &ss, &ms]).await.map_err(sql)?;
    let mut old: HashMap<(i32, i32, i32), Vec<u8>> = HashMap::with_capacity(rows.len());
    for r in rows {
        old.insert((r.get(0), r.get(1), r.get(2)), r.get(3));
    }
    let mut datas: Vec<Vec<u8>> = Vec::with_capacity(by_key.len());
    let mut new = 0u64;
    for (k, v) in &by_key {
        let before = match old.get(k) {
            Some(b) => decode_chunk(b)?,
            None => Vec::new(),
        };
        let (merged, added) = merge(before, v);
        new += added as u64;
        datas.push(encode_chunk(&merged));
    }
    txn.execute(&st.upsert, &[&ds, &ss, &ms, &datas])
        .await
        .map_err(sql)?;
    Ok(new)
}

/// A lone value's mantissa and scale (what [`lone_value`] wrote).
fn decode_lone(b: &[u8]) -> Res<(i64, u8)> {
    let mut i = 0;
    let tag = get_varint(b, &mut i)?;
    if tag & 1 == 0 {
        return Err("not a lone value".into());
    }
    Ok((unzigzag(tag >> 5), ((tag >> 1) & 0xf) as u8))
}

/// Fold every row into chunk rows, 64 series per transaction, and report
/// the PostgreSQL CPU and WAL of it per reading and the bytes after it.
async fn seal_report(c: &mut Client, postmaster: u32, readings: usize) -> Res<()> {
    let sql = sql_err;
    let lsn0: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(sql)?
        .get(0);
    let (pg0, t0) = (pg_ticks(postmaster)?, Instant::now());
    let series: Vec<(i32, i32)> = c
        .query(
            "SELECT DISTINCT device, sensor FROM readings ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(sql)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut txns = 0;
    for batch in series.chunks(64) {
        let ds: Vec<i32> = batch.iter().map(|k| k.0).collect();
        let ss: Vec<i32> = batch.iter().map(|k| k.1).collect();
        let txn = c.transaction().await.map_err(sql)?;
        let rows = txn
            .query(
                "SELECT r.device, r.sensor, r.t, r.v FROM readings r
                 JOIN unnest($1::int4[], $2::int4[]) AS k(d, s) ON r.device = k.d AND r.sensor = k.s
                 ORDER BY 1, 2, 3 FOR UPDATE OF r",
                &[&ds, &ss],
            )
            .await
            .map_err(sql)?;
        let mut by_key: BTreeMap<(i32, i32, i32), Vec<Entry>> = BTreeMap::new();
        for r in &rows {
            let t = r.get::<_, i64>(2) / 1_000_000;
            let (m, scale) = decode_lone(r.get::<_, &[u8]>(3))?;
            let w = t.div_euclid(WINDOW_S) * WINDOW_S;
            by_key
                .entry((r.get(0), r.get(1), (w / 60) as i32))
                .or_default()
                .push(((t - w) as u32, m, scale));
        }
        let (mut kd, mut ks, mut km, mut kx) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (k, v) in &by_key {
            kd.push(k.0);
            ks.push(k.1);
            km.push(k.2);
            kx.push(encode_chunk(v));
        }
        txn.execute(UPSERT_SQL, &[&kd, &ks, &km, &kx])
            .await
            .map_err(sql)?;
        txn.execute(
            "DELETE FROM readings r USING unnest($1::int4[], $2::int4[]) AS k(d, s)
             WHERE r.device = k.d AND r.sensor = k.s",
            &[&ds, &ss],
        )
        .await
        .map_err(sql)?;
        txn.commit().await.map_err(sql)?;
        txns += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    c.batch_execute("VACUUM readings").await.map_err(sql)?;
    c.batch_execute("VACUUM chunks").await.map_err(sql)?;
    c.batch_execute("CHECKPOINT").await.map_err(sql)?;
    let pg1 = pg_ticks(postmaster)?;
    let row = c
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::int8,
                    pg_total_relation_size('chunks'), pg_total_relation_size('readings')",
            &[&lsn0],
        )
        .await
        .map_err(sql)?;
    let (wal, chunks, rows): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let counted = count(c, "chunks").await?;
    if counted != readings as u64 {
        return Err(format!("sealed {counted} of {readings} readings"));
    }
    println!(
        "seal: series={} txns={txns} secs={secs:.2} pg_cpu_s_per_1M_readings_with_vacuum_checkpoint={:.2} \
         wal_bytes_per_reading={:.2} chunk_bytes_per_reading={:.2} emptied_rows_table_bytes={rows}",
        series.len(),
        (pg1 - pg0) as f64 / hz() / (readings as f64 / 1e6),
        wal as f64 / readings as f64,
        chunks as f64 / readings as f64,
    );
    Ok(())
}

/// Append `m` at `scale` as decimal text (`benches/load`'s write_fixed).
fn write_decimal(out: &mut String, m: i64, scale: u8) {
    use std::fmt::Write;
    let p = 10i64.pow(u32::from(scale));
    let sign = if m < 0 { "-" } else { "" };
    let a = m.abs();
    let _ = write!(out, "{sign}{}.{:0w$}", a / p, a % p, w = scale as usize);
}

/// P3's read: one sensor's readings in [from, to] as `time,N1` CSV.
/// Returns the number of rows written.
async fn read_series(c: &Client, mode: &str, from: i64, to: i64, out: &mut String) -> Res<usize> {
    use std::fmt::Write;
    out.clear();
    out.push_str("time,N1\n");
    let mut n = 0;
    if mode == "chunks" {
        let (fm, tm) = ((from.div_euclid(60)) as i32, (to.div_euclid(60)) as i32);
        let rows = c
            .query(
                "SELECT minute, data FROM chunks WHERE device = 1 AND sensor = 1
                 AND minute >= $1 - 59 AND minute <= $2 ORDER BY minute, part",
                &[&fm, &tm],
            )
            .await
            .map_err(sql_err)?;
        for r in &rows {
            let base = i64::from(r.get::<_, i32>(0)) * 60;
            for (off, m, scale) in decode_chunk(r.get::<_, &[u8]>(1))? {
                let t = base + i64::from(off);
                if t < from || t > to {
                    continue;
                }
                let _ = write!(out, "{t},");
                write_decimal(out, m, scale);
                out.push('\n');
                n += 1;
            }
        }
    } else {
        let rows = c
            .query(
                "SELECT t, v FROM readings WHERE device = 1 AND sensor = 1
                 AND t >= $1 AND t <= $2 ORDER BY t",
                &[&(from * 1_000_000), &(to * 1_000_000)],
            )
            .await
            .map_err(sql_err)?;
        for r in &rows {
            let (m, scale) = decode_lone(r.get::<_, &[u8]>(1))?;
            let _ = write!(out, "{},", r.get::<_, i64>(0) / 1_000_000);
            write_decimal(out, m, scale);
            out.push('\n');
            n += 1;
        }
    }
    Ok(n)
}

/// Read the series `runs` times; print the median and p90 ms and the
/// PostgreSQL CPU per read.
async fn query_report(
    c: &Client,
    mode: &str,
    postmaster: u32,
    from: i64,
    to: i64,
    runs: usize,
) -> Res<()> {
    let mut out = String::new();
    let expected = read_series(c, mode, from, to, &mut out).await?; // warm the cache
    let mut ms = Vec::with_capacity(runs);
    let pg0 = pg_ticks(postmaster)?;
    for _ in 0..runs {
        let t0 = Instant::now();
        let n = read_series(c, mode, from, to, &mut out).await?;
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        if n != expected {
            return Err(format!("read {n} rows, then {expected}"));
        }
    }
    let pg1 = pg_ticks(postmaster)?;
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "query: mode={mode} rows={expected} runs={runs} median_ms={:.2} p90_ms={:.2} pg_cpu_ms_per_query={:.2} csv_bytes={}",
        ms[runs / 2],
        ms[(runs * 9 / 10).min(runs - 1)],
        (pg1 - pg0) as f64 / hz() * 1000.0 / runs as f64,
        out.len(),
    );
    Ok(())
}

/// Readings stored: rows, or every chunk's count decoded.
async fn count(c: &Client, mode: &str) -> Res<u64> {
    let sql = sql_err;
    if mode == "chunks" {
        let rows = c.query("SELECT data FROM chunks", &[]).await.map_err(sql)?;
        let mut n = 0;
        for r in rows {
            n += decode_chunk(r.get::<_, &[u8]>(0))?.len() as u64;
        }
        Ok(n)
    } else {
        let n: i64 = c
            .query_one("SELECT count(*) FROM readings", &[])
            .await
            .map_err(sql)?
            .get(0);
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_merge_skips_retries() {
        let a = vec![(0, 215, 1), (10, 217, 1), (20, 213, 1)];
        assert_eq!(decode_chunk(&encode_chunk(&a)).unwrap(), a);
        let (m, added) = merge(a.clone(), &[(10, 999, 1), (30, 210, 1)]);
        assert_eq!(added, 1);
        assert_eq!(
            m,
            vec![(0, 215, 1), (10, 217, 1), (20, 213, 1), (30, 210, 1)]
        );
        // A thermometer moving by 0.1: one byte of time, one of value.
        assert_eq!(encode_chunk(&m).len(), 2 + 3 + 3 * 2);
    }
}
