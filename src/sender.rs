//! The sender: delivers the outbox to webhooks, at least once.
//!
//! It runs on its own thread with its own small tokio runtime, so a slow
//! or dead receiver never takes a request worker or the writer's time.
//! It scans the outbox ([`crate::outbox::waiting_targets`]) when the
//! writer wakes it after a commit and every half second, and runs one
//! task per target with rows waiting. A task delivers its target's rows
//! one at a time in event order (per-target ordering: the next row waits
//! until this one is delivered or dead), so each target has at most one
//! attempt in flight, and all targets together at most
//! `[notify] max_in_flight`. Nothing is queued in memory: each task reads
//! its target's head row from the store, which is the truth.
//!
//! An attempt is bounded by `timeout_secs`. A failure is retried after
//! `retry_min_ms`, doubling to `retry_max_secs`, each delay jittered down
//! by up to half; once `retry_for_secs` have passed since the event, the
//! row goes to `notify_dead` with the last error. Every attempt is
//! recorded in the target's history, and a row leaves the outbox only in
//! the transaction that records its delivery or its death
//! ([`crate::outbox::finish`]).

pub mod mail;
pub mod webhook;

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::rustls;

use crate::catalog::Catalog;
use crate::codec::{timefmt, Micros};
use crate::config::NotifyConfig;
use crate::outbox::{self, Attempt, Outcome, Pending};
use crate::store::Store;
use crate::targets::Kind;

/// How often the outbox is scanned without a wake-up.
const SCAN_EVERY: Duration = Duration::from_millis(500);

