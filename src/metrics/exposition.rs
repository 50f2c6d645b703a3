//! The Prometheus text exposition of [`Metrics`]: a table of the
//! one-value families (name, help, type, where the value comes from),
//! the histograms, and requests by endpoint.

use std::fmt::Write;

use super::{Histogram, Metrics, Snapshot, ROUTE_SLOTS};

/// Prometheus types of a family.
const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

/// Where a one-value family's value comes from at scrape time.
type Read = fn(&Metrics, &Snapshot) -> u64;

/// The one-value families of `/metrics`, in the order they are written:
/// name, help, type and value. A new counter or gauge is one row here.
const SCALARS: &[(&str, &str, &str, Read)] = &[
    (
        "overlord_http_responses_2xx_total",
        "Replies with a 2xx or 3xx status.",
        COUNTER,
        |m, _| m.http_2xx.get(),
    ),
    (
        "overlord_http_responses_4xx_total",
        "Replies with a 4xx status.",
        COUNTER,
        |m, _| m.http_4xx.get(),
    ),
    (
        "overlord_http_responses_5xx_total",
        "Replies with a 5xx status.",
        COUNTER,
        |m, _| m.http_5xx.get(),
    ),
    (
        "overlord_connections_open",
        "Open client connections.",
        GAUGE,
        |m, _| m.connections.get(),
    ),
    (
        "overlord_connections_refused_total",
        "Connections refused at max_connections or max_connections_per_source.",
        COUNTER,
        |m, _| m.connections_refused.get(),
    ),
    (
        "overlord_forwarded_connections_total",
        "Connections another node forwarded to this one (several nodes on one database), any door.",
        COUNTER,
        |m, _| m.connections_forwarded.get(),
    ),
    (
        "overlord_mqtt_connections_open",
        "Open MQTT connections (CONNECT accepted).",
        GAUGE,
        |m, _| m.mqtt_connections.get(),
    ),
    (
        "overlord_mqtt_connections_refused_total",
        "MQTT connections refused at [mqtt] max_connections.",
        COUNTER,
        |m, _| m.mqtt_refused.get(),
    ),
    (
        "overlord_mqtt_publishes_total",
        "MQTT PUBLISHes handled (QoS 0 and 1).",
        COUNTER,
        |m, _| m.mqtt_publishes.get(),
    ),
    (
        "overlord_mqtt_publish_failures_total",
        "MQTT PUBLISHes that failed (an error line, never a PUBACK of success).",
        COUNTER,
        |m, _| m.mqtt_publish_failures.get(),
    ),
    (
        "overlord_tls_handshakes_running",
        "TLS handshakes in progress (at most [tls] max_handshakes).",
        GAUGE,
        |m, _| m.tls_handshakes_running.get(),
    ),
    (
        "overlord_tls_handshakes_waiting",
        "TLS connections waiting for a handshake slot.",
        GAUGE,
        |m, _| m.tls_handshakes_waiting.get(),
    ),
    (
        "overlord_tls_handshake_failures_total",
        "TLS handshakes failed, timed out, or not TLS at all.",
        COUNTER,
        |m, _| m.tls_handshake_failures.get(),
    ),
    (
        "overlord_tls_reload_failures_total",
        "Certificate reloads that failed; the certificate in use was kept.",
        COUNTER,
        |m, _| m.tls_reload_failures.get(),
    ),
    (
        "overlord_body_bytes_in_flight",
        "Bytes of request bodies and their parsed readings held now (at most body_budget_bytes).",
        GAUGE,
        |m, _| m.body_bytes_in_flight.get(),
    ),
    (
        "overlord_readings_stored_total",
        "New readings committed (retries excluded).",
        COUNTER,
        |m, _| m.readings_stored.get(),
    ),
    (
        "overlord_readings_digested_total",
        "Readings processed by the digest (those a channel or an alert follows).",
        COUNTER,
        |m, _| m.readings_digested.get(),
    ),
    (
        "overlord_ingest_rejected_total",
        "Requests refused with 503 because the ingest queue was full.",
        COUNTER,
        |m, _| m.ingest_rejected.get(),
    ),
    (
        "overlord_ingest_queue_depth",
        "Requests waiting for the writer.",
        GAUGE,
        |m, _| m.ingest_queue_depth.get(),
    ),
    (
        "overlord_commits_total",
        "Group commits.",
        COUNTER,
        |m, _| m.commits.get(),
    ),
    (
        "overlord_commit_errors_total",
        "Failed group commits.",
        COUNTER,
        |m, _| m.commit_errors.get(),
    ),
    (
        "overlord_ingest_readings_total",
        "Readings accepted by group commits (new and retries).",
        COUNTER,
        |m, _| m.readings_accepted.get(),
    ),
    (
        "overlord_digest_backlog_batches",
        "Committed batches not yet digested (in the digest or waiting for earlier ones).",
        GAUGE,
        |m, _| m.digest_backlog.get(),
    ),
    (
        "overlord_digest_queue_depth",
        "Digest parts queued to the digest threads and not yet taken.",
        GAUGE,
        |m, _| m.digest_queue_depth.get(),
    ),
    (
        "overlord_long_polls_waiting",
        "Channel long-polls waiting now.",
        GAUGE,
        |m, _| m.long_polls.get(),
    ),
    // One gauge per state of `GET /v1/devices`: every device is in
    // exactly one, so they add up to the number of devices.
    (
        "overlord_devices_online",
        "Devices online (state online in GET /v1/devices).",
        GAUGE,
        |_, s| s.devices.online,
    ),
    (
        "overlord_devices_offline",
        "Devices silent past their offline_after (state offline).",
        GAUGE,
        |_, s| s.devices.offline,
    ),
    (
        "overlord_devices_unreachable",
        "Devices behind an offline gateway (state unreachable).",
        GAUGE,
        |_, s| s.devices.unreachable,
    ),
    (
        "overlord_devices_unknown",
        "Devices never heard from (state unknown).",
        GAUGE,
        |_, s| s.devices.unknown,
    ),
    (
        "overlord_inbox_rows_pending",
        "Inbox rows waiting for their device, over every inbox.",
        GAUGE,
        |_, s| s.inbox_rows,
    ),
    (
        "overlord_inboxes_pending",
        "Inboxes with at least one row waiting.",
        GAUGE,
        |_, s| s.inboxes_pending,
    ),
    (
        "overlord_inboxes_full",
        "Inboxes at max_inbox (senders get inbox_full).",
        GAUGE,
        |_, s| s.inboxes_full,
    ),
    (
        "overlord_retention_chunks_deleted_total",
        "Reading chunks (one sensor-minute part) removed by retention.",
        COUNTER,
        |m, _| m.retention_chunks_deleted.get(),
    ),
    (
        "overlord_retention_readings_deleted_total",
        "Readings removed by retention.",
        COUNTER,
        |m, _| m.retention_readings_deleted.get(),
    ),
    (
        "overlord_retention_passes_total",
        "Retention passes finished (every sensor looked at once).",
        COUNTER,
        |m, _| m.retention_passes.get(),
    ),
    (
        "overlord_chunks_sealed_total",
        "Chunks (parts) written in the compact sealed form: hot ones re-encoded, and ones a write finished.",
        COUNTER,
        |m, _| m.chunks_sealed.get(),
    ),
    (
        "overlord_compactions_total",
        "Compactions of the data file the server ran while idle ([storage] compact_idle_secs).",
        COUNTER,
        |m, _| m.compactions.get(),
    ),
    (
        "overlord_seal_pending_sensors",
        "Sensors that may still have hot chunks to seal (0: all sealed but live ones).",
        GAUGE,
        |m, _| m.seal_pending.get(),
    ),
    (
        "overlord_notify_delivered_total",
        "Notifications delivered to their webhook or e-mail target.",
        COUNTER,
        |m, _| m.notify_delivered.get(),
    ),
    (
        "overlord_notify_failed_total",
        "Notification attempts that failed and will be tried again.",
        COUNTER,
        |m, _| m.notify_failed.get(),
    ),
    (
        "overlord_notify_dead_total",
        "Notifications given up on after retry_for_secs (a target's dead letters).",
        COUNTER,
        |m, _| m.notify_dead.get(),
    ),
];

