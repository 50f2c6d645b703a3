//! Device presence: last contact, online/offline, and the sweep.
//!
//! **Contact.** The digest reports every device whose readings it
//! processed (at the batch's commit time), and a device's own inbox
//! requests count too. [`Presence::saw`] records it; a device that was
//! offline (or never heard from) comes **online** right there.
//!
//! **Offline.** A device is offline once it has been silent for its
//! `offline_after` (per device, or `[presence] offline_after_secs`). The
//! sweep does not scan every device: each online device has one entry in
//! a min-heap keyed by the time it would be due, computed when it came
//! online. When an entry comes due the sweep looks at the device's latest
//! contact; if it was heard from since, the entry is pushed back to its new
//! due time (one heap operation per device per `offline_after`, however
//! many readings it sent). So a sweep costs `O(due entries × log n)`, not
//! `O(devices)`.
//!
//! **No flapping.** A device that comes back less than `offline_after`
//! after it went offline was at the edge (it reports about as often as its
//! `offline_after`). It is then *damped*: it needs twice the silence,
//! `2 × offline_after`, to go offline again. Damping ends when it comes
//! back after a real outage (offline for at least `offline_after`). So a
//! device at the edge produces at most one offline/online pair, not a
//! stream.
//!
//! **Gateways.** While a device's parent gateway is offline, the device
//! is shown `unreachable` and is not marked offline on its own: its
//! silence is the gateway's. It is checked again every `offline_after`.
//! A device due while its gateway has been silent since the device's own
//! deadline is decided at the gateway's deadline, so a gateway and its
//! devices falling silent together is always the gateway's outage.
//!
//! **Durability.** Changes queue here; the writer thread takes them
//! ([`Presence::take_changes`]) and in one transaction stores the new
//! state in `presence`, appends an event to `presence_events` and tells
//! the owner ([`store::record_changes`]). On start the state is loaded back: a device stored online
//! whose last contact is older than `offline_after` comes due at once and
//! is reported offline once; one stored offline stays offline without a
//! new event.
//!
//! Files: this one has the state of every device and its contacts;
//! `sweep.rs` the deadline-heap sweep (offline, damping, gateways);
//! [`store`] what the writer stores for it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::auth::Directory;
use crate::codec::Micros;

pub mod store;
mod sweep;

pub use store::{read_events, Event, Flags, CHANNEL_SENSOR, EVENTS_HEADER};

const US: i64 = 1_000_000;

use sweep::due_at;

/// What a device is, as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Never heard from.
    Unknown,
    /// Heard from within its `offline_after`.
    Online,
    /// Silent past its `offline_after`.
    Offline,
    /// Its gateway is offline.
    Unreachable,
}

impl State {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Online => "online",
            State::Offline => "offline",
            State::Unreachable => "unreachable",
        }
    }

    /// Parse the word on the wire.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "unknown" => State::Unknown,
            "online" => State::Online,
            "offline" => State::Offline,
            "unreachable" => State::Unreachable,
            _ => return None,
        })
    }
}

/// Devices per [`State`] (see [`Presence::state_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// [`State::Online`].
    pub online: u64,
    /// [`State::Offline`].
    pub offline: u64,
    /// [`State::Unreachable`].
    pub unreachable: u64,
    /// [`State::Unknown`] (never heard from).
    pub unknown: u64,
}

/// One transition, waiting for the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Device number.
    pub device: u32,
    /// Came online (`true`) or went offline.
    pub online: bool,
    /// When.
    pub at: Micros,
    /// Last contact at that moment.
    pub last_seen: Micros,
    /// Damped after this change (stored with the state).
    pub damped: bool,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    last_seen: Micros,
    online: bool,
    damped: bool,
    /// When the current state began.
    since: Micros,
    /// Bumped whenever the device comes online, so heap entries from an
    /// earlier online period are recognised as stale.
    generation: u32,
}

#[derive(Default)]
struct Inner {
    devices: HashMap<u32, Entry>,
    /// (due, device, generation), earliest first.
    heap: BinaryHeap<Reverse<(Micros, u32, u32)>>,
    pending: Vec<Change>,
}

/// Presence of every device.
pub struct Presence {
    directory: Arc<Directory>,
    default_after: u32,
    inner: Mutex<Inner>,
}

impl Presence {
    /// Start from the stored last contacts and states. `default_after` is
    /// the configured `offline_after` in seconds.
    pub fn new(
        directory: Arc<Directory>,
        default_after: u32,
        last_seen: Vec<(u32, Micros)>,
        states: Vec<(u32, u8, Micros)>,
    ) -> Presence {
        let p = Presence {
            directory,
            default_after: default_after.max(1),
            inner: Mutex::new(Inner::default()),
        };
        {
            let mut g = p.inner.lock();
            for (dev, t) in last_seen {
                g.devices.insert(
                    dev,
                    Entry {
                        last_seen: t,
                        online: true,
                        damped: false,
                        since: t,
                        generation: 0,
                    },
                );
            }
            for (dev, flags, since) in states {
                let e = g.devices.entry(dev).or_insert(Entry {
                    last_seen: since,
                    online: true,
                    damped: false,
                    since,
                    generation: 0,
                });
                let flags = Flags::from_bits(flags);
                e.online = flags.online;
                e.damped = flags.damped;
                e.since = since;
            }
            let devs: Vec<(u32, Entry)> = g.devices.iter().map(|(d, e)| (*d, *e)).collect();
            for (dev, e) in devs {
                if e.online {
                    let due = p.due(dev, &e);
                    g.heap.push(Reverse((due, dev, e.generation)));
                } else if e.last_seen > e.since {
                    // Heard from after it went offline (a replayed batch).
                    p.come_online(&mut g, dev, e.last_seen);
                }
            }
        }
        p
    }

