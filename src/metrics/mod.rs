//! Counters, gauges and histograms with atomics, rendered as Prometheus
//! text at `/metrics`: what is counted here, how it is written in
//! `exposition.rs` (one table row per family).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

mod exposition;

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
const READINGS: &[f64] = &[
    1.0,
    10.0,
    100.0,
    1_000.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
    2_000_000.0,
];

/// Route slots for per-endpoint counters: one per `api::Endpoint`
/// variant (by discriminant) and the last for requests that matched no
/// endpoint (404/405). The label set is bounded by the router's table,
/// never by the paths clients send.
pub const ROUTE_SLOTS: usize = 128;

/// Values read at scrape time rather than kept as counters.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// `api::Endpoint` names by discriminant, for the route label.
    pub routes: Vec<(usize, String)>,
    /// Devices per presence state (`Presence::state_counts`), the same
    /// states `GET /v1/devices` shows.
    pub devices: crate::presence::StateCounts,
    /// Inbox rows waiting for their device, over every inbox.
    pub inbox_rows: u64,
    /// Inboxes with at least one row waiting.
    pub inboxes_pending: u64,
    /// Inboxes at `max_inbox` (senders get `inbox_full`).
    pub inboxes_full: u64,
    /// Unix µs now, for ages.
    pub now: i64,
}

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
    /// Connections another node forwarded to this one, with the key.
    pub connections_forwarded: Counter,
    /// MQTT connections open now (after CONNECT was accepted).
    pub mqtt_connections: Gauge,
    /// MQTT connections refused at `[mqtt] max_connections`.
    pub mqtt_refused: Counter,
    /// MQTT PUBLISHes handled (QoS 0 and 1).
    pub mqtt_publishes: Counter,
    /// MQTT PUBLISHes that failed (never acknowledged as stored).
    pub mqtt_publish_failures: Counter,
    /// TLS handshakes running now (at most `[tls] max_handshakes`).
    pub tls_handshakes_running: Gauge,
    /// TLS connections waiting for a handshake slot now.
    pub tls_handshakes_waiting: Gauge,
    /// TLS handshakes that failed, timed out, or were not TLS.
    pub tls_handshake_failures: Counter,
    /// Certificate reloads that failed (the old certificate kept).
    pub tls_reload_failures: Counter,
    /// Bytes of request bodies (and readings parsed from them) held now;
    /// see `crate::budget`.
    pub body_bytes_in_flight: Gauge,
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
    /// Readings per group commit (new and retries).
    pub commit_readings: Histogram,
    /// Readings accepted by group commits (new and retries).
    pub readings_accepted: Counter,
    /// Digest parts queued to the digest threads, not yet taken.
    pub digest_queue_depth: Gauge,
    /// Commit time (unix µs) of the oldest batch not yet digested; 0: none.
    pub digest_oldest_us: Gauge,
    /// Reading chunks removed by retention.
    pub retention_chunks_deleted: Counter,
    /// Readings removed by retention.
    pub retention_readings_deleted: Counter,
    /// Retention passes finished (every sensor looked at once).
    pub retention_passes: Counter,
    /// Chunks sealed: hot ones re-encoded, and ones a write finished.
    pub chunks_sealed: Counter,
    /// Idle compactions of the data file (`writer::compact`).
    pub compactions: Counter,
    /// Sensors that may still have hot chunks to seal.
    pub seal_pending: Gauge,
    /// Notifications delivered to their targets (`crate::sender`).
    pub notify_delivered: Counter,
    /// Notification attempts that failed (and will be tried again).
    pub notify_failed: Counter,
    /// Notifications given up on (moved to a target's dead letters).
    pub notify_dead: Counter,
    /// Requests by endpoint slot and status class (2xx/3xx, 4xx, 5xx).
    routes: Vec<[Counter; 3]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_2xx: Counter::default(),
            http_4xx: Counter::default(),
            http_5xx: Counter::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            connections_forwarded: Counter::default(),
            mqtt_connections: Gauge::default(),
            mqtt_refused: Counter::default(),
            mqtt_publishes: Counter::default(),
            mqtt_publish_failures: Counter::default(),
            tls_handshakes_running: Gauge::default(),
            tls_handshakes_waiting: Gauge::default(),
            tls_handshake_failures: Counter::default(),
            tls_reload_failures: Counter::default(),
            body_bytes_in_flight: Gauge::default(),
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
            commit_readings: Histogram::new(READINGS),
            readings_accepted: Counter::default(),
            digest_queue_depth: Gauge::default(),
            digest_oldest_us: Gauge::default(),
            retention_chunks_deleted: Counter::default(),
            retention_readings_deleted: Counter::default(),
            retention_passes: Counter::default(),
            chunks_sealed: Counter::default(),
            compactions: Counter::default(),
            seal_pending: Gauge::default(),
            notify_delivered: Counter::default(),
            notify_failed: Counter::default(),
            notify_dead: Counter::default(),
            routes: (0..ROUTE_SLOTS).map(|_| Default::default()).collect(),
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

    /// Count a reply by endpoint slot (`None`: no endpoint matched) and
    /// status class.
    pub fn count_route(&self, route: Option<usize>, status: u16) {
        let slot = route.unwrap_or(ROUTE_SLOTS - 1).min(ROUTE_SLOTS - 1);
        let class = match status {
            200..=399 => 0,
            400..=499 => 1,
            _ => 2,
        };
        self.routes[slot][class].inc();
    }
}
