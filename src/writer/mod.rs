//! The writer: durable ingest with group commit, and the one thread that
//! schedules every write of the data path.
//!
//! Handlers never touch redb. They hand a request's readings to
//! [`IngestHandle::try_submit`], which puts them on a bounded queue (full:
//! the caller answers `503 overloaded` and nothing is written). One writer
//! thread owns every write to the readings tables. It takes whatever is
//! waiting, writes it all in one redb write transaction with immediate
//! durability (one fsync), and only then answers each waiting request. A
//! request's readings are all in that transaction or, if it fails, none
//! are: `200 ok` means fsynced.
//!
//! In the same transaction the writer appends the batch's new readings to
//! `digest_log`; after the commit it hands the batch to the digest pool.
//! Digest results come back to the writer, which applies them and removes
//! the log row in one later transaction. On start, rows still in the log
//! are handed to the digest again before anything new (crash safety of
//! the hand-off).
//!
//! The writer schedules; the features own their storage. What it writes
//! for a channel, an alert, an inbox, presence, a dead letter or
//! retention is a function of that feature's module taking the write
//! transaction; the writer only calls them, in order. Its parts:
//!
//! - `queue.rs`: the bounded queue, [`IngestHandle`], [`Prepared`] (keys
//!   sorted before a request is queued).
//! - `commit.rs`: one group commit: readings merged into their chunks, the
//!   digest log row, last contact, then the effects and the retention
//!   step, one transaction.
//! - `effects.rs`: the digest's results and presence changes, applied in
//!   digest-log order, batch by batch, part by part.
//! - `run.rs`: the loop (what wakes the writer, `EFFECTS_LINGER`, the
//!   presence sweep), replies, shutdown.
//! - `purge.rs`: range deletions (`crate::purge`), a step per
//!   transaction, answered once the last step is committed.
//! - `recover.rs`: replay of the digest log on start, and the reopen after
//!   a failed write.
//!
//! This module keeps the digest hand-off: batches dispatched, parts
//! filed as they come back, complete batches released strictly in
//! digest-log order (`WriterState::received`).

mod commit;
mod compact;
mod effects;
mod purge;
mod queue;
mod recover;
mod run;
mod seal;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tokio::sync::watch;

use crate::auth::Directory;
use crate::catalog::Catalog;
use crate::digest::{Digest, PartDone};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::store::digest_log::DigestBatch;
use crate::store::seal::Sealer;
use crate::store::{Store, StoreError, META};

pub use queue::{IngestHandle, IngestOutcome, IngestReply, Overloaded, Prepared, SortKey};

/// Most readings one group commit takes before it commits (more wait for
/// the next one). Bounds the transaction's memory and the reply latency.
pub const MAX_READINGS_PER_COMMIT: usize = 2_000_000;

/// How long the writer waits for a request to carry digest results that
/// are ready before it commits them on their own (with an fsync of their
/// own). Bounds the delay a channel follower sees when ingest is idle.
const EFFECTS_LINGER: Duration = Duration::from_millis(1);

/// How often the writer retries opening a data file that a storage
/// failure left closed, when no request makes it try sooner.
const REOPEN_RETRY: Duration = Duration::from_secs(1);

/// How often the writer sweeps presence when nothing else wakes it.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// `meta` key of the next digest-log sequence number.
const NEXT_BATCH: &str = "next_batch";

/// The running writer thread.
pub struct Writer {
    thread: JoinHandle<()>,
    stop: Sender<()>,
}

