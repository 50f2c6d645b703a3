//! The digest: what happens to readings after they are durable.
//!
//! The writer hands each committed batch to [`Digest::dispatch`], which
//! splits it by device onto a fixed pool of threads (device number modulo
//! the pool size), each behind a bounded crossbeam queue. So one device's
//! readings are always digested by the same thread, in commit order
//! (batch by batch; within a batch in request order, rows in body order,
//! columns left to right), while different devices run in parallel.
//!
//! A batch carries the new readings that a channel or an alert followed
//! when they were committed (see [`crate::store::digest_log`]). For each
//! reading a thread computes, from the [`Catalog`]:
//! - an item for every channel the (device, sensor) is a member of;
//! - for every alert on the (device, sensor), the transition the value
//!   causes (see [`crate::alerts`]); a firing records an event, queues an
//!   inbox row for the alert's device and an item for its channel;
//! - the device's last contact (the writer already recorded it with the
//!   readings; kept so that a log row from an older version, whose writer
//!   did not, still counts).
//!
//! The thread does not write: its results go back to the writer as a
//! [`PartDone`]. The writer applies whole batches in digest-log order and
//! removes each batch's log row in the same transaction, so after a crash
//! the remaining rows are digested again against exactly the state their
//! predecessors left: every reading reaches its channels and alerts
//! exactly once.
//!
//! A part whose processing panics is reported as failed; the writer puts
//! the batch in `dead_letters` with the reason, and the device's queue goes
//! on.
//!
//! Bounds: each queue holds `[digest] queue` parts; when one is full the
//! writer waits, so ingest backs up into its own bounded queue and clients
//! get `503`. The results channel holds at most one message per part in
//! flight, which the queues bound.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::alerts::{self, Transition};
use crate::auth::{Action, Directory};
use crate::catalog::Catalog;
use crate::codec::{Micros, Reading};
use crate::inbox;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::store::digest_log::DigestBatch;

/// A fault-injection seam: called for every reading before it is
/// digested. Tests use it to make a batch fail (panic) and check that it
/// lands in `dead_letters` without blocking the device's queue.
pub type DigestHook = Arc<dyn Fn(u32, &Reading) + Send + Sync>;

/// One thread's share of a batch.
struct Part {
    seq: u64,
    /// Which of the batch's parts this is (the digest thread's number).
    part: usize,
    committed_at: Micros,
    readings: Vec<(u32, Reading)>,
}

/// A reading headed for a channel.
#[derive(Debug, Clone)]
pub struct ChannelAppend {
    /// Channel number.
    pub channel: u32,
    /// Device number.
    pub device: u32,
    /// The reading.
    pub reading: Reading,
}

/// An alert that fired.
#[derive(Debug, Clone)]
pub struct Firing {
    /// Alert id.
    pub alert: u32,
    /// Device number of the reading.
    pub device: u32,
    /// The reading that fired it.
    pub reading: Reading,
    /// The text sent.
    pub text: String,
    /// Inbox row for this device, if the alert tells one.
    pub inbox: Option<(u32, inbox::Row)>,
    /// The alert's name (the notification's source).
    pub source: String,
    /// The notification target told, if the alert names one and its
    /// owner may still use it.
    pub target: Option<u32>,
    /// The channel told (`to_channel`), if the alert names one and its
    /// owner may still use it: the reading becomes an item there,
    /// through `notify::deliver` with the rest of the firing, so the
    /// event's `delivery` names it.
    pub channel: Option<u32>,
}

