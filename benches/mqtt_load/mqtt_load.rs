//! Load tool for `benches/mqtt.sh`: MQTT 3.1.1 QoS 1 publishers and idle
//! connections on raw tokio TCP (no client library, so the figures
//! measure the server), against Overlord or any broker.
//!
//!     mqtt_load pub  --addr 127.0.0.1:P --conns 32 --secs 10
//!                    [--logins FILE] [--rate TOTAL_PER_SEC]
//!     mqtt_load idle --addr 127.0.0.1:P --conns 10000 --hold 20
//!                    [--logins FILE]
//!
//! `--logins FILE`: lines `id,token`; connection k logs in as line
//! `k % lines` and publishes to `overlord/<id>/readings`. Without it the
//! connections are anonymous and publish to `overlord/d<k>/readings`.
//! `pub`: every connection publishes one reading (`N1=21.5`) with QoS 1
//! and waits for its PUBACK before the next (a device's pattern), for
//! `secs` after a one-second warm-up; with `--rate` the connections
//! together publish at most that many a second, on a fixed schedule. It
//! prints `conns=.. publishes=.. secs=.. per_sec=.. p50_ms=.. p99_ms=..
//! max_ms=..` (latency: PUBLISH written to PUBACK read). `idle`: opens
//! `conns` connections (keep-alive 60 s, 100 connecting at a time), prints
//! `connected=N`, holds them `hold` seconds, exits. Every loop is bounded
//! by its arguments; only `--addr` is contacted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Res<T> = Result<T, String>;

struct Opts {
    addr: String,
    conns: usize,
    secs: u64,
    hold: u64,
    rate: Option<f64>,
    logins: Vec<(String, String)>,
}

fn opts(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        addr: String::new(),
        conns: 32,
        secs: 10,
        hold: 20,
        rate: None,
        logins: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{k}: {v}"));
        match k.as_str() {
            "--addr" => o.addr = v.clone(),
            "--conns" => o.conns = num(v)? as usize,
            "--secs" => o.secs = num(v)?,
            "--hold" => o.hold = num(v)?,
            "--rate" => o.rate = Some(v.parse().map_err(|_| format!("--rate {v}"))?),
            "--logins" => {
                let text = std::fs::read_to_string(v).map_err(|e| format!("{v}: {e}"))?;
                o.logins = text
                    .lines()
                    .filter_map(|l| l.split_once(','))
                    .filter(|(id, _)| *id != "id")
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect();
            }
            _ => return Err(format!("unknown flag {k}")),
        }
    }
    if o.addr.is_empty() {
        return Err("--addr is required".into());
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: mqtt_load pub|idle --flag value ...");
        std::process::exit(2);
    };
    let o = opts(rest).unwrap_or_else(|e| {
        eprintln!("mqtt_load: {e}");
        std::process::exit(2);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(async {
        match cmd.as_str() {
            "pub" => publishers(Arc::new(o)).await,
            "idle" => idle(Arc::new(o)).await,
            other => Err(format!("unknown command {other}")),
        }
    });
    if let Err(e) = r {
        eprintln!("mqtt_load: {e}");
        std::process::exit(1);
    }
}

fn remaining(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// The login and topic of connection `k`.
fn who(o: &Opts, k: usize) -> (Option<(String, String)>, String) {
    match o.logins.get(k % o.logins.len().max(1)) {
        Some((id, tok)) => (
            Some((id.clone(), tok.clone())),
            format!("overlord/{id}/readings"),
        ),
        None => (None, format!("overlord/d{k}/readings")),
    }
}

/// Connect and log in (MQTT 3.1.1, keep-alive 60 s, clean session).
async fn connect(o: &Opts, k: usize) -> Res<TcpStream> {
    let mut s = TcpStream::connect(&o.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let (login, _) = who(o, k);
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(4);
    body.push(if login.is_some() { 0b1100_0010 } else { 0b10 });
    body.extend_from_slice(&60u16.to_be_bytes());
    string(format!("load-{k}").as_bytes(), &mut body);
    if let Some((u, p)) = &login {
        string(u.as_bytes(), &mut body);
        string(p.as_bytes(), &mut body);
    }
    let mut p = vec![0x10];
    remaining(body.len(), &mut p);
    p.extend(body);
    s.write_all(&p).await.map_err(|e| e.to_string())?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.map_err(|e| e.to_string())?;
    if ack != [0x20, 2, 0, 0] {
        return Err(format!("CONNACK {ack:?}"));
    }
    Ok(s)
}

/// One publisher: QoS 1, one in flight, until `end`; latencies in µs.
async fn publisher(o: Arc<Opts>, k: usize, start: Instant, end: Instant) -> Res<Vec<u32>> {
    let mut s = connect(&o, k).await?;
    let (_, topic) = who(&o, k);
    let every = o
        .rate
        .map(|r| Duration::from_secs_f64(o.conns as f64 / r.max(0.001)));
    let mut lat = Vec::new();
    let mut pkid: u16 = 0;
    let mut next = Instant::now();
    let mut ack = [0u8; 4];
    while Instant::now() < end {
        if let Some(every) = every {
            tokio::time::sleep_until(next.into()).await;
            next += every;
        }
        pkid = pkid.wrapping_add(1).max(1);
        let mut body = Vec::new();
        string(topic.as_bytes(), &mut body);
        body.extend_from_slice(&pkid.to_be_bytes());
        body.extend_from_slice(b"N1=21.5");
        let mut p = vec![0x32];
        remaining(body.len(), &mut p);
        p.extend(body);
        let sent = Instant::now();
        s.write_all(&p).await.map_err(|e| e.to_string())?;
        s.read_exact(&mut ack).await.map_err(|e| e.to_string())?;
        if ack[0] != 0x40 || u16::from_be_bytes([ack[2], ack[3]]) != pkid {
            return Err(format!("expected PUBACK {pkid}, got {ack:?}"));
        }
        if sent >= start {
            lat.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
    Ok(lat)
}

async fn publishers(o: Arc<Opts>) -> Res<()> {
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + Duration::from_secs(o.secs);
    let tasks: Vec<_> = (0..o.conns)
        .map(|k| tokio::spawn(publisher(o.clone(), k, start, end)))
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(|e| e.to_string())??);
    }
    lat.sort_unstable();
    let at = |q: f64| {
        let i = ((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1));
        lat.get(i).map_or(0.0, |&us| f64::from(us) / 1000.0)
    };
    let secs = o.secs as f64;
    println!(
        "conns={} publishes={} secs={secs} per_sec={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        o.conns,
        lat.len(),
        lat.len() as f64 / secs,
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

async fn idle(o: Arc<Opts>) -> Res<()> {
    let mut held = Vec::with_capacity(o.conns);
    let mut k = 0;
    while k < o.conns {
        let n = 100.min(o.conns - k);
        let batch: Vec<_> = (k..k + n)
            .map(|i| {
                let o = o.clone();
                tokio::spawn(async move { connect(&o, i).await })
            })
            .collect();
        for t in batch {
            held.push(t.await.map_err(|e| e.to_string())??);
        }
        k += n;
    }
    println!("connected={}", held.len());
    tokio::time::sleep(Duration::from_secs(o.hold)).await;
    drop(held);
    Ok(())
}
