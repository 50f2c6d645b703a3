//! `overlord export-store`: the whole store copied from a redb data file
//! into PostgreSQL ([`to_postgres`]), and back into a new data file
//! ([`to_redb`]), every row exactly (records and chunks as their bytes).
//!
//! Both are all or nothing and refuse a target that holds data:
//! - into PostgreSQL, one transaction: the schema is brought to the
//!   latest version first (in the same transaction), every table is checked empty and of the
//!   expected columns, every table is streamed in with binary `COPY`, then
//!   the uploaded files' contents (verified against their SHA-256) into
//!   `file_blobs`; nothing is visible until the commit.
//! - into redb, from one `REPEATABLE READ READ ONLY` transaction (a
//!   consistent snapshot while nodes may still write), fetched through a
//!   portal in batches of at most 4,096 rows and about 16 MiB (memory
//!   stays bounded whatever the table's size), into a temp file beside
//!   the target, fsynced, then renamed; the files' contents go to a temp
//!   directory renamed to the target's files directory.
//!
//! The redb side is a snapshot too: the command runs with the server
//! stopped (`cli::offline`), as `overlord backup` does.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use redb::{
    Durability, Key, ReadTransaction, ReadableTable, TableDefinition, TableHandle, WriteTransaction,
};
use sha2::{Digest, Sha256};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{IsolationLevel, Row, Transaction};

use super::mirror::{self, check_columns, columns, Cell, Cols, Kind, BLOB_PART, BLOB_TABLE};
use super::{migrate, Target};
use crate::files::hex;
use crate::ops::{self, Progress};
use crate::store::{self, AnyTable, FILES};

/// What a copy moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Rows of every table.
    pub rows: u64,
    /// Distinct uploaded files' contents.
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
}

/// The columns of `file_blobs`.
const BLOB_COLUMNS: &[(&str, Kind)] = &[
    ("sha256", Kind::Bytea),
    ("part", Kind::Int4),
    ("bytes", Kind::Bytea),
];

/// Rows a fetch from PostgreSQL brings at most.
const FETCH_ROWS: i32 = 4096;
/// Rows of a table's first fetch, before its rows' size is known.
const FIRST_FETCH: i32 = 16;
/// About how many bytes a fetch may bring: after a fetch of larger rows
/// (digest batches can be megabytes each) the next asks for fewer, so
/// [`to_redb`]'s memory is bounded by bytes, not only by rows.
const FETCH_BYTES: usize = 16 << 20;

/// Rows the next fetch asks for, after `rows` rows of `bytes` bytes.
fn next_fetch(rows: usize, bytes: usize) -> i32 {
    let per_row = (bytes / rows.max(1)).max(1);
    (FETCH_BYTES / per_row).clamp(1, FETCH_ROWS as usize) as i32
}

