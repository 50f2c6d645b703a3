//! Step 4 of the plan (docs/scale-out.md, (b), "Still to measure before
//! this is final"), on the design's two tables:
//!
//! ```sql
//! readings_hot (device int4, sensor int4, t int8, v bytea, PRIMARY KEY (device, sensor, t))
//! readings (device int4, sensor int4, minute int4, part int2, data bytea,
//!           PRIMARY KEY (device, sensor, minute, part)) WITH (fillfactor = 70)
//! ```
//!
//! Chunk bytes are the prototype's hot chunk form (`encode_chunk`): the
//! prototype has no codec for the sealed form (`src/store/sealed.rs`,
//! about a quarter of the hot form's size), so sealed chunk rows here are
//! larger than the store's would be.
//!
//! - `--experiment p3span`: one sensor's day, 86,400 readings 1 s apart,
//!   stored three ways in the same two tables: device 1 the first 22.5 h as
//!   chunk rows and the last 1.5 h as hot rows; device 2 all chunk rows;
//!   device 3 all hot rows (the same values). Each read is the design's
//!   query (a range scan per table, merged by time on the client, chunks
//!   decoded, written as `time,N1` CSV): `span` (device 1, the two scans
//!   one after the other), `span-pipelined` (both sent before either
//!   answer is read), `chunks` (device 2, the chunk scan only),
//!   `chunks-two-scans` (device 2, both scans: a sealed day read the
//!   design's way), `rows` (device 3, the hot scan only). `--runs` reads
//!   of each, round robin, after one warm-up; every read's CSV must be
//!   identical.
//! - `--experiment trickle`: DEVICES x 4 series, a reading every 10 s.
//!   Hot rows for the first 1.5 h loaded unmeasured (bulk), `VACUUM`,
//!   `CHECKPOINT`; then two cycles of: an hour of readings in transactions
//!   of 12 (`INSERT ... unnest ... ON CONFLICT DO NOTHING RETURNING`),
//!   with a `CHECKPOINT` every 30 minutes of data (as checkpoint_timeout
//!   = 30min would at real-time rates), then the sealing step for the
//!   window an hour and a half behind (`--seal lock`: rows `SELECT ... FOR
//!   UPDATE`, chunk rows locked, merged, upserted, rows `DELETE`d; `--seal
//!   returning`: `DELETE ... RETURNING` instead of the locking select),
//!   then `VACUUM`. WAL bytes (pg_current_wal_lsn), full-page images
//!   (pg_stat_wal), CPU of the connection's backend (/proc schedstat, ns)
//!   and of all of PostgreSQL (ticks, as the main modes), per reading.
//! - `--experiment fleet`: DEVICES x 4 series x 1.5 h at one reading per
//!   10 s as hot rows, inserted in time order (a transaction per time
//!   step, as a fleet's trickle would lay them out), `VACUUM ANALYZE`,
//!   sizes of heap and index; then `CHECKPOINT` and the sealing step for
//!   the oldest hour of every series, timed, then `VACUUM`.
//!
//! `--wal-compression off|lz4|pglz|zstd` sets it server-wide first
//! (`ALTER SYSTEM`, reload, checked with `SHOW` on the measuring
//! connection).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, Statement};

use super::{
    decode_chunk, decode_lone, encode_chunk, hz, lone_value, merge, pg_ticks, sql_err,
    write_decimal, Entry, Gen, Reading, Res, SENSORS, WINDOW_S,
};

struct X {
    url: String,
    postmaster: u32,
    experiment: String,
    devices: usize,
    runs: usize,
    comp: Option<String>,
    seal: String,
    batch: usize,
    ckpt_min: usize,
}

fn xopts() -> Res<X> {
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
    let comp = get("wal-compression");
    if let Some(c) = &comp {
        if !["off", "on", "pglz", "lz4", "zstd"].contains(&c.as_str()) {
            return Err(format!("--wal-compression {c}: unknown"));
        }
    }
    let seal = get("seal").unwrap_or_else(|| "lock".into());
    if seal != "lock" && seal != "returning" {
        return Err("--seal lock|returning".into());
    }
    Ok(X {
        url: get("url").ok_or("--url is required")?,
        postmaster: num("postmaster", 0)? as u32,
        experiment: get("experiment").ok_or("--experiment is required")?,
        devices: num("devices", 12)?.clamp(1, 100_000) as usize,
        runs: num("runs", 30)?.clamp(1, 1000) as usize,
        comp,
        seal,
        batch: num("seal-batch", 64)?.clamp(1, 100_000) as usize,
        ckpt_min: num("ckpt-min", 30)?.clamp(1, 60) as usize,
    })
}

