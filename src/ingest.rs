//! Durable ingest with group commit.
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

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use redb::{Durability, ReadableDatabase, ReadableTable};
use tokio::sync::{oneshot, watch};

use crate::auth::Directory;
use crate::catalog::Catalog;
use crate::codec::{timefmt, Reading};
use crate::digest::{Digest, PartDone};
use crate::metrics::Metrics;
use crate::presence::{self, Change, Presence};
use crate::store::digest_log::DigestBatch;
use crate::store::{
    parts::{self, minute},
    Store, StoreError, ALERT_EVENTS, ALERT_STATE, DEAD_LETTERS, DIGEST_LOG, LAST_SEEN, META,
    PRESENCE, PRESENCE_EVENTS, PRESENCE_NOTIFY, READINGS, SENSORS,
};
use crate::{alerts, channels, inbox};

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

/// What a stored request reports back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestOutcome {
    /// Readings of the request that are now stored (new and retries).
    pub accepted: usize,
    /// Of those, how many were not stored before.
    pub new: usize,
    /// The sending device's inbox after the commit: pending rows and the
    /// first few of them (see [`IngestHandle::try_submit`]).
    pub inbox: inbox::Pending,
}

/// The reply a submitter waits for.
pub type IngestReply = oneshot::Receiver<Result<IngestOutcome, Arc<StoreError>>>;

struct Job {
    readings: Vec<(u32, Reading)>,
    /// The readings' storage keys, sorted ([`Prepared`]).
    keys: Vec<SortKey>,
    /// Device whose inbox the reply carries, and how many rows.
    inbox_for: Option<(u32, usize)>,
    reply: oneshot::Sender<Result<IngestOutcome, Arc<StoreError>>>,
}

/// The submitting side, cloned into every handler.
#[derive(Clone)]
pub struct IngestHandle {
    tx: Sender<Job>,
    metrics: Arc<Metrics>,
}

/// A hasher for `(device, sensor code)` pairs (two `u32`s): one multiply,
/// where the default SipHash costs more than the rest of grouping.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u32(u32::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(32) ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The queue to the writer is full: answer `503` with `Retry-After`.
#[derive(Debug)]
pub struct Overloaded;

/// `(device, sensor code, minute, offset in the minute, index in the
/// request)`: the order readings are merged into storage in. The index
/// breaks ties, so the first of two identical readings is the one kept.
pub type SortKey = (u32, u32, u32, u32, u32);

/// The storage key of reading `i` of a request.
fn sort_key(i: usize, (dev, r): &(u32, Reading)) -> SortKey {
    let m = minute(r.time);
    let off = (r.time - i64::from(m) * crate::store::chunk::MINUTE_US) as u32;
    (*dev, r.sensor.code(), m, off, i as u32)
}

/// A request's readings with their storage keys computed and sorted, so
/// that the writer — the one serial stage — does not spend its time
/// sorting. Large requests prepare on a blocking thread.
pub struct Prepared {
    readings: Vec<(u32, Reading)>,
    keys: Vec<SortKey>,
}

