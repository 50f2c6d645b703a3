//! Files for devices (firmware, scripts, cookbooks): names, the files
//! directory, durable uploads and byte ranges.
//!
//! Content is stored once per distinct content, as a file named by its
//! SHA-256 (64 hex digits) in the files directory; the `files` table maps
//! a name to its [`FileRecord`] (size, digest, owner, password digests).
//! An upload streams into a `.tmp-*` file while it is hashed, is fsynced,
//! renamed to its digest, the directory is fsynced, and only then is the
//! record committed: **a `2xx` for an upload means the bytes and the record
//! are durable.** A crash in between leaves a temp file or an unreferenced
//! blob, which the next start removes. Replacing or deleting a file removes
//! its old blob after the commit; a download that already opened it keeps
//! reading the old content (POSIX unlink semantics), consistent with the
//! `ETag` it was sent.
//!
//! **On PostgreSQL** (`[store] kind = "postgres"`) the contents are in the
//! database too (`pg::blobs`, table `file_blobs`), written in the
//! transaction that commits the record and removed in the one that stops
//! the last record using them; the files directory is then a cache that a
//! download fills from the database when a content is missing (a node
//! started on a new machine), checked against the digest.
//!
//! Everything here blocks (disk, redb): call it off the async workers.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use sha2::{Digest as _, Sha256};

use crate::codec::timefmt;
use crate::error::WireError;
use crate::store::{FileRecord, Store, StoreError, FILES};

/// Longest file name.
pub const MAX_NAME: usize = 128;

/// Is `name` a valid file name? 1–[`MAX_NAME`] of `A-Z a-z 0-9 . _ - ~ +`,
/// not starting with `.` and without `..`, so it can never name a path
/// outside the files directory (it is never used as a path anyway: blobs
/// are named by digest).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~' | b'+'))
}

/// `400 bad_name` unless `name` is [`valid_name`].
pub fn check_name(name: &str) -> Result<(), WireError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(WireError::bad_request(
            "bad_name",
            format!(
                "'{}': a file name is 1-{MAX_NAME} of A-Z a-z 0-9 . _ - ~ +, not starting with '.' and without '..'",
                crate::codec::names::clip(name)
            ),
        ))
    }
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The strong `ETag` of a file: its SHA-256 in quotes.
pub fn etag(f: &FileRecord) -> String {
    format!("\"{}\"", hex(&f.sha256))
}

/// The files directory and an in-memory index of the `files` table
/// (loaded on start, updated after every commit, so authorisation and the
/// manifest never touch the disk).
pub struct Files {
    dir: PathBuf,
    index: RwLock<BTreeMap<String, Arc<FileRecord>>>,
    /// Serialises finishing uploads, deletes and password changes: the
    /// rename of a blob, the commit and the removal of old blobs.
    lock: Mutex<()>,
    /// The database that holds every content, on PostgreSQL.
    pg: Option<Arc<crate::pg::kv::PgKv>>,
}

