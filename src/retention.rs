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
//! commits, removes at most `chunks_per_commit` reading chunks of whole
//! minutes older than `now - keep`. So a pass never holds a long write
//! transaction, and ingest commits keep interleaving with it; while a pass
//! is running the writer commits deletion-only transactions back to back
//! without an fsync of their own (lost in a crash, they are simply redone
//! by the next pass). Removal works on whole minutes: a reading is
//! removed at the latest one minute plus one pass after it expires.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::codec::{Micros, SensorId};
use crate::store::{chunk, query::minute, Store, StoreError, READINGS, RETENTION, SENSORS};

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
            sweep: Duration::from_secs(cfg.sweep_secs.max(1)),
            per_commit: cfg.chunks_per_commit.max(1),
            overrides: RwLock::new(overrides.into_iter().collect()),
            kick: AtomicBool::new(false),
        }
    }

    /// Load the stored overrides. Blocking.
    pub fn load(store: &Store) -> Result<Overrides, StoreError> {
        let txn = store.db()?.begin_read()?;
        let t = txn.open_table(RETENTION)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value(), v.value()));
        }
        Ok(out)
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
        let txn = store.db()?.begin_write()?;
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
        txn.commit()?;
        let mut o = self.overrides.write();
        match days {
            Some(d) => o.insert(key, d),
            None => o.remove(&key),
        };
        drop(o);
        self.kick.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether anything could expire at all.
    fn any(&self) -> bool {
        self.default_days > 0 || self.overrides.read().values().any(|d| *d > 0)
    }
}

/// The writer's side of the sweep: where the current pass is and when
/// the next one is due.
pub struct Sweeper {
    /// Next `(device, sensor)` of the running pass; `None`: no pass.
    cursor: Option<(u32, u32)>,
    next_pass: Instant,
    /// Removed by the last [`Sweeper::step`]: (chunks, readings).
    pub last: (u64, u64),
}

impl Default for Sweeper {
    fn default() -> Self {
        Sweeper {
            cursor: None,
            next_pass: Instant::now(),
            last: (0, 0),
        }
    }
}

impl Sweeper {
    /// Is there deletion work for the next transaction? Starts a pass
    /// when one is due.
    pub fn wants_work(&mut self, policy: &Retention) -> bool {
        if self.cursor.is_some() {
            return true;
        }
        let kicked = policy.kick.swap(false, Ordering::Relaxed);
        if (kicked || Instant::now() >= self.next_pass) && policy.any() {
            self.cursor = Some((0, 0));
            return true;
        }
        if Instant::now() >= self.next_pass {
            self.next_pass = Instant::now() + policy.sweep;
        }
        false
    }

    /// Stop the running pass; the next one starts after `sweep_secs`.
    pub fn abandon(&mut self, policy: &Retention) {
        self.cursor = None;
        self.last = (0, 0);
        self.next_pass = Instant::now() + policy.sweep;
    }

    /// A pass is running (the writer then does not idle between commits).
    pub fn running(&self) -> bool {
        self.cursor.is_some()
    }

    /// Remove up to `per_commit` expired chunks in `txn`, continuing the
    /// pass where the last step left it.
    pub fn step(
        &mut self,
        txn: &WriteTransaction,
        policy: &Retention,
        now: Micros,
    ) -> Result<(), StoreError> {
        self.last = (0, 0);
        let Some(start) = self.cursor else {
            return Ok(());
        };
        let budget = policy.per_commit;
        // Sensors looked at per step, so a step is bounded even when
        // nothing is due.
        let visit = budget.saturating_mul(4);
        let mut sensors = txn.open_table(SENSORS)?;
        let todo: Vec<(u32, u32)> = sensors
            .range(start..)?
            .take(visit + 1)
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        let mut readings = txn.open_table(READINGS)?;
        let mut removed_chunks = 0usize;
        let mut next = None;
        for (i, &(dev, code)) in todo.iter().enumerate() {
            if i == visit {
                next = Some((dev, code));
                break;
            }
            let days = policy.keep_days(dev, code);
            if days == 0 {
                continue;
            }
            let cutoff = minute(now.saturating_sub(i64::from(days) * DAY_US));
            let left = budget - removed_chunks;
            let mut keys = Vec::new();
            let mut gone = 0u64;
            for row in readings
                .range((dev, code, 0, 0)..(dev, code, cutoff, 0))?
                .take(left)
            {
                let (k, v) = row?;
                gone += chunk::count(v.value())?;
                keys.push(k.value());
            }
            for k in &keys {
                readings.remove(*k)?;
            }
            if gone > 0 {
                let before = sensors.get((dev, code))?.map_or(0, |g| g.value());
                sensors.insert((dev, code), before.saturating_sub(gone))?;
            }
            removed_chunks += keys.len();
            self.last.0 += keys.len() as u64;
            self.last.1 += gone;
            if removed_chunks >= budget {
                // This sensor may have more: resume at it.
                next = Some((dev, code));
                break;
            }
        }
        self.cursor = next;
        if next.is_none() {
            self.next_pass = Instant::now() + policy.sweep;
        }
        Ok(())
    }
}