pub async fn run() -> Res<()> {
    let o = xopts()?;
    let (mut c, conn) = tokio_postgres::connect(&o.url, NoTls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("pg-proto: connection: {e}");
        }
    });
    if let Some(v) = &o.comp {
        set_wal_compression(&c, v).await?;
    }
    let comp = show(&c, "wal_compression").await?;
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(sql_err)?
        .get(0);
    c.batch_execute(
        "DROP TABLE IF EXISTS readings_hot, readings;
         CREATE TABLE readings_hot (device int4 NOT NULL, sensor int4 NOT NULL, t int8 NOT NULL,
             v bytea NOT NULL, PRIMARY KEY (device, sensor, t));
         CREATE TABLE readings (device int4 NOT NULL, sensor int4 NOT NULL, minute int4 NOT NULL,
             part int2 NOT NULL, data bytea NOT NULL,
             PRIMARY KEY (device, sensor, minute, part)) WITH (fillfactor = 70)",
    )
    .await
    .map_err(sql_err)?;
    let m = Meter {
        pid,
        postmaster: o.postmaster,
    };
    match o.experiment.as_str() {
        "p3span" => p3span(&mut c, &o, &m).await,
        "trickle" => trickle(&mut c, &o, &m, &comp).await,
        "fleet" => fleet(&mut c, &o, &m, &comp).await,
        other => Err(format!("unknown experiment '{other}'")),
    }
}

async fn show(c: &Client, name: &str) -> Res<String> {
    Ok(c.query_one(&format!("SHOW {name}"), &[])
        .await
        .map_err(sql_err)?
        .get(0))
}

async fn set_wal_compression(c: &Client, v: &str) -> Res<()> {
    c.batch_execute(&format!("ALTER SYSTEM SET wal_compression = '{v}'"))
        .await
        .map_err(|e| format!("wal_compression = {v} refused: {}", sql_err(e)))?;
    c.batch_execute("SELECT pg_reload_conf()")
        .await
        .map_err(sql_err)?;
    for _ in 0..200 {
        if show(c, "wal_compression").await? == v {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("wal_compression did not become {v}"))
}

const HOT_INSERT: &str = "INSERT INTO readings_hot (device, sensor, t, v)
    SELECT * FROM unnest($1::int4[], $2::int4[], $3::int8[], $4::bytea[])
    ON CONFLICT DO NOTHING RETURNING device, sensor, t";
const HOT_INSERT_BULK: &str = "INSERT INTO readings_hot (device, sensor, t, v)
    SELECT * FROM unnest($1::int4[], $2::int4[], $3::int8[], $4::bytea[])
    ON CONFLICT DO NOTHING";
const CHUNK_LOCK: &str = "SELECT c.device, c.sensor, c.minute, c.data FROM readings c
    JOIN unnest($1::int4[], $2::int4[], $3::int4[]) AS k(d, s, m)
      ON c.device = k.d AND c.sensor = k.s AND c.minute = k.m AND c.part = 0
    ORDER BY 1, 2, 3 FOR UPDATE OF c";
const CHUNK_UPSERT: &str = "INSERT INTO readings (device, sensor, minute, part, data)
    SELECT d, s, m, 0, x FROM unnest($1::int4[], $2::int4[], $3::int4[], $4::bytea[]) AS u(d, s, m, x)
    ON CONFLICT (device, sensor, minute, part) DO UPDATE SET data = EXCLUDED.data";
const SEAL_SELECT: &str = "SELECT r.device, r.sensor, r.t, r.v FROM readings_hot r
    JOIN unnest($1::int4[], $2::int4[]) AS k(d, s) ON r.device = k.d AND r.sensor = k.s
    WHERE r.t < $3 ORDER BY 1, 2, 3 FOR UPDATE OF r";
const SEAL_DELETE: &str = "DELETE FROM readings_hot r USING unnest($1::int4[], $2::int4[]) AS k(d, s)
    WHERE r.device = k.d AND r.sensor = k.s AND r.t < $3";
const SEAL_DELETE_RETURNING: &str = "DELETE FROM readings_hot r USING unnest($1::int4[], $2::int4[]) AS k(d, s)
    WHERE r.device = k.d AND r.sensor = k.s AND r.t < $3 RETURNING r.device, r.sensor, r.t, r.v";

type HotParams = (Vec<i32>, Vec<i32>, Vec<i64>, Vec<Vec<u8>>);

fn hot_params(rs: &[Reading]) -> HotParams {
    let mut p: HotParams = (
        Vec::with_capacity(rs.len()),
        Vec::with_capacity(rs.len()),
        Vec::with_capacity(rs.len()),
        Vec::with_capacity(rs.len()),
    );
    for r in rs {
        let mut v = Vec::with_capacity(4);
        lone_value(&mut v, r.m, r.scale);
        p.0.push(r.dev);
        p.1.push(r.sensor);
        p.2.push(r.t * 1_000_000);
        p.3.push(v);
    }
    p
}

// ------------------------------------------------------------ measuring

fn schedstat_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split(' ').next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// On-CPU ns of every thread of this process.
fn client_ns() -> u64 {
    let mut n = 0;
    if let Ok(d) = std::fs::read_dir("/proc/self/task") {
        for e in d.flatten() {
            n += schedstat_ns(&format!("{}/schedstat", e.path().display()));
        }
    }
    n
}

struct Meter {
    pid: i32,
    postmaster: u32,
}

struct Probe {
    lsn: String,
    stat: (i64, i64, i64),
    backend: u64,
    client: u64,
    pg: u64,
    t: Instant,
}

#[derive(Default, Clone, Copy)]
struct Delta {
    wal: i64,
    records: i64,
    fpi: i64,
    backend_s: f64,
    client_s: f64,
    pg_s: f64,
    secs: f64,
}

impl Meter {
    fn backend(&self) -> u64 {
        schedstat_ns(&format!("/proc/{}/schedstat", self.pid))
    }

    async fn walstat(&self, c: &Client) -> Res<(i64, i64, i64)> {
        // The backend reports its WAL counters when it goes idle; force it.
        c.batch_execute("SELECT pg_stat_force_next_flush()")
            .await
            .map_err(sql_err)?;
        let r = c
            .query_one(
                "SELECT wal_records::int8, wal_fpi::int8, wal_bytes::int8 FROM pg_stat_wal",
                &[],
            )
            .await
            .map_err(sql_err)?;
        Ok((r.get(0), r.get(1), r.get(2)))
    }

    async fn probe(&self, c: &Client) -> Res<Probe> {
        let lsn: String = c
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(sql_err)?
            .get(0);
        let stat = self.walstat(c).await?;
        Ok(Probe {
            lsn,
            stat,
            backend: self.backend(),
            client: client_ns(),
            pg: pg_ticks(self.postmaster)?,
            t: Instant::now(),
        })
    }

    async fn since(&self, c: &Client, p: &Probe) -> Res<Delta> {
        let (secs, backend, client, pg) = (
            p.t.elapsed().as_secs_f64(),
            self.backend(),
            client_ns(),
            pg_ticks(self.postmaster)?,
        );
        let wal: i64 = c
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::int8",
                &[&p.lsn],
            )
            .await
            .map_err(sql_err)?
            .get(0);
        let stat = self.walstat(c).await?;
        Ok(Delta {
            wal,
            records: stat.0 - p.stat.0,
            fpi: stat.1 - p.stat.1,
            backend_s: (backend - p.backend) as f64 / 1e9,
            client_s: (client - p.client) as f64 / 1e9,
            pg_s: (pg - p.pg) as f64 / hz(),
            secs,
        })
    }
}

