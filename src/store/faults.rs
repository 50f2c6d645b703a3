//! The storage seam for disk-fault tests.
//!
//! [`FaultyBackend`] is redb's own [`FileBackend`] behind a switch: while a
//! [`DiskFaults`] handle says so, every write, resize and sync fails with
//! `ENOSPC` ([`DiskFault::NoSpace`]) or `EIO` ([`DiskFault::Io`]), or only
//! syncs fail ([`DiskFault::SyncIo`]), and
//! every fsync can be slowed down; reads and locks always pass through. The handle is a plain shared value that
//! only Rust code holding it can flip (`app::OpenOptions::disk_faults`); nothing in
//! the config or on the network reaches it. A server opened without a
//! handle uses the plain `FileBackend`, exactly as before.

use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::backends::FileBackend;
use redb::{BackendError, Database, DatabaseError, StorageBackend};

/// What the failing disk reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// `ENOSPC`: no space left on device.
    NoSpace,
    /// `EIO`: input/output error.
    Io,
    /// `EIO` from fsync only: writes reach the page cache, so a commit
    /// whose fsync failed may be visible after a reopen (a "ghost").
    SyncIo,
}

/// A switch shared between a test and the backend of a running store.
#[derive(Debug, Clone, Default)]
pub struct DiskFaults(Arc<AtomicU8>, Arc<AtomicU64>);

impl DiskFaults {
    /// A handle with no fault set.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on fail writes and syncs with `fault`; `None` heals the disk.
    pub fn set(&self, fault: Option<DiskFault>) {
        let v = match fault {
            None => 0,
            Some(DiskFault::NoSpace) => 1,
            Some(DiskFault::Io) => 2,
            Some(DiskFault::SyncIo) => 3,
        };
        self.0.store(v, Ordering::SeqCst);
    }

    /// From now on every fsync takes `delay` longer (a slow disk: the
    /// writer falls behind and the ingest queue fills). Zero: no delay.
    pub fn set_sync_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.1.store(us, Ordering::SeqCst);
    }

    /// The fault in force, if any.
    pub fn current(&self) -> Option<DiskFault> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(DiskFault::NoSpace),
            2 => Some(DiskFault::Io),
            3 => Some(DiskFault::SyncIo),
            _ => None,
        }
    }

    fn check(&self, sync: bool) -> io::Result<()> {
        match self.current() {
            None => Ok(()),
            Some(DiskFault::SyncIo) if !sync => Ok(()),
            Some(DiskFault::NoSpace) => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected fault: no space left on device (ENOSPC)",
            )),
            Some(DiskFault::Io | DiskFault::SyncIo) => {
                Err(io::Error::other("injected fault: input/output error (EIO)"))
            }
        }
    }
}

/// redb's file backend with switchable write and sync failures.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: FileBackend,
    faults: DiskFaults,
}

/// Open (or create) `path` as redb's `Builder::create` does, through a
/// [`FaultyBackend`].
pub fn create(
    path: &Path,
    faults: &DiskFaults,
    builder: redb::Builder,
) -> Result<Database, DatabaseError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let backend = FaultyBackend {
        inner: FileBackend::new(file)?,
        faults: faults.clone(),
    };
    builder.create_with_backend(backend)
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.faults.check(false)?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let delay = self.faults.1.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        self.faults.check(true)?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.faults.check(false)?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
