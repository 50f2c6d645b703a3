//! The writer's loop: what wakes it, what one round commits, and the
//! replies.
//!
//! A round takes every queued request (up to
//! [`super::MAX_READINGS_PER_COMMIT`] readings), every digest part that
//! is back, and the presence sweep's changes, and commits them in one
//! transaction (`commit.rs`). Digest results with no request to carry
//! them wait up to `EFFECTS_LINGER` for one. Requests are answered only
//! after the commit returned; channel long-polls are woken after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, TryRecvError};

use super::commit::Written;
use super::queue::Job;
use super::{WriterState, EFFECTS_LINGER, MAX_READINGS_PER_COMMIT, REOPEN_RETRY, SWEEP_EVERY};
use crate::codec::timefmt;
use crate::digest::PartDone;
use crate::store::StoreError;

impl WriterState {
    /// The writer thread: rounds until `stop` closes (or every handle is
    /// gone), then the shutdown drain.
    pub(super) fn run(
        mut self,
        jobs: Receiver<Job>,
        purges: Receiver<crate::purge::Purge>,
        stop: Receiver<()>,
    ) {
        let done = self.digest.done_receiver();
        let idle = crossbeam_channel::never();
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
                // One range deletion at a time.
                recv(if self.purging() { &idle } else { &purges }) -> p => if let Ok(p) = p { self.start_purge(p) },
                // A retention pass in progress continues between commits.
                // So do a range deletion and sealing, while a sensor is due.
                default(if self.sweeper.running() || self.purging() || self.seal_due() { Duration::ZERO } else { SWEEP_EVERY.min(REOPEN_RETRY) }) => {}
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
                // fsynced before readers see them (see `commit.rs`). A request
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
                self.ctx.presence.sweep(self.ctx.clock.now_micros());
                last_sweep = Instant::now();
            }
            self.commit(batch, false);
            // Sealing, in its own transaction after the replies went out.
            if open && self.seal_due() && (jobs.is_empty() || self.seal_starved()) {
                let durable = jobs.is_empty() && self.seal_durable_due();
                self.seal_step(durable);
            }
            self.metrics.seal_pending.set(self.sealer.pending() as u64);
            // Compaction, once the writer has been idle a while.
            if open && jobs.is_empty() && self.compact_due() {
                // Anything else to do (a request, a range deletion, digest
                // results, the stop) interrupts the repacking.
                let stopping = || matches!(stop.try_recv(), Err(TryRecvError::Disconnected));
                self.compact_step(|| {
                    !jobs.is_empty() || !purges.is_empty() || !done.is_empty() || stopping()
                });
            }
        }
        drop(jobs);
        self.drain(&done);
    }

    /// Shutdown: no more requests. Give the digest a bounded time to
    /// finish, then make its results durable.
    fn drain(&mut self, done: &Receiver<PartDone>) {
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

    /// Commit one round: `jobs` and whatever else is waiting (digest
    /// results, presence changes, a retention step), then answer the
    /// jobs. Effects-only commits skip the fsync unless `durable` is set
    /// (see `commit.rs`). A failed commit reopens the data file and is
    /// tried once more.
    fn commit(&mut self, jobs: Vec<Job>, durable: bool) {
        let sweep = self.sweeper.wants_work(&self.ctx.retention)
            || self.ctx.command_expiry.due(timefmt::now_micros())
            || self.ctx.deletions.pending()
            || self.purging();
        if jobs.is_empty()
            && self.ready.is_empty()
            && !durable
            && !self.ctx.presence.has_changes()
            && !sweep
        {
            return;
        }
        let started = Instant::now();
        let now = self.ctx.clock.now_micros();
        let mut seq = self.next_seq;
        let changes = self.ctx.presence.take_changes();
        let mut result = self.write_guarded(&jobs, seq, now, durable, &changes);
        if result.is_err() {
            // The retry below starts the purge's step again.
            self.purge_rollback();
        }
        if let Err(
            e @ (StoreError::DiskFull
            | StoreError::Io(_)
            | StoreError::Retry(_)
            | StoreError::Unavailable(_)),
        ) = &result
        {
            // redb refuses everything after a failed write or fsync until
            // the file is reopened: do that, then try the batch once more
            // (if the disk is still failing, the reopen fails and the batch
            // is refused with what the disk says now). On PostgreSQL the
            // same path serves a round that could not be serialized with
            // a management write, or a lost session: the round is never
            // run again as it was (it keeps state a re-run would repeat);
            // the writer reloads what it depends on and tries it once more.
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
            // What the failed transaction's expiry step decided is void.
            self.ctx.command_expiry.reset();
            self.ctx.deletions.kick();
        }
        let elapsed = started.elapsed();
        match result {
            Ok(written) => self.committed(jobs, written, seq, now, elapsed),
            Err(e) => {
                tracing::error!(error = %e, requests = jobs.len(), "group commit failed");
                self.metrics.commit_errors.inc();
                let has_jobs = !jobs.is_empty() || self.purging();
                let e = Arc::new(e);
                self.purge_failed(&e);
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

    /// After a commit of digest-log `seq` at `now` returned: note the
    /// contacts, count, wake channel long-polls, answer every job, then
    /// hand the batch to the digest.
    fn committed(
        &mut self,
        jobs: Vec<Job>,
        written: Written,
        seq: u64,
        now: i64,
        elapsed: Duration,
    ) {
        let Written {
            outcomes,
            batch,
            channel_items,
            contacts,
            chunks_sealed,
        } = written;
        self.ready.clear();
        self.metrics.chunks_sealed.add(chunks_sealed);
        self.purge_committed();
        for dev in contacts {
            self.ctx.presence.saw(dev, now);
        }
        self.metrics
            .retention_chunks_deleted
            .add(self.sweeper.last.0);
        self.metrics
            .retention_readings_deleted
            .add(self.sweeper.last.1);
        if self.sweeper.finished {
            self.metrics.retention_passes.inc();
        }
        if channel_items {
            self.ctx.channel_events.send_modify(|n| *n += 1);
        }
        // Inbox rows this thread queued are committed now: wake their
        // MQTT subscribers.
        self.ctx.inbox_bells.ring_pending();
        if self.outbox_added.take() {
            self.ctx.outbox_wake.notify_one();
        }
        self.metrics.commits.inc();
        self.metrics.commit_seconds.observe(elapsed.as_secs_f64());
        let accepted: usize = jobs.iter().map(|j| j.readings.len()).sum();
        self.metrics.readings_accepted.add(accepted as u64);
        if !jobs.is_empty() || self.purging() {
            self.last_request = self.ctx.clock.instant();
        }
        if !jobs.is_empty() {
            // Group-commit size: only commits that carried requests.
            self.metrics.commit_requests.observe(jobs.len() as f64);
            self.metrics.commit_readings.observe(accepted as f64);
        }
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
}
