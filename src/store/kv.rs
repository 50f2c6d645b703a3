//! The storage boundary at the level of tables: a transaction on either
//! store ([`Tx`]) opens a [`Table`] with redb's methods, and every
//! feature's storage function, written once against them, runs on the
//! redb file and on PostgreSQL alike (docs/scale-out.md (a)).
//!
//! `Tx` is a borrowed view, `Copy`, made from the transaction the caller
//! already has: `Tx::from(&redb_write_txn)`, `Tx::from(&redb_read_txn)`
//! or `Tx::from(&pg_txn)`. A function that takes one serves both a write
//! and a read; a change through a read transaction is an error, as it
//! would not compile with redb's read-only tables.
//!
//! On redb every call is the redb call it replaces, with redb's errors
//! mapped to [`StoreError`] as before; on PostgreSQL it is one statement
//! ([`crate::pg::kv`]).

use std::borrow::Borrow;
use std::ops::RangeBounds;

use redb::{
    AccessGuard, Key, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    Value, WriteTransaction,
};

use super::StoreError;
use crate::pg::kv::{Owned, PgRange, PgTable, PgTxn};
use crate::pg::mirror::Cols;

/// A transaction of either store, as the tables see it.
#[derive(Clone, Copy)]
pub enum Tx<'a> {
    /// A redb write transaction.
    Write(&'a WriteTransaction),
    /// A redb read transaction.
    Read(&'a ReadTransaction),
    /// A PostgreSQL transaction (write or read).
    Pg(&'a PgTxn),
}

impl<'a> From<&'a WriteTransaction> for Tx<'a> {
    fn from(t: &'a WriteTransaction) -> Self {
        Tx::Write(t)
    }
}

impl<'a> From<&Tx<'a>> for Tx<'a> {
    fn from(t: &Tx<'a>) -> Self {
        *t
    }
}

impl<'a> From<&'a ReadTransaction> for Tx<'a> {
    fn from(t: &'a ReadTransaction) -> Self {
        Tx::Read(t)
    }
}

impl<'a> From<&'a PgTxn> for Tx<'a> {
    fn from(t: &'a PgTxn) -> Self {
        Tx::Pg(t)
    }
}

impl<'a> Tx<'a> {
    /// Open the table of `def`.
    pub fn open_table<K: Key + Cols, V: Cols>(
        self,
        def: TableDefinition<'_, K, V>,
    ) -> Result<Table<'a, K, V>, StoreError> {
        Ok(match self {
            Tx::Write(t) => Table::Write(t.open_table(def)?),
            Tx::Read(t) => Table::Read(t.open_table(def)?),
            Tx::Pg(t) => Table::Pg(t.open_table(def)?),
        })
    }
}

/// An open table of either store.
pub enum Table<'a, K: Key + Cols, V: Cols> {
    /// In a redb write transaction.
    Write(redb::Table<'a, K, V>),
    /// In a redb read transaction.
    Read(redb::ReadOnlyTable<K, V>),
    /// In a PostgreSQL transaction.
    Pg(PgTable<'a, K, V>),
}

/// A key or value read: redb's guard, or the bytes PostgreSQL sent.
pub enum Guard<'a, V: Value + 'static> {
    /// From redb.
    Redb(AccessGuard<'a, V>),
    /// From PostgreSQL.
    Pg(Owned<V>),
}

impl<V: Value + 'static> Guard<'_, V> {
    /// The value, as redb hands it out.
    pub fn value(&self) -> V::SelfType<'_> {
        match self {
            Guard::Redb(g) => g.value(),
            Guard::Pg(o) => o.value(),
        }
    }
}

/// A row: its key and its value.
pub type Row<'a, K, V> = (Guard<'a, K>, Guard<'a, V>);

fn redb_row<'a, K: Value + 'static, V: Value + 'static>(
    r: (AccessGuard<'a, K>, AccessGuard<'a, V>),
) -> Row<'a, K, V> {
    (Guard::Redb(r.0), Guard::Redb(r.1))
}

fn pg_row<'a, K: Value + 'static, V: Value + 'static>(r: (Owned<K>, Owned<V>)) -> Row<'a, K, V> {
    (Guard::Pg(r.0), Guard::Pg(r.1))
}

fn read_only() -> StoreError {
    StoreError::Io("a change in a read transaction".into())
}

