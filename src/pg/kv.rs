//! redb's table interface on PostgreSQL: the same tables, keys, values
//! and order, in transactions that behave as redb's do.
//!
//! This is the PostgreSQL half of the storage boundary as
//! docs/scale-out.md (a) now draws it: every feature keeps its one
//! storage function, written against a table's `get`, `insert`,
//! `remove`, `range`, ..., and that function runs unchanged on either
//! store. Here a table is its image of schema version 1 ([`super::mirror`]:
//! the key's parts are the primary key, the value's parts the other
//! columns), and each call is one statement.
//!
//! **Why the feature code stays correct on PostgreSQL.** redb runs one
//! write transaction at a time, so every storage function was written
//! for a serial world: read a counter, check a row, write both. A write
//! transaction here is `SERIALIZABLE`: PostgreSQL promises that committed
//! transactions have the effect of some serial order, and aborts one that
//! cannot (`40001`, or `40P01` for a deadlock). [`PgKv::write`] runs the
//! whole transaction again on that error, a bounded number of times. So a
//! function that was right under redb's single writer is right with many
//! nodes writing at once, for what it reads through the transaction: the
//! counter is never lost, the check never stale (a decision taken from a
//! node's in-memory cache is as fresh as the cache). A read transaction
//! is `REPEATABLE READ READ ONLY`: one snapshot of committed data, as a
//! redb read transaction is, though not part of the writers' serial
//! order; a read that decides a write reads again in the write.
//!
//! **Order.** redb orders integer keys numerically, strings and bytes by
//! their bytes, and tuples part by part. PostgreSQL's row comparison
//! `(a, b) > ($1, $2)` is part by part too, `bigint` is numeric (a `u64`
//! over 2^63-1 is refused when the cell is made, never wrapped), `bytea`
//! is by bytes, and migration 2 gives every `text` column the `"C"`
//! collation, which is by bytes. So a range here returns exactly the rows
//! redb would, in the same order (`tests/pg_kv.rs` checks it against redb
//! with random operations).
//!
//! **Bounds.** A session is waited for, and a new one started, within
//! the pool's wait; each statement runs under `statement_timeout` (the
//! wait, at least 1 s), except `COMMIT` (see [`PgTxn::commit`]); a range
//! is read in pages (16 rows first, then growing to 2,048), never whole.
//! `BEGIN` is sent with a transaction's first statement, and a rollback
//! is not waited for.
//!
//! **Errors.** A serialization failure or deadlock is
//! [`StoreError::Retry`] (the session is kept); a lost or refused
//! connection, a server shutting down, a read-only server or a `BEGIN`
//! refused (a standby after a failover) is [`StoreError::Unavailable`],
//! and that session is closed, so the next one is made afresh (a
//! multi-host string with `target_session_attrs=read-write` then finds
//! the new primary); a full disk is [`StoreError::DiskFull`]. After an
//! error a transaction only repeats it: PostgreSQL has aborted it.
//!
//! Blocking, like redb: every method waits on this store's own runtime
//! and must be called from a thread that is not running async tasks (the
//! writer thread, the blocking pool).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redb::{Key, TableDefinition, TableHandle, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::mirror::{spec_of, Cell, Cols, Kind};
use super::Target;
use crate::store::StoreError;

/// A value or key read from PostgreSQL, held as the bytes redb would
/// hold: `value()` reads it as redb's `AccessGuard::value` does.
pub struct Owned<V: Value + 'static> {
    bytes: Vec<u8>,
    kind: PhantomData<fn() -> V>,
}

impl<V: Value + 'static> Owned<V> {
    /// A value held as the bytes redb would hold (for a cache of rows
    /// read earlier in the same transaction: `store::chunks`).
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Self {
        Owned::new(bytes)
    }

    fn new(bytes: Vec<u8>) -> Self {
        Owned {
            bytes,
            kind: PhantomData,
        }
    }

    /// The value, as redb hands it out.
    pub fn value(&self) -> V::SelfType<'_> {
        V::from_bytes(&self.bytes)
    }
}

impl<V: Value + 'static> std::fmt::Debug for Owned<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.value())
    }
}

/// A row: its key and its value.
pub type KvRow<K, V> = (Owned<K>, Owned<V>);

/// One pooled session and the statements prepared on it.
struct Conn {
    client: Client,
    prepared: HashMap<String, Statement>,
}

/// A PostgreSQL store's sessions: a bounded pool on a runtime of its own.
///
/// Not deadpool: every caller is a blocking thread, and a pool they wait
/// on with a `Condvar` and a deadline is a few lines; an async pool would
/// need a runtime hop for each checkout as well.
pub struct PgKv {
    target: Target,
    /// Taken out only in `Drop` (see there).
    rt: std::mem::ManuallyDrop<tokio::runtime::Runtime>,
    pool: Arc<Sessions>,
    max: usize,
    wait: Duration,
    /// How many times [`PgKv::write`] runs a transaction that could not
    /// be serialized before it answers [`StoreError::Retry`].
    pub attempts: u32,
    /// This node's hold on the database ([`super::hold`]).
    hold: Arc<super::hold::Hold>,
}

/// The pool's state, shared with the tasks that roll a transaction back
/// without the caller waiting (they hold this, not the `PgKv`).
struct Sessions {
    pool: Mutex<Pool>,
    freed: Condvar,
}

impl Sessions {
    /// Give a session back; one that failed is closed instead.
    fn checkin(&self, conn: Conn, healthy: bool) {
        let mut pool = self.pool.lock();
        if healthy && !conn.client.is_closed() {
            pool.idle.push(conn);
        } else {
            pool.open -= 1;
        }
        drop(pool);
        self.freed.notify_one();
    }
}

struct Pool {
    idle: Vec<Conn>,
    open: usize,
}

/// How many times a write transaction is tried when PostgreSQL cannot
/// serialize it.
pub const ATTEMPTS: u32 = 20;

