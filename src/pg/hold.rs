//! A node's hold on its PostgreSQL database: one node serves a database
//! at a time, as one process serves a redb file.
//!
//! **Why.** A node keeps caches of the database (the directory of users
//! and devices, the catalog of channels and alerts, presence, alert
//! states) and work of its own in it (the digest log it replays at
//! start). Until those are shared across nodes (docs/scale-out.md, (c)),
//! a second node on the same database would answer from stale caches (a
//! token revoked on one still accepted by the other) and replay the
//! other's digest log (a reading fanned out twice). So a second node is
//! refused at start, as a second process on a redb file is.
//!
//! **How.** A session-level advisory lock ([`KEY`]) on a session of its
//! own, held for the node's life. PostgreSQL releases it when that
//! session ends, so a node killed with `SIGKILL` (or its machine) frees
//! the database for the next start, with no lease to expire. If the
//! session is lost while the node runs (PostgreSQL restarted, a
//! failover, the network), writes are refused with `503` until the lock
//! is taken again on a new session; if another node took it meanwhile,
//! they stay refused and the log says so, so two nodes never write side
//! by side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_postgres::Client;

use super::Target;
use crate::store::StoreError;

/// The advisory lock's key: "OVRLNODE" (migrations take "OVRLORD1").
pub const KEY: i64 = 0x4f56_524c_4e4f_4445;

/// How often a held session is asked whether it is alive, besides its
/// connection ending: a peer that vanished without closing the socket
/// (a machine off, a cable pulled) is found within this and the
/// statement's own timeout.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Whether this node holds its database now.
#[derive(Default)]
pub struct Hold {
    /// The lock was taken once: writes need it from then on.
    taken: AtomicBool,
    /// The session holding it is alive.
    held: AtomicBool,
}

impl Hold {
    /// Writes may go ahead: never held (a tool, not a node), or held now.
    pub fn allows_writes(&self) -> Result<(), StoreError> {
        if !self.taken.load(Ordering::Acquire) || self.held.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "this node's hold on the database was lost (PostgreSQL restarted or failed over); writes wait until it is taken again".into(),
            ))
        }
    }
}

/// Try the lock on a new session; the session and its end signal when
/// it was taken, `Ok(None)` when another session holds it.
async fn try_take(target: &Target) -> Result<Option<(Client, oneshot::Receiver<()>)>, String> {
    let (client, ended) = target.connect_watched().await?;
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&KEY])
        .await
        .map_err(|e| target.error(&e))?;
    Ok(row.get::<_, bool>(0).then_some((client, ended)))
}

/// Take the lock for this node, waiting at most `wait` for one that a
/// node just stopped or killed still holds (PostgreSQL frees it when it
/// notices that session's end, a moment later), then keep it on `rt`.
/// [`StoreError::InUse`] when another node holds it.
pub fn take(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    hold: &Arc<Hold>,
    wait: Duration,
) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    let (client, ended) = rt.block_on(async {
        loop {
            match tokio::time::timeout_at(deadline, try_take(target)).await {
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "PostgreSQL at {}: no session within {} ms",
                        target.shown,
                        wait.as_millis()
                    )))
                }
                Ok(Err(e)) => return Err(StoreError::Unavailable(e)),
                Ok(Ok(Some(got))) => return Ok(got),
                Ok(Ok(None)) if tokio::time::Instant::now() + PAUSE >= deadline => {
                    return Err(StoreError::InUse)
                }
                Ok(Ok(None)) => tokio::time::sleep(PAUSE).await,
            }
        }
    })?;
    hold.taken.store(true, Ordering::Release);
    hold.held.store(true, Ordering::Release);
    rt.spawn(keep(target.clone(), client, ended, hold.clone()));
    Ok(())
}

/// Between two tries of a lock another session holds.
const PAUSE: Duration = Duration::from_millis(100);

/// Keep the lock: watch its session; when it ends, refuse writes and take
/// the lock again on a new one, as often as it takes. Ends with the
/// store's runtime (the session closes, PostgreSQL frees the lock).
async fn keep(target: Target, client: Client, ended: oneshot::Receiver<()>, hold: Arc<Hold>) {
    let (mut client, mut ended) = (client, ended);
    loop {
        watch(&client, &mut ended).await;
        hold.held.store(false, Ordering::Release);
        drop(client);
        tracing::warn!(
            database = %target.shown,
            "lost the session holding this node's lock on the database; writes are refused until it is taken again"
        );
        let mut pause = PAUSE;
        let mut told = false;
        (client, ended) = loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            match try_take(&target).await {
                Ok(Some(got)) => break got,
                Ok(None) if !told => {
                    told = true;
                    tracing::error!(
                        database = %target.shown,
                        "another node took the database while this one was cut off; this node refuses writes: stop one of them"
                    );
                }
                Ok(None) | Err(_) => {}
            }
        };
        hold.held.store(true, Ordering::Release);
        tracing::info!(database = %target.shown, "holds the database again; writes resume");
    }
}

/// Return when the session ends or stops answering.
async fn watch(client: &Client, ended: &mut oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut *ended => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {
                let probe = tokio::time::timeout(PROBE_EVERY, client.simple_query("SELECT 1"));
                if !matches!(probe.await, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
