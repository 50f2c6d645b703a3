//! Retention: how long readings are kept, and the background sweep that
//! removes older ones.
//!
//! The policy is a number of days per device or per sensor of a device
//! (table `retention`, key `(device, sensor code)`, sensor `0` for the
//! whole device), falling back to `[retention] keep_days` (0: forever).
//! A sensor's own setting wins over its device's, which wins over the
//! default; a setting of 0 keeps that device or sensor forever whatever
//! the default says.
//!
//! Enforcement runs **on the writer thread**, the only writer of
//! readings: every `sweep_secs` (or at once after a policy change) a pass
//! walks `sensors` in key order and, in each transaction the writer
//! commits, removes (or, for the one the cut falls inside, trims) at
//! most `chunks_per_commit` reading chunks, so that every whole minute
//! older than `now - keep` goes. So a pass never holds a long write
//! transaction, and ingest commits keep interleaving with it; while a pass
//! is running the writer commits deletion-only transactions back to back
//! without an fsync of their own (lost in a crash, they are simply redone
//! by the next pass). Removal works on whole minutes: a reading is
//! removed at the latest one minute plus one pass after it expires.
//!
//! **Aggregates.** With `[retention] aggregate_keep_days` above 0, the
//! sweep first folds the readings of an `N` or `I` sensor it is about to
//! remove into one row per minute of the `aggregates` table (count, min,
//! max, sum; see [`crate::store::aggregates`]), merged with the row the
//! minute may have already (a minute removed over two steps, or late
//! readings of a minute removed before), **in the same transaction** as
//! the removal: either both happen or neither. All reads and decodes of
//! a sensor come before its writes, so a damaged row abandons the pass
//! without leaving a minute half-counted. Aggregates of minutes older
//! than `aggregate_keep_days` are removed by the same bounded steps (they
//! count against `chunks_per_commit`), and a minute already older than
//! that is not aggregated at all. `S`, `B`, `L` and `D` readings are
//! removed without an aggregate.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::clock::Clock;
use crate::codec::{Micros, SensorId};
use crate::error::WireError;
use crate::store::aggregates::{aggregated, Agg};
use crate::store::parts::PartKey;
use crate::store::typed::WriteRecords;
use crate::store::{
    chunk,
    chunks::{self, Place},
    parts::minute,
    Store, StoreError, AGGREGATES, RETENTION, SENSORS,
};

/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;

/// Longest keep-for a setting may give (100 years).
pub const MAX_DAYS: u32 = 36_500;

/// Stored overrides: `((device, sensor code or 0), days)`.
pub type Overrides = Vec<((u32, u32), u32)>;

/// The retention policy in memory (the `retention` table is its durable
/// copy), shared by the HTTP handlers and the writer.
pub struct Retention {
    default_days: u32,
    aggregate_days: u32,
    sweep: Duration,
    per_commit: usize,
    overrides: RwLock<BTreeMap<(u32, u32), u32>>,
    kick: AtomicBool,
}

impl Retention {
    /// The policy from the config and the stored overrides.
    pub fn new(cfg: &crate::config::RetentionConfig, overrides: Overrides) -> Retention {
        Retention {
            default_days: cfg.keep_days,
            aggregate_days: cfg.aggregate_keep_days.min(MAX_DAYS),
            sweep: Duration::from_secs(cfg.sweep_secs.max(1)),
            per_commit: cfg.chunks_per_commit.max(1),
            overrides: RwLock::new(overrides.into_iter().collect()),
            kick: AtomicBool::new(false),
        }
    }