impl PgKv {
    /// A pool of at most `max` sessions to `target`; a caller waits at
    /// most `wait` for one (and each statement may run that long). No
    /// session is opened yet: [`PgKv::migrate`] is the first.
    pub fn new(target: Target, max: usize, wait: Duration) -> Result<PgKv, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("overlord-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the PostgreSQL runtime: {e}")))?;
        Ok(PgKv {
            target,
            rt: std::mem::ManuallyDrop::new(rt),
            pool: Arc::new(Sessions {
                pool: Mutex::new(Pool {
                    idle: Vec::new(),
                    open: 0,
                }),
                freed: Condvar::new(),
            }),
            max: max.max(1),
            wait,
            attempts: ATTEMPTS,
            hold: Arc::default(),
        })
    }

    /// The database this store is.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Take this node's hold on the database and keep it ([`super::hold`]):
    /// [`StoreError::InUse`] while another node has it. From then on a
    /// write transaction begins only while the hold is kept. A tool that
    /// only reads, or copies into a database no node serves, does not
    /// take it.
    pub fn hold(&self) -> Result<(), StoreError> {
        // A node just stopped or killed frees it a moment later, when
        // PostgreSQL sees its session end; a few seconds cover that.
        let taken = super::hold::take(
            &self.rt,
            &self.target,
            self.wait.min(Duration::from_secs(3)),
        )?;
        // The schema (with the claim's table) before the claim.
        self.migrate()?;
        super::hold::claim(&self.rt, &self.target, &self.hold, taken)
    }

    /// Whether another node claimed the database after this one did
    /// (this node then refuses writes until it is restarted).
    pub fn claim_lost(&self) -> bool {
        self.hold.is_lost()
    }

    /// Publish, under this node's claim, where it takes the connections
    /// other nodes forward to it and the key they open with
    /// (`crate::server::forward`); the others read them from `node_hold`.
    /// A write transaction as any other: it begins by checking the claim.
    pub fn advertise(self: &Arc<Self>, forward_to: &str, key: &str) -> Result<(), StoreError> {
        if self.hold.fence().is_none() {
            return Err(StoreError::Io("only a serving node advertises".into()));
        }
        self.write(|txn| {
            txn.execute(
                "UPDATE node_hold SET forward_to = $1, forward_key = $2 WHERE id = 1",
                &[&forward_to, &key],
            )
        })?;
        Ok(())
    }

    /// Bring the schema to this binary's version (creating it in an
    /// empty database); the version it had.
    pub fn migrate(&self) -> Result<i32, StoreError> {
        let mut conn = self.checkout()?;
        let target = &self.target;
        let res = self.rt.block_on(async {
            let tx = conn
                .client
                .transaction()
                .await
                .map_err(|e| target.error(&e))?;
            // A migration may rewrite a large table: not bounded by the
            // sessions' statement timeout.
            tx.batch_execute("SET LOCAL statement_timeout = 0")
                .await
                .map_err(|e| target.error(&e))?;
            let had = super::migrate::migrate(target, &tx).await?;
            tx.commit().await.map_err(|e| target.error(&e))?;
            Ok::<_, String>(had)
        });
        match res {
            Ok(had) => {
                self.checkin(conn, true);
                Ok(had)
            }
            Err(e) => {
                self.checkin(conn, false);
                Err(StoreError::Io(e))
            }
        }
    }

    /// Run `f` in a write transaction and commit it; when PostgreSQL
    /// cannot serialize it (or finds a deadlock), roll back and run `f`
    /// again, up to [`PgKv::attempts`] times, with a short random pause
    /// that grows. `f` must therefore only change things through the
    /// transaction (or undo its own other effects when it is run again).
    ///
    /// The transaction itself remembers a serialization failure, so a
    /// retry happens even when `f` turned that error into one of its own
    /// (or dropped it): the transaction is aborted either way.
    pub fn write<T, E: From<StoreError>>(
        self: &Arc<Self>,
        mut f: impl FnMut(&PgTxn) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut pause = Duration::from_millis(1);
        let mut tried = 0;
        loop {
            tried += 1;
            let txn = self.begin_write()?;
            let out = f(&txn);
            let failed = txn.failed.borrow().clone();
            let why = match (out, failed) {
                (_, Some(StoreError::Retry(why))) => {
                    // Rolled back, and its session back in the pool,
                    // before the pause.
                    drop(txn);
                    why
                }
                (Ok(v), None) => match txn.commit() {
                    Ok(()) => return Ok(v),
                    Err(StoreError::Retry(why)) => why,
                    Err(e) => return Err(e.into()),
                },
                // An error `f` did not pass on still failed the transaction.
                (Ok(_), Some(e)) => return Err(e.into()),
                (Err(e), _) => return Err(e),
            };
            if tried >= self.attempts {
                return Err(StoreError::Retry(why).into());
            }
            tracing::debug!(attempt = tried, reason = %why, "transaction retried");
            std::thread::sleep(jitter(pause));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Begin a `SERIALIZABLE` write transaction (see [`PgKv::write`] for
    /// the retry it needs).
    pub fn begin_write(self: &Arc<Self>) -> Result<PgTxn, StoreError> {
        self.hold.allows_writes()?;
        let sql = match self.hold.fence() {
            // A node's write checks, first, that its claim is still the
            // database's ([`super::hold`]); it fails with 22012 if not.
            Some(epoch) => format!(
                "BEGIN ISOLATION LEVEL SERIALIZABLE; \
                 SELECT 1 / (epoch = {epoch})::int FROM node_hold WHERE id = 1 FOR SHARE"
            )
            .into(),
            None => "BEGIN ISOLATION LEVEL SERIALIZABLE".into(),
        };
        self.begin(sql, true)
    }

    /// Begin a read transaction: one snapshot of committed data.
    pub fn begin_read(self: &Arc<Self>) -> Result<PgTxn, StoreError> {
        self.begin(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into(),
            false,
        )
    }

    /// A transaction on a pooled session. Its `BEGIN` is sent with its
    /// first statement, in one round trip (tokio-postgres sends requests
    /// in order without waiting for each answer).
    fn begin(
        self: &Arc<Self>,
        sql: std::borrow::Cow<'static, str>,
        write: bool,
    ) -> Result<PgTxn, StoreError> {
        let conn = self.checkout()?;
        Ok(PgTxn {
            kv: self.clone(),
            conn: RefCell::new(Some(conn)),
            failed: RefCell::new(None),
            begin: RefCell::new(Some(sql)),
            write,
        })
    }

    /// What a failed `BEGIN` means: a session that cannot begin (a
    /// standby refuses `SERIALIZABLE` with 0A000) is unavailable, not a
    /// bug; it is closed, and the next is made afresh (and may reach the
    /// new primary).
    fn begin_failed(&self, e: &tokio_postgres::Error) -> StoreError {
        if e.code().is_some_and(|c| c.code() == "22012") {
            // The claim check's division by zero: the database's claim is
            // not the one this write began with (another node claimed it;
            // the keeper finds out and says so, `super::hold`).
            return StoreError::Unavailable(
                "this node's claim on the database is not the current one; writes are refused"
                    .into(),
            );
        }
        match self.classify(e) {
            StoreError::Io(why) => StoreError::Unavailable(why),
            other => other,
        }
    }

    /// A session from the pool, a new one if there is room, else wait
    /// for one at most [`PgKv::wait`].
    fn checkout(&self) -> Result<Conn, StoreError> {
        let deadline = Instant::now() + self.wait;
        let mut pool = self.pool.pool.lock();
        loop {
            while let Some(conn) = pool.idle.pop() {
                if !conn.client.is_closed() {
                    return Ok(conn);
                }
                pool.open -= 1;
            }
            if pool.open < self.max {
                pool.open += 1;
                drop(pool);
                return self.connect().inspect_err(|_| {
                    self.pool.pool.lock().open -= 1;
                    self.pool.freed.notify_one();
                });
            }
            if self.pool.freed.wait_until(&mut pool, deadline).timed_out() {
                return Err(StoreError::Unavailable(format!(
                    "no PostgreSQL session free within {} ms ({} open)",
                    self.wait.as_millis(),
                    self.max
                )));
            }
        }
    }

    fn connect(&self) -> Result<Conn, StoreError> {
        let target = &self.target;
        let wait = self.wait;
        let client = self
            .rt
            .block_on(async {
                // The whole start-up within the caller's wait for a
                // session (the string's own `connect_timeout` may be
                // longer).
                let client = tokio::time::timeout(wait, target.connect())
                    .await
                    .map_err(|_| {
                        format!(
                            "PostgreSQL at {}: no session within {} ms",
                            target.shown,
                            wait.as_millis()
                        )
                    })??;
                client
                    .batch_execute(&format!(
                        "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
                        // At least a second: 0 would mean none.
                        wait.max(Duration::from_secs(1)).as_millis(),
                        // A node that stalls inside a transaction does not
                        // hold its locks for ever.
                        (wait.max(Duration::from_secs(1)) * 4).as_millis()
                    ))
                    .await
                    .map_err(|e| target.error(&e))?;
                Ok::<_, String>(client)
            })
            .map_err(StoreError::Unavailable)?;
        Ok(Conn {
            client,
            prepared: HashMap::new(),
        })
    }

    /// Give a session back; one that failed is closed instead.
    fn checkin(&self, conn: Conn, healthy: bool) {
        self.pool.checkin(conn, healthy);
    }

    /// What an error from PostgreSQL means to a caller.
    fn classify(&self, e: &tokio_postgres::Error) -> StoreError {
        let text = self.target.error(e);
        let Some(code) = e.code() else {
            // No SQLSTATE: the connection (closed, reset, timed out), or
            // a value the driver could not send, which is ours to fix,
            // not the client's to retry.
            let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
            return if e.is_closed() || io {
                StoreError::Unavailable(text)
            } else {
                StoreError::Io(text)
            };
        };
        match code.code() {
            // serialization_failure, deadlock_detected
            "40001" | "40P01" => StoreError::Retry(text),
            // disk_full
            "53100" => StoreError::DiskFull,
            // read_only_sql_transaction (a standby, or a primary fenced
            // read-only), admin_shutdown, crash_shutdown,
            // cannot_connect_now, query_canceled (the statement timeout),
            // lock_not_available, insufficient_resources,
            // too_many_connections, out_of_memory
            "25006" | "57P01" | "57P02" | "57P03" | "57014" | "55P03" | "53000" | "53300"
            | "53200" => StoreError::Unavailable(text),
            c if c.starts_with("08") => StoreError::Unavailable(text),
            _ => StoreError::Io(text),
        }
    }
}

impl Drop for PgKv {
    fn drop(&mut self) {
        // The last handle may go on a thread that runs async tasks (the
        // sender's): dropping a runtime there panics, shutting it down in
        // the background does not. Its sessions close with it.
        self.pool.pool.lock().idle.clear();
        // SAFETY: `rt` is not used again; this is the only place it is taken.
        let rt = unsafe { std::mem::ManuallyDrop::take(&mut self.rt) };
        rt.shutdown_background();
    }
}

/// `d` scaled by a random factor in [0.5, 1.5): writers that collided do
/// not collide again in step.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let f = 0.5 + f64::from(u16::from_le_bytes(b)) / 65536.0;
    d.mul_f64(f)
}

/// A transaction on one pooled session. Dropped without
/// [`PgTxn::commit`], it is rolled back.
pub struct PgTxn {
    kv: Arc<PgKv>,
    conn: RefCell<Option<Conn>>,
    /// The error that aborted it: every later statement answers it.
    failed: RefCell<Option<StoreError>>,
    /// Its `BEGIN`, until sent with the first statement.
    begin: RefCell<Option<std::borrow::Cow<'static, str>>>,
    write: bool,
}

impl PgTxn {
    /// Open the table of `def` (its image in PostgreSQL).
    pub fn open_table<K: Key + Cols, V: Cols>(
        &self,
        def: TableDefinition<'_, K, V>,
    ) -> Result<PgTable<'_, K, V>, StoreError> {
        let spec = spec_of(def.name()).map_err(StoreError::Io)?;
        let mut kinds = Vec::new();
        K::kinds(&mut kinds);
        let key_cols = kinds.len();
        V::kinds(&mut kinds);
        if key_cols != spec.key.len() || kinds.len() - key_cols != spec.value.len() {
            return Err(StoreError::Io(format!(
                "table '{}' does not fit its PostgreSQL image",
                spec.table
            )));
        }
        let q =
            |names: &[&str]| -> Vec<String> { names.iter().map(|n| format!("\"{n}\"")).collect() };
        Ok(PgTable {
            txn: self,
            table: format!("\"{}\"", spec.table),
            key: q(spec.key),
            value: q(spec.value),
            kinds,
            kv: PhantomData,
        })
    }

    /// Commit. For a write transaction, `Ok` means PostgreSQL has made it
    /// durable (the session runs with `synchronous_commit = on`).
    pub fn commit(self) -> Result<(), StoreError> {
        if let Some(e) = self.failed.borrow().clone() {
            // Rolled back by `Drop`, which also decides whether the
            // session is reused.
            return Err(e);
        }
        let conn = self.conn.borrow_mut().take();
        let Some(conn) = conn else {
            return Err(StoreError::Io("transaction already finished".into()));
        };
        if self.begin.borrow().is_some() {
            // Nothing was sent: nothing to commit.
            self.kv.checkin(conn, true);
            return Ok(());
        }
        // Not under the statement timeout: cancelling a commit that waits
        // for a synchronous standby would report success for a
        // transaction the standby may not have (PostgreSQL commits it
        // locally anyway). A server that vanished is still noticed
        // (`tcp_user_timeout`).
        let commit = conn
            .client
            .batch_execute("SET LOCAL statement_timeout = 0; COMMIT");
        match self.kv.rt.block_on(commit) {
            Ok(()) => {
                self.kv.checkin(conn, true);
                Ok(())
            }
            Err(e) => {
                let err = self.kv.classify(&e);
                // A commit whose answer was lost may have happened: the
                // caller hears "unavailable", never "retry", so a write
                // that did commit is not made twice by us.
                let err = match err {
                    StoreError::Retry(_) => err,
                    _ if e.code().is_none() => StoreError::Unavailable(format!(
                        "{} (the commit's outcome is unknown)",
                        self.kv.target.error(&e)
                    )),
                    other => other,
                };
                // A serialization failure leaves the session as good as
                // before; anything else closes it.
                let reuse = matches!(err, StoreError::Retry(_));
                self.kv.checkin(conn, reuse);
                Err(err)
            }
        }
    }

    /// Refuse a change in a read transaction (redb's read-only tables
    /// have no such methods; PostgreSQL would answer "read-only", which
    /// means a standby elsewhere).
    fn writable(&self) -> Result<(), StoreError> {
        if self.write {
            Ok(())
        } else {
            Err(StoreError::Io("a change in a read transaction".into()))
        }
    }

    /// Run `run` with this transaction's session and `sql` prepared on it
    /// (once per session); an error fails the transaction.
    fn with_statement<T>(
        &self,
        sql: &str,
        run: impl AsyncFnOnce(&Client, Statement) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        if let Some(e) = &*self.failed.borrow() {
            return Err(e.clone());
        }
        let mut slot = self.conn.borrow_mut();
        let Some(conn) = slot.as_mut() else {
            return Err(StoreError::Io("transaction already finished".into()));
        };
        let begin = self.begin.borrow_mut().take();
        let res = self.kv.rt.block_on(async {
            let client = &conn.client;
            let began = async {
                match begin {
                    Some(b) => client.batch_execute(&b).await.map_err(|e| (true, e)),
                    None => Ok(()),
                }
            };
            let work = async {
                let stmt = match conn.prepared.get(sql) {
                    Some(s) => s.clone(),
                    None => client.prepare(sql).await.map_err(|e| (false, e))?,
                };
                let out = run(client, stmt.clone()).await.map_err(|e| (false, e))?;
                Ok((stmt, out))
            };
            // `BEGIN` is polled first, so sent first.
            let (_, (stmt, out)) = futures_util::future::try_join(began, work).await?;
            Ok::<_, (bool, tokio_postgres::Error)>((stmt, out))
        });
        match res {
            Ok((stmt, out)) => {
                conn.prepared.entry(sql.to_string()).or_insert(stmt);
                Ok(out)
            }
            Err((at_begin, e)) => {
                let err = if at_begin {
                    self.kv.begin_failed(&e)
                } else {
                    self.kv.classify(&e)
                };
                *self.failed.borrow_mut() = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Run `sql` with `params`; the rows. (Also for the few places that
    /// keep something outside redb's tables: `pg::blobs`.)
    pub(crate) fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.with_statement(sql, async |client, stmt| client.query(&stmt, params).await)
    }

    /// Run a statement that changes rows; how many it changed. Refused
    /// in a read transaction.
    pub(crate) fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.writable()?;
        self.with_statement(sql, async |client, stmt| {
            client.execute(&stmt, params).await
        })
    }

    /// Run `sql` once for each parameter list, pipelined (sent without
    /// waiting for each answer); how many rows they changed in all.
    fn execute_many(&self, sql: &str, params: &[Vec<Cell>]) -> Result<u64, StoreError> {
        if params.is_empty() {
            return Ok(0);
        }
        self.with_statement(sql, async |client, stmt| {
            let runs = params.iter().map(|p| {
                let refs = refs(p);
                let stmt = &stmt;
                async move { client.execute(stmt, &refs).await }
            });
            let done = futures_util::future::try_join_all(runs).await?;
            Ok(done.iter().sum())
        })
    }
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.get_mut().take() else {
            return;
        };
        let sessions = self.kv.pool.clone();
        if matches!(&*self.failed.borrow(), Some(StoreError::Unavailable(_))) {
            // Failed for the connection's sake: closed, not reused.
            sessions.checkin(conn, false);
        } else if self.begin.borrow().is_some() {
            // Nothing was sent.
            sessions.checkin(conn, true);
        } else {
            // Rolled back (a read, a failed transaction, one given up)
            // without the caller waiting for the answer; the session
            // goes back to the pool when it comes, or is closed if the
            // rollback fails.
            self.kv.rt.spawn(async move {
                let ok = conn.client.batch_execute("ROLLBACK").await.is_ok();
                sessions.checkin(conn, ok);
            });
        }
    }
}

/// Rows of cells as one array per column (the first `n` columns).
fn columns(rows: &[Vec<Cell>], n: usize) -> Vec<Vec<Cell>> {
    (0..n)
        .map(|c| rows.iter().map(|r| r[c].clone()).collect())
        .collect()
}

/// Each column array as a statement parameter.
fn refs_of(cols: &[Vec<Cell>]) -> Vec<&(dyn ToSql + Sync)> {
    cols.iter().map(|c| c as &(dyn ToSql + Sync)).collect()
}

fn refs(cells: &[Cell]) -> Vec<&(dyn ToSql + Sync)> {
    cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect()
}

/// A table opened in a [`PgTxn`]: redb's table methods, each one
/// statement (a range, one per page).
pub struct PgTable<'t, K, V> {
    txn: &'t PgTxn,
    table: String,
    key: Vec<String>,
    value: Vec<String>,
    /// The key's kinds, then the value's.
    kinds: Vec<Kind>,
    kv: PhantomData<fn() -> (K, V)>,
}

