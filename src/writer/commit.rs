//! One group commit: a round's readings, the digest's results and
//! presence changes, and a retention step, in one write transaction.
//!
//! The readings of every queued request are merged in storage-key order
//! into their chunks (`store/parts.rs`; a reading already stored is a
//! retry and is skipped), each sensor's first reading makes it known in
//! `sensors`, the devices with a new reading get their last contact, and
//! the new readings that a channel or an alert follows go to
//! `digest_log` under the next seq. Then the effects (`effects.rs`) and
//! the retention step, then the commit.
//!
//! **Durability.** A commit that carries requests is fsynced
//! (`Durability::Immediate`, redb's default): `200` means fsynced. One
//! that carries only the digest's results is not, since they are
//! re-derived from the log after a crash — unless it adds something a
//! client reads (channel items, inbox rows, alert or presence events):
//! then it is fsynced before anyone is woken, so a crash cannot renumber
//! what a reader has seen; that also makes every earlier non-durable
//! commit durable.

use std::borrow::Cow;

use super::queue::{IngestOutcome, Job, SortKey};
use super::{WriterState, NEXT_BATCH};
use crate::codec::{Reading, Value};
use crate::presence::{self, Change};
use crate::store::digest_log::DigestBatch;
use crate::store::{chunks, parts, StoreError, DIGEST_LOG, META, SENSORS};

/// What one transaction wrote.
pub(super) struct Written {
    /// Each job's outcome, in job order.
    pub(super) outcomes: Vec<IngestOutcome>,
    /// The batch for the digest, if a followed sensor got anything new.
    pub(super) batch: Option<DigestBatch>,
    /// Whether a channel got items (its long-polls are to be woken).
    pub(super) channel_items: bool,
    /// The devices heard from (a new reading), in device order.
    pub(super) contacts: Vec<u32>,
    /// Chunks the readings finished, written sealed (`parts::write_series`).
    pub(super) chunks_sealed: u64,
}

/// What became of one reading of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// Already stored: acknowledged, not stored or digested again.
    Retry,
    /// Stored now; nothing follows its sensor.
    New,
    /// Stored now, and a channel or an alert follows its sensor: it goes
    /// to the digest.
    Followed,
}