impl Prepared {
    /// Compute and sort the keys (call off the async runtime for large
    /// requests). A request's rows are usually in time order, so this
    /// groups the readings by (device, sensor) with a stable counting
    /// sort and sorts only a group that is not already in time order:
    /// O(n) for the usual request instead of a full sort.
    pub fn new(readings: Vec<(u32, Reading)>) -> Prepared {
        // Group numbers in first-seen order.
        let mut ids: HashMap<(u32, u32), u32, BuildHasherDefault<PairHasher>> = HashMap::default();
        let mut groups: Vec<(u32, u32)> = Vec::new();
        let gid: Vec<u32> = readings
            .iter()
            .map(|(dev, r)| {
                let k = (*dev, r.sensor.code());
                *ids.entry(k).or_insert_with(|| {
                    groups.push(k);
                    groups.len() as u32 - 1
                })
            })
            .collect();
        // Where each group's run starts, groups in key order.
        let mut order: Vec<u32> = (0..groups.len() as u32).collect();
        order.sort_unstable_by_key(|g| groups[*g as usize]);
        let mut count = vec![0usize; groups.len()];
        for g in &gid {
            count[*g as usize] += 1;
        }
        let mut start = vec![0usize; groups.len()];
        let mut at = 0;
        for g in &order {
            start[*g as usize] = at;
            at += count[*g as usize];
        }
        let runs: Vec<(usize, usize)> = order
            .iter()
            .map(|g| (start[*g as usize], count[*g as usize]))
            .collect();
        let mut keys: Vec<SortKey> = vec![(0, 0, 0, 0, 0); readings.len()];
        for (i, (g, r)) in gid.iter().zip(&readings).enumerate() {
            let slot = &mut start[*g as usize];
            keys[*slot] = sort_key(i, r);
            *slot += 1;
        }
        for (s, n) in runs {
            let run = &mut keys[s..s + n];
            if run.windows(2).any(|w| w[0] > w[1]) {
                run.sort_unstable();
            }
        }
        Prepared { readings, keys }
    }

    /// How many readings.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }
}

impl IngestHandle {
    /// Queue a request's readings (device number, reading) for the next
    /// group commit. Never blocks. With `inbox_for = Some((device, n))`
    /// the outcome also carries that device's pending inbox count and
    /// first `n` rows, read right after the commit. Sorts on the calling
    /// thread: for large requests use [`IngestHandle::try_submit_prepared`].
    pub fn try_submit(
        &self,
        readings: Vec<(u32, Reading)>,
        inbox_for: Option<(u32, usize)>,
    ) -> Result<IngestReply, Overloaded> {
        self.try_submit_prepared(Prepared::new(readings), inbox_for)
    }

    /// [`IngestHandle::try_submit`] for readings already prepared.
    pub fn try_submit_prepared(
        &self,
        prepared: Prepared,
        inbox_for: Option<(u32, usize)>,
    ) -> Result<IngestReply, Overloaded> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job {
            readings: prepared.readings,
            keys: prepared.keys,
            inbox_for,
            reply,
        }) {
            Ok(()) => {
                self.metrics.ingest_queue_depth.set(self.tx.len() as u64);
                Ok(rx)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.ingest_rejected.inc();
                Err(Overloaded)
            }
        }
    }
}

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
    /// Device presence: swept by the writer, its changes stored here.
    pub presence: Arc<Presence>,
    /// Owners and gateways, for presence notices and inbox routing.
    pub directory: Arc<Directory>,
    /// Presence events kept; older ones are removed as new ones arrive.
    pub presence_events_kept: u64,
    /// Retention policy; the writer removes expired readings a bounded
    /// batch per transaction (`crate::retention`).
    pub retention: Arc<crate::retention::Retention>,
}

/// How often the writer sweeps presence when nothing else wakes it.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Start the writer thread. `queue` bounds the requests waiting for it.
pub fn start(
    store: Arc<Store>,
    digest: Digest,
    metrics: Arc<Metrics>,
    ctx: WriterContext,
) -> Result<(IngestHandle, Writer), StoreError> {
    let (tx, rx) = crossbeam_channel::bounded(ctx.queue.max(1));
    let (stop, stop_rx) = crossbeam_channel::bounded(0);
    let next_seq = {
        let txn = store.db()?.begin_read()?;
        let meta = txn.open_table(META)?;
        let v = meta.get(NEXT_BATCH)?.map_or(0, |g| g.value());
        v
    };
    let mut w = WriterState {
        store,
        digest,
        metrics: metrics.clone(),
        ctx,
        outstanding: BTreeMap::new(),
        ready: Vec::new(),
        next_seq,
        sweeper: crate::retention::Sweeper::default(),
    };
    w.replay()?;
    let thread = std::thread::Builder::new()
        .name("overlord-writer".into())
        .spawn(move || w.run(rx, stop_rx))
        .map_err(|e| StoreError::Io(e.to_string()))?;
    Ok((IngestHandle { tx, metrics }, Writer { thread, stop }))
}