/// A chunk's key: device, sensor, minute, part (`store::parts::PartKey`).
type ChunkKey = (u32, u32, u32, u16);

impl PgTable<'_, ChunkKey, &'static [u8]> {
    /// For each series `(device, sensor, lo, hi)` (minutes), in one
    /// statement: its chunks with a minute in `lo..=hi`, the last one
    /// before `lo`, the first one after `hi`, and its last one; each row
    /// as (index of its series, key, bytes), possibly twice.
    pub fn series_windows(
        &self,
        series: &[(u32, u32, u32, u32)],
    ) -> Result<Vec<(usize, ChunkKey, Vec<u8>)>, StoreError> {
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let col = |f: fn(&(u32, u32, u32, u32)) -> u32| -> Vec<i64> {
            series.iter().map(|s| i64::from(f(s))).collect()
        };
        let (dev, code, lo, hi) = (col(|s| s.0), col(|s| s.1), col(|s| s.2), col(|s| s.3));
        let t = &self.table;
        let this = "device = s.dev AND sensor = s.code";
        let sql = format!(
            "SELECT s.i, r.minute, r.part, r.data \
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) \
               WITH ORDINALITY AS s(dev, code, lo, hi, i) \
             CROSS JOIN LATERAL ( \
               (SELECT minute, part, data FROM {t} WHERE {this} AND minute >= s.lo AND minute <= s.hi) \
               UNION ALL (SELECT minute, part, data FROM {t} WHERE {this} AND minute < s.lo \
                 ORDER BY minute DESC, part DESC LIMIT 1) \
               UNION ALL (SELECT minute, part, data FROM {t} WHERE {this} AND minute > s.hi \
                 ORDER BY minute, part LIMIT 1) \
               UNION ALL (SELECT minute, part, data FROM {t} WHERE {this} \
                 ORDER BY minute DESC, part DESC LIMIT 1) \
             ) r"
        );
        let rows = self.txn.query(&sql, &[&dev, &code, &lo, &hi])?;
        rows.iter()
            .map(|r| {
                let i: i64 = r.try_get(0).map_err(|e| self.txn.kv.classify(&e))?;
                let m: i64 = r.try_get(1).map_err(|e| self.txn.kv.classify(&e))?;
                let p: i32 = r.try_get(2).map_err(|e| self.txn.kv.classify(&e))?;
                let data: Vec<u8> = r.try_get(3).map_err(|e| self.txn.kv.classify(&e))?;
                let s = &series[(i - 1) as usize];
                let key = (
                    s.0,
                    s.1,
                    u32::try_from(m).map_err(|_| StoreError::Corrupt(format!("minute {m}")))?,
                    u16::try_from(p).map_err(|_| StoreError::Corrupt(format!("part {p}")))?,
                );
                Ok(((i - 1) as usize, key, data))
            })
            .collect()
    }
}

