//! Who is calling, and may they do this?
//!
//! Secrets: device and user tokens are 128 random bits shown once as 32
//! hex characters; only their SHA-256 digests are stored, and digests are
//! compared in constant time. (argon2 is for human passwords, which cost
//! ~16 ms to check; a token is already uniformly random, so a fast digest
//! is as strong and keeps a board's request cheap.) An unknown device id
//! is compared against a dummy digest so it takes as long as a wrong
//! token.
//!
//! Every handler asks [`authorize`] — the one choke point — before it
//! touches a resource.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use sha2::{Digest as _, Sha256};

use crate::error::WireError;
use crate::store::records::TokenHash;
use crate::store::{DeviceRecord, Role, UserRecord};

/// A new random token: 128 bits as 32 lower-case hex characters.
pub fn generate_token() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source failed");
    hex(&b)
}

/// A short random id for a device created without one: `d` + 12 hex.
pub fn generate_id() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("the OS random source failed");
    format!("d{}", hex(&b))
}

fn hex(b: &[u8]) -> String {
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

/// A device id is an opaque URL-safe token: 1–64 of `A-Z a-z 0-9 . _ ~ -`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
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

/// What the caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Store readings for a device.
    WriteReadings,
    /// Query a device's readings.
    ReadReadings,
    /// See a device's record.
    ViewDevice,
    /// Create devices.
    CreateDevice,
    /// Rotate a device's token.
    RotateDevice,
    /// Change a device's metadata (name, location, parent, ...).
    EditDevice,
    /// Read a device's inbox.
    ReadInbox,
    /// Acknowledge (remove) rows of a device's inbox.
    AckInbox,
    /// Put a message or command in a device's inbox.
    SendToDevice,
    /// Create channels or alerts.
    CreateOwned,
    /// Change or delete a channel or alert, or send to a channel.
    ManageOwned,
    /// Read a channel's items or an alert's events.
    ReadOwned,
    /// See the digest's dead letters.
    ViewDeadLetters,
    /// Create users, rotate or revoke others' credentials.
    ManageUsers,
    /// Revoke a device's tokens.
    RevokeDevice,
    /// Rotate or revoke a user's token, set their password.
    ManageCredentials,
    /// Grant or withdraw access to a device, channel or file.
    Grant,
    /// Server operations (a backup of the whole data file).
    Administer,
    /// Download a file by its password: the caller presented the file's
    /// current or previous download password, checked with
    /// [`token_matches`] just before. Allows reading that file only.
    ReadFileByPassword,
}

/// What the action is on.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// Nothing in particular (creating, listing).
    None,
    /// A device.
    Device(&'a DeviceRecord),
    /// A user, by name (their own credentials).
    User(&'a str),
    /// A channel, an alert or a file, by its owner.
    Owned {
        /// What it is: [`KIND_CHANNEL`], [`KIND_ALERT`] or [`KIND_FILE`].
        kind: u8,
        /// Its number.
        num: u32,
        /// Its name.
        name: &'a str,
        /// Its owner.
        owner: &'a str,
    },
}

/// Grant kinds (the first part of a `grants` key): a device.
pub const KIND_DEVICE: u8 = 1;
/// A channel.
pub const KIND_CHANNEL: u8 = 2;
/// An alert (alerts are not granted; the kind names them in errors).
pub const KIND_ALERT: u8 = 3;
/// A file for devices (`/v1/files/NAME`).
pub const KIND_FILE: u8 = 4;

/// A grant lets a user, a device or `anonymous` read a device or channel,
/// or control it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// See it: query readings, list members, read channel items, see an
    /// inbox.
    Read = 1,
    /// Read, plus send messages and commands (to a device, or to a
    /// channel's devices) and change a channel's members.
    Control = 2,
}

impl Level {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Control => "control",
        }
    }

    /// Parse the word on the wire.
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "read" => Some(Level::Read),
            "control" => Some(Level::Control),
            _ => None,
        }
    }

    /// From its stored byte.
    pub fn from_u8(v: u8) -> Option<Level> {
        match v {
            1 => Some(Level::Read),
            2 => Some(Level::Control),
            _ => None,
        }
    }
}

/// The grantee that makes a device, channel or file public.
pub const ANONYMOUS: &str = "anonymous";

impl Action {
    /// May a grant to `anonymous` (a public device, channel or file) allow
    /// this? Only reading what is published: a device's record and
    /// readings (not its inbox), a channel's items and members, a file.
    fn public(self) -> bool {
        matches!(
            self,
            Action::ReadReadings | Action::ViewDevice | Action::ReadOwned
        )
    }

