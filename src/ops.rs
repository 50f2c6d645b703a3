//! Operations on whole data files: a consistent backup copy, restore,
//! compaction. Shared by the CLI (server stopped) and
//! `GET /v1/admin/backup` (server running).
//!
//! **Backup design.** redb lets one process open the file, so a running
//! server makes the copy itself: [`backup_copy`] opens a read transaction
//! (a consistent snapshot of the last commit; the writer keeps committing
//! meanwhile) and copies every table row by row into a fresh redb file,
//! on a blocking thread. The copy is a normal redb file, compact and
//! immediately usable as a data file. The CLI either asks the server for
//! it over HTTP or, with the server stopped, calls the same function on
//! the data file. Tables are copied by their typed definitions; a table
//! in the source that the copy does not know is an error, so a new table
//! cannot be silently left out of backups.
//!
//! File contents uploaded with `/v1/files` live in the files directory,
//! not in redb, and are not part of the copy (see `docs/api.md`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, Key, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle, Value, WriteTransaction,
};

use crate::store::{self, AnyTable, StoreError};

/// Calls `$m!(TABLE, ...)` with every table of `crate::store`. A table
/// added there must be added here: [`backup_copy`] refuses a source with
/// a table it does not copy.
macro_rules! every_table {
    ($m:ident) => {
        $m!(
            READINGS,
            SEALED,
            SENSORS,
            DIGEST_LOG,
            LAST_SEEN,
            PRESENCE,
            PRESENCE_EVENTS,
            PRESENCE_NOTIFY,
            DEVICES,
            USERS,
            META,
            CHANNELS,
            CHANNEL_MEMBERS,
            CHANNEL_META,
            CHANNEL_ITEMS,
            ALERTS,
            ALERT_STATE,
            ALERT_EVENTS,
            INBOX,
            INBOX_META,
            GRANTS,
            FILES,
            DEAD_LETTERS,
            RETENTION,
            AGGREGATES,
            TARGETS,
            OUTBOX,
            OUTBOX_WAITING,
            TARGET_HISTORY,
            NOTIFY_DEAD,
            PRESENCE_TARGETS,
            COMMANDS,
            COMMAND_META,
            COMMAND_EXPIRY,
            SENSOR_LABELS,
            CHANNEL_LABELS,
            ALERT_MEMBER_STATE,
            DELETED_DEVICES
        )
    };
}

pub(crate) use every_table;

/// Rows copied so far, for a progress bar.
pub type Progress<'a> = &'a dyn Fn(u64);

fn copy<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
    names: &mut Vec<String>,
    done: &mut u64,
    progress: Progress<'_>,
) -> Result<(), StoreError> {
    names.push(def.name().to_string());
    let from = match src.open_table(def) {
        Ok(t) => t,
        // An older data file without this table: nothing to copy.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut to = dst.open_table(def)?;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
        *done += 1;
        if (*done).is_multiple_of(4096) {
            progress(*done);
        }
    }
    Ok(())
}

/// Every table of the snapshot as `(name, rows, SHA-256 of its keys and
/// values as stored)`, in `every_table!` order: two files with the same
/// fingerprint hold the same rows byte for byte (`overlord export-store`
/// round trips are checked with it), on either store (a PostgreSQL
/// store's fingerprint equals the redb file's when they hold the same
/// rows). Blocking; reads everything.
pub fn fingerprint<'t>(
    src: impl Into<store::Tx<'t>>,
) -> Result<Vec<(String, u64, [u8; 32])>, StoreError> {
    use sha2::{Digest, Sha256};
    fn one<K: Key + crate::pg::mirror::Cols, V: crate::pg::mirror::Cols>(
        src: store::Tx<'_>,
        def: TableDefinition<K, V>,
    ) -> Result<(String, u64, [u8; 32]), StoreError> {
        let mut sha = Sha256::new();
        let mut rows = 0;
        let table = match src {
            // An old file may lack a table: no rows.
            store::Tx::Read(r) => match r.open_table(def) {
                Ok(t) => Some(store::Table::Read(t)),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            },
            other => Some(other.open_table(def)?),
        };
        if let Some(t) = table {
            for row in t.iter()? {
                let (k, v) = row?;
                for part in [
                    K::as_bytes(&k.value()).as_ref(),
                    V::as_bytes(&v.value()).as_ref(),
                ] {
                    sha.update((part.len() as u64).to_le_bytes());
                    sha.update(part);
                }
                rows += 1;
            }
        }
        Ok((def.name().to_string(), rows, sha.finalize().into()))
    }
    let src = src.into();
    let mut out = Vec::new();
    macro_rules! each {
        ($($t:ident),*) => {$(
            out.push(one(src, store::$t.def())?);
        )*};
    }
    every_table!(each);
    Ok(out)
}