/// `"a", "b"` for a list of quoted names.
fn list(names: &[String]) -> String {
    names.join(", ")
}

/// `(a, b)` (or `a` for one): a key as a row value.
fn tuple(names: &[String]) -> String {
    if names.len() == 1 {
        names[0].clone()
    } else {
        format!("({})", list(names))
    }
}

/// `($from, ..)`, numbered from `from`, `n` of them.
fn params_from(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("${i}")).collect()
}

impl<K, V> Clone for PgTable<'_, K, V> {
    fn clone(&self) -> Self {
        PgTable {
            txn: self.txn,
            table: self.table.clone(),
            key: self.key.clone(),
            value: self.value.clone(),
            kinds: self.kinds.clone(),
            kv: PhantomData,
        }
    }
}

impl<'t, K: Key + Cols, V: Cols> PgTable<'t, K, V> {
    fn key_cells(&self, key: &K::SelfType<'_>) -> Result<Vec<Cell>, StoreError> {
        let mut cells = Vec::new();
        K::put(key, &mut cells).map_err(StoreError::Io)?;
        Ok(cells)
    }

    /// Run `sql`, which selects or returns the value columns of at most
    /// one row; that value (for a set, the empty value), if a row came.
    fn one_value(&self, sql: &str, cells: &[Cell]) -> Result<Option<Owned<V>>, StoreError> {
        let rows = self.txn.query(sql, &refs(cells))?;
        match rows.first() {
            None => Ok(None),
            Some(_) if self.value.is_empty() => Ok(Some(Owned::new(Vec::new()))),
            Some(r) => self.read_value(r, 0).map(Some),
        }
    }