/// `prefix_wal_B=... prefix_fpi_per_1k=... prefix_backend_us=...` per `n`.
fn per(prefix: &str, d: &Delta, n: f64) -> String {
    format!(
        "{prefix}_secs={:.2} {prefix}_wal_B={:.1} {prefix}_records={:.2} {prefix}_fpi_per_1k={:.2} \
         {prefix}_backend_us={:.2} {prefix}_pg_all_us={:.2} {prefix}_client_us={:.2}",
        d.secs,
        d.wal as f64 / n,
        d.records as f64 / n,
        d.fpi as f64 * 1000.0 / n,
        d.backend_s * 1e6 / n,
        d.pg_s * 1e6 / n,
        d.client_s * 1e6 / n,
    )
}

async fn count_hot(c: &Client) -> Res<i64> {
    Ok(c.query_one("SELECT count(*) FROM readings_hot", &[])
        .await
        .map_err(sql_err)?
        .get(0))
}

/// Chunk rows and the readings in them (every chunk decoded).
async fn count_chunks(c: &Client) -> Res<(u64, u64)> {
    let rows = c
        .query("SELECT data FROM readings", &[])
        .await
        .map_err(sql_err)?;
    let mut n = 0;
    for r in &rows {
        n += decode_chunk(r.get::<_, &[u8]>(0))?.len() as u64;
    }
    Ok((rows.len() as u64, n))
}

// ------------------------------------------------------------ sealing

struct Sealer {
    select: Statement,
    delete: Statement,
    delete_ret: Statement,
    lock: Statement,
    upsert: Statement,
}

impl Sealer {
    async fn new(c: &Client) -> Res<Sealer> {
        Ok(Sealer {
            select: c.prepare(SEAL_SELECT).await.map_err(sql_err)?,
            delete: c.prepare(SEAL_DELETE).await.map_err(sql_err)?,
            delete_ret: c.prepare(SEAL_DELETE_RETURNING).await.map_err(sql_err)?,
            lock: c.prepare(CHUNK_LOCK).await.map_err(sql_err)?,
            upsert: c.prepare(CHUNK_UPSERT).await.map_err(sql_err)?,
        })
    }

