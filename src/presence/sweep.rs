//! The sweep: online devices whose deadline (last contact plus
//! `offline_after`, doubled while damped) has passed go offline, unless
//! their gateway is down (then they are unreachable) or is falling silent
//! with them (then its deadline decides). One heap entry per online
//! device, so a sweep costs `O(due entries × log n)`.

use std::cmp::Reverse;

use super::{Change, Entry, Inner, Presence};
use crate::codec::Micros;

/// Gateways below gateways are followed this deep, no deeper.
const MAX_DEPTH: u32 = 8;

/// Mark `dev` offline at `now` and queue the change.
fn go_offline(g: &mut Inner, dev: u32, now: Micros) {
    let Some(e) = g.devices.get_mut(&dev) else {
        return;
    };
    e.online = false;
    e.since = now;
    let change = Change {
        device: dev,
        online: false,
        at: now,
        last_seen: e.last_seen,
        damped: e.damped,
    };
    g.pending.push(change);
}

/// When an online device with this entry is due to go offline.
pub(super) fn due_at(after_us: i64, e: &Entry) -> Micros {
    let after = after_us * if e.damped { 2 } else { 1 };
    e.last_seen.saturating_add(after)
}

impl Presence {
    /// Mark every device that is due at `now` offline. Returns how many
    /// heap entries were looked at.
    pub fn sweep(&self, now: Micros) -> usize {
        let mut g = self.inner.lock();
        let mut looked = 0;
        while let Some(&Reverse((due, dev, generation))) = g.heap.peek() {
            if due > now {
                break;
            }
            g.heap.pop();
            looked += 1;
            let Some(e) = g.devices.get(&dev).copied() else {
                continue;
            };
            if !e.online || e.generation != generation {
                continue; // stale entry
            }
            let rec = self.directory.device_by_num(dev);
            let after = self.after_of(rec.as_deref());
            let due = due_at(after, &e);
            if due > now {
                g.heap.push(Reverse((due, dev, generation)));
                continue;
            }
            if self.parent_down(&mut g, dev, now, 0) {
                // Unreachable, not failed: look again later.
                let again = now.saturating_add(after);
                g.heap.push(Reverse((again, dev, generation)));
                continue;
            }
            if let Some(at) = self.parent_undecided(&g, dev, due, now) {
                // Its gateway has been silent since before this device's
                // deadline too: decide when the gateway's comes.
                g.heap.push(Reverse((at, dev, generation)));
                continue;
            }
            go_offline(&mut g, dev, now);
        }
        looked
    }

    /// `dev` is due at `due` and its parent gateway is online: if the
    /// gateway has not been heard from since `due` either, the two may be
    /// falling silent together (a device's data come through its gateway,
    /// so the device's last contact is always a little older than the
    /// gateway's). Then the gateway's own deadline, when later than `now`,
    /// is when to decide: by then the gateway has spoken (the device
    /// failed on its own) or is offline (the device is unreachable).
    fn parent_undecided(&self, g: &Inner, dev: u32, due: Micros, now: Micros) -> Option<Micros> {
        let (p, pe) = self.parent(g, dev)?;
        if !pe.online || pe.last_seen >= due {
            return None;
        }
        let at = self.due(p, &pe);
        (at > now).then_some(at)
    }

    /// Is `dev`'s parent gateway offline at `now`? A parent that is due
    /// but not yet swept goes offline first, right here, so a gateway and
    /// the devices behind it falling silent together is reported as the
    /// gateway's outage, whatever order the heap yields them in.
    fn parent_down(&self, g: &mut Inner, dev: u32, now: Micros, depth: u32) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        let Some((p, pe)) = self.parent(g, dev) else {
            return false;
        };
        if !pe.online {
            return true;
        }
        if self.due(p, &pe) > now || self.parent_down(g, p, now, depth + 1) {
            // Online; or itself unreachable behind its own gateway.
            return false;
        }
        go_offline(g, p, now);
        true
    }
}