    /// The cells of a key that may be stored; `None` for one no row can
    /// have (a part over `bigint`'s range, which `insert` refuses).
    fn stored_key(&self, key: &K::SelfType<'_>) -> Result<Option<Vec<Cell>>, StoreError> {
        let (cells, cut) = K::bound_cells(key).map_err(StoreError::Io)?;
        Ok(cut.is_none().then_some(cells))
    }

    /// `"a" = $1 AND "b" = $2`.
    fn key_eq(&self) -> String {
        self.key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} = ${}", i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The value's column list, or `1` for a set (no value columns).
    fn value_list(&self) -> String {
        if self.value.is_empty() {
            "1".into()
        } else {
            list(&self.value)
        }
    }

    fn read_value(&self, row: &Row, from: usize) -> Result<Owned<V>, StoreError> {
        let cells = cells(row, from, &self.kinds[self.key.len()..])?;
        let v = V::take(&cells).map_err(|e| self.bad(e))?;
        let bytes = V::as_bytes(&v).as_ref().to_vec();
        Ok(Owned::new(bytes))
    }

    fn read_key(&self, row: &Row) -> Result<Owned<K>, StoreError> {
        let cells = cells(row, 0, &self.kinds[..self.key.len()])?;
        let k = K::take(&cells).map_err(|e| self.bad(e))?;
        let bytes = K::as_bytes(&k).as_ref().to_vec();
        Ok(Owned::new(bytes))
    }