    /// Move every hot row before `watermark_s` of `series` into chunk
    /// rows, `batch` series a transaction. Returns (transactions, rows).
    async fn seal(
        &self,
        c: &mut Client,
        series: &[(i32, i32)],
        watermark_s: i64,
        batch: usize,
        variant: &str,
    ) -> Res<(usize, u64)> {
        let w_us = watermark_s * 1_000_000;
        let (mut txns, mut moved) = (0, 0u64);
        for b in series.chunks(batch) {
            let ds: Vec<i32> = b.iter().map(|k| k.0).collect();
            let ss: Vec<i32> = b.iter().map(|k| k.1).collect();
            let txn = c.transaction().await.map_err(sql_err)?;
            let rows = if variant == "lock" {
                txn.query(&self.select, &[&ds, &ss, &w_us])
                    .await
                    .map_err(sql_err)?
            } else {
                txn.query(&self.delete_ret, &[&ds, &ss, &w_us])
                    .await
                    .map_err(sql_err)?
            };
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
            moved += rows.len() as u64;
            let (mut kd, mut ks, mut km) = (Vec::new(), Vec::new(), Vec::new());
            for (k, v) in by_key.iter_mut() {
                v.sort_by_key(|e| e.0);
                kd.push(k.0);
                ks.push(k.1);
                km.push(k.2);
            }
            // A window may already have a chunk row (a backfill): lock it
            // and merge, as the store must.
            let old = txn
                .query(&self.lock, &[&kd, &ks, &km])
                .await
                .map_err(sql_err)?;
            let mut old_map = std::collections::HashMap::new();
            for r in &old {
                old_map.insert(
                    (r.get::<_, i32>(0), r.get::<_, i32>(1), r.get::<_, i32>(2)),
                    decode_chunk(r.get::<_, &[u8]>(3))?,
                );
            }
            let mut kx = Vec::with_capacity(by_key.len());
            for (k, v) in by_key {
                let merged = match old_map.remove(&k) {
                    Some(o) => merge(o, &v).0,
                    None => v,
                };
                kx.push(encode_chunk(&merged));
            }
            txn.execute(&self.upsert, &[&kd, &ks, &km, &kx])
                .await
                .map_err(sql_err)?;
            if variant == "lock" {
                let n = txn
                    .execute(&self.delete, &[&ds, &ss, &w_us])
                    .await
                    .map_err(sql_err)?;
                if n != rows.len() as u64 {
                    return Err(format!("sealed {} rows, deleted {n}", rows.len()));
                }
            }
            txn.commit().await.map_err(sql_err)?;
            txns += 1;
        }
        Ok((txns, moved))
    }
}

// ------------------------------------------------------------ P3 spanning both forms

const DAY0: i64 = 1_700_000_000 / 86_400 * 86_400;

struct ReadStmts {
    chunks: Statement,
    hot: Statement,
}

/// One sensor's `[from, to]` read the design's way: the chunk rows by
/// minute from 59 minutes before `from` and/or the hot rows by `t`,
/// merged by time, as `time,N1` CSV. Returns the rows written.
#[allow(clippy::too_many_arguments)]
async fn read_day(
    c: &Client,
    st: &ReadStmts,
    dev: i32,
    from: i64,
    to: i64,
    use_chunks: bool,
    use_hot: bool,
    pipelined: bool,
    out: &mut String,
) -> Res<usize> {
    let sensor = 1i32;
    let (fm, tm) = ((from.div_euclid(60) - 59) as i32, to.div_euclid(60) as i32);
    let (f_us, t_us) = (from * 1_000_000, to * 1_000_000);
    let (crows, hrows) = if pipelined {
        let (pc, ph) = ([&dev as _, &sensor as _, &fm as _, &tm as _], [&dev as _, &sensor as _, &f_us as _, &t_us as _]);
        let (a, b) = tokio::try_join!(c.query(&st.chunks, &pc), c.query(&st.hot, &ph))
            .map_err(sql_err)?;
        (a, b)
    } else {
        let a = if use_chunks {
            c.query(&st.chunks, &[&dev, &sensor, &fm, &tm])
                .await
                .map_err(sql_err)?
        } else {
            Vec::new()
        };
        let b = if use_hot {
            c.query(&st.hot, &[&dev, &sensor, &f_us, &t_us])
                .await
                .map_err(sql_err)?
        } else {
            Vec::new()
        };
        (a, b)
    };
    let mut sealed: Vec<(i64, i64, u8)> = Vec::new();
    for r in &crows {
        let base = i64::from(r.get::<_, i32>(0)) * 60;
        for (off, m, scale) in decode_chunk(r.get::<_, &[u8]>(1))? {
            let t = base + i64::from(off);
            if t >= from && t <= to {
                sealed.push((t, m, scale));
            }
        }
    }
    let mut hot: Vec<(i64, i64, u8)> = Vec::with_capacity(hrows.len());
    for r in &hrows {
        let (m, scale) = decode_lone(r.get::<_, &[u8]>(1))?;
        hot.push((r.get::<_, i64>(0) / 1_000_000, m, scale));
    }
    // Merge by time; a time in both forms (never here) keeps the chunk's.
    use std::fmt::Write;
    out.clear();
    out.push_str("time,N1\n");
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < sealed.len() || j < hot.len() {
        let e = if j == hot.len() || (i < sealed.len() && sealed[i].0 <= hot[j].0) {
            if j < hot.len() && sealed[i].0 == hot[j].0 {
                j += 1;
            }
            i += 1;
            sealed[i - 1]
        } else {
            j += 1;
            hot[j - 1]
        };
        let _ = write!(out, "{},", e.0);
        write_decimal(out, e.1, e.2);
        out.push('\n');
        n += 1;
    }
    Ok(n)
}

