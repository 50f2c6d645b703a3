//! A connection's way out: the bounded queue of packets to the client and
//! the task that writes them ([`Outbox`], [`write_loop`]); and the
//! in-order acknowledgement of its publishes ([`ack_loop`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::topics;
use super::wire::{self, reason, Out, Version};
use crate::error::WireError;

/// Packets to the client, through a bounded queue. A client that reads
/// so slowly that the queue stays full for the write timeout is dropped
/// (the connection, never memory).
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Out>,
    wait: Duration,
    kill: Arc<watch::Sender<bool>>,
}

impl Outbox {
    /// A queue of `depth` packets; `kill` ends the connection.
    pub fn new(
        depth: usize,
        wait: Duration,
        kill: Arc<watch::Sender<bool>>,
    ) -> (Outbox, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(depth.max(4));
        (Outbox { tx, wait, kill }, rx)
    }

    /// Queue `out`; `false` (and the connection is ended) when the client
    /// has not made room within the write timeout, or is gone.
    pub async fn send(&self, out: Out) -> bool {
        // Room now (the usual case) needs no timer.
        let out = match self.tx.try_send(out) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Full(out)) => out,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.kill.send_replace(true);
                return false;
            }
        };
        match self.tx.send_timeout(out, self.wait).await {
            Ok(()) => true,
            Err(_) => {
                self.kill.send_replace(true);
                false
            }
        }
    }
}

/// Write queued packets until the queue closes, a `DISCONNECT` was
/// written, a write takes longer than `wait`, or the connection is
/// killed; then close our side and kill the connection.
pub async fn write_loop(
    mut rx: mpsc::Receiver<Out>,
    mut wr: impl AsyncWrite + Unpin,
    version: Version,
    wait: Duration,
    kill: Arc<watch::Sender<bool>>,
) {
    let mut killed = kill.subscribe();
    let mut buf = BytesMut::new();
    'out: loop {
        let first = tokio::select! {
            o = rx.recv() => o,
            () = super::wire::until(&mut killed) => None,
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        let mut last = false;
        // Batch what is queued into one write.
        while let Some(out) = next.take() {
            last = matches!(out, Out::Disconnect(..));
            wire::write(&out, version, &mut buf);
            if !last && buf.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if !matches!(
            tokio::time::timeout(wait, wr.write_all(&buf)).await,
            Ok(Ok(()))
        ) {
            break 'out;
        }
        buf.clear();
        if buf.capacity() > 64 * 1024 {
            buf = BytesMut::new();
        }
        if last {
            break;
        }
    }
    let _ = tokio::time::timeout(wait, wr.shutdown()).await;
    kill.send_replace(true);
}

/// A publish being processed: its task's result decides the reply.
pub struct InFlight {
    /// The packet id to acknowledge (QoS 1), or `None` (QoS 0).
    pub pkid: Option<u16>,
    /// Its topic (for the errors topic).
    pub topic: String,
    /// The work: readings stored, or an inbox ack done.
    pub job: JoinHandle<Result<(), WireError>>,
}

/// Devices whose `overlord/<device>/errors` the client subscribed to.
pub type ErrorTopics = Arc<Mutex<HashSet<String>>>;

/// Acknowledge publishes in the order they arrived (MQTT requires it),
/// each once its work is done: `PUBACK` after the readings are fsynced.
/// A failure goes to the errors topic if subscribed; a QoS 1 failure is a
/// MQTT 5 `PUBACK` with a reason code, and on 3.1.1 (which has no
/// negative acknowledgement) closes the connection, never acknowledged.
pub async fn ack_loop(
    mut rx: mpsc::Receiver<InFlight>,
    outbox: Outbox,
    version: Version,
    errors: ErrorTopics,
    hub: Arc<super::Hub>,
    conn: u64,
) {
    while let Some(f) = rx.recv().await {
        let result = f
            .job
            .await
            .unwrap_or_else(|_| Err(WireError::internal("publish failed")));
        let metrics = &hub.app.metrics;
        metrics.mqtt_publishes.inc();
        if result.is_err() {
            metrics.mqtt_publish_failures.inc();
        }
        let e = match (result, f.pkid) {
            (Ok(()), Some(pkid)) => {
                outbox.send(Out::PubAck(pkid, None)).await;
                continue;
            }
            (Ok(()), None) => continue,
            (Err(e), _) => e,
        };
        let line = e.body();
        if let Some(dev) = topics::device_of(&f.topic) {
            // Other connections' subscribers get it through the hub.
            let _ = hub.errors.send(super::ErrorRow {
                conn,
                device: dev.to_string(),
                line: line.clone().into(),
            });
            let mine = errors.lock().contains(dev);
            if mine {
                let topic = format!("{}/{dev}/errors", topics::ROOT);
                outbox.send(Out::Publish(topic, line.clone().into())).await;
            }
        }
        match (f.pkid, version) {
            (Some(pkid), Version::V5) => {
                let text = line.trim_end().to_string();
                outbox
                    .send(Out::PubAck(pkid, Some((reason_for(&e), text))))
                    .await;
            }
            (Some(_), Version::V4) => {
                outbox
                    .send(Out::Disconnect(reason::UNSPECIFIED, String::new()))
                    .await;
                return;
            }
            (None, _) => {}
        }
    }
}

/// The MQTT 5 reason code for a failed publish.
pub fn reason_for(e: &WireError) -> u8 {
    match e.status {
        400 | 415 | 422 => reason::PAYLOAD_INVALID,
        401 | 403 => reason::NOT_AUTHORIZED,
        404 => reason::TOPIC_INVALID,
        409 | 413 | 429 | 503 | 507 => reason::QUOTA,
        s if s >= 500 => reason::IMPLEMENTATION,
        _ => reason::UNSPECIFIED,
    }
}