    /// Load the stored overrides. Blocking.
    pub fn load(store: &Store) -> Result<Overrides, StoreError> {
        store.read(|txn| {
            let t = txn.open_table(RETENTION)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value(), v.value()));
            }
            Ok(out)
        })
    }

    /// Days to keep readings of `(device, sensor code)`; 0: forever.
    pub fn keep_days(&self, device: u32, code: u32) -> u32 {
        let o = self.overrides.read();
        o.get(&(device, code))
            .or_else(|| o.get(&(device, 0)))
            .copied()
            .unwrap_or(self.default_days)
    }

    /// The configured default (`[retention] keep_days`).
    pub fn default_days(&self) -> u32 {
        self.default_days
    }

    /// Days minute aggregates are kept (`[retention] aggregate_keep_days`;
    /// 0: none are made).
    pub fn aggregate_days(&self) -> u32 {
        self.aggregate_days
    }

    /// Every stored override: `((device, sensor code or 0), days)`.
    pub fn all_overrides(&self) -> Overrides {
        self.overrides
            .read()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// The settings of a device as CSV `sensor,keep_days`: the
    /// device-wide setting as sensor `*`, then its sensors', then the
    /// configured default as `default`. (`GET /v1/devices/ID/retention`
    /// and `overlord retention set` answer this.)
    pub fn settings_csv(&self, device: u32) -> String {
        let mut out = String::from("sensor,keep_days\n");
        for (code, days) in self.device_overrides(device) {
            match SensorId::from_code(code) {
                Some(s) if code != 0 => out.push_str(&format!("{s},{days}\n")),
                _ => out.push_str(&format!("*,{days}\n")),
            }
        }
        out.push_str(&format!("default,{}\n", self.default_days));
        out
    }

    /// The overrides of one device: `(sensor code or 0, days)`.
    pub fn device_overrides(&self, device: u32) -> Vec<(u32, u32)> {
        self.overrides
            .read()
            .range((device, 0)..=(device, u32::MAX))
            .map(|(k, v)| (k.1, *v))
            .collect()
    }

    /// Set (`Some(days)`) or remove (`None`) the override of a device
    /// (`sensor` absent) or one of its sensors: stored first, then in
    /// memory, and a sweep is started. Blocking.
    pub fn set(
        &self,
        store: &Store,
        device: u32,
        sensor: Option<SensorId>,
        days: Option<u32>,
    ) -> Result<(), StoreError> {
        let key = (device, sensor.map_or(0, SensorId::code));
        store.write(|txn| {
            {
                let mut t = txn.open_table(RETENTION)?;
                match days {
                    Some(d) => {
                        t.insert(key, d)?;
                    }
                    None => {
                        t.remove(key)?;
                    }
                }
            }
            Ok::<_, StoreError>(())
        })?;
        let mut o = self.overrides.write();
        match days {
            Some(d) => o.insert(key, d),
            None => o.remove(&key),
        };
        drop(o);
        self.kick.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Forget the overrides of a deleted device (in memory; its rows are
    /// removed in the deletion's transaction).
    pub fn forget_device(&self, device: u32) {
        self.overrides.write().retain(|(d, _), _| *d != device);
    }

    /// Whether anything could expire at all (readings, or aggregates).
    fn any(&self) -> bool {
        self.default_days > 0
            || self.aggregate_days > 0
            || self.overrides.read().values().any(|d| *d > 0)
    }
}

/// A keep-for setting as given to `POST /v1/devices/ID/retention` and
/// `overlord retention set`: days `0..=MAX_DAYS` (0: forever), or empty
/// for "back to the default" (`None`).
pub fn parse_days(raw: &str) -> Result<Option<u32>, WireError> {
    match raw.trim() {
        "" => Ok(None),
        v => v
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= MAX_DAYS)
            .map(Some)
            .ok_or_else(|| {
                WireError::bad_request(
                    "bad_value",
                    format!(
                        "keep_days: '{}' is not a number of days 0..{MAX_DAYS}",
                        crate::codec::names::clip(v),
                    ),
                )
            }),
    }
}

/// `days` before `now`, as a minute key.
fn cutoff(now: Micros, days: u32) -> u32 {
    minute(now.saturating_sub(i64::from(days).saturating_mul(DAY_US)))
}

/// The writer's side of the sweep: where the current pass is and when
/// the next one is due.
pub struct Sweeper {
    /// Next `(device, sensor)` of the running pass; `None`: no pass.
    cursor: Option<(u32, u32)>,
    next_pass: Instant,
    /// Removed by the last [`Sweeper::step`]: (chunks, readings).
    pub last: (u64, u64),
    /// Did the last [`Sweeper::step`] finish a pass?
    pub finished: bool,
    /// Aggregate rows written and removed by the last [`Sweeper::step`].
    pub aggregates: (u64, u64),
    /// When passes are due.
    clock: Clock,
}

impl Default for Sweeper {
    fn default() -> Self {
        Sweeper::new(Clock::system())
    }
}

impl Sweeper {
    /// A sweeper whose first pass is due at once; passes are scheduled by
    /// `clock`.
    pub fn new(clock: Clock) -> Self {
        Sweeper {
            cursor: None,
            next_pass: clock.instant(),
            last: (0, 0),
            finished: false,
            aggregates: (0, 0),
            clock,
        }
    }

    /// Is there deletion work for the next transaction? Starts a pass
    /// when one is due.
    pub fn wants_work(&mut self, policy: &Retention) -> bool {
        if self.cursor.is_some() {
            return true;
        }
        let kicked = policy.kick.swap(false, Ordering::Relaxed);
        if (kicked || self.clock.instant() >= self.next_pass) && policy.any() {
            self.cursor = Some((0, 0));
            return true;
        }
        if self.clock.instant() >= self.next_pass {
            self.next_pass = self.clock.instant() + policy.sweep;
        }
        false
    }

    /// Stop the running pass; the next one starts after `sweep_secs`.
    pub fn abandon(&mut self, policy: &Retention) {
        self.cursor = None;
        self.last = (0, 0);
        self.aggregates = (0, 0);
        self.next_pass = self.clock.instant() + policy.sweep;
    }

    /// A pass is running (the writer then does not idle between commits).
    pub fn running(&self) -> bool {
        self.cursor.is_some()
    }

    /// Remove up to `per_commit` expired chunks in `txn`, continuing the
    /// pass where the last step left it.
    pub fn step<'t>(
        &mut self,
        txn: impl Into<crate::store::Tx<'t>>,
        policy: &Retention,
        now: Micros,
    ) -> Result<(), StoreError> {
        let txn = txn.into();
        self.last = (0, 0);
        self.aggregates = (0, 0);
        self.finished = false;
        let Some(start) = self.cursor else {
            return Ok(());
        };
        let budget = policy.per_commit;
        // Sensors looked at per step, so a step is bounded even when
        // nothing is due.
        let visit = budget.saturating_mul(4);
        let sensors = txn.open_table(SENSORS)?;
        let todo: Vec<(u32, u32)> = sensors
            .range(start..)?
            .take(visit + 1)
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        let mut readings = chunks::open(txn)?;
        let mut aggregates = AGGREGATES.open(txn)?;
        // Minutes before this have no aggregate (0: aggregates are off).
        let agg_cutoff = (policy.aggregate_days > 0).then(|| cutoff(now, policy.aggregate_days));
        // Rows removed so far (reading chunks and expired aggregates).
        let mut used = 0usize;
        let mut next = None;
        for (i, &(dev, code)) in todo.iter().enumerate() {
            if i == visit {
                next = Some((dev, code));
                break;
            }
            if let Some(acut) = agg_cutoff {
                let old = expire_aggregates(&mut aggregates, (dev, code), acut, budget - used)?;
                used += old;
                self.aggregates.1 += old as u64;
                if used >= budget {
                    next = Some((dev, code));
                    break;
                }
            }
            let days = policy.keep_days(dev, code);
            if days == 0 {
                continue;
            }
            let sensor = (dev, code);
            let limit = budget - used;
            let cut = plan_cut(
                &readings,
                &aggregates,
                sensor,
                cutoff(now, days),
                agg_cutoff,
                limit,
            )?;
            used += cut.apply(&mut readings, &mut aggregates, sensor)?;
            self.aggregates.0 += cut.minutes.len() as u64;
            self.last.0 += cut.keys.len() as u64;
            self.last.1 += cut.gone;
            if used >= budget {
                // This sensor may have more: resume at it.
                next = Some((dev, code));
                break;
            }
        }
        self.cursor = next;
        if next.is_none() {
            self.next_pass = self.clock.instant() + policy.sweep;
            self.finished = true;
        }
        Ok(())
    }
}

