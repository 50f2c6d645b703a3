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

/// `Ok` when `have + adding` stays within `limit` (0: unlimited), else
/// `403 quota_exceeded`. `what` names the kind (`devices`), `key` the
/// config key.
pub fn check(what: &str, key: &str, limit: u64, have: u64, adding: u64) -> Result<(), WireError> {
    if limit == 0 || have.saturating_add(adding) <= limit {
        return Ok(());
    }
    Err(WireError::new(
        403,
        "quota_exceeded",
        format!("{what}: a user may own at most {limit} ([quotas] {key}); this one has {have}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_unlimited() {
        assert!(check("devices", "devices_per_user", 3, 2, 1).is_ok());
        let e = check("devices", "devices_per_user", 3, 2, 2).unwrap_err();
        assert_eq!((e.status, e.code), (403, "quota_exceeded"));
        assert!(check("devices", "devices_per_user", 0, u64::MAX, 1).is_ok());
    }
}
