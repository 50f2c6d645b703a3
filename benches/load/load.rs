//! Load tool for `benches/compare.sh`: creates devices over HTTP and sends
//! bulk readings as Overlord CSV, VictoriaMetrics CSV or InfluxDB line
//! protocol, with identical times, devices and values in every format.
//!
//! It is a plain program (the `[[example]]` target `load`),
//! with a minimal HTTP/1.1 keep-alive client on raw tokio TCP, so the
//! figures measure the servers rather than a client library. Every loop is
//! bounded by its arguments; only the given address is contacted (the
//! script passes loopback addresses only).
//!
//!     load devices --addr 127.0.0.1:P --token T --count 1000 --prefix d
//!     load ingest  --addr 127.0.0.1:P --format overlord|vm|influx [--token T]
//!                  --devices 1000 --prefix d --sensors 4 --start UNIX
//!                  --step 10 --steps 100 --rows-per-post 100000
//!                  [--conns 1] [--pregen]
//!     load latency --addr 127.0.0.1:P --token ADMIN [--rate 10000]
//!                  [--batch 100] [--secs 10]
//!
//! `ingest` sends `devices * steps` rows (one row = one device at one
//! time with `sensors` values), `rows-per-post` rows per request, time
//! major (all devices at t, then all at t+step, ...). It prints one line
//! `rows=.. readings=.. posts=.. bytes=.. secs=.. rows_per_sec=.. readings_per_sec=..`
//! where `secs` runs from the first request byte to the last reply (body
//! generation is excluded with `--pregen`, overlapped otherwise).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: load devices|ingest --flag value ...");
        std::process::exit(2);
    };
    let opts = match parse_opts(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        match cmd.as_str() {
            "devices" => devices(&opts).await,
            "ingest" => ingest(&opts).await,
            "latency" => latency(&opts).await,
            other => Err(format!("unknown command '{other}'")),
        }
    });
    if let Err(e) = result {
        eprintln!("load: {e}");
        std::process::exit(1);
    }
}

struct Opts(HashMap<String, String>);

fn parse_opts(args: &[String]) -> Res<Opts> {
    let mut map = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(name) = a.strip_prefix("--") else {
            return Err(format!("unexpected argument '{a}'"));
        };
        if name == "pregen" {
            map.insert(name.to_string(), "1".to_string());
            continue;
        }
        let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        map.insert(name.to_string(), v.clone());
    }
    Ok(Opts(map))
}

