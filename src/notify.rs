//! Notices the writer sends: one way to tell a device's inbox, a
//! channel and a notification target (an outbox row, delivered later by
//! `crate::sender`), for everything that notifies (alert firings,
//! presence changes).
//!
//! Who may be told is decided by the caller (the digest for alerts, the
//! presence store for presence changes), against the grants as they are
//! now. [`deliver`] stores the notice in the writer's transaction — the
//! inbox row through the device's gateway if it has one, the channel item
//! trimmed to the channel's retention — and says where it went, in the
//! words the event listings show ([`Delivery::describe`]).

use crate::auth::Directory;
use crate::channels;
use crate::inbox::{self, Pushed};
use crate::outbox;
use crate::store::{ChannelRecord, Store, StoreError, PRESENCE_NOTIFY};
use crate::targets::TargetRecord;

/// What happened to a notice's inbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxDelivery {
    /// Queued with this seq (in the gateway's inbox for a device behind
    /// one).
    Queued(u64),
    /// The inbox was full: nothing queued (the event is kept anyway).
    Full,
}

/// Where a notice went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// The inbox row, if one was sent.
    pub inbox: Option<InboxDelivery>,
    /// The channel that got an item, if one did (its name).
    pub channel: Option<String>,
    /// The notification target told, if one was: `target:<name>:evt-<n>`,
    /// or `target_full:<name>` when its outbox was full.
    pub target: Option<String>,
}

impl Delivery {
    /// As stored with the event: `inbox:<seq>` or `inbox_full`, then
    /// `channel:<name>`, space-separated; empty when nowhere.
    pub fn describe(&self) -> String {
        let mut words = Vec::new();
        match self.inbox {
            Some(InboxDelivery::Queued(seq)) => words.push(format!("inbox:{seq}")),
            Some(InboxDelivery::Full) => words.push("inbox_full".to_string()),
            None => {}
        }
        if let Some(name) = &self.channel {
            words.push(format!("channel:{name}"));
        }
        if let Some(t) = &self.target {
            words.push(t.clone());
        }
        words.join(" ")
    }

    /// Whether a channel got an item (its long-polls are to be woken).
    pub fn appended(&self) -> bool {
        self.channel.is_some()
    }
}

/// Where a notice goes: the inbox of device `inbox.0` and/or `channel`,
/// both already checked against the sender's access.
pub struct Notice<'a> {
    /// The device to tell and the row (its `device` column is filled in
    /// by the routing).
    pub inbox: Option<(u32, &'a inbox::Row)>,
    /// The channel to tell and the item.
    pub channel: Option<(&'a ChannelRecord, channels::Item)>,
    /// The notification target to queue for, and what to tell it.
    pub target: Option<(&'a TargetRecord, outbox::Notification)>,
    /// Notifications the target's outbox may hold (`[notify]
    /// max_waiting`).
    pub max_waiting: u64,
}

/// Store a notice in the writer's transaction: first the inbox row (all
/// or nothing, bounded by `max_inbox`), then the channel item. Writer
/// only, in digest-log order, so a notice re-derived after a crash gets
/// the same seq and index.
pub fn deliver<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    directory: &Directory,
    max_inbox: u64,
    notice: Notice<'_>,
) -> Result<Delivery, StoreError> {
    let txn = txn.into();
    let mut delivery = Delivery::default();
    if let Some((dev, row)) = notice.inbox {
        delivery.inbox = Some(
            match inbox::push_routed(txn, directory, dev, row, max_inbox)? {
                Pushed::Queued(seqs) => InboxDelivery::Queued(seqs[0]),
                Pushed::Full(_) => InboxDelivery::Full,
            },
        );
    }
    if let Some((ch, item)) = notice.channel {
        channels::append(txn, ch.num, &item, ch.retention)?;
        delivery.channel = Some(ch.name.clone());
    }
    if let Some((t, note)) = notice.target {
        let now = crate::codec::timefmt::now_micros();
        delivery.target = Some(
            match outbox::push(txn, t, &note, now, notice.max_waiting)? {
                Some(id) => format!("target:{}:{id}", t.name),
                None => format!("target_full:{}", t.name),
            },
        );
    }
    Ok(delivery)
}

/// Where user `user` is told about their devices going offline and
/// online: `(device id, channel name)`, empty when not set
/// (`presence_notify`, read by `presence::store` when a change is
/// stored). Blocking.
pub fn presence_choice(store: &Store, user: &str) -> Result<(String, String), StoreError> {
    store.read(|txn| {
        let t = txn.open_table(PRESENCE_NOTIFY)?;
        let v = t
            .get(user)?
            .map(|g| (g.value().0.to_string(), g.value().1.to_string()));
        Ok(v.unwrap_or_default())
    })
}

/// Set where `user` is told about presence changes: a device's inbox
/// and/or a channel (both empty: nowhere). The caller checked the user
/// may send to both. Blocking.
pub fn set_presence_choice(
    store: &Store,
    user: &str,
    device: &str,
    channel: &str,
) -> Result<(), StoreError> {
    store.write(|txn| {
        {
            let mut t = txn.open_table(PRESENCE_NOTIFY)?;
            if device.is_empty() && channel.is_empty() {
                t.remove(user)?;
            } else {
                t.insert(user, (device, channel))?;
            }
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_described_as_before() {
        let none = Delivery::default();
        assert_eq!(none.describe(), "");
        let both = Delivery {
            inbox: Some(InboxDelivery::Queued(7)),
            channel: Some("g".into()),
            target: None,
        };
        assert_eq!(both.describe(), "inbox:7 channel:g");
        let full = Delivery {
            inbox: Some(InboxDelivery::Full),
            channel: None,
            target: None,
        };
        assert_eq!(full.describe(), "inbox_full");
        let hooked = Delivery {
            target: Some("target:ops:evt-4".into()),
            ..both.clone()
        };
        assert_eq!(hooked.describe(), "inbox:7 channel:g target:ops:evt-4");
        assert!(!full.appended() && both.appended());
    }
}
