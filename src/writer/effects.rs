//! Effects: the digest's results and presence changes, stored in the
//! writer's transaction by the features that own them.
//!
//! Order is the invariant. Complete batches are applied in digest-log
//! order, each batch's parts in part order (not the order the digest
//! threads finished), and within a part: last contacts, channel items of
//! members, alert states, then firings (inbox row, the alert's channel
//! item, target, then the numbered event). Each
//! batch's `digest_log` row is removed in the same transaction. So the
//! durable state is always that of a prefix of the log, and a batch
//! digested again after a crash or a reopen meets the same state and
//! gets the same channel indexes, inbox seqs and event numbers. Presence
//! changes come after the digest's results.

use super::WriterState;
use crate::digest::PartDone;
use crate::presence::{self, Change};
use crate::store::{StoreError, DIGEST_LOG};
use crate::{alerts, channels, dead_letters, notify};

impl WriterState {
    /// Whether a ready batch has an alert firing (its event is read by
    /// clients, so an effects-only commit with it is fsynced).
    pub(super) fn ready_has_firings(&self) -> bool {
        self.ready
            .iter()
            .any(|(_, parts)| parts.iter().any(|p| !p.firings.is_empty()))
    }

    /// Store every ready batch's results, then the presence `changes`.
    /// `now` is the channel items' add time. Returns whether a channel got
    /// items.
    pub(super) fn apply_effects<'t>(
        &self,
        txn: impl Into<crate::store::Tx<'t>>,
        changes: &[Change],
        now: i64,
    ) -> Result<bool, StoreError> {
        let txn = txn.into();
        let mut appended = false;
        for (seq, parts) in &self.ready {
            let mut failures = Vec::new();
            for part in parts {
                appended |= self.apply_part(txn, part, now)?;
                if let Some(why) = &part.failed {
                    failures.push(why.as_str());
                }
            }
            if !failures.is_empty() {
                dead_letters::record(txn, *seq, &failures)?;
            }
            DIGEST_LOG.open(txn)?.remove(*seq)?;
        }
        let to = presence::store::Notices {
            directory: &self.ctx.directory,
            catalog: &self.ctx.catalog,
            max_inbox: self.ctx.max_inbox,
            events_kept: self.ctx.presence_events_kept,
            outbox_added: &self.outbox_added,
        };
        appended |= presence::store::record_changes(txn, changes, now, &to)?;
        Ok(appended)
    }

    /// Store one part's results, in order. Returns whether a channel got
    /// items.
    fn apply_part<'t>(
        &self,
        txn: impl Into<crate::store::Tx<'t>>,
        part: &PartDone,
        now: i64,
    ) -> Result<bool, StoreError> {
        let txn = txn.into();
        let mut appended = false;
        if !part.last_seen.is_empty() {
            presence::store::record_contacts(txn, part.last_seen.iter().copied())?;
        }
        // On PostgreSQL a channel's items of the part go together (one
        // statement, `channels::append_many`); each channel's items keep
        // their order, which is all its indexes depend on.
        let grouped = matches!(txn, crate::store::Tx::Pg(_));
        let mut groups: Vec<(u32, u64, Vec<channels::Item>)> = Vec::new();
        for a in &part.appends {
            // A channel deleted meanwhile gets nothing.
            let Some(ch) = self.ctx.catalog.channel_by_num(a.channel) else {
                continue;
            };
            let item = channels::Item::of_reading(now, a.device, &a.reading);
            appended = true;
            if !grouped {
                channels::append(txn, ch.num, &item, ch.retention)?;
            } else if let Some(g) = groups.iter_mut().find(|g| g.0 == ch.num) {
                g.2.push(item);
            } else {
                groups.push((ch.num, ch.retention, vec![item]));
            }
        }
        for (channel, retention, items) in &groups {
            channels::append_many(txn, *channel, items, *retention)?;
        }
        for &(id, fired) in &part.alert_states {
            alerts::store_state(txn, id, fired)?;
        }
        for &(key, channel, fired) in &part.member_states {
            alerts::store_member_state(txn, &self.ctx.catalog, key, channel, fired)?;
        }
        for f in &part.firings {
            // A target deleted since the digest looked gets nothing.
            let target = f.target.and_then(|t| self.ctx.catalog.targets().by_id(t));
            // A channel deleted meanwhile gets nothing.
            let channel = f.channel.and_then(|c| self.ctx.catalog.channel_by_num(c));
            let notice = notify::Notice {
                inbox: f.inbox.as_ref().map(|(dev, row)| (*dev, row)),
                channel: channel
                    .as_deref()
                    .map(|ch| (ch, channels::Item::of_reading(now, f.device, &f.reading))),
                target: target.as_deref().map(|t| (t, self.firing_note(f))),
                max_waiting: self.ctx.catalog.targets().max_waiting(),
            };
            let delivery = notify::deliver(txn, &self.ctx.directory, self.ctx.max_inbox, notice)?;
            if delivery.target.is_some() {
                self.outbox_added.set(true);
            }
            appended |= delivery.appended();
            let ev = alerts::Event {
                time: f.reading.time,
                device: f.device,
                sensor: f.reading.sensor,
                value: f.reading.value.clone(),
                text: f.text.clone(),
                delivery: delivery.describe(),
            };
            alerts::record_event(txn, f.alert, &ev)?;
        }
        Ok(appended)
    }

    /// What a firing tells a notification target.
    fn firing_note(&self, f: &crate::digest::Firing) -> crate::outbox::Notification {
        let mut value = String::new();
        f.reading.value.write_csv(&mut value);
        crate::outbox::Notification {
            kind: "alert",
            time: f.reading.time,
            source: f.source.clone(),
            device: self
                .ctx
                .directory
                .device_by_num(f.device)
                .map(|d| d.id.clone())
                .unwrap_or_default(),
            sensor: f.reading.sensor.to_string(),
            value,
            text: f.text.clone(),
        }
    }
}