/// Rows in every table of the snapshot (for a progress bar's length).
pub fn count_rows(src: &ReadTransaction) -> Result<u64, StoreError> {
    let mut n = 0;
    macro_rules! count {
        ($($t:ident),*) => {$(
            if let Ok(t) = src.open_table(store::$t.def()) {
                n += t.len()?;
            }
        )*};
    }
    every_table!(count);
    Ok(n)
}

/// Copy the snapshot `src` into a new redb file at `dest` (which must not
/// exist), fsynced. Returns the rows copied. Blocking.
pub fn backup_copy(
    src: &ReadTransaction,
    dest: &Path,
    progress: Progress<'_>,
) -> Result<u64, StoreError> {
    let db = create_new(dest, None)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Io(e.to_string()))?;
    let mut names = Vec::new();
    let mut done = 0;
    macro_rules! copy_all {
        ($($t:ident),*) => {$(
            copy(src, &txn, store::$t.def(), &mut names, &mut done, progress)?;
        )*};
    }
    every_table!(copy_all);
    for t in src.list_tables()? {
        if !names.iter().any(|n| n == t.name()) {
            return Err(StoreError::Io(format!(
                "table '{}' is not covered by the backup (src/ops.rs)",
                t.name()
            )));
        }
    }
    txn.commit()?;
    progress(done);
    Ok(done)
}

/// A new, empty redb file at `dest`, which must not exist (an existing
/// file is never overwritten); its page cache is `cache_bytes`, or redb's
/// default.
pub fn create_new(dest: &Path, cache_bytes: Option<usize>) -> Result<Database, StoreError> {
    File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dest)?;
    let mut builder = Database::builder();
    if let Some(bytes) = cache_bytes {
        builder.set_cache_size(bytes);
    }
    builder.create(dest).map_err(StoreError::from)
}

/// A temp file name beside `path`: `<path>.<tag>-<pid>-<n>.tmp`.
pub fn temp_beside(path: &Path, tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{tag}-{}-{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

/// Make a rename in `path`'s directory durable.
pub fn sync_dir_of(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::from)
}

/// A backup of the snapshot `src` of a data file opened with the server
/// stopped into `dest`: copied to a temp file beside `dest`, then
/// renamed. Returns the rows.
pub fn backup_file(
    src: &ReadTransaction,
    dest: &Path,
    progress: Progress<'_>,
) -> Result<u64, StoreError> {
    let tmp = temp_beside(dest, "backup");
    let result = backup_copy(src, &tmp, progress).and_then(|n| {
        std::fs::rename(&tmp, dest)?;
        sync_dir_of(dest)?;
        Ok(n)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Check that `file` is an Overlord data file: redb opens it and it has
/// the `readings` and `users` tables. Blocking.
pub fn verify(file: &Path) -> Result<(), StoreError> {
    let db = Database::open(file).map_err(StoreError::from)?;
    let txn = db.begin_read()?;
    let names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
    for need in ["readings", "users", "devices"] {
        if !names.iter().any(|n| n == need) {
            return Err(StoreError::Corrupt(format!(
                "not an Overlord data file (no '{need}' table)"
            )));
        }
    }
    Ok(())
}

/// Replace the data file at `data` with the backup `from` (server
/// stopped): verify `from`, make sure `data` is not open, copy to a temp
/// file beside `data`, fsync, keep the old file as
/// `<data>.pre-restore-<UTC time>` (a hard link, so the data file never
/// goes missing; each restore keeps its own), and rename the
/// copy over it. Returns the path the old file is kept at, if there was
/// one. `progress` gets bytes copied.
pub fn restore(
    from: &Path,
    data: &Path,
    progress: Progress<'_>,
) -> Result<Option<PathBuf>, StoreError> {
    verify(from)?;
    if data.exists() {
        // Fails with InUse while a server has it open.
        drop(Database::open(data).map_err(StoreError::from)?);
    }
    let tmp = temp_beside(data, "restore");
    let result = (|| {
        let mut src = File::open(from)?;
        let mut dst = File::options().write(true).create_new(true).open(&tmp)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = std::io::Read::read(&mut src, &mut buf)?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n])?;
            done += n as u64;
            progress(done);
        }
        dst.sync_all()?;
        drop(dst);
        let kept = if data.exists() {
            let kept = pre_restore_name(data);
            std::fs::hard_link(data, &kept)?;
            Some(kept)
        } else {
            None
        };
        std::fs::rename(&tmp, data)?;
        sync_dir_of(data)?;
        Ok(kept)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new name to keep the replaced data file under:
/// `<data>.pre-restore-<UTC time>` (`20261203T064912Z`), with `-2`, `-3`,
/// ... when a restore in the same second already took it, so a second
/// restore never overwrites what the first one kept.
fn pre_restore_name(data: &Path) -> PathBuf {
    let mut stamp = String::new();
    crate::codec::timefmt::write_time(crate::codec::timefmt::now_micros(), &mut stamp);
    // `2026-12-03T06:49:12.123456Z` -> `20261203T064912Z`
    let stamp: String = stamp
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end_matches('Z')
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect::<String>()
        + "Z";
    let base = data.file_name().unwrap_or_default().to_os_string();
    (1u32..)
        .map(|n| {
            let mut name = base.clone();
            name.push(format!(".pre-restore-{stamp}"));
            if n > 1 {
                name.push(format!("-{n}"));
            }
            data.with_file_name(name)
        })
        .find(|p| !p.exists())
        .expect("an unused name")
}

/// Compact the data file (server stopped): `(bytes before, bytes after)`.
pub fn compact(data: &Path) -> Result<(u64, u64), StoreError> {
    let before = store::Store::file_len(data);
    let mut db = Database::open(data).map_err(StoreError::from)?;
    db.compact()
        .map_err(|e| StoreError::Io(format!("compaction failed: {e}")))?;
    drop(db);
    Ok((before, store::Store::file_len(data)))
}

/// What [`check`] found: one `(what, rows, state)` line per table and for
/// redb's own checksum verification, and whether anything is damaged.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// `(table or "integrity", rows read, "ok" or what is wrong)`.
    pub lines: Vec<(String, u64, String)>,
    /// Whether anything failed.
    pub damaged: bool,
}

/// The message of a caught panic.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    crate::error::panic_text(p, "panicked")
}

/// Read every row of one table, decoding keys and values. `Err`: rows
/// read before the failure and what failed.
fn read_table<K: Key + 'static, V: Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, (u64, String)> {
    let t = match txn.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err((0, e.to_string())),
    };
    let mut n = 0u64;
    let rows = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for row in t.iter().map_err(|e| e.to_string())? {
            let (k, v) = row.map_err(|e| e.to_string())?;
            std::hint::black_box((k.value(), v.value()));
            n += 1;
        }
        Ok::<(), String>(())
    }));
    match rows {
        Ok(Ok(())) => Ok(n),
        Ok(Err(e)) => Err((n, e)),
        Err(p) => Err((n, panic_text(&*p))),
    }
}

