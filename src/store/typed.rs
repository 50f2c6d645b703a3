//! Typed tables: a record table is opened as [`Records<R>`] and read and
//! written as `R`, never as bytes at the call site.
//!
//! **Decision: a typed wrapper over the existing `&[u8]` tables, not a
//! `redb::Value` impl per record.** redb stores each table's key and value
//! *type name* in the file and refuses to open a table under another one
//! (`TableTypeMismatch`). A `redb::Value` impl can only name itself with
//! `TypeName::new`, a user-defined name, while the tables were created as
//! `&[u8]`, an internal one; so `TableDefinition<&str, DeviceRecord>`
//! would stop every existing data file from opening until a migration
//! copied every record table into a new one. A wrapper gives the same
//! typing at each call site with the file format unchanged: the
//! definitions keep their names and `&[u8]` values, old files open as
//! they are, and backups, `check` and restore (which copy tables by
//! their raw definition, [`Records::def`]) are untouched. The record
//! encodings themselves (a version byte, fields only ever appended) are
//! what lets a record grow; a `Value` impl would not change that. A
//! migration was the alternative: a copy of every record table on the
//! first start, after which an older server (a rollback) and an older
//! backup restored by hand would no longer match; nothing gained at the
//! call sites would pay for that. `tests/old_files.rs` checks both
//! directions: a file written with byte-valued tables opens and reads,
//! and a file written now opens with them.
//!
//! Where the typed view is declared: in `super::tables` for the store's
//! own records (`DEVICES: Records<DeviceRecord>`), and beside the record
//! type for a feature's (`inbox::ROWS = Records::of(store::INBOX)`), so
//! that `store` imports nothing above it while each table's name and key
//! are still declared once, in `super::tables`.
//!
//! A record says once how it is stored ([`Record`]); [`RecordTable`]
//! encodes on `insert` and decodes on `get`, `range` and `iter`, and a
//! value that does not decode becomes [`StoreError::Corrupt`] here, naming
//! the table (which also marks the store damaged, as any corrupt read does).
//!
//! Chunks of readings (`readings`) stay raw: they are decoded a value at a
//! time into a callback by sensor kind (`store::chunk`), not into a record.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::ops::RangeBounds;

use redb::{Key, TableDefinition, TableHandle, Value};

use super::kv::{Guard, Table, Tx};
use super::varint::Corrupt;
use super::StoreError;
use crate::pg::mirror::Cols;

/// The key of `R`'s table, as redb hands it out.
pub type KeyOf<'a, R> = <<R as Record>::Key as Value>::SelfType<'a>;

/// A value stored in a record table.
pub trait Record: Sized {
    /// The table's key type.
    type Key: Key + Cols + 'static;

    /// The stored bytes.
    fn to_row(&self) -> Vec<u8>;

    /// Decode the stored bytes of the row at `key` (most records ignore
    /// the key; a few take a number from it).
    fn from_row(key: KeyOf<'_, Self>, bytes: &[u8]) -> Result<Self, Corrupt>;
}

/// `impl Record` for a type stored with its own `encode(&self) -> Vec<u8>`
/// and `decode(&[u8]) -> Result<Self, Corrupt>`, in a table keyed by
/// `$key` (the key is not part of the record).
macro_rules! record {
    ($t:ty, $key:ty) => {
        impl $crate::store::Record for $t {
            type Key = $key;
            fn to_row(&self) -> Vec<u8> {
                self.encode()
            }
            fn from_row(
                _: <$key as ::redb::Value>::SelfType<'_>,
                bytes: &[u8],
            ) -> Result<Self, $crate::store::varint::Corrupt> {
                Self::decode(bytes)
            }
        }
    };
}
pub(crate) use record;

/// The definition of a table of `R`s: what `store::tables` declares.
pub struct Records<R: Record> {
    def: TableDefinition<'static, R::Key, &'static [u8]>,
    record: PhantomData<fn() -> R>,
}

impl<R: Record> Clone for Records<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Record> Copy for Records<R> {}

impl<R: Record> Records<R> {
    /// The table called `name`, holding `R`s.
    pub const fn new(name: &'static str) -> Self {
        Records {
            def: TableDefinition::new(name),
            record: PhantomData,
        }
    }