async fn p3span(c: &mut Client, o: &X, m: &Meter) -> Res<()> {
    let (from, to) = (DAY0, DAY0 + 86_399);
    let watermark = DAY0 + 81_000; // 22.5 h
    let mut g = Gen::new(1);
    let mut day: Vec<Reading> = Vec::with_capacity(86_400);
    let mut tmp = Vec::with_capacity(4);
    for i in 0..86_400 {
        tmp.clear();
        g.row(DAY0 + i, 0, &mut tmp);
        day.push(tmp[0]); // sensor 1
    }
    let as_dev = |dev: i32, keep: &dyn Fn(i64) -> bool| -> Vec<Reading> {
        day.iter()
            .filter(|r| keep(r.t))
            .map(|r| Reading { dev, ..*r })
            .collect()
    };
    let chunked = |rs: &[Reading]| -> (Vec<i32>, Vec<i32>, Vec<i32>, Vec<Vec<u8>>) {
        let mut by: BTreeMap<i32, Vec<Entry>> = BTreeMap::new();
        for r in rs {
            let w = r.t.div_euclid(WINDOW_S) * WINDOW_S;
            by.entry((w / 60) as i32)
                .or_default()
                .push(((r.t - w) as u32, r.m, r.scale));
        }
        let (mut d, mut s, mut mm, mut x) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (minute, e) in by {
            d.push(rs[0].dev);
            s.push(rs[0].sensor);
            mm.push(minute);
            x.push(encode_chunk(&e));
        }
        (d, s, mm, x)
    };
    let dev1_sealed = as_dev(1, &|t| t < watermark);
    let dev1_hot = as_dev(1, &|t| t >= watermark);
    let dev2 = as_dev(2, &|_| true);
    let dev3 = as_dev(3, &|_| true);
    let upsert = c.prepare(CHUNK_UPSERT).await.map_err(sql_err)?;
    let bulk = c.prepare(HOT_INSERT_BULK).await.map_err(sql_err)?;
    let mut chunk_bytes = Vec::new();
    for rs in [&dev1_sealed, &dev2] {
        let p = chunked(rs);
        chunk_bytes.push(p.3.iter().map(Vec::len).sum::<usize>());
        c.execute(&upsert, &[&p.0, &p.1, &p.2, &p.3])
            .await
            .map_err(sql_err)?;
    }
    for rs in [&dev1_hot, &dev3] {
        for part in rs.chunks(43_200) {
            let p = hot_params(part);
            c.execute(&bulk, &[&p.0, &p.1, &p.2, &p.3])
                .await
                .map_err(sql_err)?;
        }
    }
    c.batch_execute("VACUUM ANALYZE readings_hot").await.map_err(sql_err)?;
    c.batch_execute("VACUUM ANALYZE readings").await.map_err(sql_err)?;
    let st = ReadStmts {
        chunks: c
            .prepare(
                "SELECT minute, data FROM readings WHERE device = $1 AND sensor = $2
                 AND minute >= $3 AND minute <= $4 ORDER BY minute, part",
            )
            .await
            .map_err(sql_err)?,
        hot: c
            .prepare(
                "SELECT t, v FROM readings_hot WHERE device = $1 AND sensor = $2
                 AND t >= $3 AND t <= $4 ORDER BY t",
            )
            .await
            .map_err(sql_err)?,
    };
    // (name, device, chunk scan, hot scan, pipelined)
    let variants: [(&str, i32, bool, bool, bool); 5] = [
        ("span", 1, true, true, false),
        ("span-pipelined", 1, true, true, true),
        ("chunks", 2, true, false, false),
        ("chunks-two-scans", 2, true, true, false),
        ("rows", 3, false, true, false),
    ];
    let mut out = String::new();
    let mut reference = String::new();
    read_day(c, &st, 3, from, to, false, true, false, &mut reference).await?;
    for v in &variants {
        // Warm-up, and the check that every form gives the same text.
        let n = read_day(c, &st, v.1, from, to, v.2, v.3, v.4, &mut out).await?;
        if n != 86_400 || out != reference {
            return Err(format!("{}: {n} rows, text differs: {}", v.0, out != reference));
        }
    }
    let mut ms = vec![Vec::with_capacity(o.runs); variants.len()];
    let mut be = vec![0u64; variants.len()];
    let mut cl = vec![0u64; variants.len()];
    for _ in 0..o.runs {
        for (k, v) in variants.iter().enumerate() {
            let (b0, c0, t0) = (m.backend(), client_ns(), Instant::now());
            let n = read_day(c, &st, v.1, from, to, v.2, v.3, v.4, &mut out).await?;
            ms[k].push(t0.elapsed().as_secs_f64() * 1000.0);
            be[k] += m.backend() - b0;
            cl[k] += client_ns() - c0;
            if n != 86_400 {
                return Err(format!("{}: read {n} rows", v.0));
            }
        }
    }
    let sizes = c
        .query_one(
            "SELECT pg_total_relation_size('readings'), pg_total_relation_size('readings_hot')",
            &[],
        )
        .await
        .map_err(sql_err)?;
    println!(
        "p3: day_readings=86400 dev1=chunks_before_22.5h({} readings, {} chunk rows, {} B of chunk data)+hot_rows({}) \
         dev2=chunks({} B) dev3=hot_rows(86400) readings_table_B={} readings_hot_table_B={} csv_bytes={}",
        dev1_sealed.len(),
        dev1_sealed.len().div_ceil(3600),
        chunk_bytes[0],
        dev1_hot.len(),
        chunk_bytes[1],
        sizes.get::<_, i64>(0),
        sizes.get::<_, i64>(1),
        reference.len()
    );
    for (k, v) in variants.iter().enumerate() {
        let t = &mut ms[k];
        t.sort_by(|a, b| a.total_cmp(b));
        let runs = t.len();
        println!(
            "p3: variant={} runs={runs} median_ms={:.2} p90_ms={:.2} min_ms={:.2} backend_cpu_ms_per_read={:.2} client_cpu_ms_per_read={:.2}",
            v.0,
            t[runs / 2],
            t[(runs * 9 / 10).min(runs - 1)],
            t[0],
            be[k] as f64 / 1e6 / runs as f64,
            cl[k] as f64 / 1e6 / runs as f64,
        );
    }
    Ok(())
}