impl Writer {
    /// Stop the writer: it commits every request already queued (their
    /// clients get their replies), refuses later ones (`503`), makes the
    /// digest's results durable, and exits. Blocks until it has.
    pub fn shutdown(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// What the writer needs besides the store and the digest.
pub struct WriterContext {
    /// Requests waiting for the writer.
    pub queue: usize,
    /// Rows an inbox may hold.
    pub max_inbox: u64,
    /// Channel retention comes from here.
    pub catalog: Arc<Catalog>,
    /// Bumped after every commit that added channel items (long-polls).
    pub channel_events: watch::Sender<u64>,
    /// Rung after every commit for the inboxes it added rows to (MQTT
    /// inbox subscribers, `src/mqtt/feeds.rs`).
    pub inbox_bells: Arc<crate::inbox::Bells>,
    /// Device presence: swept by the writer, its changes stored here.
    pub presence: Arc<Presence>,
    /// Owners and gateways, for presence notices and inbox routing.
    pub directory: Arc<Directory>,
    /// Presence events kept; older ones are removed as new ones arrive.
    pub presence_events_kept: u64,
    /// Retention policy; the writer removes expired readings a bounded
    /// batch per transaction (`crate::retention`).
    pub retention: Arc<crate::retention::Retention>,
    /// A sensor's last chunk is sealed after this long without a write
    /// (`[storage] seal_idle_secs`).
    pub seal_idle: Duration,
    /// Chunks per sealing transaction.
    pub seal_chunks_per_step: usize,
    /// The data file is compacted once the writer has had no request for
    /// this long (`[storage] compact_idle_secs`; zero: never).
    pub compact_idle: Duration,
    /// Notified after a commit that added outbox rows (the webhook
    /// sender, `crate::sender`).
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// "Now" for commits (contacts, retention cutoffs), the presence
    /// sweep and the retention schedule.
    pub clock: crate::clock::Clock,
    /// When a command next expires; the writer expires commands a bounded
    /// batch per transaction (`crate::commands::expire_step`).
    pub command_expiry: Arc<crate::commands::Expiry>,
    /// Deleted devices' rows, removed a bounded batch per transaction
    /// (`crate::deletion::sweep_step`).
    pub deletions: Arc<crate::deletion::Sweep>,
}

/// Start the writer thread. `queue` bounds the requests waiting for it.
pub fn start(
    store: Arc<Store>,
    digest: Digest,
    metrics: Arc<Metrics>,
    ctx: WriterContext,
) -> Result<(IngestHandle, Writer), StoreError> {
    let (tx, rx) = crossbeam_channel::bounded(ctx.queue.max(1));
    let (stop, stop_rx) = crossbeam_channel::bounded(0);
    let (purges, purge_rx) = crossbeam_channel::bounded(crate::purge::QUEUE);
    let next_seq = store.read(|txn| {
        let meta = txn.open_table(META)?;
        let v = meta.get(NEXT_BATCH)?.map_or(0, |g| g.value());
        Ok::<_, StoreError>(v)
    })?;
    let sealer = Sealer::new(ctx.seal_idle, ctx.seal_chunks_per_step);
    store.read(|txn| sealer.load(txn))?;
    metrics.seal_pending.set(sealer.pending() as u64);
    let sweeper = crate::retention::Sweeper::new(ctx.clock.clone());
    let started = ctx.clock.instant();
    let mut w = WriterState {
        store,
        digest,
        metrics: metrics.clone(),
        ctx,
        outstanding: BTreeMap::new(),
        ready: Vec::new(),
        next_seq,
        sweeper,
        sealer,
        seal_retry_at: None,
        outbox_added: std::cell::Cell::new(false),
        last_seal: Instant::now(),
        last_durable_seal: Instant::now(),
        last_request: started,
        compacted_len: 0,
        compact_retry_at: None,
        repack_at: Some(None),
        purge: None,
        purge_undo: None,
    };
    w.replay()?;
    let thread = std::thread::Builder::new()
        .name("overlord-writer".into())
        .spawn(move || w.run(rx, purge_rx, stop_rx))
        .map_err(|e| StoreError::Io(e.to_string()))?;
    Ok((
        IngestHandle {
            tx,
            metrics,
            purges,
        },
        Writer { thread, stop },
    ))
}

/// A dispatched batch whose parts are not all back.
struct Pending {
    committed_at: i64,
    remaining: usize,
    parts: Vec<PartDone>,
}

/// The writer thread's state.
struct WriterState {
    store: Arc<Store>,
    digest: Digest,
    metrics: Arc<Metrics>,
    ctx: WriterContext,
    /// Dispatched batches by digest-log seq, oldest first.
    outstanding: BTreeMap<u64, Pending>,
    /// Complete batches, in seq order, whose results are not committed.
    ready: Vec<(u64, Vec<PartDone>)>,
    next_seq: u64,
    /// The retention pass in progress, if any.
    sweeper: crate::retention::Sweeper,
    /// The sensors whose chunks may still be sealed (`seal.rs`).
    sealer: Sealer,
    /// After a failed sealing step: not before this.
    seal_retry_at: Option<Instant>,
    /// The transaction being built added outbox rows: wake the sender
    /// once it commits.
    outbox_added: std::cell::Cell<bool>,
    /// When the last sealing step started.
    last_seal: Instant,
    /// When the last fsynced sealing step started.
    last_durable_seal: Instant,
    /// When the last round with a request (or a range deletion) committed
    /// (by the context's clock, which tests move).
    last_request: Instant,
    /// The data file's length after the last idle compaction (0: none yet).
    compacted_len: u64,
    /// After a failed compaction: not before this.
    compact_retry_at: Option<Instant>,
    /// Where repacking the sealed table goes on (`Some(None)`: from the
    /// start); `None` once it was repacked since the last compaction.
    repack_at: Option<crate::store::compact::RepackFrom>,
    /// The range deletion in progress (`crate::purge`), one at a time.
    purge: Option<crate::purge::Progress>,
    /// Where the purge was before the step of the transaction being
    /// built (restored if it fails).
    purge_undo: Option<crate::purge::Cursor>,
}

impl WriterState {
    /// Hand a committed batch to the digest and wait for its parts.
    fn dispatch(&mut self, batch: DigestBatch) {
        let seq = batch.seq;
        let committed_at = batch.committed_at;
        let parts = self.digest.dispatch(batch);
        if parts > 0 {
            self.outstanding.insert(
                seq,
                Pending {
                    committed_at,
                    remaining: parts,
                    parts: Vec::with_capacity(parts),
                },
            );
        }
    }

    /// A part is back: file it, and move every complete batch at the head
    /// of the line to `ready`. Results are applied strictly in seq order,
    /// so the durable state is always that of a prefix of the log.
    fn received(&mut self, d: PartDone) {
        if let Some(p) = self.outstanding.get_mut(&d.seq) {
            p.remaining = p.remaining.saturating_sub(1);
            p.parts.push(d);
        }
        while let Some(entry) = self.outstanding.first_entry() {
            if entry.get().remaining > 0 {
                break;
            }
            let (seq, mut p) = entry.remove_entry();
            // The threads finish in any order; the results are applied in
            // part order, so a batch digested again after a crash or a
            // reopen gives the same indexes and seqs as the first time.
            p.parts.sort_by_key(|d| d.part);
            self.ready.push((seq, p.parts));
        }
    }

    /// Digest lag for `/metrics`: batches outstanding, parts queued, and
    /// the commit time of the oldest outstanding batch.
    fn note_backlog(&self) {
        self.metrics
            .digest_backlog
            .set(self.outstanding.len() as u64);
        self.metrics
            .digest_queue_depth
            .set(self.digest.queued() as u64);
        let oldest = self
            .outstanding
            .first_key_value()
            .map_or(0, |(_, p)| p.committed_at.max(1) as u64);
        self.metrics.digest_oldest_us.set(oldest);
    }
}