/// `meta` key of the next digest-log sequence number.
const NEXT_BATCH: &str = "next_batch";

/// What one transaction wrote: each job's outcome, the batch for the
/// digest (if a followed sensor got anything new), whether channels got
/// items, and the devices heard from.
type Written = (Vec<IngestOutcome>, Option<DigestBatch>, bool, Vec<u32>);

/// A dispatched batch whose parts are not all back.
struct Pending {
    committed_at: i64,
    remaining: usize,
    parts: Vec<PartDone>,
}

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
}

impl WriterState {
    /// Hand every undigested batch in the log to the digest, oldest first.
    fn replay(&mut self) -> Result<(), StoreError> {
        let txn = self.store.db()?.begin_read()?;
        let log = txn.open_table(DIGEST_LOG)?;
        let mut n = 0;
        for row in log.iter()? {
            let (k, v) = row?;
            let batch = DigestBatch::decode(k.value(), v.value())?;
            self.next_seq = self.next_seq.max(batch.seq + 1);
            self.dispatch(batch);
            n += 1;
        }
        if n > 0 {
            tracing::info!(batches = n, "replaying undigested batches");
        }
        Ok(())
    }

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

    fn run(mut self, jobs: Receiver<Job>, stop: Receiver<()>) {
        let done = self.digest.done_receiver();
        let mut open = true;
        let mut last_sweep = Instant::now();
        while open {
            let mut batch = Vec::new();
            select! {
                recv(jobs) -> j => match j {
                    Ok(j) => batch.push(j),
                    Err(_) => open = false,
                },
                recv(done) -> d => if let Ok(d) = d { self.received(d) },
                recv(stop) -> _ => open = false,
                // A retention pass in progress continues between commits.
                default(if self.sweeper.running() { Duration::ZERO } else { SWEEP_EVERY.min(REOPEN_RETRY) }) => {}
            }
            // The tick also retries a data file left closed by a failed
            // reopen, even when no write comes, so queries recover once the
            // disk heals.
            if open && batch.is_empty() && self.store.is_closed() {
                let _ = self.recover();
            }
            if !open {
                // Take everything already queued; later submissions fail
                // because the receiver is dropped below.
                batch.extend(jobs.try_iter());
            }
            let mut readings: usize = batch.iter().map(|j| j.readings.len()).sum();
            while open && readings < MAX_READINGS_PER_COMMIT {
                match jobs.try_recv() {
                    Ok(j) => {
                        readings += j.readings.len();
                        batch.push(j);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            for d in done.try_iter() {
                self.received(d);
            }
            if open && batch.is_empty() && !self.ready.is_empty() {
                // Digest results on their own need a commit that is
                // fsynced before readers see them (see `write`). A request
                // that arrives within EFFECTS_LINGER carries them in its
                // own commit, fsynced anyway: one fsync instead of two
                // for a client that sends request after request.
                match jobs.recv_timeout(EFFECTS_LINGER) {
                    Ok(j) => batch.push(j),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            }
            self.metrics.ingest_queue_depth.set(jobs.len() as u64);
            self.note_backlog();
            if last_sweep.elapsed() >= SWEEP_EVERY {
                self.ctx.presence.sweep(timefmt::now_micros());
                last_sweep = Instant::now();
            }
            self.commit(batch, false);
        }
        drop(jobs);
        // Shutdown: no more requests. Give the digest a bounded time to
        // finish, then make its results durable.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.outstanding.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match done.recv_timeout(left) {
                Ok(d) => self.received(d),
                Err(_) => break,
            }
            for d in done.try_iter() {
                self.received(d);
            }
            self.commit(Vec::new(), true);
        }
        self.commit(Vec::new(), true);
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

    /// Effects-only commits skip the fsync unless `durable` is set.
    fn commit(&mut self, jobs: Vec<Job>, durable: bool) {
        let sweep = self.sweeper.wants_work(&self.ctx.retention);
        if jobs.is_empty()
            && self.ready.is_empty()
            && !durable
            && !self.ctx.presence.has_changes()
            && !sweep
        {
            return;
        }
        let started = Instant::now();
        let now = timefmt::now_micros();
        let mut seq = self.next_seq;
        let has_jobs = !jobs.is_empty();
        let changes = self.ctx.presence.take_changes();
        let mut result = self.write_guarded(&jobs, seq, now, durable, &changes);
        if let Err(e @ (StoreError::DiskFull | StoreError::Io(_))) = &result {
            // redb refuses everything after a failed write or fsync until
            // the file is reopened: do that, then try the batch once more
            // (if the disk is still failing, the reopen fails and the batch
            // is refused with what the disk says now).
            tracing::warn!(error = %e, "commit failed; reopening the data file");
            match self.recover() {
                Ok(()) => {
                    seq = self.next_seq;
                    result = self.write_guarded(&jobs, seq, now, durable, &changes);
                    if result.is_err() {
                        let _ = self.recover();
                    }
                }
                // The reply says what the disk says now.
                Err(e) => result = Err(e),
            }
        }
        if result.is_err() {
            self.ctx.presence.requeue(changes);
        }
        let elapsed = started.elapsed();
        match result {
            Ok((outcomes, batch, appended, contacts)) => {
                self.ready.clear();
                for dev in contacts {
                    self.ctx.presence.saw(dev, now);
                }
                self.metrics
                    .retention_chunks_deleted
                    .add(self.sweeper.last.0);
                self.metrics
                    .retention_readings_deleted
                    .add(self.sweeper.last.1);
                if appended {
                    self.ctx.channel_events.send_modify(|n| *n += 1);
                }
                self.metrics.commits.inc();
                self.metrics.commit_seconds.observe(elapsed.as_secs_f64());
                let accepted: usize = jobs.iter().map(|j| j.readings.len()).sum();
                self.metrics.readings_accepted.add(accepted as u64);
                if has_jobs {
                    // Group-commit size: only commits that carried requests.
                    self.metrics.commit_requests.observe(jobs.len() as f64);
                    self.metrics.commit_readings.observe(accepted as f64);
                }
                let mut outcomes = outcomes;
                self.read_inboxes(&jobs, &mut outcomes);
                // Counted before the replies, so a client that scrapes
                // `/metrics` after its `200` sees its readings.
                let stored: usize = outcomes.iter().map(|o| o.new).sum();
                self.metrics.readings_stored.add(stored as u64);
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
                if let Some(batch) = batch {
                    self.next_seq = seq + 1;
                    self.dispatch(batch);
                }
                self.note_backlog();
            }
            Err(e) => {
                tracing::error!(error = %e, requests = jobs.len(), "group commit failed");
                self.metrics.commit_errors.inc();
                let e = Arc::new(e);
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
                if !has_jobs {
                    // Only digest results failed to commit: they stay in
                    // `ready` for the next try; do not spin on a broken disk.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// After a failed commit: reopen the data file and carry on from what
    /// is durable, exactly as a restart would. The reopened file may hold
    /// less than the writer assumed (effects-only commits are not fsynced,
    /// and redb drops them with the old handle) or more (an fsync can fail
    /// after the data landed, a "ghost" commit). So digest work in flight
    /// is waited for and dropped, alert states are reloaded from the
    /// store, and every batch still in the digest log is digested again in
    /// order. Readings of a ghost commit that are sent again are
    /// acknowledged as retries.
    fn recover(&mut self) -> Result<(), StoreError> {
        // In-flight parts were computed against in-memory alert states
        // that may be ahead of the file; they must all be back before the
        // log is dispatched again (a late part would be taken for a part
        // of the new dispatch).
        let done = self.digest.done_receiver();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.outstanding.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match done.recv_timeout(left) {
                Ok(d) => self.received(d),
                Err(_) => {
                    return Err(StoreError::Io(
                        "the digest did not drain; data file not reopened".into(),
                    ))
                }
            }
        }
        if let Err(e) = self.store.reopen() {
            tracing::error!(error = %e, "data file could not be reopened; refusing writes");
            return Err(e);
        }
        self.ready.clear();
        self.resync().inspect_err(|e| {
            tracing::error!(error = %e, "reading the reopened data file failed");
        })
    }

    /// Reload what the digest depends on from the store, then replay the
    /// digest log (see [`WriterState::recover`]).
    fn resync(&mut self) -> Result<(), StoreError> {
        {
            let txn = self.store.db()?.begin_read()?;
            let states = txn.open_table(ALERT_STATE)?;
            for a in self.ctx.catalog.alerts() {
                let fired = states.get(a.rec.id)?.is_some_and(|g| g.value() == 1);
                a.set_fired(fired);
            }
            let meta = txn.open_table(META)?;
            if let Some(n) = meta.get(NEXT_BATCH)? {
                self.next_seq = self.next_seq.max(n.value());
            }
        }
        self.replay()
    }

    /// [`WriterState::write`], with a redb panic (a page of a damaged
    /// file that does not decode) turned into [`StoreError::Damaged`]:
    /// the writer thread lives on, the batch is refused, and the store
    /// refuses every later write (see `store::Damage`).
    fn write_guarded(
        &mut self,
        jobs: &[Job],
        seq: u64,
        now: i64,
        durable: bool,
        changes: &[Change],
    ) -> Result<Written, StoreError> {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.write(jobs, seq, now, durable, changes)
        }));
        result.unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the writer panicked".into());
            self.store.mark_damaged(&why);
            Err(StoreError::Damaged(why))
        })
    }

    fn write(
        &mut self,
        jobs: &[Job],
        seq: u64,
        now: i64,
        durable: bool,
        changes: &[Change],
    ) -> Result<Written, StoreError> {
        let mut txn = self.store.db()?.begin_write()?;
        if jobs.is_empty() && !durable {
            // Digest results only: they are re-derived from the log after a
            // crash, so they need not wait for an fsync of their own.
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::Io(e.to_string()))?;
        }
        let mut outcomes: Vec<IngestOutcome> = jobs
            .iter()
            .map(|j| IngestOutcome {
                accepted: j.readings.len(),
                ..IngestOutcome::default()
            })
            .collect();
        // Every reading of every job, addressed by (job, index in job).
        let all: Vec<(usize, &(u32, Reading))> = jobs
            .iter()
            .enumerate()
            .flat_map(|(ji, j)| j.readings.iter().map(move |r| (ji, r)))
            .collect();
        // Per reading: a retry, new, or new and followed.
        const RETRY: u8 = 0;
        const NEW: u8 = 1;
        const FOLLOWED: u8 = 2;
        let mut fresh = vec![RETRY; all.len()];
        let mut contacts: Vec<u32> = Vec::new();
        {
            // Every job's keys were sorted when it was prepared; with
            // several jobs, renumber into `all` and merge the sorted runs
            // (the stable sort finds and merges them in O(n log jobs)).
            let merged: Vec<SortKey>;
            let order: &[SortKey] = if jobs.len() == 1 {
                &jobs[0].keys
            } else {
                let mut base = 0u32;
                let mut keys = Vec::with_capacity(all.len());
                for j in jobs {
                    keys.extend(j.keys.iter().map(|k| (k.0, k.1, k.2, k.3, k.4 + base)));
                    base += j.readings.len() as u32;
                }
                keys.sort();
                merged = keys;
                &merged
            };
            let mut table = txn.open_table(READINGS)?;
            let mut sensors = txn.open_table(SENSORS)?;
            let mut buf = Vec::new();
            let mut incoming: Vec<(i64, &crate::codec::Value)> = Vec::new();
            let mut idx: Vec<usize> = Vec::new();
            let mut i = 0;
            while i < order.len() {
                // One (device, sensor) at a time, its readings in time order.
                let (dev, code, _, _, _) = order[i];
                let mut j = i;
                incoming.clear();
                idx.clear();
                while j < order.len() && order[j].0 == dev && order[j].1 == code {
                    let k = order[j].4 as usize;
                    let r = &all[k].1 .1;
                    incoming.push((r.time, &r.value));
                    idx.push(k);
                    j += 1;
                }
                let kind = all[idx[0]].1 .1.sensor.kind;
                // Followed by a channel or an alert: its new readings go
                // to the digest (looked up once per sensor, not reading).
                let mark = if self.ctx.catalog.follows(dev, code) {
                    FOLLOWED
                } else {
                    NEW
                };
                let mut sensor_new: u64 = 0;
                parts::write_series(&mut table, dev, code, kind, &incoming, &mut buf, |n| {
                    fresh[idx[n]] = mark;
                    sensor_new += 1;
                })?;
                if sensor_new > 0 && contacts.last() != Some(&dev) {
                    contacts.push(dev); // groups come in device order
                }
                // A sensor's first reading makes it known (one write per
                // sensor ever, not per commit).
                if sensor_new > 0 && sensors.get((dev, code))?.is_none() {
                    sensors.insert((dev, code), now.max(0) as u64)?;
                }
                i = j;
            }
        }
        let mut new_readings = Vec::new();
        for (k, (ji, r)) in all.iter().enumerate() {
            if fresh[k] != RETRY {
                outcomes[*ji].new += 1;
            }
            if fresh[k] == FOLLOWED {
                new_readings.push((*r).clone());
            }
        }
        // Every device with a new reading was heard from now: recorded in
        // this transaction (no digest round trip for a batch nobody follows).
        if !contacts.is_empty() {
            let mut last_seen = txn.open_table(LAST_SEEN)?;
            for dev in &contacts {
                if last_seen.get(*dev)?.is_none_or(|g| g.value() < now) {
                    last_seen.insert(*dev, now)?;
                }
            }
        }
        let batch = if new_readings.is_empty() {
            None
        } else {
            let batch = DigestBatch {
                seq,
                committed_at: now,
                readings: new_readings,
            };
            txn.open_table(DIGEST_LOG)?
                .insert(seq, batch.encode().as_slice())?;
            txn.open_table(META)?.insert(NEXT_BATCH, seq + 1)?;
            Some(batch)
        };
        let fired = self
            .ready
            .iter()
            .any(|(_, parts)| parts.iter().any(|p| !p.firings.is_empty()));
        let mut appended = self.apply_ready(&txn, now)?;
        appended |= self.apply_presence(&txn, changes, now)?;
        if jobs.is_empty() && !durable && (appended || fired || !changes.is_empty()) {
            // Clients read these at once (channel items, inbox rows, alert
            // and presence events), by index or seq: a crash must not
            // renumber what a reader has seen, so they are fsynced before
            // anyone is woken. This commit also makes every earlier
            // non-durable one durable. (Under load the results ride in the
            // next readings commit, which is durable anyway; see
            // BENCHMARKS.md for what this costs when idle.)
            txn.set_durability(Durability::Immediate)
                .map_err(|e| StoreError::Io(e.to_string()))?;
        }
        if let Err(e) = self.sweeper.step(&txn, &self.ctx.retention, now) {
            // Retention must never stop ingest: give up this pass (the
            // next one retries); a broken disk fails the commit anyway.
            tracing::warn!(error = %e, "retention pass abandoned");
            self.sweeper.abandon(&self.ctx.retention);
        }
        txn.commit()?;
        Ok((outcomes, batch, appended, contacts))
    }