fn quoted(cols: &[(&str, Kind)]) -> String {
    cols.iter()
        .map(|(n, _)| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Copy the snapshot `src` (and the contents of its uploaded files in
/// `files_dir`) into the database at `target`, which must hold no
/// Overlord data unless `replace` (then what it holds is removed in the
/// same transaction: on an error it stays as it was). Returns what was
/// copied.
pub async fn to_postgres(
    target: &Target,
    src: &ReadTransaction,
    files_dir: &Path,
    replace: bool,
    progress: Progress<'_>,
) -> Result<Copied, String> {
    let pg = |e: tokio_postgres::Error| target.error(&e);
    // Every table of the file must have an image, or it would be left out.
    for t in src.list_tables().map_err(|e| e.to_string())? {
        mirror::spec_of(t.name())?;
    }
    let mut client = target.connect().await?;
    // The schema is made in the copy's own transaction: a copy that fails
    // leaves no schema, and one that runs meanwhile waits for this one's
    // advisory lock, then finds its rows.
    let tx = client.transaction().await.map_err(pg)?;
    migrate::migrate(target, &tx).await?;
    // Never under a node serving the database (its session holds the
    // node lock, `pg::hold`); and no node starts on it until this commits.
    let free: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&super::hold::KEY])
        .await
        .map_err(pg)?
        .get(0);
    if !free {
        return Err(format!(
            "PostgreSQL at {}: a node serves this database; stop it first",
            target.shown
        ));
    }
    let tables: Vec<&str> = mirror::SPECS
        .iter()
        .map(|s| s.table)
        .chain([BLOB_TABLE])
        .collect();
    if replace {
        // DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe, so a `--to
        // redb` whose snapshot began before this commit would see the
        // tables empty, not the previous copy. With DELETE it sees the
        // previous copy whole, and a later snapshot sees this one whole.
        for table in &tables {
            tx.execute(&format!("DELETE FROM \"{table}\""), &[])
                .await
                .map_err(pg)?;
        }
    }
    for table in tables {
        let has: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM \"{table}\")"), &[])
            .await
            .map_err(pg)?
            .get(0);
        if has {
            return Err(format!(
                "PostgreSQL at {}: table '{table}' already has rows; export-store copies only into a database without Overlord data, or with --replace (nothing was changed)",
                target.shown
            ));
        }
    }
    let mut copied = Copied::default();
    macro_rules! export_all {
        ($($t:ident),*) => {$(
            export_table(target, src, &tx, AnyTable::def(&store::$t), &mut copied, progress).await?;
        )*};
    }
    ops::every_table!(export_all);
    export_blobs(target, src, &tx, files_dir, &mut copied).await?;
    tx.commit().await.map_err(pg)?;
    progress(copied.rows);
    Ok(copied)
}

