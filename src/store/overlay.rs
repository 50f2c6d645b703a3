//! A read-only view of the data file while it cannot be opened for
//! writing (a full or failing disk).
//!
//! After a failed write redb refuses every operation on the handle, reads
//! included, until the file is opened again; and opening it again runs a
//! repair that writes, which a full disk refuses. [`open`] opens the file
//! through [`OverlayBackend`]: reads come from the file, writes (the
//! repair's) land in a bounded in-memory overlay and never reach the
//! disk, fsync does nothing. The resulting handle serves queries of the
//! last durable commit; `Db::begin_write` refuses every write on it, and
//! the writer keeps retrying the real reopen (see `Store::reopen`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;

use parking_lot::Mutex;
use redb::{BackendError, Database, StorageBackend};

use super::StoreError;

/// Overlay block size.
const BLOCK: u64 = 4096;

/// Most bytes the overlay holds: a repair writes the header and the
/// allocator state, far less; past this the open fails (no reads then).
const MAX_OVERLAY_BYTES: usize = 64 << 20;

/// The file for reads, an in-memory overlay for writes.
#[derive(Debug)]
pub struct OverlayBackend {
    file: File,
    file_len: u64,
    state: Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    len: u64,
    blocks: HashMap<u64, Vec<u8>>,
}

impl OverlayBackend {
    /// Read `out.len()` bytes of the file at `offset`, zeros past its end.
    fn read_file(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        out.fill(0);
        if offset >= self.file_len {
            return Ok(());
        }
        let n = ((self.file_len - offset) as usize).min(out.len());
        std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut out[..n], offset)
    }
}

/// Open `path` read-only through an [`OverlayBackend`] (redb's repair
/// runs in memory).
pub fn open(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(|e| StoreError::Io(e.to_string()))?;
    let file_len = file
        .metadata()
        .map_err(|e| StoreError::Io(e.to_string()))?
        .len();
    let backend = OverlayBackend {
        file,
        file_len,
        state: Mutex::new(Overlay {
            len: file_len,
            blocks: HashMap::new(),
        }),
    };
    let mut builder = Database::builder();
    builder.set_cache_size(cache_bytes.max(1 << 20));
    builder
        .create_with_backend(backend)
        .map_err(StoreError::from)
}

impl StorageBackend for OverlayBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state.lock().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let st = self.state.lock();
        if offset + out.len() as u64 > st.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        let mut done = 0usize;
        while done < out.len() {
            let pos = offset + done as u64;
            let (block, within) = (pos / BLOCK, (pos % BLOCK) as usize);
            let n = (BLOCK as usize - within).min(out.len() - done);
            match st.blocks.get(&block) {
                Some(b) => out[done..done + n].copy_from_slice(&b[within..within + n]),
                None => self.read_file(pos, &mut out[done..done + n])?,
            }
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut st = self.state.lock();
        if len < st.len {
            // Bytes past the new end read as zeros if it grows again.
            let first = len.div_ceil(BLOCK);
            st.blocks.retain(|b, _| *b < first);
            if !len.is_multiple_of(BLOCK) {
                if let Some(b) = st.blocks.get_mut(&(len / BLOCK)) {
                    b[(len % BLOCK) as usize..].fill(0);
                }
            }
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut st = self.state.lock();
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let (block, within) = (pos / BLOCK, (pos % BLOCK) as usize);
            let n = (BLOCK as usize - within).min(data.len() - done);
            if !st.blocks.contains_key(&block) {
                if st.blocks.len() * BLOCK as usize >= MAX_OVERLAY_BYTES {
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        "read-only view: overlay full",
                    ));
                }
                let mut b = vec![0u8; BLOCK as usize];
                if block * BLOCK < st.len {
                    self.read_file(block * BLOCK, &mut b)?;
                }
                st.blocks.insert(block, b);
            }
            if let Some(b) = st.blocks.get_mut(&block) {
                b[within..within + n].copy_from_slice(&data[done..done + n]);
            }
            done += n;
        }
        st.len = st.len.max(offset + data.len() as u64);
        Ok(())
    }

    // The view never writes the file, so it takes no lock: the real
    // reopen must be able to take the file while queries still use it.
    fn try_lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, BackendError> {
        Ok(true)
    }

    fn try_lock_shared_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, BackendError> {
        Ok(true)
    }

    fn lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), BackendError> {
        Ok(())
    }

    fn lock_shared_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), BackendError> {
        Ok(())
    }

    fn unlock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), BackendError> {
        Ok(())
    }

    fn query_lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, BackendError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stay_in_memory_and_read_back_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let b = OverlayBackend {
            file: File::open(&path).unwrap(),
            file_len: 10_000,
            state: Mutex::new(Overlay {
                len: 10_000,
                blocks: HashMap::new(),
            }),
        };
        b.write(4090, &[1u8; 20]).unwrap();
        b.set_len(12_000).unwrap();
        b.write(11_000, &[2u8; 10]).unwrap();
        let mut out = vec![0u8; 12_000];
        b.read(0, &mut out).unwrap();
        assert!(out[..4090].iter().all(|x| *x == 7));
        assert!(out[4090..4110].iter().all(|x| *x == 1));
        assert!(out[4110..10_000].iter().all(|x| *x == 7));
        assert!(out[10_000..11_000].iter().all(|x| *x == 0));
        assert!(out[11_000..11_010].iter().all(|x| *x == 2));
        assert!(b.read(11_999, &mut [0u8; 2]).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 10_000]);
    }
}
