//! Users: the first administrator and API-token rotation.

use crate::auth;
use crate::codec::timefmt;
use crate::store::{Role, Store, StoreError, UserRecord};

/// Name of the administrator created on first start.
pub const FIRST_ADMIN: &str = "admin";

/// Issue a new API token for `name` (creating the user with `role` if it
/// does not exist). The previous token stays valid until the next
/// rotation. Returns the new token, to be shown once. Blocking.
pub fn issue_token(
    store: &Store,
    name: &str,
    role: Role,
) -> Result<(UserRecord, String), StoreError> {
    let token = auth::generate_token();
    let existing = store.load_users()?.into_iter().find(|u| u.name == name);
    let rec = match existing {
        Some(mut u) => {
            u.prev_token = Some(u.token);
            u.token = auth::hash_token(&token);
            u
        }
        None => UserRecord {
            name: name.to_string(),
            role,
            token: auth::hash_token(&token),
            prev_token: None,
            created: timefmt::now_micros(),
            password: None,
        },
    };
    store.put_user(&rec)?;
    Ok((rec, token))
}