impl WriterState {
    /// [`WriterState::write`], with a redb panic (a page of a damaged
    /// file that does not decode) turned into [`StoreError::Damaged`]:
    /// the writer thread lives on, the batch is refused, and the store
    /// refuses every later write (see `store::Damage`).
    pub(super) fn write_guarded(
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
            let why = crate::error::panic_text(&*p, "the writer panicked");
            self.store.mark_damaged(&why);
            Err(StoreError::Damaged(why))
        })
    }

    /// One transaction: the jobs' readings (digest-log row `seq`), the
    /// ready digest results and presence `changes`, a retention step.
    fn write(
        &mut self,
        jobs: &[Job],
        seq: u64,
        now: i64,
        durable: bool,
        changes: &[Change],
    ) -> Result<Written, StoreError> {
        let mut txn = self.store.begin_write()?;
        let effects_only = jobs.is_empty() && !durable;
        if effects_only {
            // Digest results only: they are re-derived from the log after a
            // crash, so they need not wait for an fsync of their own.
            txn.set_durable(false)?;
        }
        let mut written = self.store_readings(&txn, jobs, seq, now)?;
        let fired = self.ready_has_firings();
        written.channel_items = self.apply_effects(&txn, changes, now)?;
        if effects_only && (written.channel_items || fired || !changes.is_empty()) {
            // Clients read these at once (channel items, inbox rows, alert
            // and presence events), by index or seq: a crash must not
            // renumber what a reader has seen, so they are fsynced before
            // anyone is woken. This commit also makes every earlier
            // non-durable one durable. (Under load the results ride in the
            // next readings commit, which is durable anyway; see
            // BENCHMARKS.md for what this costs when idle.)
            txn.set_durable(true)?;
        }
        if let Err(e) = self.sweeper.step(&txn, &self.ctx.retention, now) {
            // Retention must never stop ingest: give up this pass (the
            // next one retries); a broken disk fails the commit anyway.
            tracing::warn!(error = %e, "retention pass abandoned");
            self.sweeper.abandon(&self.ctx.retention);
        }
        self.serve_inboxes(&txn, jobs, &mut written.outcomes);
        self.command_steps(&txn, now)?;
        self.purge_step(&mut txn)?;
        txn.commit()?;
        Ok(written)
    }

    /// The inbox rows each readings reply that asked for them carries,
    /// read in this transaction, with the commands among them new to the
    /// device recorded as delivered in it (before the expiry step, so a
    /// command served is never expired): the `200` and the delivery are
    /// one fsync. A read error leaves that reply's rows empty: the
    /// readings are stored either way.
    fn serve_inboxes<'t>(
        &self,
        txn: impl Into<crate::store::Tx<'t>>,
        jobs: &[Job],
        outcomes: &mut [IngestOutcome],
    ) {
        let txn = txn.into();
        let at = crate::codec::timefmt::now_micros();
        for (job, out) in jobs.iter().zip(outcomes.iter_mut()) {
            if let Some((dev, n)) = job.inbox_for {
                match crate::commands::deliver_in(txn, dev, n, at) {
                    Ok(p) => out.inbox = p,
                    Err(e) => tracing::warn!(error = %e, "inbox read for a readings reply failed"),
                }
            }
        }
    }

    /// A bounded batch of due commands expires (`crate::commands`), and a
    /// bounded batch of deleted devices' rows goes (`crate::deletion`).
    fn command_steps<'t>(
        &self,
        txn: impl Into<crate::store::Tx<'t>>,
        now: i64,
    ) -> Result<(), StoreError> {
        let txn = txn.into();
        crate::deletion::sweep_step(txn, &self.ctx.deletions)?;
        if self.ctx.command_expiry.due(now) {
            let n = crate::commands::expire_step(txn, &self.ctx.command_expiry, now)?;
            if n > 0 {
                tracing::info!(target: "overlord::audit", commands = n, "undelivered commands expired");
            }
        }
        Ok(())
    }

    /// Store the jobs' readings, record the devices heard from, and log
    /// the new followed readings for the digest as batch `seq`.
    fn store_readings<'t>(
        &self,
        txn: impl Into<crate::store::Tx<'t>>,
        jobs: &[Job],
        seq: u64,
        now: i64,
    ) -> Result<Written, StoreError> {
        let txn = txn.into();
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
        let mut fresh = vec![Fresh::Retry; all.len()];
        let (contacts, chunks_sealed) = self.merge_readings(txn, jobs, &all, now, &mut fresh)?;
        let mut new_readings = Vec::new();
        for (k, (ji, r)) in all.iter().enumerate() {
            if fresh[k] != Fresh::Retry {
                outcomes[*ji].new += 1;
            }
            if fresh[k] == Fresh::Followed {
                new_readings.push((*r).clone());
            }
        }
        // Every device with a new reading was heard from now: recorded in
        // this transaction (no digest round trip for a batch nobody follows).
        if !contacts.is_empty() {
            presence::store::record_contacts(txn, contacts.iter().map(|dev| (*dev, now)))?;
        }
        let batch = if new_readings.is_empty() {
            None
        } else {
            let batch = DigestBatch {
                seq,
                committed_at: now,
                readings: new_readings,
            };
            DIGEST_LOG.open(txn)?.insert(seq, &batch)?;
            txn.open_table(META)?.insert(NEXT_BATCH, seq + 1)?;
            Some(batch)
        };
        Ok(Written {
            outcomes,
            batch,
            channel_items: false,
            contacts,
            chunks_sealed,
        })
    }

    /// Merge the readings (`all`, addressed by the jobs' keys) into their
    /// chunks, one (device, sensor) at a time in time order, marking each
    /// in `fresh`. Returns the devices that got a new reading, in device
    /// order, and the chunks written sealed.
    fn merge_readings<'t>(
        &self,
        txn: impl Into<crate::store::Tx<'t>>,
        jobs: &[Job],
        all: &[(usize, &(u32, Reading))],
        now: i64,
        fresh: &mut [Fresh],
    ) -> Result<(Vec<u32>, u64), StoreError> {
        let txn = txn.into();
        let order = merged_keys(jobs, all.len());
        let mut contacts: Vec<u32> = Vec::new();
        let mut table = chunks::open(txn)?;
        let mut sensors = txn.open_table(SENSORS)?;
        let mut buf = Vec::new();
        let mut incoming: Vec<(i64, &Value)> = Vec::new();
        let mut idx: Vec<usize> = Vec::new();
        let mut touched: Vec<(u32, u32, u32, bool)> = Vec::new();
        let mut heard: Vec<(u32, u32)> = Vec::new();
        let mut sealed = 0;
        let seal = self.sealer.enabled(); // writes seal what they finish
        if table.hot.postgres().is_some() {
            // One read per table for the whole round, not several per
            // chunk (`chunks::Pair::prefetch`).
            table.prefetch(&series_minutes(&order, all))?;
        }
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
                Fresh::Followed
            } else {
                Fresh::New
            };
            let mut sensor_new: u64 = 0;
            let wrote = parts::write_series(
                &mut table,
                (dev, code),
                kind,
                &incoming,
                seal,
                &mut buf,
                |n| {
                    fresh[idx[n]] = mark;
                    sensor_new += 1;
                },
            )?;
            sealed += wrote.sealed;
            if sensor_new > 0 {
                // Sealing looks at it again (`store::seal`).
                let from = parts::minute(incoming[0].0);
                touched.push((dev, code, from, wrote.started));
            }
            if sensor_new > 0 && contacts.last() != Some(&dev) {
                contacts.push(dev); // groups come in device order
            }
            // A sensor's first reading makes it known (one write per
            // sensor ever, not per commit).
            if sensor_new > 0 {
                if sensors.postgres().is_some() {
                    heard.push((dev, code)); // all at once, below
                } else if sensors.get((dev, code))?.is_none() {
                    sensors.insert((dev, code), now.max(0) as u64)?;
                }
            }
            i = j;
        }
        if let Some(pg) = sensors.postgres() {
            // One round trip to look, one to write, for the whole round.
            let had = pg.get_many(heard.iter().copied())?;
            let first = now.max(0) as u64;
            pg.set_many(
                heard
                    .iter()
                    .zip(had)
                    .filter(|(_, h)| h.is_none())
                    .map(|(k, _)| (*k, Some(first))),
            )?;
        }
        // The round's cached chunk writes go out before anything else
        // reads them (the commit).
        table.flush()?;
        self.sealer.touched(&touched);
        Ok((contacts, sealed))
    }
}