// ------------------------------------------------------------ trickle, WAL with and without compression

const HOUR0: i64 = 1_700_000_000 / 3600 * 3600;
const STEP_S: i64 = 10;

/// Readings of time steps `k0..k1` for `devices` devices, time-major.
fn steps(g: &mut Gen, devices: usize, k0: usize, k1: usize) -> Vec<Reading> {
    let mut v = Vec::with_capacity((k1 - k0) * devices * SENSORS);
    for k in k0..k1 {
        for d in 0..devices {
            g.row(HOUR0 + k as i64 * STEP_S, d, &mut v);
        }
    }
    v
}

fn all_series(devices: usize) -> Vec<(i32, i32)> {
    (1..=devices as i32)
        .flat_map(|d| (1..=SENSORS as i32).map(move |s| (d, s)))
        .collect()
}

async fn trickle(c: &mut Client, o: &X, m: &Meter, comp: &str) -> Res<()> {
    let devices = o.devices;
    let nseries = devices * SENSORS;
    let series = all_series(devices);
    let per_hour = (3600 / STEP_S) as usize; // 360 steps
    let mut g = Gen::new(devices);
    let bulk = c.prepare(HOT_INSERT_BULK).await.map_err(sql_err)?;
    let ins = c.prepare(HOT_INSERT).await.map_err(sql_err)?;
    let sealer = Sealer::new(c).await?;
    // The first 1.5 h, unmeasured.
    let pre = per_hour * 3 / 2;
    for k in (0..pre).step_by(60) {
        let p = hot_params(&steps(&mut g, devices, k, (k + 60).min(pre)));
        c.execute(&bulk, &[&p.0, &p.1, &p.2, &p.3])
            .await
            .map_err(sql_err)?;
    }
    c.batch_execute("VACUUM ANALYZE readings_hot").await.map_err(sql_err)?;
    c.batch_execute("CHECKPOINT").await.map_err(sql_err)?;
    for cycle in 0..2usize {
        let first = pre + per_hour * cycle;
        let rs = steps(&mut g, devices, first, first + per_hour);
        // 12 readings (3 devices' rows) a transaction; a checkpoint after
        // every `--ckpt-min` minutes of data (30: the first half hour's
        // last transaction), the last one before the seal.
        let posts: Vec<HotParams> = rs.chunks(12).map(hot_params).collect();
        let every = (posts.len() * o.ckpt_min / 60).max(1);
        let p0 = m.probe(c).await?;
        let mut stored = 0usize;
        for (i, p) in posts.iter().enumerate() {
            let txn = c.transaction().await.map_err(sql_err)?;
            stored += txn
                .query(&ins, &[&p.0, &p.1, &p.2, &p.3])
                .await
                .map_err(sql_err)?
                .len();
            txn.commit().await.map_err(sql_err)?;
            if (i + 1) % every == 0 && i + 1 < posts.len() {
                c.batch_execute("CHECKPOINT").await.map_err(sql_err)?;
            }
        }
        let d_in = m.since(c, &p0).await?;
        if stored != rs.len() {
            return Err(format!("stored {stored} of {}", rs.len()));
        }
        c.batch_execute("CHECKPOINT").await.map_err(sql_err)?;
        // now = HOUR0 + first*10 + 1 h; the watermark 1.5 h behind it.
        let watermark = HOUR0 + (first + per_hour) as i64 * STEP_S - 5400;
        let p1 = m.probe(c).await?;
        let (txns, moved) = sealer
            .seal(c, &series, watermark, o.batch, &o.seal)
            .await?;
        let d_seal = m.since(c, &p1).await?;
        let p2 = m.probe(c).await?;
        c.batch_execute("VACUUM readings_hot").await.map_err(sql_err)?;
    c.batch_execute("VACUUM readings").await.map_err(sql_err)?;
        let d_vac = m.since(c, &p2).await?;
        let hot_left = count_hot(c).await?;
        let (chunk_rows, in_chunks) = count_chunks(c).await?;
        let want_sealed = (nseries * per_hour * (cycle + 1)) as u64;
        if moved != (nseries * per_hour) as u64
            || in_chunks != want_sealed
            || hot_left as usize != nseries * pre
        {
            return Err(format!(
                "cycle {cycle}: moved {moved}, chunks hold {in_chunks} (want {want_sealed}), hot rows left {hot_left}"
            ));
        }
        let n = rs.len() as f64;
        let total = |f: fn(&Delta) -> f64| f(&d_in) + f(&d_seal) + f(&d_vac);
        println!(
            "trickle: cycle={} wal_compression={comp} seal={} ckpt_every_min={} series={nseries} readings={} txns={} seal_txns={txns} chunk_rows={chunk_rows} \
             readings_per_s={:.0} {} {} {} total_wal_B={:.1} total_fpi_per_1k={:.2} total_backend_us={:.2} total_pg_all_us={:.2}",
            cycle + 1,
            o.seal,
            o.ckpt_min,
            rs.len(),
            posts.len(),
            n / d_in.secs,
            per("ingest", &d_in, n),
            per("seal", &d_seal, n),
            per("vacuum", &d_vac, n),
            total(|d| d.wal as f64) / n,
            total(|d| d.fpi as f64) * 1000.0 / n,
            total(|d| d.backend_s) * 1e6 / n,
            total(|d| d.pg_s) * 1e6 / n,
        );
    }
    Ok(())
}

