//! Credentials: tokens, their digests and constant-time comparison, login
//! sessions, CSRF tokens, and the Basic header.
//!
//! Device and user tokens are 128 random bits shown once as 32 hex
//! characters; only their SHA-256 digests are stored, and digests are
//! compared in constant time. (argon2 is for human passwords, which cost
//! ~16 ms to check; a token is already uniformly random, so a fast digest
//! is as strong and keeps a board's request cheap.) An unknown device id
//! is compared against a dummy digest so it takes as long as a wrong
//! token.
//!
//! Finding the credentials a request presents is [`super::request`].

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::registry::Directory;
use crate::store::records::TokenHash;
use crate::store::{DeviceRecord, UserRecord};

/// A new random token: 128 bits as 32 lower-case hex characters.
pub fn generate_token() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source failed");
    hex(&b)
}

/// Lower-case hex of `b`.
pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two digests.
pub fn ct_eq(a: &TokenHash, b: &TokenHash) -> bool {
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    std::hint::black_box(d) == 0
}

/// Does `token` match the current or the previous digest?
pub fn token_matches(token: &str, current: &TokenHash, previous: Option<&TokenHash>) -> bool {
    let h = hash_token(token);
    let a = ct_eq(&h, current);
    let b = previous.is_some_and(|p| ct_eq(&h, p));
    a | b
}

/// Does `token` match a stored secret: its current digest, or the
/// previous one still honoured? With no secret stored (an unknown device,
/// a file without a password) `token` is compared against a dummy digest
/// anyway, so the answer takes as long as for a wrong token.
pub fn secret_matches(token: &str, stored: Option<(&TokenHash, Option<&TokenHash>)>) -> bool {
    match stored {
        Some((current, previous)) => token_matches(token, current, previous),
        None => {
            std::hint::black_box(token_matches(token, &DUMMY, None));
            false
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A user (any role) by API token.
    User(Arc<UserRecord>),
    /// A device by its token.
    Device(Arc<DeviceRecord>),
    /// No credentials.
    Anonymous,
}

impl Principal {
    /// For the request log: who, without secrets.
    pub fn label(&self) -> String {
        match self {
            Principal::User(u) => format!("user:{}", u.name),
            Principal::Device(d) => format!("device:{}", d.id),
            Principal::Anonymous => "anonymous".into(),
        }
    }
}

/// The CSRF token of a login session: derived from the session token
/// (SHA-256 of a fixed label and the token, 32 hex characters), so it is
/// never stored, can be asked for again (`GET /v1/session`) and tells
/// nothing about the session token itself.
pub fn csrf_for(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"overlord-csrf\0");
    h.update(session_token.as_bytes());
    hex(&h.finalize()[..16])
}

/// Does `given` match the CSRF token of `session_token`? Constant time.
pub fn csrf_matches(session_token: &str, given: &str) -> bool {
    ct_eq(&hash_token(&csrf_for(session_token)), &hash_token(given))
}

/// Decode `Authorization: Basic base64(id:secret)`.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let rest = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let raw = base64_decode(rest.trim())?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// Most base64 characters of a Basic header decoded (padding aside).
const MAX_BASIC: usize = 4096;

/// The base64 of a Basic header: the standard alphabet (RFC 7617) or the
/// URL-safe one, padded or not, trailing bits ignored.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::alphabet;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine as _;
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    if s.trim_end_matches('=').len() > MAX_BASIC {
        return None;
    }
    STANDARD.decode(s).or_else(|_| URL_SAFE.decode(s)).ok()
}

/// A login session: user, expiry, [`credential_stamp`] at login.
pub(super) type Session = (String, std::time::Instant, TokenHash);

/// A digest of a user's credentials (API token digest and password
/// hash). A session remembers the stamp of the credentials it was opened
/// with and ends as soon as they differ: a new password, a rotated token
/// or a revoke ends every session, whichever path made the change, and a
/// login racing with the change cannot outlive it.
pub fn credential_stamp(u: &UserRecord) -> TokenHash {
    let mut h = Sha256::new();
    h.update(u.token);
    h.update(u.password.as_deref().unwrap_or("").as_bytes());
    h.finalize().into()
}

/// Most login sessions kept; the oldest go first.
pub const MAX_SESSIONS: usize = 10_000;

/// What a secret is compared against when there is none ([`secret_matches`]).
const DUMMY: TokenHash = [0x5a; 32];

/// Checking a presented id and secret against the directory.
impl Directory {
    /// Check a device's id and token.
    pub fn authenticate_device(&self, id: &str, token: &str) -> Option<Arc<DeviceRecord>> {
        let dev = self.device(id);
        let stored = dev.as_deref().map(|d| (&d.token, d.prev_token.as_ref()));
        if secret_matches(token, stored) {
            dev
        } else {
            None
        }
    }

    /// Check a user's API token or login session token (Bearer).
    pub fn authenticate_bearer(&self, token: &str) -> Option<Arc<UserRecord>> {
        let h = hash_token(token);
        let by_token = self.user_tokens.read().get(&h).cloned();
        if let Some(name) = by_token {
            let u = self.user(&name)?;
            return token_matches(token, &u.token, u.prev_token.as_ref()).then_some(u);
        }
        self.authenticate_session(token)
    }

