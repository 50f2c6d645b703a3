//! Uploaded files' contents in PostgreSQL (`file_blobs`: a content's
//! SHA-256, a part number and up to [`BLOB_PART`] bytes), for a node
//! serving from it: the database holds every content, so the node's files
//! directory is only a cache of it, and a node started on another machine
//! (a new box after the old one died) serves every file.
//!
//! The parts are those `overlord export-store` writes and reads
//! (`pg::transfer`): part 0 first, each [`BLOB_PART`] bytes but the last,
//! which is shorter (an empty content is one empty part 0).
//!
//! A content is written in the transaction that commits the file record
//! naming it, and removed in the one that stops the last record using it,
//! so a record never names a content the database lacks.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::kv::{PgKv, PgTxn};
use super::mirror::BLOB_PART;
use crate::store::StoreError;

/// Store the content with digest `sha256`, read from `path`, unless the
/// database has it already (another file with the same bytes).
pub fn put(txn: &PgTxn, sha256: &[u8; 32], path: &Path) -> Result<(), StoreError> {
    let key: &[u8] = sha256;
    let have = txn.query(
        "SELECT 1 FROM file_blobs WHERE sha256 = $1 AND part = 0",
        &[&key],
    )?;
    if !have.is_empty() {
        return Ok(());
    }
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; BLOB_PART];
    let mut part = 0i32;
    loop {
        let n = super::transfer::read_full(&mut file, &mut buf)?;
        if n == 0 && part > 0 {
            return Ok(());
        }
        let bytes: &[u8] = &buf[..n];
        txn.execute(
            "INSERT INTO file_blobs (sha256, part, bytes) VALUES ($1, $2, $3)",
            &[&key, &part, &bytes],
        )?;
        part += 1;
        if n < buf.len() {
            return Ok(());
        }
    }
}

/// Remove the content with digest `sha256` (no record names it any more).
pub fn remove(txn: &PgTxn, sha256: &[u8; 32]) -> Result<(), StoreError> {
    let key: &[u8] = sha256;
    txn.execute("DELETE FROM file_blobs WHERE sha256 = $1", &[&key])?;
    Ok(())
}

/// Parts fetched per statement: 8 MiB, so memory stays bounded whatever
/// the file's size.
const PARTS_PER_FETCH: i64 = 8;

/// Write the content with digest `sha256` from the database into `dest`
/// (a new file), fsynced and checked against the digest, read as of one
/// snapshot. `Ok(false)` when the database has no such content.
pub fn fetch(kv: &Arc<PgKv>, sha256: &[u8; 32], dest: &Path) -> Result<bool, StoreError> {
    let key: &[u8] = sha256;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    let mut sha = Sha256::new();
    let mut next = 0i32;
    // Every page from one snapshot: a content removed meanwhile (its last
    // file deleted during this download) is then either read whole or not
    // found, never cut short.
    let txn = kv.begin_read()?;
    loop {
        let rows = txn.query(
            "SELECT part, bytes FROM file_blobs WHERE sha256 = $1 AND part >= $2 ORDER BY part LIMIT $3",
            &[&key, &next, &PARTS_PER_FETCH],
        )?;
        if rows.is_empty() {
            if next == 0 {
                return Ok(false);
            }
            break;
        }
        let got = rows.len();
        for row in rows {
            let part: i32 = row.get(0);
            let bytes: &[u8] = row.get(1);
            if part != next {
                return Err(StoreError::Corrupt(format!(
                    "file_blobs: a content lacks part {next} (found {part})"
                )));
            }
            sha.update(bytes);
            out.write_all(bytes)?;
            next += 1;
            if bytes.len() < BLOB_PART {
                break;
            }
        }
        if (got as i64) < PARTS_PER_FETCH {
            break;
        }
    }
    out.sync_all()?;
    if sha.finalize().as_slice() != sha256 {
        return Err(StoreError::Corrupt(
            "file_blobs: a content does not match its SHA-256".into(),
        ));
    }
    Ok(true)
}