    /// Fill in the inbox part of each outcome that asked for it. A read
    /// error leaves it empty: the readings are stored either way.
    fn read_inboxes(&self, jobs: &[Job], outcomes: &mut [IngestOutcome]) {
        if jobs.iter().all(|j| j.inbox_for.is_none()) {
            return;
        }
        let Ok(txn) = self
            .store
            .db()
            .and_then(|db| db.begin_read().map_err(StoreError::from))
        else {
            return;
        };
        for (job, out) in jobs.iter().zip(outcomes.iter_mut()) {
            if let Some((dev, n)) = job.inbox_for {
                if let Ok(p) = inbox::pending_in(&txn, dev, n) {
                    out.inbox = p;
                }
            }
        }
    }

    /// Queue `row` for device `dev`, through its gateway if it has one.
    fn push_routed(
        &self,
        txn: &redb::WriteTransaction,
        dev: u32,
        row: &inbox::Row,
    ) -> Result<Result<Vec<u64>, inbox::Full>, StoreError> {
        let (inbox_of, below) = inbox::route(&self.ctx.directory, dev);
        let row = inbox::Row {
            device: below,
            ..row.clone()
        };
        inbox::push(
            txn,
            inbox_of,
            std::slice::from_ref(&row),
            self.ctx.max_inbox,
        )
    }

