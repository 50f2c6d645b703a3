//! The body of a file upload (`PUT /v1/files/NAME`, `api/files.rs`),
//! streamed to disk: up to [`UPLOAD_BATCH`] bytes are read off the
//! socket, then written and hashed on the blocking pool (the upload moves
//! there and back), so no thread waits on a slow client and memory stays
//! bounded. The size limit and the owner's quota are checked as the
//! bytes arrive, to stop a large upload early.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};

use crate::error::WireError;
use crate::files::Upload;

/// Bytes of an upload read off the socket before they are written out.
pub const UPLOAD_BATCH: usize = 256 * 1024;

/// What an upload may grow to.
pub struct UploadLimits {
    /// `[limits] max_file_bytes`.
    pub max: u64,
    /// The owner's `[quotas] file_bytes_per_user` (0: none).
    pub quota: u64,
    /// Bytes of the owner's other files (a replaced file's old size is
    /// freed).
    pub others: u64,
}

impl UploadLimits {
    /// `413 too_large`.
    pub fn too_large(&self) -> WireError {
        WireError::new(
            413,
            "too_large",
            format!(
                "the file is larger than {} bytes (max_file_bytes)",
                self.max
            ),
        )
    }

    /// `Ok` while an upload of `size` bytes stays within both limits.
    pub fn check(&self, size: u64) -> Result<(), WireError> {
        if size > self.max {
            return Err(self.too_large());
        }
        Ok(crate::quotas::check(
            "file bytes",
            "file_bytes_per_user",
            self.quota,
            self.others,
            size,
        )?)
    }
}

/// A failed upload, and the upload when it is still here (its temp file
/// is to be removed, which is disk work).
pub type Failed = (Option<Upload>, WireError);

/// Read `body` into `up` until its end, within `limits`, each frame
/// within `idle`.
pub async fn receive(
    mut body: Incoming,
    mut up: Upload,
    limits: &UploadLimits,
    idle: Duration,
) -> Result<Upload, Failed> {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut size = 0u64;
    loop {
        let frame = match next_frame(&mut body, idle).await {
            Ok(f) => f,
            Err(e) => return Err((Some(up), e)),
        };
        let end = frame.is_none();
        if let Some(chunk) = frame.and_then(|f| f.into_data().ok()) {
            size += chunk.len() as u64;
            if let Err(e) = limits.check(size) {
                return Err((Some(up), e));
            }
            batched += chunk.len();
            batch.push(chunk);
        }
        if batched >= UPLOAD_BATCH || (end && !batch.is_empty()) {
            batched = 0;
            up = write_batch(up, std::mem::take(&mut batch)).await?;
        }
        if end {
            return Ok(up);
        }
    }
}

/// The next frame (`None` at the end).
async fn next_frame(
    body: &mut Incoming,
    idle: Duration,
) -> Result<Option<Frame<Bytes>>, WireError> {
    match tokio::time::timeout(idle, body.frame()).await {
        Err(_) => Err(WireError::new(
            408,
            "timeout",
            "the upload stalled longer than body_timeout_secs",
        )),
        Ok(Some(Err(_))) => Err(WireError::bad_request(
            "bad_body",
            "the request body could not be read",
        )),
        Ok(Some(Ok(f))) => Ok(Some(f)),
        Ok(None) => Ok(None),
    }
}

/// Write `chunks` on the blocking pool; the upload comes back with the
/// outcome (a task that failed took it with it).
async fn write_batch(mut up: Upload, chunks: Vec<Bytes>) -> Result<Upload, Failed> {
    let written = crate::blocking::value("upload failed", move || {
        let r = chunks.iter().try_for_each(|c| up.write(c));
        (up, r)
    })
    .await;
    match written {
        Ok((up, Ok(()))) => Ok(up),
        Ok((up, Err(e))) => Err((Some(up), e.into())),
        Err(f) => Err((None, f.into())),
    }
}
