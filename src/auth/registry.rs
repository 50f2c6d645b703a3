//! The registry: the in-memory [`Directory`] of devices, users, grants
//! and login sessions, loaded from the store on start and updated after
//! every committed change. Authentication and authorisation read only
//! this, so they never wait for the disk.
//!
//! What may be done with these records is [`super::policy`]; checking a
//! presented secret against them is [`super::credentials`].

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::credentials::Session;
use super::policy::Level;
use crate::store::records::TokenHash;
use crate::store::{DeviceRecord, UserRecord};

/// The in-memory directory of devices and users, loaded from the store on
/// start and updated after every committed change. Authentication reads
/// only this, so it never waits for the disk.
#[derive(Default)]
pub struct Directory {
    /// (kind, number) → (grantee label, level).
    pub(super) grants: RwLock<HashMap<(u8, u32), Vec<Grantee>>>,
    devices: RwLock<HashMap<String, Arc<DeviceRecord>>>,
    by_num: RwLock<HashMap<u32, Arc<DeviceRecord>>>,
    users: RwLock<HashMap<String, Arc<UserRecord>>>,
    /// User token digest (current or previous) → user name.
    pub(super) user_tokens: RwLock<HashMap<TokenHash, String>>,
    /// Device token digest (current or previous) → device id: finds a
    /// device from its token alone (a ThingSpeak `api_key`, an InfluxDB
    /// `Token`), as `user_tokens` does for users.
    pub(super) device_tokens: RwLock<HashMap<TokenHash, String>>,
    /// Login sessions: token digest → (user, expiry, the user's
    /// [`credential_stamp`](super::credential_stamp) at login). In memory
    /// only: a restart logs everyone out.
    pub(super) sessions: parking_lot::Mutex<HashMap<TokenHash, Session>>,
}

/// A grantee's label (`user:ann`, `device:gh3`, `anonymous`) and level.
pub(super) type Grantee = (String, u8);

/// A device id is an opaque URL-safe token: 1–64 of `A-Z a-z 0-9 . _ ~ -`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// A short random id for a device created without one: `d` + 12 hex.
pub fn generate_id() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("the OS random source failed");
    format!("d{}", super::credentials::hex(&b))
}

/// Building the directory.
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
}

/// Devices.
impl Directory {
    /// Insert or replace a device.
    pub fn put_device(&self, r: DeviceRecord) {
        let r = Arc::new(r);
        {
            let mut tokens = self.device_tokens.write();
            if let Some(old) = self.devices.read().get(&r.id) {
                tokens.remove(&old.token);
                if let Some(p) = &old.prev_token {
                    tokens.remove(p);
                }
            }
            tokens.insert(r.token, r.id.clone());
            if let Some(p) = r.prev_token {
                tokens.insert(p, r.id.clone());
            }
        }
        self.by_num.write().insert(r.num, r.clone());
        self.devices.write().insert(r.id.clone(), r);
    }

    /// Forget a deleted device: its credentials stop working at once.
    pub fn remove_device(&self, num: u32) {
        if let Some(r) = self.by_num.write().remove(&num) {
            self.devices.write().remove(&r.id);
        }
        self.grants
            .write()
            .remove(&(super::policy::KIND_DEVICE, num));
    }

    /// Forget every grant to `grantee` (`user:NAME`, `device:ID`): one
    /// that no longer exists.
    pub fn remove_grants_to(&self, grantee: &str) {
        for list in self.grants.write().values_mut() {
            list.retain(|(p, _)| p != grantee);
        }
    }

    /// Forget a deleted user: their tokens and sessions stop working.
    pub fn remove_user(&self, name: &str) {
        self.users.write().remove(name);
        self.user_tokens.write().retain(|_, n| n != name);
        self.sessions.lock().retain(|_, s| s.0 != name);
        self.remove_grants_to(&format!("user:{name}"));
    }

    /// Forget every grant on one channel (or other resource) of `kind`.
    pub fn remove_grants_on(&self, kind: u8, num: u32) {
        self.grants.write().remove(&(kind, num));
    }

    /// A device by its internal number.
    pub fn device_by_num(&self, num: u32) -> Option<Arc<DeviceRecord>> {
        self.by_num.read().get(&num).cloned()
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
}

/// Users.
impl Directory {
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

    /// How many administrators there are.
    pub fn count_administrators(&self) -> usize {
        self.users
            .read()
            .values()
            .filter(|u| u.role == crate::store::Role::Administrator)
            .count()
    }

    /// A user by name.
    pub fn user(&self, name: &str) -> Option<Arc<UserRecord>> {
        self.users.read().get(name).cloned()
    }
}

/// Grants (what they allow is [`Directory::authorize`]).
impl Directory {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["greenhouse-3", "a", "A.b_c~d", &"x".repeat(64)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(65), "a%20"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