/// Each (device, sensor) of `order` with the first and last minute of its
/// readings (in time order within a sensor).
fn series_minutes(
    order: &[SortKey],
    all: &[(usize, &(u32, Reading))],
) -> Vec<(u32, u32, u32, u32)> {
    let mut out: Vec<(u32, u32, u32, u32)> = Vec::new();
    for k in order {
        let m = parts::minute(all[k.4 as usize].1 .1.time);
        match out.last_mut() {
            Some(s) if (s.0, s.1) == (k.0, k.1) => {
                s.2 = s.2.min(m);
                s.3 = s.3.max(m);
            }
            _ => out.push((k.0, k.1, m, m)),
        }
    }
    out
}

/// The storage-key order of every reading of the jobs, as indexes into
/// their concatenation. Every job's keys were sorted when it was
/// prepared; with several jobs, renumber and merge the sorted runs (the
/// stable sort finds and merges them in O(n log jobs)).
fn merged_keys(jobs: &[Job], total: usize) -> Cow<'_, [SortKey]> {
    if jobs.len() == 1 {
        return Cow::Borrowed(&jobs[0].keys);
    }
    let mut base = 0u32;
    let mut keys = Vec::with_capacity(total);
    for j in jobs {
        keys.extend(j.keys.iter().map(|k| (k.0, k.1, k.2, k.3, k.4 + base)));
        base += j.readings.len() as u32;
    }
    keys.sort();
    Cow::Owned(keys)
}