/// Remove up to `limit` aggregates of `sensor` older than minute `acut`;
/// how many were removed.
fn expire_aggregates(
    aggregates: &mut WriteRecords<'_, Agg>,
    (dev, code): (u32, u32),
    acut: u32,
    limit: usize,
) -> Result<usize, StoreError> {
    let old: Vec<(u32, u32, u32)> = aggregates
        .keys((dev, code, 0)..(dev, code, acut))?
        .take(limit)
        .map(|r| r.map(|k| k.value()))
        .collect::<Result<_, _>>()?;
    for k in &old {
        aggregates.remove(*k)?;
    }
    Ok(old.len())
}

/// What one step removes from one sensor, all read and decoded before
/// any write (so a damaged row abandons the pass with nothing half done).
#[derive(Default)]
struct SensorCut {
    /// Chunks removed whole, and the table each is in.
    keys: Vec<(PartKey, Place)>,
    /// The chunk the cut falls inside, re-encoded with the readings kept
    /// (in its own form and table).
    trimmed: Vec<(PartKey, Place, Vec<u8>)>,
    /// Readings removed.
    gone: u64,
    /// The removed minutes' aggregates, merged with what was stored.
    minutes: Vec<(u32, Agg)>,
}

impl SensorCut {
    /// Write it in the transaction: aggregates, then the removal. Rows
    /// of `readings` removed or rewritten.
    fn apply(
        &self,
        readings: &mut chunks::Chunks<'_>,
        aggregates: &mut WriteRecords<'_, Agg>,
        (dev, code): (u32, u32),
    ) -> Result<usize, StoreError> {
        for (m, a) in &self.minutes {
            aggregates.insert((dev, code, *m), a)?;
        }
        for (k, place) in &self.keys {
            readings.remove(*place, *k)?;
        }
        for (k, place, bytes) in &self.trimmed {
            readings.insert(*place, *k, bytes)?;
        }
        Ok(self.keys.len() + self.trimmed.len())
    }
}

