//! The rows the in-memory registries are loaded from at start
//! (devices, users, grants, presence, last contact, every record of a
//! table), and the management writes of device and user records.

use std::path::Path;

use super::typed::{Record, Records};
use super::{DeviceRecord, Store, StoreError, UserRecord};
use super::{DEVICES, GRANTS, LAST_SEEN, META, PRESENCE, USERS};

impl Store {
    /// Every stored presence state: `(device, flags, since)`.
    pub fn load_presence(&self) -> Result<Vec<(u32, u8, i64)>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(PRESENCE)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let (flags, since) = v.value();
                out.push((k.value(), flags, since));
            }
            Ok(out)
        })
    }

    /// Every device record.
    pub fn load_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.load_all(DEVICES)
    }

    /// Every user record.
    pub fn load_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.load_all(USERS)
    }

    /// Last contact per device, as persisted by the digest.
    pub fn load_last_seen(&self) -> Result<Vec<(u32, i64)>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(LAST_SEEN)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value(), v.value()));
            }
            Ok(out)
        })
    }

    /// Create a device: allocate its number and store the record. Fails
    /// with `Conflict` if the id exists. Blocking: call off the runtime.
    pub fn create_device(&self, rec: DeviceRecord) -> Result<DeviceRecord, StoreError> {
        let mut v = self.create_devices(vec![rec])?;
        Ok(v.remove(0))
    }

    /// Create several devices in one transaction, all or none (an id that
    /// exists is a `Conflict`). Numbers are allocated here. Blocking.
    pub fn create_devices(&self, recs: Vec<DeviceRecord>) -> Result<Vec<DeviceRecord>, StoreError> {
        self.create_devices_with(recs, |_, _| Ok(()))
    }

    /// [`Store::create_devices`], then `then` with the numbered records in
    /// the same transaction (what comes with them, e.g. sensor labels):
    /// all or nothing.
    pub fn create_devices_with(
        &self,
        mut recs: Vec<DeviceRecord>,
        mut then: impl FnMut(super::Tx<'_>, &[DeviceRecord]) -> Result<(), StoreError>,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        self.write(|txn| {
            {
                let mut devices = DEVICES.open(txn)?;
                let mut meta = txn.open_table(META)?;
                let mut next = meta.get("next_device")?.map_or(1, |v| v.value());
                for rec in &mut recs {
                    if devices.contains(rec.id.as_str())? {
                        return Err(StoreError::Conflict(format!("device '{}' exists", rec.id)));
                    }
                    rec.num = u32::try_from(next)
                        .map_err(|_| StoreError::Conflict("device numbers exhausted".into()))?;
                    next += 1;
                    devices.insert(rec.id.as_str(), rec)?;
                }
                meta.insert("next_device", next)?;
            }
            then(txn, &recs)
        })?;
        Ok(recs)
    }

    /// Replace a device record (same id and number). Blocking.
    pub fn put_device(&self, rec: &DeviceRecord) -> Result<(), StoreError> {
        self.write(|txn| DEVICES.open(txn)?.insert(rec.id.as_str(), rec))
    }

    /// Insert or replace a user record. Blocking.
    pub fn put_user(&self, rec: &UserRecord) -> Result<(), StoreError> {
        self.write(|txn| USERS.open(txn)?.insert(rec.name.as_str(), rec))
    }

    /// Allocate the next number of a named counter (starting at 1) in `txn`.
    pub fn next_number<'t>(
        txn: impl Into<crate::store::Tx<'t>>,
        name: &str,
    ) -> Result<u32, StoreError> {
        let txn = txn.into();
        let mut meta = txn.open_table(META)?;
        let next = meta.get(name)?.map_or(1, |v| v.value());
        meta.insert(name, next + 1)?;
        u32::try_from(next).map_err(|_| StoreError::Conflict(format!("{name} exhausted")))
    }

    /// Every record of a table, in key order.
    pub fn load_all<R: Record>(&self, table: Records<R>) -> Result<Vec<R>, StoreError> {
        self.read(|txn| {
            let t = table.read(txn)?;
            let all = t.iter()?.map(|r| Ok(r?.1)).collect();
            all
        })
    }

    /// Every grant: `(kind, number, grantee, level)`.
    pub fn load_grants(&self) -> Result<Vec<(u8, u32, String, u8)>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(GRANTS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let (kind, num, who) = k.value();
                out.push((kind, num, who.to_string(), v.value()));
            }
            Ok(out)
        })
    }

    /// Size of the data file in bytes.
    pub fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// The data file's length now.
    pub fn data_file_len(&self) -> u64 {
        Store::file_len(&self.path)
    }
}