// ------------------------------------------------------------ the hot table at fleet scale

async fn fleet(c: &mut Client, o: &X, m: &Meter, comp: &str) -> Res<()> {
    let devices = o.devices;
    let nseries = devices * SENSORS;
    let series = all_series(devices);
    let pre = (5400 / STEP_S) as usize; // 1.5 h = 540 steps
    let mut g = Gen::new(devices);
    let bulk = c.prepare(HOT_INSERT_BULK).await.map_err(sql_err)?;
    let sealer = Sealer::new(c).await?;
    c.batch_execute("CHECKPOINT").await.map_err(sql_err)?;
    let p0 = m.probe(c).await?;
    for k in 0..pre {
        let p = hot_params(&steps(&mut g, devices, k, k + 1));
        let txn = c.transaction().await.map_err(sql_err)?;
        txn.execute(&bulk, &[&p.0, &p.1, &p.2, &p.3])
            .await
            .map_err(sql_err)?;
        txn.commit().await.map_err(sql_err)?;
    }
    let d_load = m.since(c, &p0).await?;
    let p1 = m.probe(c).await?;
    c.batch_execute("VACUUM ANALYZE readings_hot")
        .await
        .map_err(sql_err)?;
    let d_vac0 = m.since(c, &p1).await?;
    let rows = count_hot(c).await?;
    if rows as usize != nseries * pre {
        return Err(format!("{rows} hot rows, want {}", nseries * pre));
    }
    let sz = sizes(c).await?;
    let extra = pgstat(c).await;
    let r = rows as f64;
    println!(
        "fleet: wal_compression={comp} series={nseries} rows={rows} load_secs={:.1} load_rows_per_s={:.0} load_backend_us_per_row={:.2} \
         load_wal_B_per_row={:.1} vacuum_analyze_secs={:.2} heap_B={} index_B={} fsm_vm_B={} total_B={} heap_B_per_row={:.2} \
         index_B_per_row={:.2} total_B_per_row={:.2} {extra}",
        d_load.secs,
        r / d_load.secs,
        d_load.backend_s * 1e6 / r,
        d_load.wal as f64 / r,
        d_vac0.secs,
        sz.0,
        sz.1,
        sz.2,
        sz.3,
        sz.0 as f64 / r,
        sz.1 as f64 / r,
        sz.3 as f64 / r,
    );
    c.batch_execute("CHECKPOINT").await.map_err(sql_err)?;
    let watermark = HOUR0 + 3600; // seal the oldest hour of every series
    let p2 = m.probe(c).await?;
    let (txns, moved) = sealer
        .seal(c, &series, watermark, o.batch, &o.seal)
        .await?;
    let d_seal = m.since(c, &p2).await?;
    let p3 = m.probe(c).await?;
    c.batch_execute("VACUUM readings_hot")
        .await
        .map_err(sql_err)?;
    let d_vac1 = m.since(c, &p3).await?;
    c.batch_execute("VACUUM ANALYZE readings")
        .await
        .map_err(sql_err)?;
    let left = count_hot(c).await?;
    let (chunk_rows, in_chunks) = count_chunks(c).await?;
    let want = (nseries * 360) as u64;
    if moved != want || in_chunks != want || left as usize != nseries * (pre - 360) {
        return Err(format!(
            "sealed {moved}, chunks hold {in_chunks} (want {want}), {left} hot rows left"
        ));
    }
    let sz1 = sizes(c).await?;
    let chunks_b: i64 = c
        .query_one("SELECT pg_total_relation_size('readings')", &[])
        .await
        .map_err(sql_err)?
        .get(0);
    let n = moved as f64;
    println!(
        "fleet: seal={} seal_batch={} series={nseries} sealed_rows={moved} seal_txns={txns} chunk_rows={chunk_rows} \
         seal_secs={:.2} seal_secs_per_10k_series={:.2} seal_backend_s={:.2} seal_client_s={:.2} seal_pg_all_s={:.2} \
         seal_wal_B_per_row={:.1} seal_fpi={} vacuum_secs={:.2} vacuum_backend_s={:.2} vacuum_wal_B_per_row={:.1} \
         hot_after_B={} chunks_after_B={chunks_b} chunk_B_per_reading={:.2}",
        o.seal,
        o.batch,
        d_seal.secs,
        d_seal.secs * 10_000.0 / nseries as f64,
        d_seal.backend_s,
        d_seal.client_s,
        d_seal.pg_s,
        d_seal.wal as f64 / n,
        d_seal.fpi,
        d_vac1.secs,
        d_vac1.backend_s,
        d_vac1.wal as f64 / n,
        sz1.3,
        chunks_b as f64 / n,
    );
    Ok(())
}