/// Read what removing `sensor`'s minutes before `cut` takes, at most
/// `limit` chunks: the chunks to remove or trim (a chunk spans up to an
/// hour, so the one at the cut may keep some readings) and, for minutes
/// from `agg_cutoff` on, their aggregates (merged with what is stored).
fn plan_cut(
    readings: &chunks::Chunks<'_>,
    aggregates: &WriteRecords<'_, Agg>,
    (dev, code): (u32, u32),
    cut: u32,
    agg_cutoff: Option<u32>,
    limit: usize,
) -> Result<SensorCut, StoreError> {
    let sensor_kind = SensorId::from_code(code).map(|s| s.kind);
    let kind = sensor_kind.filter(|k| aggregated(*k));
    let mut out = SensorCut::default();
    let expired = (
        Bound::Included((dev, code, 0, 0)),
        Bound::Excluded((dev, code, cut, 0)),
    );
    for row in readings.range(expired)?.take(limit) {
        let (key, v, place) = row?;
        // A chunk whose whole window is before the cut goes without
        // a decode, unless its minutes are to be aggregated.
        let whole = key.2.saturating_add(chunk::SPAN_MINUTES) <= cut;
        if whole && (kind.is_none() || agg_cutoff.is_none()) {
            out.gone += chunk::count(v.value())?;
            out.keys.push((key, place));
            continue;
        }
        let Some(sensor_kind) = sensor_kind else {
            break; // not a sensor this build knows: whole chunks only
        };
        let mut entries = Vec::new();
        chunk::decode(v.value(), sensor_kind, |o, val| entries.push((o, val)))?;
        let minute_of = |o: u32| key.2.saturating_add(o / chunk::MINUTE_US as u32);
        // Entries are in time order: the expired ones come first.
        let keep_from = entries.partition_point(|(o, _)| minute_of(*o) < cut);
        if keep_from == 0 {
            break; // this chunk and every later one are kept
        }
        if let (Some(_), Some(acut)) = (kind, agg_cutoff) {
            for (o, val) in &entries[..keep_from] {
                let m = minute_of(*o);
                if m < acut {
                    continue;
                }
                let Some(one) = Agg::of(val) else { continue };
                match out.minutes.last_mut() {
                    Some((lm, a)) if *lm == m => a.merge(&one),
                    _ => out.minutes.push((m, one)),
                }
            }
        }
        out.gone += keep_from as u64;
        if keep_from == entries.len() {
            out.keys.push((key, place));
        } else {
            // A sealed chunk stays sealed (and in its table).
            let mut buf = Vec::new();
            chunk::encode_like(v.value(), &entries[keep_from..], sensor_kind, &mut buf);
            out.trimmed.push((key, place, buf));
            break; // later chunks are newer still
        }
    }
    for (m, a) in &mut out.minutes {
        if let Some(mut merged) = aggregates.get((dev, code, *m))? {
            merged.merge(a);
            *a = merged;
        }
    }
    Ok(out)
}