    /// The grant level that allows this action to a non-owner, if any.
    fn grantable(self) -> Option<Level> {
        use Action::*;
        match self {
            ReadReadings | ViewDevice | ReadOwned | ReadInbox => Some(Level::Read),
            SendToDevice | ManageOwned => Some(Level::Control),
            _ => None,
        }
    }
}

impl Directory {
    /// The one authorisation decision: may `who` do `action` on `res`?
    ///
    /// - Administrators may do everything.
    /// - A user may create devices, channels and alerts, and do everything
    ///   to what they own; dead letters, user management and backups are for
    ///   administrators.
    /// - A device may write and read its own readings, see itself, and read
    ///   and acknowledge its own inbox. A gateway device may also register
    ///   devices below it and write, read and see those.
    /// - Anyone (a user or a device) may do what a grant on the device,
    ///   channel or file allows: `read` or `control` ([`Level`]). Alerts
    ///   are not granted.
    /// - A `read` grant to `anonymous` makes a device, channel or file
    ///   public: every caller, with or without credentials, may read it
    ///   ([`Action::public`]: a device's record and readings, not its
    ///   inbox; a channel's items; a file), and nothing more.
    /// - Anonymous callers without a grant get `401`.
    /// - Files: a device may read the files of the user who owns it; a
    ///   file's password ([`Action::ReadFileByPassword`]) reads that file.
    ///
    /// A denial on something the caller may not even see is `404` with the
    /// same code as a missing thing (`unknown_device`, `unknown_channel`,
    /// `unknown_alert`), so existence does not leak; otherwise `403`.
    pub fn authorize(
        &self,
        who: &Principal,
        action: Action,
        res: Resource<'_>,
    ) -> Result<(), WireError> {
        use Action::*;
        if action == ReadFileByPassword {
            return match res {
                Resource::Owned {
                    kind: KIND_FILE, ..
                } => Ok(()),
                _ => Err(WireError::forbidden("a file password opens only its file")),
            };
        }
        let owns = |name: &str| match res {
            Resource::Device(d) => d.owner == name,
            Resource::Owned { owner, .. } => owner == name,
            Resource::User(u) => u == name,
            Resource::None => false,
        };
        let (personal, public) = self.level_for(who, res);
        let granted = personal.max(public);
        let by_grant = action.grantable().is_some_and(|need| {
            personal.is_some_and(|g| g >= need)
                || (action.public() && public.is_some_and(|g| g >= need))
        });
        let allowed = match who {
            Principal::Anonymous if !by_grant => {
                return Err(WireError::unauthorized("credentials required"))
            }
            Principal::Anonymous => true,
            Principal::User(u) if u.role == Role::Administrator => true,
            Principal::User(u) => match action {
                CreateDevice | CreateOwned => true,
                ViewDeadLetters | ManageUsers | Administer => false,
                _ => owns(&u.name) || by_grant,
            },
            Principal::Device(me) => match (action, res) {
                (
                    WriteReadings | ReadReadings | ViewDevice | ReadInbox | AckInbox,
                    Resource::Device(d),
                ) if d.num == me.num => true,
                // A gateway registers devices below it, and writes, reads
                // and sees them (their inbox rows come to its own inbox).
                (CreateDevice, Resource::None) if me.meta.gateway => true,
                (WriteReadings | ReadReadings | ViewDevice, Resource::Device(d))
                    if me.meta.gateway && d.meta.parent == Some(me.num) =>
                {
                    true
                }
                (
                    ReadOwned,
                    Resource::Owned {
                        kind: KIND_FILE,
                        owner,
                        ..
                    },
                ) if owner == me.owner => true,
                _ => by_grant,
            },
        };
        if allowed {
            return Ok(());
        }
        let may_see = match (who, res) {
            (_, Resource::None | Resource::User(_)) => true,
            (Principal::User(u), _) if owns(&u.name) => true,
            (Principal::Device(me), Resource::Device(d)) if d.num == me.num => true,
            (Principal::Device(me), Resource::Device(d)) if d.meta.parent == Some(me.num) => true,
            (
                Principal::Device(me),
                Resource::Owned {
                    kind: KIND_FILE,
                    owner,
                    ..
                },
            ) if owner == me.owner => true,
            _ => granted.is_some(),
        };
        match res {
            Resource::Device(d) if !may_see => Err(WireError::new(
                404,
                "unknown_device",
                format!("no device '{}'", d.id),
            )),
            Resource::Owned { kind, name, .. } if !may_see => {
                let (code, what) = match kind {
                    KIND_CHANNEL => ("unknown_channel", "channel"),
                    KIND_FILE => ("unknown_file", "file"),
                    _ => ("unknown_alert", "alert"),
                };
                Err(WireError::new(404, code, format!("no {what} '{name}'")))
            }
            _ => Err(WireError::forbidden("not allowed for this caller")),
        }
    }