    fn after_us(&self, dev: u32) -> i64 {
        self.after_of(self.directory.device_by_num(dev).as_deref())
    }

    fn after_of(&self, rec: Option<&crate::store::DeviceRecord>) -> i64 {
        let secs = rec
            .and_then(|d| d.meta.offline_after)
            .unwrap_or(self.default_after);
        i64::from(secs.max(1)) * US
    }

    fn due(&self, dev: u32, e: &Entry) -> Micros {
        due_at(self.after_us(dev), e)
    }

    fn come_online(&self, g: &mut Inner, dev: u32, at: Micros) {
        let after = self.after_us(dev);
        let Some(e) = g.devices.get_mut(&dev) else {
            return;
        };
        // Back after less than offline_after: at the edge, so damp it.
        e.damped = at.saturating_sub(e.since) < after;
        e.online = true;
        e.since = at;
        e.generation = e.generation.wrapping_add(1);
        let e = *e;
        g.pending.push(Change {
            device: dev,
            online: true,
            at,
            last_seen: e.last_seen,
            damped: e.damped,
        });
        let due = self.due(dev, &e);
        g.heap.push(Reverse((due, dev, e.generation)));
    }

    /// A device's `offline_after` or parent changed: compute its due time
    /// afresh (the old heap entry becomes stale).
    pub fn reschedule(&self, dev: u32) {
        let mut g = self.inner.lock();
        let Some(e) = g.devices.get_mut(&dev) else {
            return;
        };
        if !e.online {
            return;
        }
        e.generation = e.generation.wrapping_add(1);
        let e = *e;
        let due = self.due(dev, &e);
        g.heap.push(Reverse((due, dev, e.generation)));
    }

    /// Forget a deleted device: no more presence changes for it (its heap
    /// entries become stale).
    pub fn forget(&self, dev: u32) {
        self.inner.lock().devices.remove(&dev);
    }

    /// Record a contact at `at`.
    pub fn saw(&self, dev: u32, at: Micros) {
        let mut g = self.inner.lock();
        match g.devices.get_mut(&dev) {
            Some(e) => {
                if at > e.last_seen {
                    e.last_seen = at;
                }
                if !e.online {
                    self.come_online(&mut g, dev, at);
                }
            }
            None => {
                g.devices.insert(
                    dev,
                    Entry {
                        last_seen: at,
                        online: false,
                        damped: false,
                        // Never seen: not damped when it arrives.
                        since: i64::MIN / 2,
                        generation: 0,
                    },
                );
                self.come_online(&mut g, dev, at);
            }
        }
    }

    /// `dev`'s parent gateway, if it has one we have heard of: its number
    /// and its entry.
    fn parent(&self, g: &Inner, dev: u32) -> Option<(u32, Entry)> {
        let p = self.directory.device_by_num(dev)?.meta.parent?;
        Some((p, *g.devices.get(&p)?))
    }

    /// Is `dev`'s parent gateway offline?
    fn parent_offline(&self, g: &Inner, dev: u32) -> bool {
        self.parent(g, dev).is_some_and(|(_, p)| !p.online)
    }

    /// Changes not yet stored, oldest first.
    pub fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut self.inner.lock().pending)
    }

    /// Put back changes whose commit failed, ahead of newer ones.
    pub fn requeue(&self, mut changes: Vec<Change>) {
        let mut g = self.inner.lock();
        changes.append(&mut g.pending);
        g.pending = changes;
    }

    /// Whether changes are waiting for the writer.
    pub fn has_changes(&self) -> bool {
        !self.inner.lock().pending.is_empty()
    }

    /// Last contact, if any.
    pub fn last_seen(&self, device: u32) -> Option<Micros> {
        self.inner.lock().devices.get(&device).map(|e| e.last_seen)
    }

    /// The state shown for a device.
    pub fn state(&self, device: u32) -> State {
        let g = self.inner.lock();
        self.state_in(&g, device)
    }

    /// [`Presence::state`] with the lock held: the one definition of a
    /// device's state, used by the API and by the metrics alike.
    fn state_in(&self, g: &Inner, device: u32) -> State {
        if self.parent_offline(g, device) {
            return State::Unreachable;
        }
        match g.devices.get(&device) {
            None => State::Unknown,
            Some(e) if e.online => State::Online,
            Some(_) => State::Offline,
        }
    }

    /// How many devices of the directory are in each state, for
    /// `/metrics`. Every device is counted exactly once, by the same
    /// [`Presence::state`] that `GET /v1/devices` shows, at one instant
    /// (one lock), so the gauges add up to the device count and cannot
    /// drift from the API. (Counting the presence map instead missed
    /// never-heard-from devices and called unreachable ones online.)
    pub fn state_counts(&self) -> StateCounts {
        let devices = self.directory.devices();
        let g = self.inner.lock();
        let mut c = StateCounts::default();
        for d in &devices {
            *match self.state_in(&g, d.num) {
                State::Online => &mut c.online,
                State::Offline => &mut c.offline,
                State::Unreachable => &mut c.unreachable,
                State::Unknown => &mut c.unknown,
            } += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests;
