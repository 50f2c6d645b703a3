//! Subscriptions that deliver: a device's inbox and a channel's items.
//! Each is a task woken like a long-poll (`App::inbox_bells` for its
//! device's inbox, the writer's `App::channel_events` watch) that reads
//! what is new on a blocking thread and queues one PUBLISH (QoS 0) per
//! row.
//!
//! Nothing is removed by delivery: an inbox row stays until the device
//! acks it (HTTP or `overlord/<device>/inbox/ack`), so a subscription
//! made after a reconnect or a restart gets every pending row again. A
//! channel subscription starts at the channel's newest item; resuming
//! from an index is the HTTP `after=` API.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::link::Outbox;
use super::wire::Out;
use crate::app::App;
use crate::auth::{Action, Principal, Resource};
use crate::channels;
use crate::store::{ChannelRecord, DeviceRecord};

/// Channel items read per wake at most (more: read again at once).
const CHANNEL_BATCH: usize = 256;

/// After a failed read, wait this long before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// Deliver `device`'s inbox rows, `seq,kind,time,from,sensor,value`
/// (with `,device` for a gateway), oldest first, each once per
/// subscription, until the connection ends.
pub async fn inbox(app: Arc<App>, outbox: Outbox, device: Arc<DeviceRecord>, topic: String) {
    let mut events = app.inbox_bells.subscribe(device.num);
    let mut sent = 0u64;
    let max = app.config.limits.max_inbox as usize;
    loop {
        // Seen before reading: a row added after the read wakes us.
        events.borrow_and_update();
        let app2 = app.clone();
        let num = device.num;
        // Only the device itself subscribes to its inbox: commands among
        // the rows are delivered, as by `GET /v1/inbox`.
        let read = crate::blocking::run("inbox feed read", move || {
            crate::inbox::send::read(&app2.store, num, max)
        })
        .await;
        let rows = match read {
            Ok((_, rows)) => rows,
            _ => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let gateway = app
            .directory
            .device_by_num(num)
            .is_some_and(|d| d.meta.gateway);
        let from = sent;
        for (seq, row) in rows.iter().filter(|(seq, _)| *seq > from) {
            let mut line = String::new();
            row.write_csv(*seq, gateway, &mut line);
            if !outbox.send(Out::Publish(topic.clone(), line.into())).await {
                return;
            }
            sent = *seq;
        }
        if !changed(&mut events).await {
            return;
        }
    }
}

/// Deliver each item added to `channel` from now on, as the row
/// `index,time,device,sensor,value`, while `who` may read it.
pub async fn channel(
    app: Arc<App>,
    outbox: Outbox,
    who: Principal,
    channel: Arc<ChannelRecord>,
    topic: String,
) {
    let mut events = app.channel_events.clone();
    events.borrow_and_update();
    let num = channel.num;
    let app2 = app.clone();
    let start = crate::blocking::run("channel feed bounds", move || {
        channels::bounds(&app2.store, num)
    });
    let mut after = match start.await {
        Ok((_, next)) => next.saturating_sub(1),
        _ => return,
    };
    loop {
        // A withdrawn grant ends the subscription.
        if app
            .directory
            .authorize(&who, Action::ReadOwned, Resource::channel(&channel))
            .is_err()
        {
            return;
        }
        events.borrow_and_update();
        let app2 = app.clone();
        let read = crate::blocking::run("channel feed read", move || {
            channels::read_after(&app2.store, num, after, CHANNEL_BATCH)
        })
        .await;
        let items = match read {
            Ok(items) => items,
            _ => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        for (idx, item) in &items {
            let mut line = String::new();
            crate::api::channels::write_item(&app, *idx, item, &mut line);
            if !outbox.send(Out::Publish(topic.clone(), line.into())).await {
                return;
            }
            after = *idx;
        }
        if items.len() < CHANNEL_BATCH && !changed(&mut events).await {
            return;
        }
    }
}

/// Deliver the error lines of other connections' failed publishes about
/// `device` (this connection's own are queued by its acknowledger).
pub async fn errors(
    mut rows: tokio::sync::broadcast::Receiver<super::ErrorRow>,
    outbox: Outbox,
    conn: u64,
    device: String,
    topic: String,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rows.recv().await {
            Ok(row) if row.conn != conn && row.device == device => {
                if !outbox.send(Out::Publish(topic.clone(), row.line)).await {
                    return;
                }
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// Wait for the next change; `false` when the server is gone.
async fn changed<T>(events: &mut watch::Receiver<T>) -> bool {
    events.changed().await.is_ok()
}