fn is_blob_name(n: &str) -> bool {
    n.len() == 64 && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl Files {
    /// Create the directory if needed, load the index, and remove what a
    /// crash left behind (temp files, blobs no record names). Only names
    /// this module writes are ever removed.
    pub fn open(dir: PathBuf, store: &Store) -> Result<Files, StoreError> {
        fs::create_dir_all(&dir)?;
        let mut index = BTreeMap::new();
        store.read(|txn| {
            for row in FILES.read(txn)?.iter()? {
                let (_, f) = row?;
                index.insert(f.name.clone(), Arc::new(f));
            }
            let used: HashSet<String> = index.values().map(|f| hex(&f.sha256)).collect();
            for e in fs::read_dir(&dir)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp-") || (is_blob_name(&name) && !used.contains(&name)) {
                    let _ = fs::remove_file(e.path());
                }
            }
            Ok(Files {
                dir,
                index: RwLock::new(index),
                lock: Mutex::new(()),
                pg: store.postgres(),
            })
        })
    }

    /// A file's record.
    pub fn get(&self, name: &str) -> Option<Arc<FileRecord>> {
        self.index.read().get(name).cloned()
    }

    /// Every file, sorted by name.
    pub fn all(&self) -> Vec<Arc<FileRecord>> {
        self.index.read().values().cloned().collect()
    }

    /// A new `.tmp-*` name in the files directory (removed at start if a
    /// crash leaves it).
    fn temp_path(&self) -> io::Result<PathBuf> {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(self.dir.join(format!(".tmp-{}", hex(&r))))
    }

    /// Where the content with this digest is.
    pub fn blob_path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(hex(sha256))
    }

    /// Open the content with this digest: from the files directory, or,
    /// on PostgreSQL, fetched from the database into it first (a node
    /// whose directory lacks it). `NotFound` when neither has it.
    pub fn open_blob(&self, sha256: &[u8; 32]) -> io::Result<fs::File> {
        let path = self.blob_path(sha256);
        match fs::File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let Some(pg) = &self.pg else {
            return fs::File::open(&path);
        };
        let tmp = self.temp_path()?;
        let fetched = crate::pg::blobs::fetch(pg, sha256, &tmp);
        let placed = match fetched {
            Ok(true) => fs::rename(&tmp, &path).and_then(|()| sync_dir(&self.dir)),
            Ok(false) => Err(io::ErrorKind::NotFound.into()),
            Err(e) => Err(io::Error::other(e.to_string())),
        };
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::File::open(&path)
    }

    /// Start an upload: a new temp file in the files directory.
    pub fn begin_upload(&self) -> Result<Upload, StoreError> {
        let path = self.temp_path()?;
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Upload {
            path,
            file: Some(file),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Finish an upload: move the synced content into place and commit
    /// the record (a new one owned by `owner`, or the existing one with
    /// new content; its owner and passwords stay). `check` sees the record
    /// as it is now, under the lock, and may refuse. Returns the record
    /// and whether it was created.
    pub fn commit_upload(
        &self,
        store: &Store,
        name: &str,
        owner: &str,
        done: Uploaded,
        check: impl FnOnce(Option<&FileRecord>) -> Result<(), WireError>,
    ) -> Result<(FileRecord, bool), WireError> {
        let _guard = self.lock.lock();
        let old = self.get(name);
        if let Err(e) = check(old.as_deref()) {
            let _ = fs::remove_file(&done.temp);
            return Err(e);
        }
        let blob = self.blob_path(&done.sha256);
        let placed = fs::rename(&done.temp, &blob).and_then(|()| sync_dir(&self.dir));
        if let Err(e) = placed {
            let _ = fs::remove_file(&done.temp);
            return Err(StoreError::from(e).into());
        }
        let updated = timefmt::now_micros();
        let rec = store.write(|txn| {
            if let crate::store::kv::Tx::Pg(p) = txn {
                crate::pg::blobs::put(p, &done.sha256, &blob)?;
                if let Some(o) = &old {
                    if o.sha256 != done.sha256 && !used_elsewhere(txn, name, &o.sha256)? {
                        crate::pg::blobs::remove(p, &o.sha256)?;
                    }
                }
            }
            let rec = match &old {
                Some(o) => FileRecord {
                    size: done.size,
                    sha256: done.sha256,
                    updated,
                    ..(**o).clone()
                },
                None => FileRecord {
                    num: Store::next_number(txn, "next_file")?,
                    name: name.to_string(),
                    owner: owner.to_string(),
                    size: done.size,
                    sha256: done.sha256,
                    updated,
                    password: None,
                    prev_password: None,
                },
            };
            FILES.open(txn)?.insert(name, &rec)?;
            Ok::<_, StoreError>(rec)
        })?;
        self.index
            .write()
            .insert(name.to_string(), Arc::new(rec.clone()));
        let created = old.is_none();
        if let Some(o) = old {
            if o.sha256 != rec.sha256 {
                self.forget_blob(&o.sha256);
            }
        }
        Ok((rec, created))
    }

    /// Delete a file (record, then its blob if nothing else uses it).
    pub fn delete(&self, store: &Store, name: &str) -> Result<bool, StoreError> {
        let _guard = self.lock.lock();
        let Some(old) = self.get(name) else {
            return Ok(false);
        };
        store.write(|txn| {
            FILES.open(txn)?.remove(name)?;
            if let crate::store::kv::Tx::Pg(p) = txn {
                if !used_elsewhere(txn, name, &old.sha256)? {
                    crate::pg::blobs::remove(p, &old.sha256)?;
                }
            }
            Ok::<_, StoreError>(())
        })?;
        self.index.write().remove(name);
        self.forget_blob(&old.sha256);
        Ok(true)
    }

    /// A new random download password for `name` (128 bits, 32 hex); the
    /// previous one keeps working until the next rotation. Only digests
    /// are stored; the password is shown once.
    pub fn rotate_password(&self, store: &Store, name: &str) -> Result<Option<String>, StoreError> {
        let _guard = self.lock.lock();
        let Some(old) = self.get(name) else {
            return Ok(None);
        };
        let password = crate::auth::generate_token();
        let rec = FileRecord {
            prev_password: old.password,
            password: Some(crate::auth::hash_token(&password)),
            ..(*old).clone()
        };
        store.write(|txn| {
            FILES.open(txn)?.insert(name, &rec)?;
            Ok::<_, StoreError>(())
        })?;
        self.index.write().insert(name.to_string(), Arc::new(rec));
        Ok(Some(password))
    }

    /// Remove a blob no record uses any more (called under the lock,
    /// after the commit that stopped using it).
    fn forget_blob(&self, sha256: &[u8; 32]) {
        let used = self.index.read().values().any(|f| &f.sha256 == sha256);
        if !used {
            let _ = fs::remove_file(self.blob_path(sha256));
        }
    }
}

/// Does a file other than `name` use the content `sha256`, as stored (not
/// as this node's index knows it)?
fn used_elsewhere(
    txn: crate::store::kv::Tx<'_>,
    name: &str,
    sha256: &[u8; 32],
) -> Result<bool, StoreError> {
    for row in FILES.open(txn)?.iter()? {
        let (n, f) = row?;
        if n.value() != name && &f.sha256 == sha256 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// An upload in progress: a temp file and the running digest. Dropped
/// before [`Upload::finish`], it removes its temp file.
pub struct Upload {
    path: PathBuf,
    file: Option<fs::File>,
    hasher: Sha256,
    size: u64,
}

/// A finished, fsynced upload waiting to be committed.
#[derive(Debug)]
pub struct Uploaded {
    temp: PathBuf,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

impl Upload {
    /// Append a chunk.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| StoreError::Io("upload already finished".into()))?;
        f.write_all(chunk)?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Bytes so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// fsync the content; the temp file now waits for
    /// [`Files::commit_upload`].
    pub fn finish(mut self) -> Result<Uploaded, StoreError> {
        let f = self
            .file
            .take()
            .ok_or_else(|| StoreError::Io("upload already finished".into()))?;
        if let Err(e) = f.sync_all() {
            let _ = fs::remove_file(&self.path);
            return Err(StoreError::from(e));
        }
        let temp = std::mem::take(&mut self.path);
        let sha256 = std::mem::take(&mut self.hasher).finalize().into();
        Ok(Uploaded {
            temp,
            size: self.size,
            sha256,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// The whole file (`200`): no `Range`, one that is not `bytes=`,
    /// malformed, or several ranges (RFC 9110 lets a server ignore a
    /// `Range` and answer in full).
    Full,
    /// Bytes `start..=end` (`206`).
    Part(u64, u64),
    /// Nothing of it exists (`416`, `Content-Range: bytes */LEN`).
    Unsatisfiable,
}

/// Interpret a `Range` header value for a file of `len` bytes.
pub fn parse_range(value: &str, len: u64) -> Ranged {
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return Ranged::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Ranged::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), num(a), num(b)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(len.saturating_sub(n), len - 1)
            }
        }
        // bytes=A- : from A to the end.
        (false, Some(start), None) if b.trim().is_empty() => {
            if start >= len {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(start, len - 1)
            }
        }
        // bytes=A-B
        (false, Some(start), Some(end)) if end >= start => {
            if start >= len {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(start, end.min(len - 1))
            }
        }
        _ => Ranged::Full,
    }
}

/// Does an `If-None-Match` value match `etag` (weak comparison, `*`)?
pub fn none_match(value: &str, etag: &str) -> bool {
    let bare = etag.trim_start_matches("W/");
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "fw.bin",
            "fw-1.2.3.bin",
            "a",
            "A_b~c+d",
            &"x".repeat(MAX_NAME),
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a..b",
            "a/b",
            "../etc",
            "a\\b",
            "a\0b",
            "a b",
            "%2e%2e",
            "ä",
            &"x".repeat(MAX_NAME + 1),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn ranges() {
        use Ranged::*;
        let cases: &[(&str, u64, Ranged)] = &[
            ("bytes=0-99", 1000, Part(0, 99)),
            ("bytes=100-", 1000, Part(100, 999)),
            ("bytes=-500", 1000, Part(500, 999)),
            ("bytes=-5000", 1000, Part(0, 999)),
            ("bytes=900-5000", 1000, Part(900, 999)),
            ("bytes=999-999", 1000, Part(999, 999)),
            ("bytes=1000-", 1000, Unsatisfiable),
            ("bytes=1000-1001", 1000, Unsatisfiable),
            ("bytes=-0", 1000, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-1", 0, Unsatisfiable),
            ("BYTES=1-2", 10, Part(1, 2)),
            (" bytes = 1 - 2 ", 10, Part(1, 2)),
            ("bytes=5-1", 10, Full),
            ("bytes=0-1,4-5", 10, Full),
            ("bytes=x-1", 10, Full),
            ("bytes=+1-2", 10, Full),
            ("bytes=-", 10, Full),
            ("items=0-1", 10, Full),
            ("bytes", 10, Full),
            ("bytes=99999999999999999999999-", 10, Full),
        ];
        for (h, len, want) in cases {
            assert_eq!(parse_range(h, *len), *want, "{h} of {len}");
        }
    }

    #[test]
    fn etags_match() {
        let e = "\"abc\"";
        assert!(none_match("\"abc\"", e));
        assert!(none_match("W/\"abc\"", e));
        assert!(none_match("\"x\", \"abc\"", e));
        assert!(none_match("*", e));
        assert!(!none_match("\"abd\"", e));
        assert!(!none_match("abc", e));
    }
}
