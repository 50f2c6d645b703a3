//! The in-memory catalog of channels, channel members, alerts and
//! notification targets ([`crate::targets`]): what
//! the digest consults for every reading. Loaded from the store on start;
//! management requests update it after their transaction commits.
//!
//! An alert's armed/fired state lives here as well, owned by the digest
//! thread of the alert's device (alerts watch one device, and a device is
//! always digested by the same thread); a channel alert keeps one state
//! per member, each owned by the thread of the member's device. The writer persists each change
//! in `alert_state`, in digest-log order, and it is loaded from there.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::store::{AlertRecord, ChannelRecord};

/// An alert and its live state.
#[derive(Debug)]
pub struct AlertEntry {
    /// The definition.
    pub rec: AlertRecord,
    fired: AtomicBool,
    /// A channel alert's fired members `(device, sensor)`; each member's
    /// entry is changed only by its device's digest thread.
    members_fired: Mutex<HashSet<(u32, u32)>>,
}

impl AlertEntry {
    /// Is it in the alarm range (fired, not yet re-armed)? For a channel
    /// alert: is any member?
    pub fn fired(&self) -> bool {
        if self.rec.channel.is_some() {
            return !self.members_fired.lock().is_empty();
        }
        self.fired.load(Ordering::Acquire)
    }

    /// Is member `(device, sensor)` of a channel alert fired?
    pub fn member_fired(&self, device: u32, sensor: u32) -> bool {
        self.members_fired.lock().contains(&(device, sensor))
    }

    /// Record a member's transition.
    pub fn set_member_fired(&self, device: u32, sensor: u32, v: bool) {
        let mut m = self.members_fired.lock();
        if v {
            m.insert((device, sensor));
        } else {
            m.remove(&(device, sensor));
        }
    }

    /// Replace the fired members (loaded from the store).
    pub fn reset_members(&self, fired: impl IntoIterator<Item = (u32, u32)>) {
        *self.members_fired.lock() = fired.into_iter().collect();
    }

    /// Record a transition.
    pub fn set_fired(&self, v: bool) {
        self.fired.store(v, Ordering::Release);
    }
}

#[derive(Default)]
struct Inner {
    channels: HashMap<String, Arc<ChannelRecord>>,
    channel_by_num: HashMap<u32, Arc<ChannelRecord>>,
    /// (device, sensor) → channels it feeds.
    members: HashMap<(u32, u32), Vec<u32>>,
    alerts: HashMap<String, Arc<AlertEntry>>,
    /// (device, sensor) → alerts on it.
    watching: HashMap<(u32, u32), Vec<Arc<AlertEntry>>>,
    /// channel → alerts on its every member.
    on_channel: HashMap<u32, Vec<Arc<AlertEntry>>>,
}

/// Channels, alerts and notification targets, in memory.
#[derive(Default)]
pub struct Catalog {
    inner: RwLock<Inner>,
    targets: crate::targets::Targets,
}

impl Catalog {
    /// The notification targets (see [`crate::targets`]).
    pub fn targets(&self) -> &crate::targets::Targets {
        &self.targets
    }

    /// Build from stored records: channels, members `(channel, device,
    /// sensor)`, alerts and the ids of alerts that are fired.
    pub fn new(
        channels: Vec<ChannelRecord>,
        members: Vec<(u32, u32, u32)>,
        alerts: Vec<AlertRecord>,
        fired: &[u32],
    ) -> Catalog {
        let c = Catalog::default();
        for ch in channels {
            c.put_channel(ch);
        }
        for (ch, d, s) in members {
            c.add_member(ch, d, s);
        }
        for a in alerts {
            let is_fired = fired.contains(&a.id);
            c.put_alert(a, is_fired);
        }
        c
    }

    /// Insert a channel.
    pub fn put_channel(&self, ch: ChannelRecord) {
        let ch = Arc::new(ch);
        let mut g = self.inner.write();
        g.channel_by_num.insert(ch.num, ch.clone());
        g.channels.insert(ch.name.clone(), ch);
    }

    /// Forget a deleted channel and its members.
    pub fn remove_channel(&self, num: u32) {
        let mut g = self.inner.write();
        if let Some(ch) = g.channel_by_num.remove(&num) {
            g.channels.remove(&ch.name);
        }
        for chs in g.members.values_mut() {
            chs.retain(|c| *c != num);
        }
        g.members.retain(|_, chs| !chs.is_empty());
    }

    /// A channel by name.
    pub fn channel(&self, name: &str) -> Option<Arc<ChannelRecord>> {
        self.inner.read().channels.get(name).cloned()
    }

    /// A channel by number.
    pub fn channel_by_num(&self, num: u32) -> Option<Arc<ChannelRecord>> {
        self.inner.read().channel_by_num.get(&num).cloned()
    }