/// `overlord check` (server stopped): is the data file at `path` whole?
///
/// The file itself is never written: it is copied beside itself (so the
/// check needs that much free space) and the copy is opened, every row of
/// every table is read and decoded, and redb's `check_integrity` verifies
/// the checksum of every page. A redb panic (it panics on some pages that
/// do not decode) is caught and reported as damage. Blocking.
pub fn check(path: &Path) -> Result<CheckReport, StoreError> {
    let len = std::fs::metadata(path)?.len();
    let mut report = CheckReport::default();
    if len == 0 {
        report.damaged = true;
        report
            .lines
            .push(("file".into(), 0, "empty (0 bytes): not a data file".into()));
        return Ok(report);
    }
    let copy = temp_beside(path, "check");
    let result = check_copy(path, &copy, &mut report);
    let _ = std::fs::remove_file(&copy);
    result.map(|()| report)
}

fn check_copy(path: &Path, copy: &Path, report: &mut CheckReport) -> Result<(), StoreError> {
    std::fs::copy(path, copy)?;
    let opened = std::panic::catch_unwind(|| Database::builder().open(copy));
    let mut db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => {
            report.damaged = true;
            report
                .lines
                .push(("open".into(), 0, format!("damaged: does not open: {e}")));
            return Ok(());
        }
        Err(p) => {
            report.damaged = true;
            report.lines.push((
                "open".into(),
                0,
                format!("damaged: does not open: {}", panic_text(&*p)),
            ));
            return Ok(());
        }
    };
    match db.begin_read() {
        Ok(txn) => {
            macro_rules! read_all {
                ($($t:ident),*) => {$(
                    let (rows, state) = match read_table(&txn, store::$t.def()) {
                        Ok(n) => (n, "ok".to_string()),
                        Err((n, why)) => {
                            report.damaged = true;
                            (n, format!("damaged after {n} rows: {why}"))
                        }
                    };
                    report.lines.push((store::$t.def().name().to_string(), rows, state));
                )*};
            }
            every_table!(read_all);
        }
        Err(e) => {
            report.damaged = true;
            report
                .lines
                .push(("read".into(), 0, format!("damaged: cannot read: {e}")));
        }
    }
    let state = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.check_integrity()
    })) {
        Ok(Ok(true)) => "ok".to_string(),
        Ok(Ok(false)) => {
            report.damaged = true;
            "damaged: checksums do not match (redb could rebuild the copy, which may have lost commits)".into()
        }
        Ok(Err(e)) => {
            report.damaged = true;
            format!("damaged: {e}")
        }
        Err(p) => {
            report.damaged = true;
            format!("damaged: {}", panic_text(&*p))
        }
    };
    report.lines.push(("integrity".into(), 0, state));
    Ok(())
}