impl Opts {
    fn str(&self, k: &str) -> Res<String> {
        self.0
            .get(k)
            .cloned()
            .ok_or_else(|| format!("--{k} is required"))
    }
    fn str_or(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn num(&self, k: &str, d: Option<i64>) -> Res<i64> {
        match self.0.get(k) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{k}: '{v}' is not a number")),
            None => d.ok_or_else(|| format!("--{k} is required")),
        }
    }
    fn flag(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 keep-alive client.

struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

impl Conn {
    fn new(addr: &str) -> Self {
        Conn {
            addr: addr.to_string(),
            stream: None,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Res<Response> {
        // One retry on a connection the server closed between requests.
        for attempt in 0..2 {
            let fresh = self.stream.is_none();
            if fresh {
                let s = TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| format!("connect {}: {e}", self.addr))?;
                let _ = s.set_nodelay(true);
                self.stream = Some(s);
                self.buf.clear();
            }
            match self.round_trip(method, target, headers, body).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.stream = None;
                    if fresh || attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        unreachable!()
    }

    async fn round_trip(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Res<Response> {
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        head.push_str("\r\n");
        let s = self.stream.as_mut().expect("connected");
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        if !body.is_empty() {
            s.write_all(body).await.map_err(|e| format!("write: {e}"))?;
        }
        // Read the head.
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            if self.buf.len() > 64 * 1024 {
                return Err("response head too large".into());
            }
            read_more(s, &mut self.buf).await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line '{status_line}'"))?;
        let (mut len, mut chunked, mut close) = (None, false, status_line.starts_with("HTTP/1.0"));
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => len = v.parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v.contains("close"),
                _ => {}
            }
        }
        self.buf.drain(..head_end);
        let body = if chunked {
            let mut out = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = find(&self.buf, b"\r\n") {
                        break p;
                    }
                    read_more(s, &mut self.buf).await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| format!("bad chunk size '{size_text}'"))?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    read_more(s, &mut self.buf).await?;
                }
                out.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    break out;
                }
            }
        } else if let Some(n) = len {
            while self.buf.len() < n {
                read_more(s, &mut self.buf).await?;
            }
            self.buf.drain(..n).collect()
        } else if status == 204 || status == 304 || method == "HEAD" {
            Vec::new()
        } else {
            // Body delimited by close.
            loop {
                match s.read_buf(&mut self.buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            close = true;
            std::mem::take(&mut self.buf)
        };
        if close {
            self.stream = None;
        }
        Ok(Response { status, body })
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Res<()> {
    buf.reserve(64 * 1024);
    match tokio::time::timeout(Duration::from_secs(120), s.read_buf(buf)).await {
        Err(_) => Err("read timed out after 120 s".into()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Ok(Ok(0)) => Err("connection closed by the server".into()),
        Ok(Ok(_)) => Ok(()),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// `devices`: create COUNT devices named PREFIX0000.. with the admin token.

fn device_id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:04}")
}

async fn devices(o: &Opts) -> Res<()> {
    let addr = o.str("addr")?;
    let token = o.str("token")?;
    let count = o.num("count", None)?.clamp(0, 1_000_000) as usize;
    let prefix = o.str_or("prefix", "d");
    let auth = format!("Bearer {token}");
    let mut conn = Conn::new(&addr);
    let started = Instant::now();
    for i in 0..count {
        let body = format!("id={}", device_id(&prefix, i));
        let r = conn
            .request(
                "POST",
                "/v1/devices",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                body.as_bytes(),
            )
            .await?;
        if r.status != 201 && r.status != 200 {
            return Err(format!(
                "creating {}: {} {}",
                device_id(&prefix, i),
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    println!(
        "devices={count} secs={:.3}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// `ingest`: deterministic synthetic sensor data in three formats.

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Overlord,
    Vm,
    Influx,
}

/// Per (device, sensor) random walks in fixed-point units, so that every
/// format carries exactly the same decimal text.
struct Gen {
    sensors: usize,
    state: Vec<i64>,
    rng: u64,
    ids: Vec<String>,
}

/// (decimals, start, min, max, largest step) per sensor column: a
/// temperature, a humidity, a pressure and a battery voltage.
const KINDS: [(u32, i64, i64, i64, i64); 4] = [
    (1, 215, -100, 450, 2),
    (1, 480, 50, 990, 5),
    (2, 101_325, 95_000, 105_000, 7),
    (3, 3_300, 2_900, 3_400, 2),
];

impl Gen {
    fn new(devices: usize, sensors: usize, prefix: &str) -> Self {
        let mut state = Vec::with_capacity(devices * sensors);
        for d in 0..devices {
            for s in 0..sensors {
                let k = KINDS[s % 4];
                state.push(k.1 + (d as i64 % 17) * k.4);
            }
        }
        Gen {
            sensors,
            state,
            rng: 0x9E37_79B9_7F4A_7C15,
            ids: (0..devices).map(|i| device_id(prefix, i)).collect(),
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Advance device `d`'s walks one step and append the row.
    fn row(&mut self, fmt: Format, t: i64, d: usize, out: &mut String) {
        match fmt {
            Format::Overlord | Format::Vm => {
                let _ = write!(out, "{t},{}", self.ids[d]);
            }
            Format::Influx => {
                let _ = write!(out, "m,device={} ", self.ids[d]);
            }
        }
        for s in 0..self.sensors {
            let k = KINDS[s % 4];
            let r = self.next_rand();
            let delta = (r % (2 * k.4 as u64 + 1)) as i64 - k.4;
            let v = (self.state[d * self.sensors + s] + delta).clamp(k.2, k.3);
            self.state[d * self.sensors + s] = v;
            match fmt {
                Format::Overlord | Format::Vm => out.push(','),
                Format::Influx => {
                    if s > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "N{}=", s + 1);
                }
            }
            write_fixed(out, v, k.0);
        }
        if fmt == Format::Influx {
            let _ = write!(out, " {t}");
        }
        out.push('\n');
    }
}

fn write_fixed(out: &mut String, v: i64, decimals: u32) {
    let p = 10i64.pow(decimals);
    let sign = if v < 0 { "-" } else { "" };
    let a = v.abs();
    let _ = write!(out, "{sign}{}.{:0w$}", a / p, a % p, w = decimals as usize);
}

async fn ingest(o: &Opts) -> Res<()> {
    let addr = o.str("addr")?;
    let fmt = match o.str("format")?.as_str() {
        "overlord" => Format::Overlord,
        "vm" => Format::Vm,
        "influx" => Format::Influx,
        other => return Err(format!("unknown format '{other}'")),
    };
    let token = o.str_or("token", "");
    let devices = o.num("devices", Some(1))?.clamp(1, 1_000_000) as usize;
    let prefix = o.str_or("prefix", "d");
    let sensors = o.num("sensors", Some(4))?.clamp(1, 4) as usize;
    let start = o.num("start", None)?;
    let step = o.num("step", Some(1))?.max(1);
    let steps = o.num("steps", None)?.clamp(1, 100_000_000) as usize;
    let per_post = o.num("rows-per-post", Some(100_000))?.clamp(1, 10_000_000) as usize;
    let conns = o.num("conns", Some(1))?.clamp(1, 64) as usize;
    let total_rows = devices * steps;
    let posts = total_rows.div_ceil(per_post);

    let target = match fmt {
        Format::Overlord => "/v1/readings".to_string(),
        Format::Vm => {
            let mut f = String::from("/api/v1/import/csv?format=1:time:unix_s,2:label:device");
            for s in 0..sensors {
                let _ = write!(f, ",{}:metric:N{}", s + 3, s + 1);
            }
            f
        }
        Format::Influx => o.str_or("path", "/write?db=bench&precision=s"),
    };
    let auth = format!("Bearer {token}");
    let mut headers: Vec<(String, String)> = Vec::new();
    match fmt {
        Format::Overlord => {
            headers.push(("Authorization".into(), auth));
            headers.push(("Content-Type".into(), "text/csv".into()));
        }
        Format::Vm => headers.push(("Content-Type".into(), "text/csv".into())),
        Format::Influx => {
            headers.push(("Content-Type".into(), "text/plain".into()));
            // Overlord's /write wants credentials; InfluxDB 1.x without
            // auth ignores none.
            if !token.is_empty() {
                headers.push(("Authorization".into(), auth));
            }
        }
    }
    let csv_header = {
        let mut h = String::from("time,device");
        for s in 0..sensors {
            let _ = write!(h, ",N{}", s + 1);
        }
        h.push('\n');
        h
    };

    // A generator thread makes the bodies in order; senders take them.
    let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Vec<u8>)>(if o.flag("pregen") {
        posts.max(1)
    } else {
        4
    });
    let pregen = o.flag("pregen");
    let gen_prefix = prefix.clone();
    let generator = std::thread::spawn(move || {
        let mut g = Gen::new(devices, sensors, &gen_prefix);
        let mut row = 0usize;
        for p in 0..posts {
            let mut body = String::with_capacity(per_post * (16 + 12 * sensors) + 64);
            if fmt == Format::Overlord {
                body.push_str(&csv_header);
            }
            let end = (row + per_post).min(total_rows);
            while row < end {
                let (ti, d) = (row / devices, row % devices);
                g.row(fmt, start + ti as i64 * step, d, &mut body);
                row += 1;
            }
            if tx
                .blocking_send((end - (p * per_post), body.into_bytes()))
                .is_err()
            {
                return;
            }
        }
    });
    if pregen {
        // Wait until every body is made; the channel holds them all.
        let g = generator;
        tokio::task::spawn_blocking(move || g.join())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|_| "generator panicked")?;
    }
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let rx = rx.clone();
        let addr = addr.clone();
        let target = target.clone();
        let headers = headers.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&addr);
            let (mut rows, mut bytes) = (0usize, 0usize);
            let hdrs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            loop {
                let next = rx.lock().await.recv().await;
                let Some((n, body)) = next else { break };
                let r = conn.request("POST", &target, &hdrs, &body).await?;
                if !(200..300).contains(&r.status) {
                    return Err(format!(
                        "POST {target}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                }
                rows += n;
                bytes += body.len();
            }
            Ok::<_, String>((rows, bytes))
        }));
    }
    let (mut rows, mut bytes) = (0usize, 0usize);
    let mut first_err = None;
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((r, b)) => {
                rows += r;
                bytes += b;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(e) = first_err {
        return Err(e);
    }
    println!(
        "rows={rows} readings={} posts={posts} bytes={bytes} secs={secs:.3} rows_per_sec={:.0} readings_per_sec={:.0}",
        rows * sensors,
        rows as f64 / secs,
        (rows * sensors) as f64 / secs
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// `latency` (benchmark P6): ack-to-delivery time through a channel.
//
// Sets up device `p6dev` and channel `p6` following its N1 (re-using them
// if they exist), starts a long-poll reader on the channel, then sends
// `rate` readings a second for `secs` seconds in requests of `batch`
// readings. Reading k has the value k and its own microsecond. For every
// reading it takes the time the sender got its `200` and the time the
// reader got the item, and prints the distribution of the difference
// (0 when the item came before the ack). Bounded: stops after `secs` of
// sending plus at most 30 s of waiting for the last items.

async fn latency(o: &Opts) -> Res<()> {
    let addr = o.str("addr")?;
    let token = o.str("token")?;
    let rate = o.num("rate", Some(10_000))?.clamp(1, 1_000_000) as usize;
    let batch = o.num("batch", Some(100))?.clamp(1, 100_000) as usize;
    let secs = o.num("secs", Some(10))?.clamp(1, 600) as usize;
    let auth = format!("Bearer {token}");
    let form = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let mut c = Conn::new(&addr);
    for (path, body) in [
        ("/v1/devices", "id=p6dev".to_string()),
        (
            "/v1/channels",
            format!("name=p6&retention={}", rate * secs * 2),
        ),
        (
            "/v1/channels/p6/members",
            "device=p6dev&sensor=N1".to_string(),
        ),
    ] {
        let r = c.request("POST", path, &form, body.as_bytes()).await?;
        if r.status >= 300 && r.status != 409 {
            return Err(format!(
                "{path}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    // Start after whatever the channel holds already.
    let r = c
        .request(
            "GET",
            "/v1/channels/p6/items?after=0&limit=1000000",
            &form,
            b"",
        )
        .await?;
    let mut after: u64 = String::from_utf8_lossy(&r.body)
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .max()
        .unwrap_or(0);

    let total = rate * secs;
    let reader_addr = addr.clone();
    let reader_auth = auth.clone();
    let reader = tokio::spawn(async move {
        let mut c = Conn::new(&reader_addr);
        let mut got: HashMap<usize, Instant> = HashMap::with_capacity(total);
        let deadline = Instant::now() + Duration::from_secs(secs as u64 + 30);
        while got.len() < total && Instant::now() < deadline {
            let path = format!("/v1/channels/p6/items?after={after}&limit=100000&wait=5");
            let r = c
                .request("GET", &path, &[("Authorization", &reader_auth)], b"")
                .await?;
            let now = Instant::now();
            if r.status != 200 {
                return Err(format!(
                    "reader: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            for line in String::from_utf8_lossy(&r.body).lines().skip(1) {
                let mut f = line.split(',');
                let idx: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(after);
                after = after.max(idx);
                if let Some(k) = f.nth(3).and_then(|v| v.parse::<usize>().ok()) {
                    got.entry(k).or_insert(now);
                }
            }
        }
        Ok::<_, String>(got)
    });

    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_micros() as i64
        - 3_600_000_000;
    let mut acked: Vec<Instant> = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut body = String::new();
    let mut k = 0;
    while k < total {
        tick.tick().await;
        body.clear();
        body.push_str("time,N1\n");
        let n = batch.min(total - k);
        for j in k..k + n {
            let t = base + j as i64;
            let _ = writeln!(
                body,
                "{}.{:06},{j}",
                t.div_euclid(1_000_000),
                t.rem_euclid(1_000_000)
            );
        }
        let r = c
            .request(
                "POST",
                "/v1/readings?device=p6dev",
                &[("Authorization", &auth), ("Content-Type", "text/csv")],
                body.as_bytes(),
            )
            .await?;
        if r.status != 200 {
            return Err(format!(
                "send: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        let now = Instant::now();
        acked.extend(std::iter::repeat_n(now, n));
        k += n;
    }
    let send_secs = started.elapsed().as_secs_f64();
    let got = reader.await.map_err(|e| e.to_string())??;
    let mut lat: Vec<f64> = (0..total)
        .filter_map(|k| {
            got.get(&k)
                .map(|r| r.saturating_duration_since(acked[k]).as_secs_f64() * 1e3)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "readings={total} delivered={} sent_per_sec={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        lat.len(),
        total as f64 / send_secs,
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    if lat.len() != total {
        return Err(format!(
            "{} readings never reached the channel",
            total - lat.len()
        ));
    }
    Ok(())
}