    /// The raw table `def` (declared in `store::tables`), read as `R`s:
    /// how a feature declares the records of a table it owns.
    pub const fn of(def: TableDefinition<'static, R::Key, &'static [u8]>) -> Self {
        Records {
            def,
            record: PhantomData,
        }
    }

    /// The raw definition (bytes values), as stored in the file: for
    /// copying every table whole (backup, check) and removing rows by key.
    pub const fn def(&self) -> TableDefinition<'static, R::Key, &'static [u8]> {
        self.def
    }

    /// Open it in a write transaction.
    pub fn open<'t>(&self, txn: impl Into<Tx<'t>>) -> Result<WriteRecords<'t, R>, StoreError> {
        Ok(RecordTable::wrap(
            txn.into().open_table(self.def)?,
            self.def,
        ))
    }

    /// Open it in a read transaction.
    pub fn read<'t>(&self, txn: impl Into<Tx<'t>>) -> Result<ReadRecords<'t, R>, StoreError> {
        Ok(RecordTable::wrap(
            txn.into().open_table(self.def)?,
            self.def,
        ))
    }
}

/// Any table's raw definition as it is stored in the file: a
/// [`TableDefinition`] itself, or the one under [`Records`]. For code that
/// handles every table alike (`crate::ops` copies and checks them all).
pub trait AnyTable {
    /// The key type.
    type K: Key + 'static;
    /// The value type as stored (`&[u8]` for records).
    type V: Value + 'static;
    /// The definition.
    fn def(&self) -> TableDefinition<'static, Self::K, Self::V>;
}

impl<K: Key + 'static, V: Value + 'static> AnyTable for TableDefinition<'static, K, V> {
    type K = K;
    type V = V;
    fn def(&self) -> TableDefinition<'static, K, V> {
        *self
    }
}

impl<R: Record> AnyTable for Records<R> {
    type K = R::Key;
    type V = &'static [u8];
    fn def(&self) -> TableDefinition<'static, R::Key, &'static [u8]> {
        self.def
    }
}

/// A record table opened in a write transaction.
pub type WriteRecords<'t, R> = RecordTable<'t, R>;
/// A record table opened in a read transaction.
pub type ReadRecords<'t, R> = RecordTable<'t, R>;

/// An open table of `R`s, in a transaction of either store.
pub struct RecordTable<'t, R: Record> {
    table: Table<'t, R::Key, &'static [u8]>,
    def: TableDefinition<'static, R::Key, &'static [u8]>,
    record: PhantomData<fn() -> R>,
}

/// A row's key as the store hands it out, and its decoded record.
pub type Row<'a, R> = (Guard<'a, <R as Record>::Key>, R);

impl<'t, R: Record> RecordTable<'t, R> {
    fn wrap(
        table: Table<'t, R::Key, &'static [u8]>,
        def: TableDefinition<'static, R::Key, &'static [u8]>,
    ) -> Self {
        RecordTable {
            table,
            def,
            record: PhantomData,
        }
    }
}

/// Decode one stored value of table `name`: the one place a value that
/// does not decode becomes [`StoreError::Corrupt`].
fn decode<R: Record>(
    def: &TableDefinition<'static, R::Key, &'static [u8]>,
    key: KeyOf<'_, R>,
    bytes: &[u8],
) -> Result<R, StoreError> {
    R::from_row(key, bytes).map_err(|Corrupt| {
        let name = def.name();
        super::corrupt(format!("a stored value of `{name}` does not decode"))
    })
}

