//! Counters, gauges and histograms with atomics, rendered as Prometheus
//! text at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Set it.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Add (may be negative).
    pub fn add(&self, d: i64) {
        if d >= 0 {
            self.0.fetch_add(d as u64, Ordering::Relaxed);
        } else {
            self.0.fetch_sub(d.unsigned_abs(), Ordering::Relaxed);
        }
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in millionths, so it fits an integer atomic.
    sum_micro: AtomicU64,
}

impl Histogram {
    /// A histogram with these bucket bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micro: AtomicU64::new(0),
        }
    }
    /// Record one observation.
    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micro
            .fetch_add((v * 1e6).max(0.0) as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
}

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];

/// Every metric the server keeps.
pub struct Metrics {
    /// HTTP requests answered, by status class.
    pub http_2xx: Counter,
    /// 4xx replies.
    pub http_4xx: Counter,
    /// 5xx replies.
    pub http_5xx: Counter,
    /// Connections open now.
    pub connections: Gauge,
    /// Connections refused at the cap.
    pub connections_refused: Counter,
    /// New readings committed.
    pub readings_stored: Counter,
    /// Readings the digest has processed.
    pub readings_digested: Counter,
    /// Requests refused because the ingest queue was full.
    pub ingest_rejected: Counter,
    /// Requests waiting for the writer.
    pub ingest_queue_depth: Gauge,
    /// Batches dispatched to the digest and not yet committed back.
    pub digest_backlog: Gauge,
    /// Long-polls waiting now.
    pub long_polls: Gauge,
    /// Group commits.
    pub commits: Counter,
    /// Failed group commits.
    pub commit_errors: Counter,
    /// Time per group commit, including its fsync.
    pub commit_seconds: Histogram,
    /// Requests per group commit.
    pub commit_requests: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_2xx: Counter::default(),
            http_4xx: Counter::default(),
            http_5xx: Counter::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            readings_stored: Counter::default(),
            readings_digested: Counter::default(),
            ingest_rejected: Counter::default(),
            ingest_queue_depth: Gauge::default(),
            digest_backlog: Gauge::default(),
            long_polls: Gauge::default(),
            commits: Counter::default(),
            commit_errors: Counter::default(),
            commit_seconds: Histogram::new(SECONDS),
            commit_requests: Histogram::new(SIZES),
        }
    }
}

impl Metrics {
    /// Count a reply by status.
    pub fn count_status(&self, status: u16) {
        match status {
            200..=399 => self.http_2xx.inc(),
            400..=499 => self.http_4xx.inc(),
            _ => self.http_5xx.inc(),
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64, kind: &str| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        counter(
            "overlord_http_responses_2xx_total",
            "Replies with a 2xx or 3xx status.",
            self.http_2xx.get(),
            "counter",
        );
        counter(
            "overlord_http_responses_4xx_total",
            "Replies with a 4xx status.",
            self.http_4xx.get(),
            "counter",
        );
        counter(
            "overlord_http_responses_5xx_total",
            "Replies with a 5xx status.",
            self.http_5xx.get(),
            "counter",
        );
        counter(
            "overlord_connections_open",
            "Open client connections.",
            self.connections.get(),
            "gauge",
        );
        counter(
            "overlord_connections_refused_total",
            "Connections refused at max_connections.",
            self.connections_refused.get(),
            "counter",
        );
        counter(
            "overlord_readings_stored_total",
            "New readings committed (retries excluded).",
            self.readings_stored.get(),
            "counter",
        );
        counter(
            "overlord_readings_digested_total",
            "Readings processed by the digest.",
            self.readings_digested.get(),
            "counter",
        );
        counter(
            "overlord_ingest_rejected_total",
            "Requests refused with 503 because the ingest queue was full.",
            self.ingest_rejected.get(),
            "counter",
        );
        counter(
            "overlord_ingest_queue_depth",
            "Requests waiting for the writer.",
            self.ingest_queue_depth.get(),
            "gauge",
        );
        counter(
            "overlord_commits_total",
            "Group commits.",
            self.commits.get(),
            "counter",
        );
        counter(
            "overlord_commit_errors_total",
            "Failed group commits.",
            self.commit_errors.get(),
            "counter",
        );
        self.commit_seconds.render(
            "overlord_commit_seconds",
            "Time per group commit including fsync.",
            &mut out,
        );
        self.commit_requests.render(
            "overlord_commit_requests",
            "Requests per group commit.",
            &mut out,
        );
        out
    }
}