    /// May user `name` still do `action` on device `dev`?
    ///
    /// What a user set up once and the server carries out later — a
    /// channel member or an alert fed by the digest, an alert's or a
    /// presence notice's inbox row — is checked again, here, every time it
    /// is carried out: withdrawing a grant stops it at once, with no need
    /// to find and delete what the grantee built on it. A user or device
    /// that no longer exists may nothing.
    pub fn user_may_device(&self, name: &str, action: Action, dev: u32) -> bool {
        let (Some(u), Some(d)) = (self.user(name), self.device_by_num(dev)) else {
            return false;
        };
        // The common cases without building a label: administrators and
        // owners may do everything to a device.
        if u.role == Role::Administrator || d.owner == u.name {
            return true;
        }
        self.authorize(&Principal::User(u), action, Resource::Device(&d))
            .is_ok()
    }

    /// May user `name` still do `action` on channel `ch`? (See
    /// [`Directory::user_may_device`].)
    pub fn user_may_channel(
        &self,
        name: &str,
        action: Action,
        ch: &crate::store::ChannelRecord,
    ) -> bool {
        let Some(u) = self.user(name) else {
            return false;
        };
        if u.role == Role::Administrator || ch.owner == u.name {
            return true;
        }
        self.authorize(&Principal::User(u), action, Resource::channel(ch))
            .is_ok()
    }

    /// The grants on `res` that apply to `who`: (its own, the public
    /// one). A grant to `anonymous` makes the thing public: it applies to
    /// every caller, with or without credentials, but only for the
    /// [`Action::public`] reads, whatever level it was stored with.
    fn level_for(&self, who: &Principal, res: Resource<'_>) -> (Option<Level>, Option<Level>) {
        let key = match res {
            Resource::Device(d) => (KIND_DEVICE, d.num),
            Resource::Owned {
                kind: kind @ (KIND_CHANNEL | KIND_FILE),
                num,
                ..
            } => (kind, num),
            _ => return (None, None),
        };
        let g = self.grants.read();
        let Some(list) = g.get(&key) else {
            return (None, None);
        };
        let me = who.label();
        let level = |want: &str| {
            list.iter()
                .filter(|(p, _)| p == want)
                .filter_map(|(_, l)| Level::from_u8(*l))
                .max()
        };
        let public = level(ANONYMOUS).map(|_| Level::Read);
        let personal = if matches!(who, Principal::Anonymous) {
            None
        } else {
            level(&me)
        };
        (personal, public)
    }

    /// Record a grant (replacing an earlier level for the same grantee).
    pub fn put_grant(&self, kind: u8, num: u32, grantee: &str, level: Level) {
        let mut g = self.grants.write();
        let list = g.entry((kind, num)).or_default();
        list.retain(|(p, _)| p != grantee);
        list.push((grantee.to_string(), level as u8));
    }

    /// Remove a grant.
    pub fn remove_grant(&self, kind: u8, num: u32, grantee: &str) {
        if let Some(list) = self.grants.write().get_mut(&(kind, num)) {
            list.retain(|(p, _)| p != grantee);
        }
    }