async fn export_table<K: Key + Cols, V: Cols>(
    target: &Target,
    src: &ReadTransaction,
    tx: &Transaction<'_>,
    def: TableDefinition<'static, K, V>,
    copied: &mut Copied,
    progress: Progress<'_>,
) -> Result<(), String> {
    let name = def.name();
    let cols = columns::<K, V>(mirror::spec_of(name)?)?;
    check_columns(tx, name, &cols).await?;
    let table = match src.open_table(def) {
        Ok(t) => t,
        // An older data file without this table: nothing to copy.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    let sink = tx
        .copy_in(&format!(
            "COPY \"{name}\" ({}) FROM STDIN (FORMAT binary)",
            quoted(&cols)
        ))
        .await
        .map_err(|e| target.error(&e))?;
    let types: Vec<Type> = cols.iter().map(|c| c.1.pg_type()).collect();
    let writer = BinaryCopyInWriter::new(sink, &types);
    tokio::pin!(writer);
    let mut cells = Vec::with_capacity(cols.len());
    for row in table.iter().map_err(|e| format!("{name}: {e}"))? {
        let (k, v) = row.map_err(|e| format!("{name}: {e}"))?;
        cells.clear();
        K::put(&k.value(), &mut cells).map_err(|e| format!("{name}: {e}"))?;
        V::put(&v.value(), &mut cells).map_err(|e| format!("{name}: {e}"))?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        writer
            .as_mut()
            .write(&refs)
            .await
            .map_err(|e| format!("{name}: {}", target.error(&e)))?;
        copied.rows += 1;
        if copied.rows.is_multiple_of(4096) {
            progress(copied.rows);
        }
    }
    writer
        .finish()
        .await
        .map_err(|e| format!("{name}: {}", target.error(&e)))?;
    Ok(())
}

/// Every uploaded file's content, once per digest, checked against it.
async fn export_blobs(
    target: &Target,
    src: &ReadTransaction,
    tx: &Transaction<'_>,
    files_dir: &Path,
    copied: &mut Copied,
) -> Result<(), String> {
    check_columns(tx, BLOB_TABLE, BLOB_COLUMNS).await?;
    // An older data file without the files table has no contents.
    if let Err(redb::TableError::TableDoesNotExist(_)) = src.open_table(FILES.def()) {
        return Ok(());
    }
    let files = FILES.read(src).map_err(|e| e.to_string())?;
    let sink = tx
        .copy_in(&format!(
            "COPY {BLOB_TABLE} (sha256, part, bytes) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(|e| target.error(&e))?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::BYTEA, Type::INT4, Type::BYTEA]);
    tokio::pin!(writer);
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; BLOB_PART];
    for row in files.iter().map_err(|e| e.to_string())? {
        let (_, f) = row.map_err(|e| e.to_string())?;
        if !seen.insert(f.sha256) {
            continue;
        }
        let path = files_dir.join(hex(&f.sha256));
        let fail =
            |e: std::io::Error| format!("file '{}': its content {}: {e}", f.name, path.display());
        let mut file = File::open(&path).map_err(fail)?;
        let mut sha = Sha256::new();
        let mut part = 0i32;
        loop {
            let n = read_full(&mut file, &mut buf).map_err(fail)?;
            if n == 0 && part > 0 {
                break;
            }
            sha.update(&buf[..n]);
            let sha256: &[u8] = &f.sha256;
            let bytes: &[u8] = &buf[..n];
            writer
                .as_mut()
                .write(&[&sha256, &part, &bytes])
                .await
                .map_err(|e| target.error(&e))?;
            copied.blob_bytes += n as u64;
            part += 1;
            if n < buf.len() {
                break;
            }
        }
        if sha.finalize().as_slice() != f.sha256 {
            return Err(format!(
                "file '{}': its content {} does not match its SHA-256 (damaged; nothing was exported)",
                f.name,
                path.display()
            ));
        }
        copied.blobs += 1;
    }
    writer.finish().await.map_err(|e| target.error(&e))?;
    Ok(())
}

/// Read until `buf` is full or the file ends.
pub(super) fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Copy the database at `target` into a new data file `dest` (which must
/// not exist) and, given `files_dir` (which must not exist or be empty),
/// its uploaded files' contents there (a backup, like redb's, is the data
/// file alone and passes none). redb's cache for the new file is
/// `cache_bytes` (the server's `cache_mb`): with the fetches' bound it
/// bounds the command's memory whatever the store's size. Returns what
/// was copied.
pub async fn to_redb(
    target: &Target,
    dest: &Path,
    files_dir: Option<&Path>,
    cache_bytes: usize,
    progress: Progress<'_>,
) -> Result<Copied, String> {
    if dest.exists() {
        return Err(format!("{} exists; give a new file name", dest.display()));
    }
    if let Some(files_dir) = files_dir {
        if std::fs::read_dir(files_dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(format!(
                "{} is not empty; it would receive the uploaded files' contents",
                files_dir.display()
            ));
        }
    }
    let pg = |e: tokio_postgres::Error| target.error(&e);
    let mut client = target.connect().await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)?;
    migrate::expect_readable(target, &tx).await?;
    let tmp = ops::temp_beside(dest, "import");
    let dirs = files_dir.map(|d| (ops::temp_beside(d, "import"), d));
    let tmp_dir = dirs.as_ref().map(|(t, _)| t.as_path());
    let result = write_redb(target, &tx, &tmp, tmp_dir, cache_bytes, progress).await;
    let result = result.and_then(|copied| {
        match &dirs {
            Some((tmp_dir, files_dir)) => put_in_place(&tmp, dest, tmp_dir, files_dir),
            None => place_data(&tmp, dest),
        }
        .map(|()| copied)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        if let Some((tmp_dir, _)) = &dirs {
            let _ = std::fs::remove_dir_all(tmp_dir);
        }
    }
    result
}

/// Rename the finished data file into place, made durable.
fn place_data(tmp: &Path, dest: &Path) -> Result<(), String> {
    if dest.exists() {
        return Err(format!(
            "{} appeared meanwhile; nothing was written there",
            dest.display()
        ));
    }
    std::fs::rename(tmp, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    ops::sync_dir_of(dest).map_err(|e| e.to_string())
}

/// Rename the finished files directory, then the data file, into place,
/// each made durable; the data file last, so a data file at `dest` always
/// has its files. On an error the directory is moved back to `tmp_dir`
/// (the caller removes the temp names).
fn put_in_place(tmp: &Path, dest: &Path, tmp_dir: &Path, files_dir: &Path) -> Result<(), String> {
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    File::open(tmp_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(tmp_dir, e))?;
    let had_dir = files_dir.exists();
    if had_dir {
        // Empty (checked before the copy): only a rename target.
        std::fs::remove_dir(files_dir).map_err(|e| io(files_dir, e))?;
    }
    std::fs::rename(tmp_dir, files_dir).map_err(|e| io(files_dir, e))?;
    let data = ops::sync_dir_of(files_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            if dest.exists() {
                return Err(format!(
                    "{} appeared meanwhile; nothing was written there",
                    dest.display()
                ));
            }
            place_data(tmp, dest)
        });
    if let Err(e) = data {
        let _ = std::fs::rename(files_dir, tmp_dir);
        if had_dir {
            let _ = std::fs::create_dir(files_dir);
        }
        return Err(e);
    }
    Ok(())
}

async fn write_redb(
    target: &Target,
    tx: &Transaction<'_>,
    tmp: &Path,
    tmp_dir: Option<&Path>,
    cache_bytes: usize,
    progress: Progress<'_>,
) -> Result<Copied, String> {
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    let db =
        ops::create_new(tmp, Some(cache_bytes)).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| e.to_string())?;
    let mut copied = Copied::default();
    macro_rules! import_all {
        ($($t:ident),*) => {$(
            import_table(target, tx, &txn, AnyTable::def(&store::$t), &mut copied, progress).await?;
        )*};
    }
    ops::every_table!(import_all);
    if let Some(tmp_dir) = tmp_dir {
        std::fs::create_dir(tmp_dir).map_err(|e| io(tmp_dir, e))?;
        import_blobs(target, tx, &txn, tmp_dir, &mut copied).await?;
    }
    txn.commit().map_err(|e| e.to_string())?;
    progress(copied.rows);
    Ok(copied)
}

/// The cells of a fetched row, by the columns' kinds.
fn cells_of(row: &Row, cols: &[(&str, Kind)], out: &mut Vec<Cell>) -> Result<(), String> {
    out.clear();
    for (i, (name, kind)) in cols.iter().enumerate() {
        let bad = |e: tokio_postgres::Error| format!("column {name}: {e}");
        out.push(match kind {
            Kind::Int2 => Cell::Int(row.try_get::<_, i16>(i).map_err(bad)?.into()),
            Kind::Int4 => Cell::Int(row.try_get::<_, i32>(i).map_err(bad)?.into()),
            Kind::Int8 => Cell::Int(row.try_get::<_, i64>(i).map_err(bad)?),
            Kind::Text => Cell::Text(row.try_get(i).map_err(bad)?),
            Kind::Bytea => Cell::Bytes(row.try_get(i).map_err(bad)?),
        });
    }
    Ok(())
}

async fn import_table<K: Key + Cols, V: Cols>(
    target: &Target,
    tx: &Transaction<'_>,
    txn: &WriteTransaction,
    def: TableDefinition<'static, K, V>,
    copied: &mut Copied,
    progress: Progress<'_>,
) -> Result<(), String> {
    let name = def.name();
    let cols = columns::<K, V>(mirror::spec_of(name)?)?;
    check_columns(tx, name, &cols).await?;
    let key_cols = K::width();
    let keys = quoted(&cols[..key_cols]);
    let stmt = tx
        .prepare(&format!(
            "SELECT {} FROM \"{name}\" ORDER BY {keys}",
            quoted(&cols)
        ))
        .await
        .map_err(|e| target.error(&e))?;
    let portal = tx.bind(&stmt, &[]).await.map_err(|e| target.error(&e))?;
    let mut table = txn.open_table(def).map_err(|e| format!("{name}: {e}"))?;
    let mut cells = Vec::with_capacity(cols.len());
    let mut fetch = FIRST_FETCH;
    loop {
        let rows = tx
            .query_portal(&portal, fetch)
            .await
            .map_err(|e| target.error(&e))?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut bytes = 0;
        for row in &rows {
            cells_of(row, &cols, &mut cells).map_err(|e| format!("{name}: {e}"))?;
            bytes += cells.iter().map(Cell::bytes).sum::<usize>();
            let k = K::take(&cells[..key_cols]).map_err(|e| format!("{name}: {e}"))?;
            let v = V::take(&cells[key_cols..]).map_err(|e| format!("{name}: {e}"))?;
            table.insert(k, v).map_err(|e| format!("{name}: {e}"))?;
            copied.rows += 1;
            if copied.rows.is_multiple_of(4096) {
                progress(copied.rows);
            }
        }
        fetch = next_fetch(rows.len(), bytes);
    }
}

/// The uploaded files' contents into `dir`, each checked against its
/// digest, and every file record's content present.
async fn import_blobs(
    target: &Target,
    tx: &Transaction<'_>,
    txn: &WriteTransaction,
    dir: &Path,
    copied: &mut Copied,
) -> Result<(), String> {
    check_columns(tx, BLOB_TABLE, BLOB_COLUMNS).await?;
    let stmt = tx
        .prepare(&format!(
            "SELECT sha256, part, bytes FROM {BLOB_TABLE} ORDER BY sha256, part"
        ))
        .await
        .map_err(|e| target.error(&e))?;
    let portal = tx.bind(&stmt, &[]).await.map_err(|e| target.error(&e))?;
    let mut open: Option<Blob> = None;
    let mut done = HashSet::new();
    loop {
        let rows = tx
            .query_portal(&portal, 16)
            .await
            .map_err(|e| target.error(&e))?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let sha256: Vec<u8> = row.get(0);
            let part: i32 = row.get(1);
            let bytes: Vec<u8> = row.get(2);
            if open.as_ref().is_none_or(|b| b.sha256 != sha256) {
                if let Some(b) = open.take() {
                    done.insert(b.finish(copied)?);
                }
                open = Some(Blob::create(dir, sha256)?);
            }
            open.as_mut().expect("just set").write(part, &bytes)?;
        }
    }
    if let Some(b) = open.take() {
        done.insert(b.finish(copied)?);
    }
    for row in FILES
        .open(txn)
        .map_err(|e| e.to_string())?
        .iter()
        .map_err(|e| e.to_string())?
    {
        let (_, f) = row.map_err(|e| e.to_string())?;
        if !done.contains(f.sha256.as_slice()) {
            return Err(format!(
                "file '{}': its content is not in {BLOB_TABLE} (nothing was written)",
                f.name
            ));
        }
    }
    Ok(())
}

/// One content being written from its parts.
struct Blob {
    sha256: Vec<u8>,
    path: PathBuf,
    file: File,
    hash: Sha256,
    next: i32,
}

impl Blob {
    fn create(dir: &Path, sha256: Vec<u8>) -> Result<Blob, String> {
        let path = dir.join(hex(&sha256));
        let file = File::create_new(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Blob {
            sha256,
            path,
            file,
            hash: Sha256::new(),
            next: 0,
        })
    }

    fn write(&mut self, part: i32, bytes: &[u8]) -> Result<(), String> {
        if part != self.next {
            return Err(format!(
                "{BLOB_TABLE}: content {} lacks part {} (found {part})",
                hex(&self.sha256),
                self.next
            ));
        }
        self.next += 1;
        self.hash.update(bytes);
        self.file
            .write_all(bytes)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Check the digest and fsync; returns it.
    fn finish(self, copied: &mut Copied) -> Result<Vec<u8>, String> {
        if self.hash.finalize().as_slice() != self.sha256.as_slice() {
            return Err(format!(
                "{BLOB_TABLE}: content {} does not match its SHA-256 (damaged; nothing was written)",
                hex(&self.sha256)
            ));
        }
        self.file
            .sync_all()
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        copied.blobs += 1;
        copied.blob_bytes += self.file.metadata().map_or(0, |m| m.len());
        Ok(self.sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_is_bounded_by_bytes_as_well_as_rows() {
        // Small rows: the row bound.
        assert_eq!(next_fetch(4096, 4096 * 40), FETCH_ROWS);
        // 4 MiB rows: four at a time; a row over the bound: one at a time.
        assert_eq!(next_fetch(10, 40 << 20), 4);
        assert_eq!(next_fetch(1, 64 << 20), 1);
        assert_eq!(next_fetch(0, 0), FETCH_ROWS);
    }
}
