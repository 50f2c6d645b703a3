//! Grants: a user, a device or everyone (`anonymous`) given `read` or
//! `control` on a device, a channel or a file by its owner. Stored in
//! `grants` and held in the [`Directory`], which `authorize` consults;
//! who may grant is the policy's (`Action::Grant`), checked by the caller.

use crate::auth::{Directory, Level};
use crate::store::{Store, StoreError, GRANTS};

/// Give `to` the grant `Some(level)` on resource `(kind, num)` (replacing
/// one it has), or withdraw its grant (`None`); stored first, then the
/// directory changes, so access follows at once. Blocking.
pub fn change(
    store: &Store,
    directory: &Directory,
    (kind, num): (u8, u32),
    to: &str,
    level: Option<Level>,
) -> Result<(), StoreError> {
    store.write(|txn| {
        let mut t = txn.open_table(GRANTS)?;
        match level {
            Some(l) => t.insert((kind, num, to), l as u8)?,
            None => t.remove((kind, num, to))?,
        };
        Ok::<_, StoreError>(())
    })?;
    match level {
        Some(l) => directory.put_grant(kind, num, to, l),
        None => directory.remove_grant(kind, num, to),
    }
    Ok(())
}