    fn bad(&self, e: String) -> StoreError {
        StoreError::Corrupt(format!("a row of {} does not read back: {e}", self.table))
    }

    /// The value at `key`.
    pub fn get<'a>(
        &self,
        key: impl std::borrow::Borrow<K::SelfType<'a>>,
    ) -> Result<Option<Owned<V>>, StoreError> {
        let Some(cells) = self.stored_key(key.borrow())? else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            self.value_list(),
            self.table,
            self.key_eq()
        );
        self.one_value(&sql, &cells)
    }

    /// The values at many keys, in their order, in one statement (the
    /// keys go as one array per column and are joined with the table).
    pub fn get_many<'a>(
        &self,
        keys: impl IntoIterator<Item = K::SelfType<'a>>,
    ) -> Result<Vec<Option<Owned<V>>>, StoreError>
    where
        K: 'a,
    {
        let mut cells = Vec::new();
        let mut slots = Vec::new();
        for k in keys {
            // A key no stored key can equal (a part past `bigint`) has no value.
            match self.stored_key(&k)? {
                Some(c) => {
                    slots.push(Some(cells.len() as i64 + 1));
                    cells.push(c);
                }
                None => slots.push(None),
            }
        }
        let mut found: HashMap<i64, Owned<V>> = HashMap::new();
        if !cells.is_empty() {
            let nk = self.key.len();
            let names: Vec<String> = (0..nk).map(|c| format!("c{c}")).collect();
            let on = self
                .key
                .iter()
                .zip(&names)
                .map(|(k, n)| format!("t.{k} = u.{n}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let vals = if self.value.is_empty() {
                "1".to_string()
            } else {
                self.value
                    .iter()
                    .map(|v| format!("t.{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let sql = format!(
                "SELECT u.i, {vals} FROM unnest({arrays}) WITH ORDINALITY AS u({names}, i) \
                 JOIN {t} AS t ON {on}",
                arrays = self.arrays(0..nk),
                names = names.join(", "),
                t = self.table,
            );
            let cols = columns(&cells, nk);
            for row in self.txn.query(&sql, &refs_of(&cols))? {
                let i: i64 = row.try_get(0).map_err(|e| self.txn.kv.classify(&e))?;
                found.insert(i, self.read_value(&row, 1)?);
            }
        }
        Ok(slots
            .into_iter()
            .map(|s| s.and_then(|i| found.remove(&i)))
            .collect())
    }

    /// Store `value` at `key`; the value that was there.
    pub fn insert<'a, 'b>(
        &mut self,
        key: impl std::borrow::Borrow<K::SelfType<'a>>,
        value: impl std::borrow::Borrow<V::SelfType<'b>>,
    ) -> Result<Option<Owned<V>>, StoreError> {
        self.txn.writable()?;
        let mut cells = self.key_cells(key.borrow())?;
        V::put(value.borrow(), &mut cells).map_err(StoreError::Io)?;
        let all: Vec<String> = self.key.iter().chain(&self.value).cloned().collect();
        let on_conflict = self.on_conflict();
        // The CTEs see one snapshot: `old` is the row before the insert.
        let sql = format!(
            "WITH old AS (SELECT {vals} FROM {t} WHERE {eq}), \
             up AS (INSERT INTO {t} ({cols}) VALUES ({ps}) ON CONFLICT ({pk}) {on_conflict}) \
             SELECT * FROM old",
            vals = self.value_list(),
            t = self.table,
            eq = self.key_eq(),
            cols = list(&all),
            ps = params_from(1, all.len()).join(", "),
            pk = list(&self.key),
        );
        self.one_value(&sql, &cells)
    }

    /// Set many rows at once (`Some`: insert or replace, `None`: remove),
    /// without reading what they held, in at most two statements
    /// whatever the count: the rows go as one array per column
    /// (`unnest`). A key given twice takes its last state. For changes a
    /// caller buffered during its transaction (`store::chunks`' round
    /// cache) and the writer's per-round bookkeeping.
    pub fn set_many<'a>(
        &self,
        rows: impl IntoIterator<Item = (K::SelfType<'a>, Option<V::SelfType<'a>>)>,
    ) -> Result<(), StoreError>
    where
        K: 'a,
        V: 'a,
    {
        self.txn.writable()?;
        let mut last: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut all: Vec<(Vec<Cell>, Option<Vec<Cell>>)> = Vec::new();
        for (k, v) in rows {
            let key = self.key_cells(&k)?;
            let value = match v {
                Some(v) => {
                    let mut cells = Vec::new();
                    V::put(&v, &mut cells).map_err(StoreError::Io)?;
                    Some(cells)
                }
                None => None,
            };
            let id = K::as_bytes(&k).as_ref().to_vec();
            match last.get(&id) {
                Some(&i) => all[i] = (key, value),
                None => {
                    last.insert(id, all.len());
                    all.push((key, value));
                }
            }
        }
        let (mut puts, mut dels) = (Vec::new(), Vec::new());
        for (mut key, value) in all {
            match value {
                Some(v) => {
                    key.extend(v);
                    puts.push(key);
                }
                None => dels.push(key),
            }
        }
        let nk = self.key.len();
        if !dels.is_empty() {
            let sql = format!(
                "DELETE FROM {t} WHERE ({k}) IN (SELECT * FROM unnest({arrays}))",
                t = self.table,
                k = list(&self.key),
                arrays = self.arrays(0..nk),
            );
            let cols = columns(&dels, nk);
            self.txn.execute(&sql, &refs_of(&cols))?;
        }
        if !puts.is_empty() {
            let all: Vec<String> = self.key.iter().chain(&self.value).cloned().collect();
            let on_conflict = self.on_conflict();
            let sql = format!(
                "INSERT INTO {t} ({cols}) SELECT * FROM unnest({arrays}) ON CONFLICT ({pk}) {on_conflict}",
                t = self.table,
                cols = list(&all),
                arrays = self.arrays(0..all.len()),
                pk = list(&self.key),
            );
            let cols = columns(&puts, all.len());
            self.txn.execute(&sql, &refs_of(&cols))?;
        }
        Ok(())
    }

    /// What an insert does to a row that is there: replace its value
    /// (a set, with no value columns: nothing).
    fn on_conflict(&self) -> String {
        if self.value.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!(
                "DO UPDATE SET {}",
                self.value
                    .iter()
                    .map(|v| format!("{v} = EXCLUDED.{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    /// `$1::bigint[], $2::text[], ...` for the columns `which` (by
    /// position: the key's, then the value's).
    fn arrays(&self, which: std::ops::Range<usize>) -> String {
        which
            .enumerate()
            .map(|(n, c)| format!("${}::{}[]", n + 1, self.kinds[c].sql_name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Remove the row at `key`; its value, if there was one.
    pub fn remove<'a>(
        &mut self,
        key: impl std::borrow::Borrow<K::SelfType<'a>>,
    ) -> Result<Option<Owned<V>>, StoreError> {
        self.txn.writable()?;
        let Some(cells) = self.stored_key(key.borrow())? else {
            return Ok(None);
        };
        let sql = format!(
            "DELETE FROM {} WHERE {} RETURNING {}",
            self.table,
            self.key_eq(),
            self.value_list()
        );
        self.one_value(&sql, &cells)
    }

    /// The rows with keys in `range`, in key order, both ways.
    pub fn range<'a, KR>(
        &self,
        range: impl RangeBounds<KR> + 'a,
    ) -> Result<PgRange<'t, K, V>, StoreError>
    where
        KR: std::borrow::Borrow<K::SelfType<'a>> + 'a,
    {
        // A part too large for `bigint` (`u64::MAX`: "to the end") is cut
        // to `i64::MAX`, and the key compared only up to it: no stored key
        // has a part that large, so every stored key is below such an
        // upper bound's prefix (or at it), and above such a lower bound's.
        let bound = |b: Bound<&KR>, upper: bool| -> Result<Bound<Vec<Cell>>, StoreError> {
            let (k, incl) = match b {
                Bound::Included(k) => (k, true),
                Bound::Excluded(k) => (k, false),
                Bound::Unbounded => return Ok(Bound::Unbounded),
            };
            let (mut cells, cut) = K::bound_cells(k.borrow()).map_err(StoreError::Io)?;
            Ok(match cut {
                None if incl => Bound::Included(cells),
                None => Bound::Excluded(cells),
                Some(n) => {
                    cells.truncate(n);
                    if upper {
                        Bound::Included(cells)
                    } else {
                        Bound::Excluded(cells)
                    }
                }
            })
        };
        Ok(PgRange {
            table: self.clone(),
            lo: bound(range.start_bound(), false)?,
            hi: bound(range.end_bound(), true)?,
            front: VecDeque::new(),
            back: VecDeque::new(),
            done: false,
            page: FIRST_PAGE,
        })
    }

    /// Every row, in key order.
    pub fn iter(&self) -> Result<PgRange<'t, K, V>, StoreError> {
        self.range::<K::SelfType<'_>>(..)
    }

    /// The row with the least key.
    pub fn first(&self) -> Result<Option<KvRow<K, V>>, StoreError> {
        self.iter()?.next().transpose()
    }

    /// The row with the greatest key.
    pub fn last(&self) -> Result<Option<KvRow<K, V>>, StoreError> {
        self.iter()?.next_back().transpose()
    }

    /// How many rows.
    pub fn len(&self) -> Result<u64, StoreError> {
        let rows = self
            .txn
            .query(&format!("SELECT count(*) FROM {}", self.table), &[])?;
        let n: i64 = rows[0].get(0);
        Ok(n as u64)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", self.table);
        let rows = self.txn.query(&sql, &[])?;
        Ok(!rows[0].get::<_, bool>(0))
    }

    /// Keep only the rows for which `keep` is true.
    pub fn retain<F>(&mut self, keep: F) -> Result<(), StoreError>
    where
        F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    {
        self.retain_in::<K::SelfType<'_>, F>(.., keep)
    }

    /// Keep only the rows in `range` for which `keep` is true.
    pub fn retain_in<'a, KR, F>(
        &mut self,
        range: impl RangeBounds<KR> + 'a,
        mut keep: F,
    ) -> Result<(), StoreError>
    where
        KR: std::borrow::Borrow<K::SelfType<'a>> + 'a,
        F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    {
        let gone = self.matching(range, |k, v| !keep(k, v))?;
        self.delete_keys(gone.iter().map(|(k, _)| k))
    }

    /// Remove and return the row with the least key.
    pub fn pop_first(&mut self) -> Result<Option<KvRow<K, V>>, StoreError> {
        let Some(row) = self.first()? else {
            return Ok(None);
        };
        self.delete_keys(std::iter::once(&row.0))?;
        Ok(Some(row))
    }

    /// Remove and return the row with the greatest key.
    pub fn pop_last(&mut self) -> Result<Option<KvRow<K, V>>, StoreError> {
        let Some(row) = self.last()? else {
            return Ok(None);
        };
        self.delete_keys(std::iter::once(&row.0))?;
        Ok(Some(row))
    }

    fn matching<'a, KR, F>(
        &self,
        range: impl RangeBounds<KR> + 'a,
        mut pick: F,
    ) -> Result<Vec<KvRow<K, V>>, StoreError>
    where
        KR: std::borrow::Borrow<K::SelfType<'a>> + 'a,
        F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    {
        let mut out = Vec::new();
        for row in self.range(range)? {
            let (k, v) = row?;
            if pick(k.value(), v.value()) {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    fn delete_keys<'o>(&self, keys: impl Iterator<Item = &'o Owned<K>>) -> Result<(), StoreError>
    where
        K: 'o,
    {
        self.txn.writable()?;
        let params = keys
            .map(|k| self.key_cells(&k.value()))
            .collect::<Result<Vec<_>, _>>()?;
        let sql = format!("DELETE FROM {} WHERE {}", self.table, self.key_eq());
        for chunk in params.chunks(1024) {
            self.txn.execute_many(&sql, chunk)?;
        }
        Ok(())
    }

    /// One page of the rows strictly inside `lo`..`hi`, ascending or
    /// descending.
    fn page(
        &self,
        lo: &Bound<Vec<Cell>>,
        hi: &Bound<Vec<Cell>>,
        ascending: bool,
        limit: i64,
    ) -> Result<Vec<KvRow<K, V>>, StoreError> {
        let mut params: Vec<Cell> = Vec::new();
        let mut cond = Vec::new();
        for (b, incl, excl) in [(lo, ">=", ">"), (hi, "<=", "<")] {
            let (op, cells) = match b {
                Bound::Included(c) => (incl, c),
                Bound::Excluded(c) => (excl, c),
                Bound::Unbounded => continue,
            };
            // A bound cut short compares the key's first parts only.
            let key = tuple(&self.key[..cells.len()]);
            let ps = params_from(params.len() + 1, cells.len());
            let ps = if ps.len() == 1 {
                ps[0].clone()
            } else {
                format!("({})", ps.join(", "))
            };
            cond.push(format!("{key} {op} {ps}"));
            params.extend(cells.iter().cloned());
        }
        let dir = if ascending { "ASC" } else { "DESC" };
        let order = self
            .key
            .iter()
            .map(|k| format!("{k} {dir}"))
            .collect::<Vec<_>>()
            .join(", ");
        let all: Vec<String> = self.key.iter().chain(&self.value).cloned().collect();
        // The limit is a parameter: one prepared statement per shape of
        // range, not one per page size.
        params.push(Cell::Int(limit));
        let sql = format!(
            "SELECT {} FROM {}{} ORDER BY {} LIMIT ${}",
            list(&all),
            self.table,
            if cond.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", cond.join(" AND "))
            },
            order,
            params.len()
        );
        let rows = self.txn.query(&sql, &refs(&params))?;
        rows.iter()
            .map(|r| {
                let k = self.read_key(r)?;
                let v = if self.value.is_empty() {
                    Owned::new(Vec::new())
                } else {
                    self.read_value(r, self.key.len())?
                };
                Ok((k, v))
            })
            .collect()
    }
}

/// Rows of a page fetched first; later pages double up to [`MAX_PAGE`].
const FIRST_PAGE: i64 = 16;
/// The most rows a range fetches at once.
const MAX_PAGE: i64 = 2048;

/// A range being read, in pages from either end (as redb's `Range`, it
/// is double-ended). The rows not yet fetched are those strictly between
/// `lo` and `hi`; each page fetched moves its end past its rows.
pub struct PgRange<'t, K: Key + Cols, V: Cols> {
    table: PgTable<'t, K, V>,
    lo: Bound<Vec<Cell>>,
    hi: Bound<Vec<Cell>>,
    /// Fetched from the front, ascending.
    front: VecDeque<KvRow<K, V>>,
    /// Fetched from the back, ascending.
    back: VecDeque<KvRow<K, V>>,
    /// Nothing is left between `lo` and `hi` (or an error ended it).
    done: bool,
    page: i64,
}

impl<K: Key + Cols, V: Cols> PgRange<'_, K, V> {
    fn limit(&mut self) -> i64 {
        let n = self.page;
        self.page = (self.page * 2).min(MAX_PAGE);
        n
    }

    /// Fetch the next page from one end; false when none is left.
    fn fill(&mut self, ascending: bool) -> Result<bool, StoreError> {
        if self.done {
            return Ok(false);
        }
        let limit = self.limit();
        let rows = self.table.page(&self.lo, &self.hi, ascending, limit)?;
        let Some(edge) = rows.last() else {
            self.done = true;
            return Ok(false);
        };
        let edge = self.table.key_cells(&edge.0.value())?;
        if ascending {
            self.lo = Bound::Excluded(edge);
            self.front.extend(rows);
        } else {
            self.hi = Bound::Excluded(edge);
            for r in rows {
                self.back.push_front(r);
            }
        }
        Ok(true)
    }

    fn fail(&mut self, e: StoreError) -> Option<Result<KvRow<K, V>, StoreError>> {
        self.done = true;
        self.front.clear();
        self.back.clear();
        Some(Err(e))
    }
}

impl<K: Key + Cols, V: Cols> Iterator for PgRange<'_, K, V> {
    type Item = Result<KvRow<K, V>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.front.is_empty() {
            match self.fill(true) {
                Ok(true) => {}
                Ok(false) => return self.back.pop_front().map(Ok),
                Err(e) => return self.fail(e),
            }
        }
        self.front.pop_front().map(Ok)
    }
}

