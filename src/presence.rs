//! Device presence: when each device was last heard from.
//!
//! The digest updates it after each committed batch; the writer persists
//! it in `last_seen`, and it is loaded from there on start.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::codec::Micros;

/// Last contact per device number.
#[derive(Default)]
pub struct Presence {
    last_seen: RwLock<HashMap<u32, Micros>>,
}

impl Presence {
    /// Start from persisted values.
    pub fn from_stored(rows: Vec<(u32, Micros)>) -> Presence {
        Presence {
            last_seen: RwLock::new(rows.into_iter().collect()),
        }
    }

    /// Record a contact (keeps the latest).
    pub fn saw(&self, device: u32, at: Micros) {
        let mut m = self.last_seen.write();
        let e = m.entry(device).or_insert(at);
        if at > *e {
            *e = at;
        }
    }

    /// Last contact, if any.
    pub fn last_seen(&self, device: u32) -> Option<Micros> {
        self.last_seen.read().get(&device).copied()
    }
}