    /// Grants on one device or channel: `(grantee, level)`, sorted.
    pub fn grants_on(&self, kind: u8, num: u32) -> Vec<(String, Level)> {
        let g = self.grants.read();
        let mut v: Vec<(String, Level)> = g
            .get(&(kind, num))
            .map(|l| {
                l.iter()
                    .filter_map(|(p, lv)| Some((p.clone(), Level::from_u8(*lv)?)))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
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

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|&b| b != b'=').collect();
    if bytes.len() % 4 == 1 || bytes.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// The in-memory directory of devices and users, loaded from the store on
/// start and updated after every committed change. Authentication reads
/// only this, so it never waits for the disk.
#[derive(Default)]
pub struct Directory {
    /// (kind, number) → (grantee label, level).
    grants: RwLock<HashMap<(u8, u32), Vec<Grantee>>>,
    devices: RwLock<HashMap<String, Arc<DeviceRecord>>>,
    by_num: RwLock<HashMap<u32, Arc<DeviceRecord>>>,
    users: RwLock<HashMap<String, Arc<UserRecord>>>,
    user_tokens: RwLock<HashMap<TokenHash, String>>,
    /// Login sessions: token digest → (user, expiry, the user's
    /// [`credential_stamp`] at login). In memory only: a restart logs
    /// everyone out.
    sessions: parking_lot::Mutex<HashMap<TokenHash, Session>>,
}

/// A login session: user, expiry, [`credential_stamp`] at login.
type Session = (String, std::time::Instant, TokenHash);

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

/// A grantee's label (`user:ann`, `device:gh3`, `anonymous`) and level.
type Grantee = (String, u8);

const DUMMY: TokenHash = [0x5a; 32];

impl Directory {
    /// Build from stored records.
    pub fn new(devices: Vec<DeviceRecord>, users: Vec<UserRecord>) -> Directory {
        let d = Directory::default();
        for r in devices {
            d.put_device(r);
        }
        for u in users {
            d.put_user(u);
        }
        d
    }

    /// Insert or replace a device.
    pub fn put_device(&self, r: DeviceRecord) {
        let r = Arc::new(r);
        self.by_num.write().insert(r.num, r.clone());
        self.devices.write().insert(r.id.clone(), r);
    }

    /// A device by its internal number.
    pub fn device_by_num(&self, num: u32) -> Option<Arc<DeviceRecord>> {
        self.by_num.read().get(&num).cloned()
    }

    /// Insert or replace a user (and their token index).
    pub fn put_user(&self, u: UserRecord) {
        let mut tokens = self.user_tokens.write();
        tokens.retain(|_, name| *name != u.name);
        tokens.insert(u.token, u.name.clone());
        if let Some(p) = u.prev_token {
            tokens.insert(p, u.name.clone());
        }
        self.users.write().insert(u.name.clone(), Arc::new(u));
    }

    /// A device by id.
    pub fn device(&self, id: &str) -> Option<Arc<DeviceRecord>> {
        self.devices.read().get(id).cloned()
    }

    /// Every device, sorted by id.
    pub fn devices(&self) -> Vec<Arc<DeviceRecord>> {
        let mut v: Vec<_> = self.devices.read().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// How many devices `owner` owns (for `[quotas] devices_per_user`).
    pub fn count_owned_devices(&self, owner: &str) -> u64 {
        self.devices
            .read()
            .values()
            .filter(|d| d.owner == owner)
            .count() as u64
    }

    /// A user by name.
    pub fn user(&self, name: &str) -> Option<Arc<UserRecord>> {
        self.users.read().get(name).cloned()
    }

    /// Check a device's id and token.
    pub fn authenticate_device(&self, id: &str, token: &str) -> Option<Arc<DeviceRecord>> {
        let dev = self.device(id);
        let ok = match &dev {
            Some(d) => token_matches(token, &d.token, d.prev_token.as_ref()),
            None => {
                std::hint::black_box(token_matches(token, &DUMMY, None));
                false
            }
        };
        if ok {
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

    /// Check `name:token` from Basic auth: a device id first, then a user.
    pub fn authenticate_basic(&self, id: &str, token: &str) -> Option<Principal> {
        if let Some(d) = self.authenticate_device(id, token) {
            return Some(Principal::Device(d));
        }
        let u = self.user(id)?;
        token_matches(token, &u.token, u.prev_token.as_ref()).then_some(Principal::User(u))
    }
}

impl<'a> Resource<'a> {
    /// A channel as a resource.
    pub fn channel(c: &'a crate::store::ChannelRecord) -> Self {
        Resource::Owned {
            kind: KIND_CHANNEL,
            num: c.num,
            name: &c.name,
            owner: &c.owner,
        }
    }

    /// A file as a resource.
    pub fn file(f: &'a crate::store::FileRecord) -> Self {
        Resource::Owned {
            kind: KIND_FILE,
            num: f.num,
            name: &f.name,
            owner: &f.owner,
        }
    }

    /// An alert as a resource.
    pub fn alert(a: &'a crate::store::AlertRecord) -> Self {
        Resource::Owned {
            kind: KIND_ALERT,
            num: a.id,
            name: &a.name,
            owner: &a.owner,
        }
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
    }

    #[test]
    fn ids() {
        for ok in ["greenhouse-3", "a", "A.b_c~d", &"x".repeat(64)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(65), "a%20"] {
            assert!(!valid_id(bad), "{bad}");
        }
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