/// Which histogram of [`Metrics`] a histogram family shows.
type Pick = fn(&Metrics) -> &Histogram;

/// The histograms of `/metrics`, written after the one-value families.
const HISTOGRAMS: &[(&str, &str, Pick)] = &[
    (
        "overlord_commit_seconds",
        "Time per group commit including fsync.",
        |m| &m.commit_seconds,
    ),
    (
        "overlord_commit_requests",
        "Requests per group commit.",
        |m| &m.commit_requests,
    ),
    (
        "overlord_commit_readings",
        "Readings per group commit.",
        |m| &m.commit_readings,
    ),
];

impl Metrics {
    /// Prometheus text exposition, with the scrape-time values of `snap`:
    /// the rows of `SCALARS`, the digest's age, `HISTOGRAMS`, then
    /// requests by endpoint.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(4096);
        for (name, help, kind, read) in SCALARS {
            let v = read(self, snap);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
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
        for (name, help, histogram) in HISTOGRAMS {
            histogram(self).render(name, help, &mut out);
        }
        self.render_routes(snap, &mut out);
        out
    }

    /// `overlord_http_requests_total`: one line per endpoint (the router's
    /// names in `snap`, and `none`) and status class.
    fn render_routes(&self, snap: &Snapshot, out: &mut String) {
        let _ = writeln!(
            *out,
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
                    *out,
                    "overlord_http_requests_total{{route=\"{name}\",status=\"{label}\"}} {}",
                    counts[class].get()
                );
            }
        }
    }
}
