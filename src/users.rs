//! Users: the first administrator and API-token rotation.

use crate::auth;
use crate::codec::timefmt;
use crate::error::WireError;
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

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 8;

/// argon2id hash of a password (PHC string). Slow on purpose (~16 ms at
/// the crate's defaults): call it off the async runtime.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source failed");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

/// Check a password against its stored hash (constant time inside argon2).
/// Slow: call it off the async runtime.
pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Why a user operation did not happen (`error.rs` makes each a wire
/// error; the CLI prints it).
#[derive(Debug)]
pub enum UserError {
    /// A user of that name exists: `409 user_exists`.
    Exists(String),
    /// No user of that name: `404 unknown_user`.
    Unknown(String),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for UserError {
    fn from(e: StoreError) -> Self {
        UserError::Store(e)
    }
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserError::Exists(name) => write!(f, "user '{name}' exists"),
            UserError::Unknown(name) => write!(f, "no user '{name}'"),
            UserError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for UserError {}

/// Create a user, unless the name exists. Returns the record and its
/// first API token (shown once). Blocking.
pub fn create(
    store: &Store,
    name: &str,
    role: Role,
    password: Option<&str>,
) -> Result<(UserRecord, String), UserError> {
    if store.load_users()?.iter().any(|u| u.name == name) {
        return Err(UserError::Exists(name.to_string()));
    }
    let token = auth::generate_token();
    let rec = UserRecord {
        name: name.to_string(),
        role,
        token: auth::hash_token(&token),
        prev_token: None,
        created: timefmt::now_micros(),
        password: password.map(hash_password),
    };
    store.put_user(&rec)?;
    Ok((rec, token))
}

/// Set (or, with `None`, remove) a user's password. Blocking.
pub fn set_password(
    store: &Store,
    name: &str,
    password: Option<&str>,
) -> Result<UserRecord, UserError> {
    let mut u = find(store, name)?;
    u.password = password.map(hash_password);
    store.put_user(&u)?;
    Ok(u)
}

/// Revoke every credential of a user: both API tokens (replaced by the
/// digest of a token nobody was shown) and the password. A new token is
/// issued with [`issue_token`]. Blocking.
pub fn revoke(store: &Store, name: &str) -> Result<UserRecord, UserError> {
    let mut u = find(store, name)?;
    u.token = auth::hash_token(&auth::generate_token());
    u.prev_token = None;
    u.password = None;
    store.put_user(&u)?;
    Ok(u)
}

fn find(store: &Store, name: &str) -> Result<UserRecord, UserError> {
    store
        .load_users()?
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| UserError::Unknown(name.to_string()))
}

impl From<UserError> for WireError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Exists(_) => WireError::new(409, "user_exists", e.to_string()),
            UserError::Unknown(_) => WireError::new(404, "unknown_user", e.to_string()),
            UserError::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_salts_differ() {
        let a = hash_password("correct horse");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password(&a, "correct horse"));
        assert!(!verify_password(&a, "correct horsE"));
        assert!(!verify_password("not a hash", "x"));
        assert_ne!(a, hash_password("correct horse"));
    }
}