impl<K: Key + Cols, V: Cols> DoubleEndedIterator for PgRange<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.back.is_empty() {
            match self.fill(false) {
                Ok(true) => {}
                Ok(false) => return self.front.pop_back().map(Ok),
                Err(e) => return self.fail(e),
            }
        }
        self.back.pop_back().map(Ok)
    }
}

/// The cells of `kinds.len()` columns of `row`, from column `from`.
fn cells(row: &Row, from: usize, kinds: &[Kind]) -> Result<Vec<Cell>, StoreError> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let i = from + i;
            let got = match k {
                Kind::Int2 => row.try_get::<_, i16>(i).map(|v| Cell::Int(v.into())),
                Kind::Int4 => row.try_get::<_, i32>(i).map(|v| Cell::Int(v.into())),
                Kind::Int8 => row.try_get::<_, i64>(i).map(Cell::Int),
                Kind::Text => row.try_get::<_, String>(i).map(Cell::Text),
                Kind::Bytea => row.try_get::<_, Vec<u8>>(i).map(Cell::Bytes),
            };
            got.map_err(|e| StoreError::Io(format!("column {i}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last handle may be dropped by a task (the sender's): that must
    /// not panic ("Cannot drop a runtime in a context where blocking is
    /// not allowed"), as dropping its runtime plainly would.
    #[test]
    fn dropped_inside_async_code() {
        let target = Target::parse("host=127.0.0.1 port=1 user=u dbname=d").unwrap();
        let kv = Arc::new(PgKv::new(target, 1, Duration::from_millis(10)).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move { drop(kv) });
    }
}
