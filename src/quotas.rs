//! Per-user quotas (`[quotas]` in the config): how many devices, channels
//! and alerts, and how many bytes of files, one ordinary user may own, so
//! one tenant cannot fill the memory or the disk for everyone.
//!
//! Administrators (and the CLI, run by the operator) are exempt; a limit
//! of 0 means unlimited. Devices a gateway registers count against the
//! gateway's owner (they are owned by them). Over a quota, creating is
//! `403 quota_exceeded` naming the kind and the limit.
//!
//! Counting and creating happen under one process-wide lock ([`guard`]),
//! held from the count until the in-memory directory or catalog holds the
//! new records, so concurrent creations cannot overshoot. Creations are
//! rare management requests on blocking threads, so one lock costs
//! nothing that matters. File uploads are checked while they stream (to
//! stop a large one early) and again when committed, under the files
//! lock.

use parking_lot::{Mutex, MutexGuard};

use crate::auth::Directory;
use crate::error::WireError;
use crate::store::Role;

static LOCK: Mutex<()> = Mutex::new(());

/// Hold while counting what a user owns and creating more of it.
/// Blocking: take it on a blocking thread.
pub fn guard() -> MutexGuard<'static, ()> {
    LOCK.lock()
}

/// The limit that applies to `owner`: `limit`, or 0 (none) for an
/// administrator.
pub fn applies(directory: &Directory, owner: &str, limit: u64) -> u64 {
    match directory.user(owner) {
        Some(u) if u.role == Role::Administrator => 0,
        _ => limit,
    }
}

/// A creation that would take a user over a quota: `403 quota_exceeded`
/// on the wire (`error.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// The kind (`devices`, `file bytes`).
    pub what: &'static str,
    /// The config key (`devices_per_user`).
    pub key: &'static str,
    /// The limit.
    pub limit: u64,
    /// What the user has now.
    pub have: u64,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let QuotaExceeded {
            what,
            key,
            limit,
            have,
        } = self;
        write!(
            f,
            "{what}: a user may own at most {limit} ([quotas] {key}); this one has {have}"
        )
    }
}

impl std::error::Error for QuotaExceeded {}

/// `Ok` when `have + adding` stays within `limit` (0: unlimited), else
/// [`QuotaExceeded`]. `what` names the kind (`devices`), `key` the
/// config key.
pub fn check(
    what: &'static str,
    key: &'static str,
    limit: u64,
    have: u64,
    adding: u64,
) -> Result<(), QuotaExceeded> {
    if limit == 0 || have.saturating_add(adding) <= limit {
        return Ok(());
    }
    Err(QuotaExceeded {
        what,
        key,
        limit,
        have,
    })
}

/// Over a `[quotas]` limit: `403 quota_exceeded`.
impl From<QuotaExceeded> for WireError {
    fn from(e: QuotaExceeded) -> Self {
        WireError::new(403, "quota_exceeded", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_unlimited() {
        assert!(check("devices", "devices_per_user", 3, 2, 1).is_ok());
        let e = WireError::from(check("devices", "devices_per_user", 3, 2, 2).unwrap_err());
        assert_eq!((e.status, e.code), (403, "quota_exceeded"));
        assert!(check("devices", "devices_per_user", 0, u64::MAX, 1).is_ok());
    }
}
