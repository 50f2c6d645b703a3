//! The one way async code runs blocking work (a redb transaction, argon2,
//! file IO, DNS) on tokio's blocking pool, off the async workers.
//!
//! [`run`] hands the closure to `spawn_blocking` and gives back its
//! result. A task that does not come back (it panicked, or the runtime
//! cancelled it while shutting down) is logged once here, with the name
//! the caller gave, and becomes the caller's own "internal" error through
//! `From<Failed>`: `500 internal,<what>` on the wire (`error.rs`), a
//! `StoreError::Io` for storage code. [`wire`] is `run` for a handler
//! whose closure returns any error that becomes a wire error.
//!
//! Long-lived threads (the writer, the digest pool, the sender's own
//! runtime) are not tasks on this pool and keep their own threads.

use crate::error::WireError;
use crate::store::StoreError;

/// A blocking task that did not return a value: it panicked, or the
/// runtime cancelled it. Carries the caller's name for the work, already
/// logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    /// What the task was doing ("create failed", "query failed", ...).
    pub what: &'static str,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what)
    }
}

impl std::error::Error for Failed {}

impl From<Failed> for StoreError {
    fn from(e: Failed) -> Self {
        StoreError::Io(format!("{}: blocking task failed", e.what))
    }
}

/// Run `f` on the blocking pool and return its result; a panic or a
/// cancellation is logged once and becomes `E::from(Failed)`.
pub async fn run<T, E, F>(what: &'static str, f: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<Failed> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(E::from(failed(what, e))),
    }
}

/// [`run`] for a handler: whatever error `f` returns becomes a
/// [`WireError`] (through the conversions in `error.rs`).
pub async fn wire<T, E, F>(what: &'static str, f: F) -> Result<T, WireError>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Into<WireError> + Send + 'static,
{
    run(what, move || f().map_err(Into::into)).await
}

/// Run `f`, which cannot fail, on the blocking pool (pure work on a large
/// input, dropping something whose drop does IO).
pub async fn value<T, F>(what: &'static str, f: F) -> Result<T, Failed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    run(what, move || Ok(f())).await
}

fn failed(what: &'static str, e: tokio::task::JoinError) -> Failed {
    if e.is_panic() {
        let p = e.into_panic();
        let why = crate::error::panic_text(&*p, "panicked");
        tracing::error!(task = what, panic = %why, "blocking task panicked");
    } else {
        tracing::warn!(task = what, "blocking task cancelled");
    }
    Failed { what }
}

/// A blocking task that panicked or was cancelled (already logged by
/// `blocking::run`): `500 internal` naming what it was doing.
impl From<Failed> for WireError {
    fn from(e: Failed) -> Self {
        WireError::internal(e.what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_result_comes_back_as_it_is() {
        let ok: Result<u32, StoreError> = run("add", || Ok(2 + 2)).await;
        assert_eq!(ok.unwrap(), 4);
        let err: Result<(), WireError> =
            wire("x", || Err(StoreError::Conflict("taken".into()))).await;
        assert_eq!(err.unwrap_err().code, "conflict");
    }

    #[tokio::test]
    async fn a_panic_becomes_the_callers_internal_error() {
        let e: WireError = wire::<(), WireError, _>("list failed", || panic!("boom"))
            .await
            .unwrap_err();
        assert_eq!(
            (e.status, e.code, e.detail.as_str()),
            (500, "internal", "list failed")
        );
        let e: StoreError = run::<(), StoreError, _>("scan", || panic!("boom"))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Io(m) if m.starts_with("scan")));
    }
}
