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
//! refused at start, as a second process on a redb file is, or, with
//! `[store] node_listen`, follows the serving node and forwards to it
//! (`crate::server::forward`).
//!
//! **How.** A session-level advisory lock ([`KEY`]) on a session of its
//! own, held for the node's life. PostgreSQL releases it when that
//! session ends, so a node killed with `SIGKILL` (or its machine) frees
//! the database for the next start, with no lease to expire.
//!
//! The lock alone does not fence: a node whose lock session died
//! silently (a primary gone without closing the socket, then a failover:
//! locks are not replicated) would keep writing through its pool until
//! it noticed, and another node could have taken the lock meanwhile. So
//! the node that takes the lock also **claims** the database: it bumps
//! `node_hold.epoch` (migration 3) and every write transaction of the
//! node begins by checking, under a share lock on that row, that the
//! epoch is still its own (`PgKv::begin_write`). A node that claims after
//! it waits for the previous one's writes in flight, and from then on
//! those fail (`22012`, answered `503`). When the lock session is lost,
//! writes are refused at once, and the lock is taken again on a new
//! session; if the epoch moved meanwhile (another node, or an offline
//! command, held the database in between and may have changed what this
//! node caches), this node never writes again until it is restarted, and
//! the log says so; the epoch is read even when another node holds the
//! lock by then (one that took over), and a node with `node_listen` then
//! stops by itself.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
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

/// What a write is told once another node has claimed the database.
pub const LOST: &str = "another node claimed the database while this one was cut off; this node refuses writes until it is restarted";

/// Whether this node holds its database now.
#[derive(Default)]
pub struct Hold {
    /// The lock was taken once: writes need it from then on.
    taken: AtomicBool,
    /// The session holding it is alive.
    held: AtomicBool,
    /// Another node claimed the database since: never again.
    lost: AtomicBool,
    /// This node's claim (`node_hold.epoch`).
    epoch: AtomicI64,
}

impl Hold {
    /// Writes may go ahead: never held (a tool, not a node), or held now.
    pub fn allows_writes(&self) -> Result<(), StoreError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(LOST.into()));
        }
        if !self.taken.load(Ordering::Acquire) || self.held.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "this node's hold on the database was lost (PostgreSQL restarted or failed over); writes wait until it is taken again".into(),
            ))
        }
    }

    /// The epoch a write must find, for a node (`None` for a tool).
    pub fn fence(&self) -> Option<i64> {
        self.taken
            .load(Ordering::Acquire)
            .then(|| self.epoch.load(Ordering::Acquire))
    }

    /// Whether another node claimed the database since this one did.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Another node claimed the database: refuse writes for good.
    pub fn lost_for_good(&self) {
        if !self.lost.swap(true, Ordering::AcqRel) {
            tracing::error!("{LOST}");
        }
    }
}

/// Where the serving node takes forwarded connections and their key, as
/// it published them (`PgKv::advertise`); empty before it has.
pub async fn serving(target: &Target, client: &Client) -> Result<(String, String), String> {
    let row = client
        .query_one(
            "SELECT forward_to, forward_key FROM node_hold WHERE id = 1",
            &[],
        )
        .await
        .map_err(|e| target.error(&e))?;
    Ok((row.get(0), row.get(1)))
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

/// The lock's session, taken and not yet claimed.
pub struct Taken {
    client: Client,
    ended: oneshot::Receiver<()>,
}

/// Take the lock for this node, waiting at most `wait` for one that a
/// node just stopped or killed still holds (PostgreSQL frees it when it
/// notices that session's end, a moment later).
/// [`StoreError::InUse`] when another node holds it.
pub fn take(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    wait: Duration,
) -> Result<Taken, StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    let (client, ended) = rt.block_on(async {
        // Whether another session was seen holding it: then running out
        // of time means it is still held.
        let mut held = false;
        loop {
            match tokio::time::timeout_at(deadline, try_take(target)).await {
                Err(_) if held => return Err(StoreError::InUse),
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
                Ok(Ok(None)) => {
                    held = true;
                    tokio::time::sleep(PAUSE).await
                }
            }
        }
    })?;
    Ok(Taken { client, ended })
}

/// Bump the claim on the lock's session; the new epoch.
async fn bump(target: &Target, client: &Client) -> Result<i64, String> {
    let row = client
        .query_one(
            "UPDATE node_hold SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
            &[],
        )
        .await
        .map_err(|e| target.error(&e))?;
    Ok(row.get(0))
}

/// Claim the database with the lock `taken` (the schema is this
/// binary's), then keep both on `rt` for the node's life.
pub fn claim(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    hold: &Arc<Hold>,
    taken: Taken,
) -> Result<(), StoreError> {
    let epoch = rt
        .block_on(bump(target, &taken.client))
        .map_err(StoreError::Unavailable)?;
    hold.epoch.store(epoch, Ordering::Release);
    hold.taken.store(true, Ordering::Release);
    hold.held.store(true, Ordering::Release);
    rt.spawn(keep(
        target.clone(),
        taken.client,
        taken.ended,
        hold.clone(),
    ));
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
        (client, ended) = loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            match retake(&target, &hold).await {
                Retaken::Yes(got) => break got,
                Retaken::NotYet => {}
                Retaken::Claimed => {
                    hold.lost_for_good();
                    // Keep nothing: let the other node (or a restart of
                    // this one) have the lock.
                    return;
                }
            }
        };
        hold.held.store(true, Ordering::Release);
        tracing::info!(database = %target.shown, "holds the database again; writes resume");
    }
}

/// What one try to take the lock again gave.
enum Retaken {
    /// Taken and claimed again: the session.
    Yes((Client, oneshot::Receiver<()>)),
    /// Not now (no session, the lock busy, a statement failed).
    NotYet,
    /// Someone claimed the database in between.
    Claimed,
}

/// Take the lock again and, if the claim is still this node's, claim
/// again; if anyone claimed the database in between (whether or not it
/// still holds the lock: a node that took over holds it), what this node
/// caches may be stale, and it must not write again.
async fn retake(target: &Target, hold: &Hold) -> Retaken {
    let Ok((client, ended)) = target.connect_watched().await else {
        return Retaken::NotYet;
    };
    let mine = hold.epoch.load(Ordering::Acquire);
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock($1), (SELECT epoch FROM node_hold WHERE id = 1)",
            &[&KEY],
        )
        .await;
    let Ok(row) = row else {
        return Retaken::NotYet;
    };
    let (took, epoch): (bool, i64) = (row.get(0), row.get(1));
    if epoch != mine {
        // (If the lock was taken here, dropping the session frees it.)
        return Retaken::Claimed;
    }
    if !took {
        return Retaken::NotYet;
    }
    match bump(target, &client).await {
        Ok(next) => {
            hold.epoch.store(next, Ordering::Release);
            Retaken::Yes((client, ended))
        }
        Err(_) => Retaken::NotYet,
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