/// The running sender; dropping it stops and joins its thread (attempts
/// in flight are abandoned; their rows stay in the outbox).
pub struct Sender {
    wake: Arc<Notify>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    config: NotifyConfig,
    in_flight: Semaphore,
    active: Mutex<HashSet<u32>>,
    tls: Arc<rustls::ClientConfig>,
    mail: Option<mail::Relay>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Sender {
    /// Start the sender thread. `wake` is notified by the writer after a
    /// commit that may have added outbox rows.
    pub fn start(
        store: Arc<Store>,
        catalog: Arc<Catalog>,
        config: NotifyConfig,
        smtp: &crate::config::SmtpConfig,
        metrics: Arc<crate::metrics::Metrics>,
        wake: Arc<Notify>,
    ) -> Result<Sender, String> {
        let limit = Duration::from_secs(config.timeout_secs.max(1));
        let mail = mail::relay(smtp, limit)?;
        let tls = webhook::tls_config(&config.ca_file)?;
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            catalog,
            in_flight: Semaphore::new(config.max_in_flight.max(1)),
            config,
            active: Mutex::new(HashSet::new()),
            tls,
            mail,
            metrics,
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let thread = std::thread::Builder::new()
            .name("overlord-sender".into())
            .spawn({
                let wake = wake.clone();
                move || {
                    rt.block_on(scan_loop(shared, wake, stop_rx));
                    // A DNS lookup in flight may not end soon; a store
                    // transaction does.
                    rt.shutdown_timeout(Duration::from_secs(2));
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Sender {
            wake,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Sender {
    /// Look at the outbox now (after a management write added a row).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn scan_loop(shared: Arc<Shared>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        let s = shared.clone();
        let waiting = crate::blocking::run("outbox scan", move || {
            s.store.read(|txn| outbox::waiting_targets(txn))
        })
        .await;
        match waiting {
            Ok(list) => {
                for t in list {
                    if shared.active.lock().insert(t) {
                        tokio::spawn(drain(shared.clone(), t));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "notifications: outbox scan failed"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(SCAN_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Deliver target `id`'s rows in order until none is left.
async fn drain(shared: Arc<Shared>, id: u32) {
    let mut current = (0u64, 0u32);
    loop {
        let s = shared.clone();
        let head = crate::blocking::run("outbox read", move || {
            s.store.read(|txn| outbox::head(txn, id))
        })
        .await;
        let p = match head {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "notifications: outbox read failed");
                tokio::time::sleep(SCAN_EVERY).await;
                continue;
            }
        };
        // A deleted target's rows go with it (same transaction).
        let Some(target) = shared.catalog.targets().by_id(id) else {
            break;
        };
        current = if current.0 == p.n {
            (p.n, current.1 + 1)
        } else {
            (p.n, 1)
        };
        let a = attempt(&shared, &target, &p, current.1).await;
        let failed = a.outcome == Outcome::Failed;
        match a.outcome {
            Outcome::Delivered => shared.metrics.notify_delivered.inc(),
            Outcome::Failed => shared.metrics.notify_failed.inc(),
            Outcome::Dead => {
                shared.metrics.notify_dead.inc();
                // The target's name, never its URL (it may carry a token).
                tracing::warn!(
                    target_name = %crate::codec::names::log_safe(&target.name),
                    event = %p.id(),
                    error = %crate::codec::names::log_safe(&a.detail),
                    "notification given up on (in the target's dead letters)"
                );
            }
        }
        record(&shared, id, a).await;
        if failed {
            tokio::time::sleep(backoff(&shared.config, current.1)).await;
        }
    }
    shared.active.lock().remove(&id);
}

/// One attempt, bounded by `timeout_secs` and `max_in_flight`.
async fn attempt(
    shared: &Shared,
    target: &crate::targets::TargetRecord,
    p: &Pending,
    n: u32,
) -> Attempt {
    let result = {
        let _slot = shared.in_flight.acquire().await;
        let limit = Duration::from_secs(shared.config.timeout_secs.max(1));
        let send = async {
            match target.kind {
                Kind::Webhook => {
                    let allow = shared.config.allow_private_targets;
                    webhook::post(target, p, allow, &shared.tls).await
                }
                Kind::Email => mail::send(shared.mail.as_ref(), target, p)
                    .await
                    .map(|()| 250),
            }
        };
        match tokio::time::timeout(limit, send).await {
            Ok(r) => r,
            Err(_) => Err((0, format!("timed out after {}s", limit.as_secs()))),
        }
    };
    let now = timefmt::now_micros();
    let (outcome, status, detail) = match result {
        Ok(status) => (Outcome::Delivered, status, String::new()),
        Err((status, why)) if expired(&shared.config, p.created, now) => {
            (Outcome::Dead, status, why)
        }
        Err((status, why)) => (Outcome::Failed, status, why),
    };
    Attempt {
        time: now,
        event: p.n,
        attempt: n,
        outcome,
        status,
        detail,
    }
}

fn expired(c: &NotifyConfig, created: Micros, now: Micros) -> bool {
    let limit = i64::try_from(c.retry_for_secs)
        .unwrap_or(i64::MAX / 2_000_000)
        .saturating_mul(1_000_000);
    now.saturating_sub(created) >= limit
}

/// Store an attempt; a storage failure is retried (the row stays in the
/// outbox meanwhile, so at worst it is delivered again).
async fn record(shared: &Arc<Shared>, id: u32, a: Attempt) {
    loop {
        // A target deleted meanwhile took its rows with it.
        if shared.catalog.targets().by_id(id).is_none() {
            return;
        }
        let s = shared.clone();
        let a2 = a.clone();
        let done = crate::blocking::run("outbox finish", move || {
            s.store
                .write(|txn| outbox::finish(txn, id, &a2, s.config.history_kept))
        })
        .await;
        match done {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "notifications: storing a delivery failed");
                if a.outcome == Outcome::Failed {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The wait before attempt `n + 1`: `retry_min_ms × 2^(n-1)`, at most
/// `retry_max_secs`, less a random part of up to half (jitter, so that
/// many targets failing together do not retry together).
pub fn backoff(c: &NotifyConfig, n: u32) -> Duration {
    let base = c
        .retry_min_ms
        .max(1)
        .saturating_mul(1u64 << n.saturating_sub(1).min(40));
    let full = base.min(c.retry_max_secs.saturating_mul(1000).max(1));
    let jitter = getrandom::u64().unwrap_or(0) % (full / 2 + 1);
    Duration::from_millis(full - jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let c = NotifyConfig {
            retry_min_ms: 1000,
            retry_max_secs: 60,
            ..NotifyConfig::default()
        };
        for _ in 0..50 {
            let d1 = backoff(&c, 1).as_millis();
            assert!((500..=1000).contains(&d1), "{d1}");
            let d3 = backoff(&c, 3).as_millis();
            assert!((2000..=4000).contains(&d3), "{d3}");
            let d30 = backoff(&c, 30).as_millis();
            assert!((30_000..=60_000).contains(&d30), "{d30}");
        }
    }

    #[test]
    fn retries_end_after_retry_for_secs() {
        let c = NotifyConfig {
            retry_for_secs: 10,
            ..NotifyConfig::default()
        };
        assert!(!expired(&c, 0, 9_999_999));
        assert!(expired(&c, 0, 10_000_000));
    }
}