impl<'a, K: Key + Cols, V: Cols> Table<'a, K, V> {
    /// The table as PostgreSQL has it, for the few callers that batch
    /// what redb does row by row (`store::chunks`' round cache).
    pub fn postgres(&self) -> Option<&PgTable<'a, K, V>> {
        match self {
            Table::Pg(t) => Some(t),
            _ => None,
        }
    }

    /// The value at `key`.
    pub fn get<'k>(
        &self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<Guard<'_, V>>, StoreError> {
        Ok(match self {
            Table::Write(t) => t.get(key)?.map(Guard::Redb),
            Table::Read(t) => t.get(key)?.map(Guard::Redb),
            Table::Pg(t) => t.get(key)?.map(Guard::Pg),
        })
    }

    /// Store `value` at `key`; the value that was there.
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<Guard<'_, V>>, StoreError> {
        Ok(match self {
            Table::Write(t) => t.insert(key, value)?.map(Guard::Redb),
            Table::Read(_) => return Err(read_only()),
            Table::Pg(t) => t.insert(key, value)?.map(Guard::Pg),
        })
    }

    /// Remove the row at `key`; its value, if there was one.
    pub fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<Guard<'_, V>>, StoreError> {
        Ok(match self {
            Table::Write(t) => t.remove(key)?.map(Guard::Redb),
            Table::Read(_) => return Err(read_only()),
            Table::Pg(t) => t.remove(key)?.map(Guard::Pg),
        })
    }

    /// The rows with keys in `range`, in key order (double-ended).
    pub fn range<'k, KR>(
        &self,
        range: impl RangeBounds<KR> + 'k,
    ) -> Result<Range<'_, K, V>, StoreError>
    where
        KR: Borrow<K::SelfType<'k>> + 'k,
    {
        Ok(match self {
            Table::Write(t) => Range::Redb(t.range(range)?),
            Table::Read(t) => Range::Redb(t.range(range)?),
            Table::Pg(t) => Range::Pg(t.range(range)?),
        })
    }

    /// Every row, in key order.
    pub fn iter(&self) -> Result<Range<'_, K, V>, StoreError> {
        Ok(match self {
            Table::Write(t) => Range::Redb(t.iter()?),
            Table::Read(t) => Range::Redb(t.iter()?),
            Table::Pg(t) => Range::Pg(t.iter()?),
        })
    }

    /// The row with the least key.
    pub fn first(&self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        Ok(match self {
            Table::Write(t) => t.first()?.map(redb_row),
            Table::Read(t) => t.first()?.map(redb_row),
            Table::Pg(t) => t.first()?.map(pg_row),
        })
    }

    /// The row with the greatest key.
    pub fn last(&self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        Ok(match self {
            Table::Write(t) => t.last()?.map(redb_row),
            Table::Read(t) => t.last()?.map(redb_row),
            Table::Pg(t) => t.last()?.map(pg_row),
        })
    }

    /// How many rows.
    pub fn len(&self) -> Result<u64, StoreError> {
        Ok(match self {
            Table::Write(t) => t.len()?,
            Table::Read(t) => t.len()?,
            Table::Pg(t) => t.len()?,
        })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(match self {
            Table::Write(t) => t.is_empty()?,
            Table::Read(t) => t.is_empty()?,
            Table::Pg(t) => t.is_empty()?,
        })
    }

    /// Keep only the rows for which `keep` is true.
    pub fn retain<F>(&mut self, keep: F) -> Result<(), StoreError>
    where
        F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    {
        match self {
            Table::Write(t) => t.retain(keep)?,
            Table::Read(_) => return Err(read_only()),
            Table::Pg(t) => t.retain(keep)?,
        }
        Ok(())
    }

    /// Keep only the rows in `range` for which `keep` is true.
    pub fn retain_in<'k, KR, F>(
        &mut self,
        range: impl RangeBounds<KR> + 'k,
        keep: F,
    ) -> Result<(), StoreError>
    where
        KR: Borrow<K::SelfType<'k>> + 'k,
        F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    {
        match self {
            Table::Write(t) => t.retain_in(range, keep)?,
            Table::Read(_) => return Err(read_only()),
            Table::Pg(t) => t.retain_in(range, keep)?,
        }
        Ok(())
    }

    /// Remove and return the row with the least key.
    pub fn pop_first(&mut self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        Ok(match self {
            Table::Write(t) => t.pop_first()?.map(redb_row),
            Table::Read(_) => return Err(read_only()),
            Table::Pg(t) => t.pop_first()?.map(pg_row),
        })
    }

    /// Remove and return the row with the greatest key.
    pub fn pop_last(&mut self) -> Result<Option<Row<'_, K, V>>, StoreError> {
        Ok(match self {
            Table::Write(t) => t.pop_last()?.map(redb_row),
            Table::Read(_) => return Err(read_only()),
            Table::Pg(t) => t.pop_last()?.map(pg_row),
        })
    }
}

/// Rows being read from either store, in key order, from both ends.
pub enum Range<'a, K: Key + Cols, V: Cols> {
    /// From redb.
    Redb(redb::Range<'a, K, V>),
    /// From PostgreSQL, a page at a time.
    Pg(PgRange<'a, K, V>),
}

impl<'a, K: Key + Cols, V: Cols> Iterator for Range<'a, K, V> {
    type Item = Result<Row<'a, K, V>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Range::Redb(r) => r.next().map(|x| x.map(redb_row).map_err(StoreError::from)),
            Range::Pg(r) => r.next().map(|x| x.map(pg_row)),
        }
    }
}

impl<K: Key + Cols, V: Cols> DoubleEndedIterator for Range<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Range::Redb(r) => r
                .next_back()
                .map(|x| x.map(redb_row).map_err(StoreError::from)),
            Range::Pg(r) => r.next_back().map(|x| x.map(pg_row)),
        }
    }
}
