//! What goes wrong in the store ([`StoreError`], mapped to a wire reply
//! in `crate::error`), and how damage found while reading marks the store
//! so that nothing more is written into it ([`Damage`]).

use std::cell::RefCell;
use std::fmt;
use std::sync::{Once, Weak};

use super::varint;

/// What went wrong in the store. Mapped to a wire reply in one place
/// (`crate::error`).
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The disk is full (ENOSPC): `507 disk_full`.
    DiskFull,
    /// Any other I/O or storage failure: `500 storage`.
    Io(String),
    /// Stored bytes did not decode.
    Corrupt(String),
    /// The data file is known to be damaged (redb panicked reading it):
    /// writes are refused, `500 storage_damaged`, until it is restored.
    Damaged(String),
    /// The data file is locked by another process (a running server).
    InUse,
    /// A uniqueness rule was broken (e.g. a device id that exists).
    Conflict(String),
    /// PostgreSQL could not serialize a write transaction with others
    /// (or found a deadlock): run it again (`crate::pg::kv::PgKv::write`
    /// does, a bounded number of times). Escaped: `503 overloaded`.
    Retry(String),
    /// PostgreSQL is out of reach (connection lost or refused, shutting
    /// down, a standby, no session free in time): `503 overloaded` with
    /// `Retry-After`.
    Unavailable(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::DiskFull => f.write_str("disk full"),
            StoreError::Io(e) => write!(f, "storage error: {e}"),
            StoreError::Corrupt(e) => write!(f, "data file damaged: {e}"),
            StoreError::Damaged(e) => write!(
                f,
                "data file damaged ({e}); writes are refused: stop the server, run `overlord check`, restore a backup"
            ),
            StoreError::InUse => f.write_str("the data file is in use by another process"),
            StoreError::Conflict(e) => f.write_str(e),
            StoreError::Retry(e) => write!(f, "transaction not serializable: {e}"),
            StoreError::Unavailable(e) => write!(f, "database unavailable: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A file operation's failure: a full disk is [`StoreError::DiskFull`]
/// (`507`), anything else [`StoreError::Io`].
impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull {
            StoreError::DiskFull
        } else {
            StoreError::Io(e.to_string())
        }
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        match e {
            redb::StorageError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::DiskFull
            }
            redb::StorageError::Corrupted(s) => corrupt(s),
            other => StoreError::Io(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                match redb::Error::from(e) {
                    redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => StoreError::DiskFull,
                    redb::Error::Corrupted(s) => corrupt(s),
                    redb::Error::DatabaseAlreadyOpen => StoreError::InUse,
                    other => StoreError::Io(other.to_string()),
                }
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError
);

impl From<varint::Corrupt> for StoreError {
    fn from(_: varint::Corrupt) -> Self {
        corrupt("a stored value does not decode".into())
    }
}

/// A read found damage (redb's `Corrupted`, or a stored value that does
/// not decode): the store this thread is using is marked damaged, so that
/// nothing more is acknowledged into it (see [`Damage`]).
pub(super) fn corrupt(why: String) -> StoreError {
    IN_USE.with(|u| {
        if let Some(d) = u.borrow().upgrade() {
            d.mark(&why);
        }
    });
    StoreError::Corrupt(why)
}

/// Whether the data file is known to be damaged, and why.
///
/// Set when redb panics while this store is in use (a page that does not
/// decode: bytes changed outside redb). From then every write is refused
/// with [`StoreError::Damaged`], so nothing more is acknowledged into a
/// file whose next crash recovery may fail ("all roots are corrupted");
/// reads go on where they can. Only a restart clears it, and a restart
/// should follow `overlord check` and a restore.
#[derive(Default)]
pub struct Damage(parking_lot::Mutex<Option<String>>);

impl Damage {
    pub(super) fn mark(&self, why: &str) {
        let mut d = self.0.lock();
        if d.is_none() {
            tracing::error!(reason = %why, "data file damaged; refusing writes from now on");
            *d = Some(why.to_string());
        }
    }

    pub(super) fn get(&self) -> Option<String> {
        self.0.lock().clone()
    }
}

thread_local! {
    /// The store this thread last took a handle of: a redb panic on this
    /// thread marks it damaged (see [`install_panic_hook`]).
    pub(super) static IN_USE: RefCell<Weak<Damage>> = const { RefCell::new(Weak::new()) };
}

/// Install, once per process, a panic hook that marks the store a thread
/// was using as damaged when redb panics on that thread (redb panics on
/// a page that does not decode instead of returning an error). The
/// previous hook still runs; the panic itself is caught where it lands
/// (a blocking task's `JoinError`, the writer's `catch_unwind`).
pub(super) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_redb = info.location().is_some_and(|l| {
                let f = l.file();
                f.contains("/redb-") || f.contains("\\redb-")
            });
            if in_redb {
                let why = panic_text(info.payload(), "redb panicked");
                IN_USE.with(|u| {
                    if let Some(d) = u.borrow().upgrade() {
                        d.mark(&why);
                    }
                });
            }
            prev(info);
        }));
    });
}

/// The message of a caught panic (`&str` or `String` payloads), or
/// `fallback` for any other payload.
pub fn panic_text(p: &(dyn std::any::Any + Send), fallback: &str) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| fallback.to_string())
}