    /// Check a token presented without an id (an InfluxDB `Token`, a
    /// ThingSpeak `api_key`): a user's API token (not a login session),
    /// else a device's, found through the digest index and then checked
    /// like any device token.
    pub fn authenticate_token(&self, token: &str) -> Option<Principal> {
        let h = hash_token(token);
        let user = self.user_tokens.read().get(&h).cloned();
        if let Some(name) = user {
            let u = self.user(&name)?;
            return token_matches(token, &u.token, u.prev_token.as_ref())
                .then_some(Principal::User(u));
        }
        let id = self.device_tokens.read().get(&h).cloned()?;
        self.authenticate_device(&id, token).map(Principal::Device)
    }

    /// Check `name:token` from Basic auth: a device id first, then a user.
    pub fn authenticate_basic(&self, id: &str, token: &str) -> Option<Principal> {
        if let Some(d) = self.authenticate_device(id, token) {
            return Some(Principal::Device(d));
        }
        let u = self.user(id)?;
        token_matches(token, &u.token, u.prev_token.as_ref()).then_some(Principal::User(u))
    }
}

/// Login sessions.
impl Directory {
    /// End the login session `token` (logout); did it exist?
    pub fn end_session(&self, token: &str) -> bool {
        self.sessions.lock().remove(&hash_token(token)).is_some()
    }

    /// Check a login session token only (the dashboard's cookie: an API
    /// token is never accepted from a cookie). A session whose user's
    /// credentials changed since the login ([`credential_stamp`]) has
    /// ended.
    pub fn authenticate_session(&self, token: &str) -> Option<Arc<UserRecord>> {
        let h = hash_token(token);
        let now = std::time::Instant::now();
        let mut sessions = self.sessions.lock();
        let (name, expires, stamp) = sessions.get(&h).cloned()?;
        let user = self
            .user(&name)
            .filter(|u| ct_eq(&credential_stamp(u), &stamp));
        if now >= expires || user.is_none() {
            sessions.remove(&h);
            return None;
        }
        user
    }

    /// Is `token` a live login session's token (not an API token)?
    pub fn is_session(&self, token: &str) -> bool {
        self.authenticate_session(token).is_some()
    }

    /// Start a login session for `user`, as it was when its password was
    /// checked; returns its token.
    pub fn new_session(&self, user: &UserRecord, ttl: std::time::Duration) -> String {
        let token = generate_token();
        let now = std::time::Instant::now();
        let mut sessions = self.sessions.lock();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, (_, exp, _)| *exp > now);
            if sessions.len() >= MAX_SESSIONS {
                if let Some(k) = sessions
                    .iter()
                    .min_by_key(|(_, (_, e, _))| *e)
                    .map(|(k, _)| *k)
                {
                    sessions.remove(&k);
                }
            }
        }
        sessions.insert(
            hash_token(&token),
            (user.name.clone(), now + ttl, credential_stamp(user)),
        );
        token
    }

    /// End every session of `user` (after any change of their
    /// credentials; [`credential_stamp`] ends them anyway, this frees the
    /// memory at once).
    pub fn end_sessions(&self, user: &str) {
        self.sessions.lock().retain(|_, (u, _, _)| u != user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_bit_hex_and_distinct() {
        let a = generate_token();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, generate_token());
    }

    #[test]
    fn basic_header() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("Basic ZGV2MTp0b2s=", Some(("dev1", "tok"))),
            ("Basic ZGV2MTp0b2s", Some(("dev1", "tok"))),
            ("Basic ZGV2MTp0b2s6eA==", Some(("dev1", "tok:x"))),
            ("basic ZGV2MTp0b2s=", Some(("dev1", "tok"))),
            ("Basic  ZGV2MTp0b2s= ", Some(("dev1", "tok"))),
            // The standard and the URL-safe alphabet, padded or not.
            ("Basic ZDo+Pj4/", Some(("d", ">>>?"))),
            ("Basic ZDo-Pj4_", Some(("d", ">>>?"))),
            ("Basic ZDo/Pz4=", Some(("d", "??>"))),
            ("Basic ZDo_Pz4", Some(("d", "??>"))),
            ("Basic ZGV2MTp0b2sx", Some(("dev1", "tok1"))),
            ("Basic ZGV2MTp0b2", Some(("dev1", "to"))),
            // Not base64, or not `id:secret` in UTF-8.
            ("Basic Z", None),
            ("Basic ZDr7/w==", None),
            ("Basic ZGV2MQ==", None),
            ("Basic !!!!", None),
            ("Bearer abc", None),
            ("Basic ", None),
        ];
        for (h, want) in cases {
            let got = parse_basic(h);
            let want = want.map(|(a, b)| (a.to_string(), b.to_string()));
            assert_eq!(got, want, "{h}");
        }
        let long = format!("Basic ZGV2MTp0b2s6{}", "A".repeat(MAX_BASIC));
        assert_eq!(parse_basic(&long), None);
    }

    #[test]
    fn csrf_token_is_bound_to_its_session() {
        let (a, b) = (generate_token(), generate_token());
        let ca = csrf_for(&a);
        assert_eq!(ca.len(), 32);
        assert_ne!(ca, a);
        assert!(csrf_matches(&a, &ca));
        assert!(!csrf_matches(&b, &ca));
        assert!(!csrf_matches(&a, ""));
    }

    #[test]
    fn previous_token_still_matches() {
        let (a, b) = (hash_token("new"), hash_token("old"));
        assert!(token_matches("new", &a, Some(&b)));
        assert!(token_matches("old", &a, Some(&b)));
        assert!(!token_matches("other", &a, Some(&b)));
    }
}