/// What a thread made of its part, for the writer to commit.
#[derive(Debug, Default)]
pub struct PartDone {
    /// The batch (digest-log key).
    pub seq: u64,
    /// Which of the batch's parts this is: the writer applies a batch's
    /// parts in this order, not in the order the threads finished, so the
    /// same batch always gives the same channel indexes and inbox seqs.
    pub part: usize,
    /// Devices heard from and when.
    pub last_seen: Vec<(u32, Micros)>,
    /// Channel items, in order.
    pub appends: Vec<ChannelAppend>,
    /// Alert state changes `(alert id, fired)`, in order.
    pub alert_states: Vec<(u32, bool)>,
    /// Channel alerts' member state changes `((alert id, device, sensor),
    /// channel, fired)`, in order.
    pub member_states: Vec<((u32, u32, u32), u32, bool)>,
    /// Firings, in order.
    pub firings: Vec<Firing>,
    /// Why processing failed (the batch goes to `dead_letters`).
    pub failed: Option<String>,
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
        catalog: Arc<Catalog>,
        directory: Arc<Directory>,
        presence: Arc<Presence>,
        metrics: Arc<Metrics>,
        hook: Option<DigestHook>,
    ) -> Digest {
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = crossbeam_channel::bounded::<Part>(queue.max(1));
            let done_tx = done_tx.clone();
            let ctx = Ctx {
                catalog: catalog.clone(),
                directory: directory.clone(),
                presence: presence.clone(),
                metrics: metrics.clone(),
                hook: hook.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("overlord-digest-{i}"))
                .spawn(move || worker(rx, done_tx, ctx))
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

    /// Parts waiting in the digest threads' queues.
    pub fn queued(&self) -> usize {
        self.queues.iter().map(Sender::len).sum()
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
        for (i, (q, readings)) in self.queues.iter().zip(parts).enumerate() {
            if readings.is_empty() {
                continue;
            }
            let part = Part {
                seq: batch.seq,
                part: i,
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

struct Ctx {
    catalog: Arc<Catalog>,
    directory: Arc<Directory>,
    presence: Arc<Presence>,
    metrics: Arc<Metrics>,
    hook: Option<DigestHook>,
}

fn worker(rx: Receiver<Part>, done: Sender<PartDone>, ctx: Ctx) {
    let Ctx {
        catalog,
        directory,
        presence,
        metrics,
        hook,
    } = ctx;
    for part in rx {
        let seq = part.seq;
        let part_no = part.part;
        let n = part.readings.len() as u64;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            digest_part(&catalog, &directory, hook.as_ref(), part)
        }));
        let out = match result {
            Ok(out) => {
                for &(dev, t) in &out.last_seen {
                    presence.saw(dev, t);
                }
                out
            }
            Err(e) => {
                let why = crate::error::panic_text(&*e, "digest panicked");
                tracing::error!(seq, reason = %why, "digest failed; batch goes to dead_letters");
                PartDone {
                    seq,
                    part: part_no,
                    failed: Some(why),
                    ..PartDone::default()
                }
            }
        };
        metrics.readings_digested.add(n);
        if done.send(out).is_err() {
            return;
        }
    }
}

/// The access questions [`digest_part`] asks (see its doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Check {
    /// May a channel's owner read a member device? (channel, device)
    ChannelReads,
    /// May an alert's owner read its device? (alert, device)
    AlertReads,
    /// May an alert's owner send to its `to_device`? (alert, device)
    AlertSends,
    /// May an alert's owner manage its `to_channel`? (alert, channel)
    AlertManages,
    /// May an alert's owner use its `to_target`? (alert, target)
    AlertTargets,
    /// May a channel alert's owner still manage its channel? (alert,
    /// channel)
    AlertWatches,
}

/// A firing of `a` on reading `r` of device `dev`, saying `text`, and
/// where it goes, each only while the alert's owner still has the access
/// it needs: the inbox row for `to_device`, `to_channel`, and `to_target`.
/// `may` answers (and remembers) access questions.
fn firing(
    a: &crate::store::AlertRecord,
    dev: u32,
    r: &Reading,
    text: String,
    catalog: &Catalog,
    directory: &Directory,
    may: &mut impl FnMut((Check, u32, u32), &dyn Fn() -> bool) -> bool,
) -> Firing {
    // A channel alert's `Some(0)`: the member device that fired.
    let to_device = a.to_device.map(|d| if d == 0 { dev } else { d });
    let inbox = to_device.filter(|&d| {
        let sends = || directory.user_may_device(&a.owner, Action::SendToDevice, d);
        may((Check::AlertSends, a.id, d), &sends)
    });
    let inbox = inbox.map(|d| {
        let row = inbox::Row {
            kind: inbox::Kind::Alert,
            time: r.time,
            from: format!("alert:{}", a.name),
            sensor: r.sensor.to_string(),
            value: text.clone(),
            device: String::new(),
        };
        (d, row)
    });
    let to_channel = a.to_channel.filter(|&ch| {
        let manages = || {
            catalog
                .channel_by_num(ch)
                .is_some_and(|c| directory.user_may_channel(&a.owner, Action::ManageOwned, &c))
        };
        may((Check::AlertManages, a.id, ch), &manages)
    });
    let target = a.to_target.filter(|&t| {
        let uses = || {
            catalog
                .targets()
                .by_id(t)
                .is_some_and(|rec| directory.user_may_target(&a.owner, &rec))
        };
        may((Check::AlertTargets, a.id, t), &uses)
    });
    Firing {
        alert: a.id,
        device: dev,
        reading: r.clone(),
        text,
        inbox,
        source: a.name.clone(),
        target,
        channel: to_channel,
    }
}

/// Compute everything one part causes. Pure apart from the alert states
/// in the catalog, which only this thread changes for its devices.
///
/// Access is checked here, once per part for each question, against the
/// grants as they are now (see [`Directory::user_may_device`]): a channel gets a
/// member's reading only while its owner may read the device; an alert
/// is evaluated only while its owner may read its device, tells its
/// device only while the owner may send to it, and its channel only while
/// the owner may manage that channel.
fn digest_part(
    catalog: &Catalog,
    directory: &Directory,
    hook: Option<&DigestHook>,
    part: Part,
) -> PartDone {
    let mut out = PartDone {
        seq: part.seq,
        part: part.part,
        ..PartDone::default()
    };
    let mut seen = std::collections::HashSet::new();
    // Access answers, asked once per part: (what, its id, the other id)
    // -> allowed. A part's readings share a few devices, channels and
    // alerts, so each question is asked once, not once per reading.
    let mut access: std::collections::HashMap<(Check, u32, u32), bool> =
        std::collections::HashMap::new();
    let mut may = |key: (Check, u32, u32), ask: &dyn Fn() -> bool| -> bool {
        *access.entry(key).or_insert_with(ask)
    };
    for (dev, r) in part.readings {
        if let Some(h) = hook {
            h(dev, &r);
        }
        if seen.insert(dev) {
            out.last_seen.push((dev, part.committed_at));
        }
        if let Some(v) = alerts::numeric(&r.value) {
            device_alerts(catalog, directory, dev, &r, v, &mut may, &mut out);
        }
        channel_fanout(catalog, directory, dev, &r, &mut may, &mut out);
    }
    out
}