impl<R: Record> RecordTable<'_, R> {
    /// The record at `key`, if there is one.
    pub fn get<'k>(&self, key: impl Borrow<KeyOf<'k, R>>) -> Result<Option<R>, StoreError> {
        let key = key.borrow();
        let Some(v) = self.table.get(key)? else {
            return Ok(None);
        };
        let bytes = <R::Key as Value>::as_bytes(key);
        let key = <R::Key as Value>::from_bytes(bytes.as_ref());
        decode(&self.def, key, v.value()).map(Some)
    }

    /// Whether there is a row at `key` (nothing is decoded).
    pub fn contains<'k>(&self, key: impl Borrow<KeyOf<'k, R>>) -> Result<bool, StoreError> {
        Ok(self.table.get(key)?.is_some())
    }

    /// Rows with keys in `range`, in key order (double-ended), decoded as
    /// they are read.
    pub fn range<'a, KR>(
        &self,
        range: impl RangeBounds<KR> + 'a,
    ) -> Result<impl DoubleEndedIterator<Item = Result<Row<'_, R>, StoreError>> + '_, StoreError>
    where
        KR: Borrow<KeyOf<'a, R>> + 'a,
    {
        let def = &self.def;
        Ok(self.table.range(range)?.map(move |row| {
            let (k, v) = row?;
            let rec = decode(def, k.value(), v.value())?;
            Ok((k, rec))
        }))
    }

    /// Every row, in key order, decoded as they are read.
    pub fn iter(
        &self,
    ) -> Result<impl DoubleEndedIterator<Item = Result<Row<'_, R>, StoreError>> + '_, StoreError>
    {
        let def = &self.def;
        Ok(self.table.iter()?.map(move |row| {
            let (k, v) = row?;
            let rec = decode(def, k.value(), v.value())?;
            Ok((k, rec))
        }))
    }

    /// The keys in `range`, in key order (double-ended); nothing is
    /// decoded.
    pub fn keys<'a, KR>(
        &self,
        range: impl RangeBounds<KR> + 'a,
    ) -> Result<
        impl DoubleEndedIterator<Item = Result<Guard<'_, R::Key>, StoreError>> + '_,
        StoreError,
    >
    where
        KR: Borrow<KeyOf<'a, R>> + 'a,
    {
        Ok(self.table.range(range)?.map(|row| row.map(|(k, _)| k)))
    }

    /// Store `rec` at `key` (replacing what was there).
    pub fn insert<'k>(
        &mut self,
        key: impl Borrow<KeyOf<'k, R>>,
        rec: &R,
    ) -> Result<(), StoreError> {
        self.table.insert(key, rec.to_row().as_slice())?;
        Ok(())
    }

    /// Remove the row at `key`; whether there was one. The old value is
    /// not decoded, so a damaged row can still be removed.
    pub fn remove<'k>(&mut self, key: impl Borrow<KeyOf<'k, R>>) -> Result<bool, StoreError> {
        Ok(self.table.remove(key)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeviceMeta, DeviceRecord, DEVICES};
    use redb::{Database, ReadableDatabase};

    fn device(id: &str) -> DeviceRecord {
        DeviceRecord {
            num: 1,
            id: id.into(),
            name: "n".into(),
            owner: "admin".into(),
            token: [7; 32],
            prev_token: None,
            created: 5,
            meta: DeviceMeta::default(),
        }
    }

    #[test]
    fn records_round_trip_and_a_bad_value_is_corrupt_naming_its_table() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            DEVICES
                .open(&txn)
                .unwrap()
                .insert("a", &device("a"))
                .unwrap();
            // Bytes no record encodes, written under the raw definition.
            let mut raw = txn.open_table(DEVICES.def()).unwrap();
            raw.insert("b", &[9u8, 9, 9][..]).unwrap();
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let t = DEVICES.read(&txn).unwrap();
        assert_eq!(t.get("a").unwrap(), Some(device("a")));
        assert_eq!(t.get("c").unwrap(), None);
        assert!(t.contains("b").unwrap());
        match t.get("b") {
            Err(StoreError::Corrupt(why)) => assert!(why.contains("`devices`"), "{why}"),
            other => panic!("{other:?}"),
        }
        let keys: Vec<String> = t
            .keys::<&str>(..)
            .unwrap()
            .map(|k| k.unwrap().value().to_string())
            .collect();
        assert_eq!(keys, ["a", "b"], "keys are read without decoding");
        let mut rows = t.iter().unwrap();
        assert_eq!(rows.next().unwrap().unwrap().1, device("a"));
        assert!(matches!(rows.next(), Some(Err(StoreError::Corrupt(_)))));
        drop(rows);
        drop(t);
        drop(txn);
        let txn = db.begin_write().unwrap();
        let mut t = DEVICES.open(&txn).unwrap();
        assert!(t.remove("b").unwrap(), "a damaged row can be removed");
        assert!(!t.remove("b").unwrap());
    }
}
