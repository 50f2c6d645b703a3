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
    /// Hot chunks re-encoded into sealed ones.
    pub chunks_sealed: Counter,
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

    /// Prometheus text exposition, with the scrape-time values of `snap`.
    pub fn render(&self, snap: &Snapshot) -> String {
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
            "Connections refused at max_connections or max_connections_per_source.",
            self.connections_refused.get(),
            "counter",
        );
        counter(
            "overlord_mqtt_connections_open",
            "Open MQTT connections (CONNECT accepted).",
            self.mqtt_connections.get(),
            "gauge",
        );
        counter(
            "overlord_mqtt_connections_refused_total",
            "MQTT connections refused at [mqtt] max_connections.",
            self.mqtt_refused.get(),
            "counter",
        );
        counter(
            "overlord_mqtt_publishes_total",
            "MQTT PUBLISHes handled (QoS 0 and 1).",
            self.mqtt_publishes.get(),
            "counter",
        );
        counter(
            "overlord_mqtt_publish_failures_total",
            "MQTT PUBLISHes that failed (an error line, never a PUBACK of success).",
            self.mqtt_publish_failures.get(),
            "counter",
        );
        counter(
            "overlord_tls_handshakes_running",
            "TLS handshakes in progress (at most [tls] max_handshakes).",
            self.tls_handshakes_running.get(),
            "gauge",
        );
        counter(
            "overlord_tls_handshakes_waiting",
            "TLS connections waiting for a handshake slot.",
            self.tls_handshakes_waiting.get(),
            "gauge",
        );
        counter(
            "overlord_tls_handshake_failures_total",
            "TLS handshakes failed, timed out, or not TLS at all.",
            self.tls_handshake_failures.get(),
            "counter",
        );
        counter(
            "overlord_tls_reload_failures_total",
            "Certificate reloads that failed; the certificate in use was kept.",
            self.tls_reload_failures.get(),
            "counter",
        );
        counter(
            "overlord_body_bytes_in_flight",
            "Bytes of request bodies and their parsed readings held now (at most body_budget_bytes).",
            self.body_bytes_in_flight.get(),
            "gauge",
        );
        counter(
            "overlord_readings_stored_total",
            "New readings committed (retries excluded).",
            self.readings_stored.get(),
            "counter",
        );
        counter(
            "overlord_readings_digested_total",
            "Readings processed by the digest (those a channel or an alert follows).",
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
        counter(
            "overlord_ingest_readings_total",
            "Readings accepted by group commits (new and retries).",
            self.readings_accepted.get(),
            "counter",
        );
        counter(
            "overlord_digest_backlog_batches",
            "Committed batches not yet digested (in the digest or waiting for earlier ones).",
            self.digest_backlog.get(),
            "gauge",
        );
        counter(
            "overlord_digest_queue_depth",
            "Digest parts queued to the digest threads and not yet taken.",
            self.digest_queue_depth.get(),
            "gauge",
        );
        counter(
            "overlord_long_polls_waiting",
            "Channel long-polls waiting now.",
            self.long_polls.get(),
            "gauge",
        );
        // One gauge per state of `GET /v1/devices`: every device is in
        // exactly one, so they add up to the number of devices.
        counter(
            "overlord_devices_online",
            "Devices online (state online in GET /v1/devices).",
            snap.devices.online,
            "gauge",
        );
        counter(
            "overlord_devices_offline",
            "Devices silent past their offline_after (state offline).",
            snap.devices.offline,
            "gauge",
        );
        counter(
            "overlord_devices_unreachable",
            "Devices behind an offline gateway (state unreachable).",
            snap.devices.unreachable,
            "gauge",
        );
        counter(
            "overlord_devices_unknown",
            "Devices never heard from (state unknown).",
            snap.devices.unknown,
            "gauge",
        );
        counter(
            "overlord_inbox_rows_pending",
            "Inbox rows waiting for their device, over every inbox.",
            snap.inbox_rows,
            "gauge",
        );
        counter(
            "overlord_inboxes_pending",
            "Inboxes with at least one row waiting.",
            snap.inboxes_pending,
            "gauge",
        );
        counter(
            "overlord_inboxes_full",
            "Inboxes at max_inbox (senders get inbox_full).",
            snap.inboxes_full,
            "gauge",
        );
        counter(
            "overlord_retention_chunks_deleted_total",
            "Reading chunks (one sensor-minute part) removed by retention.",
            self.retention_chunks_deleted.get(),
            "counter",
        );
        counter(
            "overlord_retention_readings_deleted_total",
            "Readings removed by retention.",
            self.retention_readings_deleted.get(),
            "counter",
        );
        counter(
            "overlord_retention_passes_total",
            "Retention passes finished (every sensor looked at once).",
            self.retention_passes.get(),
            "counter",
        );
        counter(
            "overlord_chunks_sealed_total",
            "Hot chunks (parts) re-encoded into the compact sealed form.",
            self.chunks_sealed.get(),
            "counter",
        );
        counter(
            "overlord_seal_pending_sensors",
            "Sensors that may still have hot chunks to seal (0: all sealed but live ones).",
            self.seal_pending.get(),
            "gauge",
        );
        for (name, help, c) in [
            (
                "overlord_notify_delivered_total",
                "Notifications delivered to their webhook or e-mail target.",
                &self.notify_delivered,
            ),
            (
                "overlord_notify_failed_total",
                "Notification attempts that failed and will be tried again.",
                &self.notify_failed,
            ),
            (
                "overlord_notify_dead_total",
                "Notifications given up on after retry_for_secs (a target's dead letters).",
                &self.notify_dead,
            ),
        ] {
            counter(name, help, c.get(), "counter");
        }
        let oldest = self.digest_oldest_us.get();
        let age = if oldest == 0 {
            0.0
        } else {
            (snap.now.saturating_sub(oldest as i64)).max(0) as f64 / 1e6
        };
        let _ = writeln!(
            out,
            "# HELP overlord_digest_oldest_age_seconds Age of the oldest committed batch not yet digested (0: none).\n# TYPE overlord_digest_oldest_age_seconds gauge\noverlord_digest_oldest_age_seconds {age}"
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
        self.commit_readings.render(
            "overlord_commit_readings",
            "Readings per group commit.",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP overlord_http_requests_total Replies by endpoint and status class.\n# TYPE overlord_http_requests_total counter"
        );
        let mut routes: Vec<(usize, &str)> =
            snap.routes.iter().map(|(i, n)| (*i, n.as_str())).collect();
        routes.push((ROUTE_SLOTS - 1, "none"));
        for (slot, name) in routes {
            let Some(counts) = self.routes.get(slot) else {
                continue;
            };
            for (class, label) in ["2xx", "4xx", "5xx"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "overlord_http_requests_total{{route=\"{name}\",status=\"{label}\"}} {}",
                    counts[class].get()
                );
            }
        }
        out
    }
}