/// Evaluate the alerts on device `dev`'s sensor for one numeric reading
/// `r` (value `v`), each only while its owner may read the device; a
/// firing and its routes are made by [`firing`].
#[inline]
fn device_alerts(
    catalog: &Catalog,
    directory: &Directory,
    dev: u32,
    r: &Reading,
    v: f64,
    may: &mut impl FnMut((Check, u32, u32), &dyn Fn() -> bool) -> bool,
    out: &mut PartDone,
) {
    for a in catalog.alerts_for(dev, r.sensor.code()) {
        let reads = || directory.user_may_device(&a.rec.owner, Action::ReadReadings, dev);
        if !may((Check::AlertReads, a.rec.id, dev), &reads) {
            continue;
        }
        match alerts::evaluate(&a.rec, a.fired(), v) {
            Transition::Stay => {}
            Transition::Rearm => {
                a.set_fired(false);
                out.alert_states.push((a.rec.id, false));
            }
            Transition::Fire => {
                a.set_fired(true);
                out.alert_states.push((a.rec.id, true));
                let text = alerts::describe(&a.rec, v);
                out.firings
                    .push(firing(&a.rec, dev, r, text, catalog, directory, &mut *may));
            }
        }
    }
}

/// Append reading `r` of device `dev` to every channel it is a member
/// of whose owner may read it, and evaluate those channels' alerts.
#[inline]
fn channel_fanout(
    catalog: &Catalog,
    directory: &Directory,
    dev: u32,
    r: &Reading,
    may: &mut impl FnMut((Check, u32, u32), &dyn Fn() -> bool) -> bool,
    out: &mut PartDone,
) {
    // In channel order, so a replay after a crash meets them (and
    // their alerts) in the same order.
    let mut chs = catalog.channels_for(dev, r.sensor.code());
    chs.sort_unstable();
    for ch in chs {
        let owner_reads = || {
            catalog
                .channel_by_num(ch)
                .is_some_and(|c| directory.user_may_device(&c.owner, Action::ReadReadings, dev))
        };
        if may((Check::ChannelReads, ch, dev), &owner_reads) {
            out.appends.push(ChannelAppend {
                channel: ch,
                device: dev,
                reading: r.clone(),
            });
        }
        if let Some(v) = alerts::numeric(&r.value) {
            let member = Member { ch, dev, r, v };
            channel_alerts(catalog, directory, &member, &mut *may, out);
        }
    }
}

/// A member's reading, as a channel alert sees it.
struct Member<'a> {
    ch: u32,
    dev: u32,
    r: &'a Reading,
    v: f64,
}

/// Evaluate every alert on channel `m.ch` for one member's numeric
/// reading, with that member's own state: each only while its owner may
/// still manage the channel and read the member's device.
fn channel_alerts(
    catalog: &Catalog,
    directory: &Directory,
    m: &Member<'_>,
    may: &mut impl FnMut((Check, u32, u32), &dyn Fn() -> bool) -> bool,
    out: &mut PartDone,
) {
    let (dev, r, code) = (m.dev, m.r, m.r.sensor.code());
    for a in catalog.alerts_on_channel(m.ch) {
        let manages = || {
            catalog
                .channel_by_num(m.ch)
                .is_some_and(|c| directory.user_may_channel(&a.rec.owner, Action::ManageOwned, &c))
        };
        let reads = || directory.user_may_device(&a.rec.owner, Action::ReadReadings, dev);
        if !may((Check::AlertWatches, a.rec.id, m.ch), &manages)
            || !may((Check::AlertReads, a.rec.id, dev), &reads)
        {
            continue;
        }
        let key = (a.rec.id, dev, code);
        match alerts::evaluate(&a.rec, a.member_fired(dev, code), m.v) {
            Transition::Stay => {}
            Transition::Rearm => {
                a.set_member_fired(dev, code, false);
                out.member_states.push((key, m.ch, false));
            }
            Transition::Fire => {
                a.set_member_fired(dev, code, true);
                out.member_states.push((key, m.ch, true));
                let id = directory
                    .device_by_num(dev)
                    .map(|d| d.id.clone())
                    .unwrap_or_default();
                let text = alerts::describe_member(&a.rec, &id, r.sensor, m.v);
                out.firings
                    .push(firing(&a.rec, dev, r, text, catalog, directory, may));
            }
        }
    }
}