    /// Store presence changes: the state, an event, and the owner's
    /// notices (an inbox row for their chosen device, an item on their
    /// chosen channel). Returns whether a channel got an item.
    fn apply_presence(
        &self,
        txn: &redb::WriteTransaction,
        changes: &[Change],
        now: i64,
    ) -> Result<bool, StoreError> {
        if changes.is_empty() {
            return Ok(false);
        }
        let mut appended = false;
        let mut next = txn
            .open_table(META)?
            .get(presence::NEXT_EVENT)?
            .map_or(1, |g| g.value());
        for c in changes {
            txn.open_table(PRESENCE)?.insert(
                c.device,
                (u8::from(c.online) | (u8::from(c.damped) << 1), c.at),
            )?;
            let mut delivery = Vec::new();
            let dev = self.ctx.directory.device_by_num(c.device);
            let notify = match &dev {
                Some(d) => txn
                    .open_table(PRESENCE_NOTIFY)?
                    .get(d.owner.as_str())?
                    .map(|g| (g.value().0.to_string(), g.value().1.to_string())),
                None => None,
            };
            if let (Some(d), Some((to_device, to_channel))) = (&dev, notify) {
                let word = if c.online { "online" } else { "offline" };
                // The owner's access is checked as it is now (a withdrawn
                // grant stops the notices at once).
                let dir = &self.ctx.directory;
                let target = dir.device(&to_device).filter(|t| {
                    dir.user_may_device(&d.owner, crate::auth::Action::SendToDevice, t.num)
                });
                if let Some(target) = target {
                    let row = inbox::Row {
                        kind: inbox::Kind::Message,
                        time: c.at,
                        from: format!("presence:{}", d.id),
                        sensor: String::new(),
                        value: word.to_string(),
                        device: String::new(),
                    };
                    delivery.push(match self.push_routed(txn, target.num, &row)? {
                        Ok(seqs) => format!("inbox:{}", seqs[0]),
                        Err(_) => "inbox_full".to_string(),
                    });
                }
                let ch = self.ctx.catalog.channel(&to_channel).filter(|ch| {
                    dir.user_may_channel(&d.owner, crate::auth::Action::ManageOwned, ch)
                });
                if let Some(ch) = ch {
                    let item = channels::Item {
                        added: now,
                        time: c.at,
                        device: c.device,
                        sensor: presence::CHANNEL_SENSOR,
                        value: crate::codec::Value::Str(word.into()),
                    };
                    channels::append(txn, ch.num, &item, ch.retention)?;
                    appended = true;
                    delivery.push(format!("channel:{}", ch.name));
                }
            }
            let ev = presence::Event {
                time: c.at,
                device: c.device,
                online: c.online,
                last_seen: c.last_seen,
                delivery: delivery.join(" "),
            };
            txn.open_table(PRESENCE_EVENTS)?
                .insert(next, ev.encode().as_slice())?;
            next += 1;
        }
        txn.open_table(META)?.insert(presence::NEXT_EVENT, next)?;
        presence::trim_events(txn, self.ctx.presence_events_kept)?;
        Ok(appended)
    }

