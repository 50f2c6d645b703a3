//! The digest: what happens to readings after they are durable.
//!
//! The writer hands each committed batch to [`Digest::dispatch`], which
//! splits it by device onto a fixed pool of threads (device number modulo
//! the pool size), each behind a bounded crossbeam queue. So one device's
//! readings are always digested by the same thread, in commit order
//! (batch by batch, and within a batch in request order, rows in body
//! order), while different devices run in parallel.
//!
//! A thread's results for its part of a batch go back to the writer as a
//! [`PartDone`]; the writer commits them and, once every part of a batch is
//! in, removes the batch from `digest_log` in the same transaction. Today
//! the digest records each device's last contact; channels, alerts and
//! the inbox build on this hand-off.
//!
//! Bounds: each queue holds `[digest] queue` parts; when one is full the
//! writer waits, so ingest backs up into its own bounded queue and clients
//! get `503`. The results channel is unbounded in type but holds at most
//! one message per part in flight, which the queues bound.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::codec::{Micros, Reading};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::store::digest_log::DigestBatch;

/// One thread's share of a batch.
struct Part {
    seq: u64,
    committed_at: Micros,
    readings: Vec<(u32, Reading)>,
}

/// What a thread made of its part, for the writer to commit.
#[derive(Debug)]
pub struct PartDone {
    /// The batch (digest-log key).
    pub seq: u64,
    /// Devices heard from and when.
    pub last_seen: Vec<(u32, Micros)>,
}

/// The digest pool.
pub struct Digest {
    queues: Vec<Sender<Part>>,
    done: Receiver<PartDone>,
    threads: Vec<JoinHandle<()>>,
}

impl Digest {
    /// Start `workers` threads, each with a queue of `queue` parts.
    pub fn start(
        workers: usize,
        queue: usize,
        presence: Arc<Presence>,
        metrics: Arc<Metrics>,
    ) -> Digest {
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = crossbeam_channel::bounded::<Part>(queue.max(1));
            let done_tx = done_tx.clone();
            let presence = presence.clone();
            let metrics = metrics.clone();
            let t = std::thread::Builder::new()
                .name(format!("overlord-digest-{i}"))
                .spawn(move || worker(rx, done_tx, presence, metrics))
                .expect("spawn digest thread");
            queues.push(tx);
            threads.push(t);
        }
        Digest {
            queues,
            done,
            threads,
        }
    }

    /// The results channel, read by the writer.
    pub fn done_receiver(&self) -> Receiver<PartDone> {
        self.done.clone()
    }

    /// Split a committed batch by device and queue the parts (waiting when a
    /// queue is full). Returns the number of parts queued.
    pub fn dispatch(&self, batch: DigestBatch) -> usize {
        let n = self.queues.len();
        let mut parts: Vec<Vec<(u32, Reading)>> = (0..n).map(|_| Vec::new()).collect();
        for (dev, r) in batch.readings {
            parts[dev as usize % n].push((dev, r));
        }
        let mut queued = 0;
        for (q, readings) in self.queues.iter().zip(parts) {
            if readings.is_empty() {
                continue;
            }
            let part = Part {
                seq: batch.seq,
                committed_at: batch.committed_at,
                readings,
            };
            if q.send(part).is_ok() {
                queued += 1;
            }
        }
        queued
    }
}

impl Drop for Digest {
    fn drop(&mut self) {
        self.queues.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(
    rx: Receiver<Part>,
    done: Sender<PartDone>,
    presence: Arc<Presence>,
    metrics: Arc<Metrics>,
) {
    for part in rx {
        let mut seen: Vec<(u32, Micros)> = Vec::new();
        for (dev, _reading) in &part.readings {
            if seen.last().map(|(d, _)| d) != Some(dev) && !seen.iter().any(|(d, _)| d == dev) {
                seen.push((*dev, part.committed_at));
            }
        }
        for &(dev, t) in &seen {
            presence.saw(dev, t);
        }
        metrics.readings_digested.add(part.readings.len() as u64);
        let _ = done.send(PartDone {
            seq: part.seq,
            last_seen: seen,
        });
    }
}