/// readings_hot: heap (main fork), primary key index, FSM + VM, total.
async fn sizes(c: &Client) -> Res<(i64, i64, i64, i64)> {
    let r = c
        .query_one(
            "SELECT pg_relation_size('readings_hot', 'main'), pg_relation_size('readings_hot_pkey'),
                    pg_relation_size('readings_hot', 'fsm') + pg_relation_size('readings_hot', 'vm'),
                    pg_total_relation_size('readings_hot')",
            &[],
        )
        .await
        .map_err(sql_err)?;
    Ok((r.get(0), r.get(1), r.get(2), r.get(3)))
}

/// pgstattuple's view of the heap and index, when the extension exists.
async fn pgstat(c: &Client) -> String {
    let q = async {
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            .await
            .map_err(sql_err)?;
        let i = c
            .query_one(
                "SELECT tree_level::int4, leaf_pages::int8, avg_leaf_density::float8
                 FROM pgstatindex('readings_hot_pkey')",
                &[],
            )
            .await
            .map_err(sql_err)?;
        let h = c
            .query_one(
                "SELECT tuple_len::int8, free_space::int8, free_percent::float8 FROM pgstattuple('readings_hot')",
                &[],
            )
            .await
            .map_err(sql_err)?;
        Res::Ok(format!(
            "index_levels={} index_leaf_pages={} index_avg_leaf_density={:.1} heap_tuple_bytes={} heap_free_bytes={} heap_free_pct={:.1}",
            i.get::<_, i32>(0),
            i.get::<_, i64>(1),
            i.get::<_, f64>(2),
            h.get::<_, i64>(0),
            h.get::<_, i64>(1),
            h.get::<_, f64>(2)
        ))
    };
    q.await.unwrap_or_else(|e| format!("pgstattuple=unavailable({e})"))
}