    /// Commit the results of every ready batch, in seq order, and remove
    /// their digest-log rows. Returns whether any channel got items.
    fn apply_ready(&self, txn: &redb::WriteTransaction, now: i64) -> Result<bool, StoreError> {
        let mut appended = false;
        if self.ready.is_empty() {
            return Ok(appended);
        }
        let mut last_seen = txn.open_table(LAST_SEEN)?;
        let mut states = txn.open_table(ALERT_STATE)?;
        let mut events = txn.open_table(ALERT_EVENTS)?;
        let mut log = txn.open_table(DIGEST_LOG)?;
        let mut dead = txn.open_table(DEAD_LETTERS)?;
        for (seq, parts) in &self.ready {
            let mut failures = Vec::new();
            for part in parts {
                for &(dev, t) in &part.last_seen {
                    let old = last_seen.get(dev)?.map_or(i64::MIN, |g| g.value());
                    if t > old {
                        last_seen.insert(dev, t)?;
                    }
                }
                for a in &part.appends {
                    // A channel deleted meanwhile gets nothing.
                    let Some(ch) = self.ctx.catalog.channel_by_num(a.channel) else {
                        continue;
                    };
                    let item = channels::Item {
                        added: now,
                        time: a.reading.time,
                        device: a.device,
                        sensor: a.reading.sensor,
                        value: a.reading.value.clone(),
                    };
                    channels::append(txn, ch.num, &item, ch.retention)?;
                    appended = true;
                }
                for &(id, fired) in &part.alert_states {
                    states.insert(id, u8::from(fired))?;
                }
                for f in &part.firings {
                    let delivery = match &f.inbox {
                        None => String::new(),
                        Some((dev, row)) => match self.push_routed(txn, *dev, row)? {
                            Ok(seqs) => format!("inbox:{}", seqs[0]),
                            Err(_) => "inbox_full".to_string(),
                        },
                    };
                    let n = events
                        .range((f.alert, 0)..=(f.alert, u64::MAX))?
                        .next_back()
                        .transpose()?
                        .map_or(1, |(k, _)| k.value().1 + 1);
                    let ev = alerts::Event {
                        time: f.reading.time,
                        device: f.device,
                        sensor: f.reading.sensor,
                        value: f.reading.value.clone(),
                        text: f.text.clone(),
                        delivery,
                    };
                    events.insert((f.alert, n), ev.encode().as_slice())?;
                }
                if let Some(why) = &part.failed {
                    failures.push(why.as_str());
                }
            }
            if !failures.is_empty() {
                dead.insert(*seq, failures.join("; ").as_bytes())?;
            }
            log.remove(*seq)?;
        }
        Ok(appended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{SensorId, Value};

    #[test]
    fn prepared_keys_are_the_full_sort_of_the_readings() {
        // Rows in time order (the usual request), then shuffled groups,
        // repeats and late rows: the keys always equal a plain sort.
        let mut x = 7u64;
        let mut rnd = |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 33) % n
        };
        for case in 0..4 {
            let mut readings = Vec::new();
            for i in 0..3000i64 {
                let dev = rnd(20) as u32;
                let sensor = SensorId::parse(["N1", "I2", "L3"][rnd(3) as usize]).unwrap();
                let time = match case {
                    0 => 1_700_000_000_000_000 + i * 10_000_000,
                    1 => 1_700_000_000_000_000 + rnd(86_400) as i64 * 1_000_000,
                    2 => 1_700_000_000_000_000 + (i / 7) * 1_000_000,
                    _ => 1_700_000_000_000_000 + rnd(30) as i64,
                };
                let value = match sensor.kind {
                    crate::codec::SensorKind::Num => Value::Num(i as f64),
                    crate::codec::SensorKind::Int => Value::Int(i),
                    _ => Value::Bool(i % 2 == 0),
                };
                readings.push((
                    dev,
                    Reading {
                        sensor,
                        time,
                        value,
                    },
                ));
            }
            let p = Prepared::new(readings.clone());
            let mut want: Vec<SortKey> = readings
                .iter()
                .enumerate()
                .map(|(i, r)| sort_key(i, r))
                .collect();
            want.sort();
            assert_eq!(p.keys, want, "case {case}");
        }
    }
}