    /// Every channel, by name.
    pub fn channels(&self) -> Vec<Arc<ChannelRecord>> {
        let mut v: Vec<_> = self.inner.read().channels.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Add a member.
    pub fn add_member(&self, channel: u32, device: u32, sensor: u32) {
        let mut g = self.inner.write();
        let v = g.members.entry((device, sensor)).or_default();
        if !v.contains(&channel) {
            v.push(channel);
        }
    }

    /// Remove a member; the alerts on the channel forget its state (the
    /// store's rows go with `alerts::forget_member`).
    pub fn remove_member(&self, channel: u32, device: u32, sensor: u32) {
        let mut g = self.inner.write();
        if let Some(v) = g.members.get_mut(&(device, sensor)) {
            v.retain(|c| *c != channel);
        }
        for a in g.alerts.values() {
            if a.rec.channel == Some(channel) {
                a.set_member_fired(device, sensor, false);
            }
        }
    }

    /// The memberships of one device: `(channel, sensor)`.
    pub fn memberships_of_device(&self, device: u32) -> Vec<(u32, u32)> {
        let g = self.inner.read();
        let mut v: Vec<(u32, u32)> = g
            .members
            .iter()
            .filter(|((d, _), _)| *d == device)
            .flat_map(|((_, s), chs)| chs.iter().map(move |c| (*c, *s)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Members of a channel as `(device, sensor)`, sorted.
    pub fn members_of(&self, channel: u32) -> Vec<(u32, u32)> {
        let g = self.inner.read();
        let mut v: Vec<_> = g
            .members
            .iter()
            .filter(|(_, chs)| chs.contains(&channel))
            .map(|(k, _)| *k)
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether a channel or an alert follows `(device, sensor)`: its new
    /// readings go to the digest.
    pub fn follows(&self, device: u32, sensor: u32) -> bool {
        let inner = self.inner.read();
        let key = (device, sensor);
        inner.members.get(&key).is_some_and(|v| !v.is_empty())
            || inner.watching.get(&key).is_some_and(|v| !v.is_empty())
    }

    /// Channels a (device, sensor) feeds.
    pub fn channels_for(&self, device: u32, sensor: u32) -> Vec<u32> {
        self.inner
            .read()
            .members
            .get(&(device, sensor))
            .cloned()
            .unwrap_or_default()
    }

    /// Insert or replace an alert.
    pub fn put_alert(&self, a: AlertRecord, fired: bool) {
        let e = Arc::new(AlertEntry {
            rec: a,
            fired: AtomicBool::new(fired),
            members_fired: Mutex::default(),
        });
        let mut g = self.inner.write();
        match e.rec.channel {
            Some(ch) => g.on_channel.entry(ch).or_default().push(e.clone()),
            None => {
                let key = (e.rec.device, e.rec.sensor);
                g.watching.entry(key).or_default().push(e.clone());
            }
        }
        g.alerts.insert(e.rec.name.clone(), e);
    }

    /// Remove an alert.
    pub fn remove_alert(&self, name: &str) {
        let mut g = self.inner.write();
        if let Some(e) = g.alerts.remove(name) {
            let list = match e.rec.channel {
                Some(ch) => g.on_channel.get_mut(&ch),
                None => g.watching.get_mut(&(e.rec.device, e.rec.sensor)),
            };
            if let Some(v) = list {
                v.retain(|x| x.rec.id != e.rec.id);
            }
        }
    }

    /// Alerts on every member of channel `ch`.
    /// By id, so a replay meets them in the same order.
    pub fn alerts_on_channel(&self, ch: u32) -> Vec<Arc<AlertEntry>> {
        let mut v = self
            .inner
            .read()
            .on_channel
            .get(&ch)
            .cloned()
            .unwrap_or_default();
        v.sort_by_key(|a| a.rec.id);
        v
    }

    /// Set the channel alerts' fired members from the store's
    /// `(alert, device, sensor)` rows (start, reopen).
    pub fn load_member_states(&self, rows: &[(u32, u32, u32)]) {
        for a in self.alerts() {
            if a.rec.channel.is_some() {
                let id = a.rec.id;
                a.reset_members(
                    rows.iter()
                        .filter(|(x, _, _)| *x == id)
                        .map(|&(_, d, s)| (d, s)),
                );
            }
        }
    }

    /// An alert by name.
    pub fn alert(&self, name: &str) -> Option<Arc<AlertEntry>> {
        self.inner.read().alerts.get(name).cloned()
    }

    /// Every alert, by name.
    pub fn alerts(&self) -> Vec<Arc<AlertEntry>> {
        let mut v: Vec<_> = self.inner.read().alerts.values().cloned().collect();
        v.sort_by(|a, b| a.rec.name.cmp(&b.rec.name));
        v
    }

    /// Alerts watching a (device, sensor).
    pub fn alerts_for(&self, device: u32, sensor: u32) -> Vec<Arc<AlertEntry>> {
        self.inner
            .read()
            .watching
            .get(&(device, sensor))
            .cloned()
            .unwrap_or_default()
    }
}
