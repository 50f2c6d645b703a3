//! The image of the redb tables in PostgreSQL (schema version 1).
//!
//! Every table of the data file (`crate::store::tables`, listed once in
//! `crate::ops::every_table!`) has a PostgreSQL table of the same name
//! whose columns are its key's parts, then its value's parts, in order,
//! under the names of [`SPECS`]. A record the server encodes (a device, a
//! chunk of readings, an inbox row) stays the same bytes in a `bytea`
//! column: one encoder, two stores, and a copy both ways is exact.
//!
//! How a redb part becomes a column ([`Cols`]):
//!
//! | redb | PostgreSQL | note |
//! |---|---|---|
//! | `u8` | `smallint` | |
//! | `u16` | `integer` | |
//! | `u32` | `bigint` | the whole range, not `integer`'s half |
//! | `u64` | `bigint` | a value over 2^63-1 is refused, never wrapped |
//! | `i64` | `bigint` | |
//! | `&str` | `text` | PostgreSQL refuses a NUL character: the copy then fails naming the table |
//! | `&[u8]` | `bytea` | |
//! | `()` | no column | a set (`channel_members`, ...) |
//!
//! The columns are checked against the database before a copy
//! ([`check_columns`]), so the migration's SQL and this list cannot drift
//! apart unnoticed.

use redb::Value;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// One column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `text`.
    Text,
    /// `bytea`.
    Bytea,
}

impl Kind {
    /// The PostgreSQL type.
    pub fn pg_type(self) -> Type {
        match self {
            Kind::Int2 => Type::INT2,
            Kind::Int4 => Type::INT4,
            Kind::Int8 => Type::INT8,
            Kind::Text => Type::TEXT,
            Kind::Bytea => Type::BYTEA,
        }
    }

    /// Its name in `information_schema.columns.data_type`.
    pub fn sql_name(self) -> &'static str {
        match self {
            Kind::Int2 => "smallint",
            Kind::Int4 => "integer",
            Kind::Int8 => "bigint",
            Kind::Text => "text",
            Kind::Bytea => "bytea",
        }
    }
}

/// One column's value, on its way between the two stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    /// Any of the integer kinds.
    Int(i64),
    /// `text`.
    Text(String),
    /// `bytea`.
    Bytes(Vec<u8>),
}

impl Cell {
    /// About the bytes it holds.
    pub fn bytes(&self) -> usize {
        match self {
            Cell::Int(_) => 8,
            Cell::Text(s) => s.len(),
            Cell::Bytes(b) => b.len(),
        }
    }
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            // The ranges were checked when the cell was made (`Cols::put`).
            Cell::Int(i) if *ty == Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
            Cell::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Cell::Int(i) => i.to_sql(ty, out),
            Cell::Text(s) => s.to_sql(ty, out),
            Cell::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [Type::INT2, Type::INT4, Type::INT8, Type::TEXT, Type::BYTEA].contains(ty)
    }

    to_sql_checked!();
}

/// A redb key or value type that maps to PostgreSQL columns.
pub trait Cols: Value + 'static {
    /// The columns' kinds, appended to `out`.
    fn kinds(out: &mut Vec<Kind>);
    /// The value as cells, appended to `out`.
    fn put(v: &Self::SelfType<'_>, out: &mut Vec<Cell>) -> Result<(), String>;
    /// The value read back from its cells (exactly as many as `kinds`).
    fn take(cells: &[Cell]) -> Result<Self::SelfType<'_>, String>;

    /// As [`Cols::put`] for a range's bound, where a number too large
    /// for `bigint` (`u64::MAX` as "to the end") is cut to `i64::MAX`
    /// instead of refused: `true` if this value was cut (no stored key
    /// can have a part that large, so the caller compares the key only up
    /// to that part).
    fn put_bound(v: &Self::SelfType<'_>, out: &mut Vec<Cell>) -> Result<bool, String> {
        Self::put(v, out).map(|()| false)
    }

    /// Where [`Cols::put_bound`] first cut a part: the number of cells up
    /// to and including it, or `None`. (Tuples say which of their parts.)
    fn bound_cells(v: &Self::SelfType<'_>) -> Result<(Vec<Cell>, Option<usize>), String> {
        let mut out = Vec::new();
        let cut = Self::put_bound(v, &mut out)?;
        Ok((out, cut.then_some(1)))
    }

    /// How many columns.
    fn width() -> usize {
        let mut k = Vec::new();
        Self::kinds(&mut k);
        k.len()
    }
}

fn int(cells: &[Cell]) -> Result<i64, String> {
    match cells.first() {
        Some(Cell::Int(i)) => Ok(*i),
        other => Err(format!("expected an integer, found {other:?}")),
    }
}

macro_rules! int_cols {
    ($t:ty, $kind:expr) => {
        impl Cols for $t {
            fn kinds(out: &mut Vec<Kind>) {
                out.push($kind);
            }
            fn put(v: &$t, out: &mut Vec<Cell>) -> Result<(), String> {
                let i = i64::try_from(*v)
                    .map_err(|_| format!("{v} does not fit PostgreSQL's bigint"))?;
                out.push(Cell::Int(i));
                Ok(())
            }
            fn take(cells: &[Cell]) -> Result<$t, String> {
                let i = int(cells)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range here"))
            }
        }
    };
}

int_cols!(u8, Kind::Int2);
int_cols!(u16, Kind::Int4);
int_cols!(u32, Kind::Int8);
int_cols!(i64, Kind::Int8);

impl Cols for u64 {
    fn kinds(out: &mut Vec<Kind>) {
        out.push(Kind::Int8);
    }
    fn put(v: &u64, out: &mut Vec<Cell>) -> Result<(), String> {
        let i = i64::try_from(*v).map_err(|_| format!("{v} does not fit PostgreSQL's bigint"))?;
        out.push(Cell::Int(i));
        Ok(())
    }
    fn take(cells: &[Cell]) -> Result<u64, String> {
        let i = int(cells)?;
        u64::try_from(i).map_err(|_| format!("{i} is out of range here"))
    }
    fn put_bound(v: &u64, out: &mut Vec<Cell>) -> Result<bool, String> {
        out.push(Cell::Int(i64::try_from(*v).unwrap_or(i64::MAX)));
        Ok(*v > i64::MAX as u64)
    }
}

impl Cols for &'static str {
    fn kinds(out: &mut Vec<Kind>) {
        out.push(Kind::Text);
    }
    fn put(v: &&str, out: &mut Vec<Cell>) -> Result<(), String> {
        out.push(Cell::Text(v.to_string()));
        Ok(())
    }
    fn take(cells: &[Cell]) -> Result<&str, String> {
        match cells.first() {
            Some(Cell::Text(s)) => Ok(s),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl Cols for &'static [u8] {
    fn kinds(out: &mut Vec<Kind>) {
        out.push(Kind::Bytea);
    }
    fn put(v: &&[u8], out: &mut Vec<Cell>) -> Result<(), String> {
        out.push(Cell::Bytes(v.to_vec()));
        Ok(())
    }
    fn take(cells: &[Cell]) -> Result<&[u8], String> {
        match cells.first() {
            Some(Cell::Bytes(b)) => Ok(b),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl Cols for () {
    fn kinds(_: &mut Vec<Kind>) {}
    fn put(_: &(), _: &mut Vec<Cell>) -> Result<(), String> {
        Ok(())
    }
    fn take(_: &[Cell]) -> Result<(), String> {
        Ok(())
    }
}

macro_rules! tuple_cols {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Cols),+> Cols for ($($t,)+) {
            fn kinds(out: &mut Vec<Kind>) {
                $($t::kinds(out);)+
            }
            fn put(v: &Self::SelfType<'_>, out: &mut Vec<Cell>) -> Result<(), String> {
                $($t::put(&v.$i, out)?;)+
                Ok(())
            }
            fn put_bound(v: &Self::SelfType<'_>, out: &mut Vec<Cell>) -> Result<bool, String> {
                let mut cut = false;
                $(cut |= $t::put_bound(&v.$i, out)?;)+
                Ok(cut)
            }
            fn bound_cells(v: &Self::SelfType<'_>) -> Result<(Vec<Cell>, Option<usize>), String> {
                let mut out = Vec::new();
                let mut first = None;
                $(
                    if $t::put_bound(&v.$i, &mut out)? && first.is_none() {
                        first = Some(out.len());
                    }
                )+
                Ok((out, first))
            }
            // The last part's `at +=` is never read.
            #[allow(unused_assignments)]
            fn take(cells: &[Cell]) -> Result<Self::SelfType<'_>, String> {
                let mut at = 0;
                Ok(($({
                    let w = $t::width();
                    let part = cells.get(at..at + w).ok_or("too few columns")?;
                    at += w;
                    $t::take(part)?
                },)+))
            }
        }
    };
}

tuple_cols!(A 0, B 1);
tuple_cols!(A 0, B 1, C 2);
tuple_cols!(A 0, B 1, C 2, D 3);

/// A table's column names: its key's, then its value's.
pub struct Spec {
    /// The table (the same name as in redb).
    pub table: &'static str,
    /// The key's columns, in order (the primary key).
    pub key: &'static [&'static str],
    /// The value's columns.
    pub value: &'static [&'static str],
}

/// Every mirrored table's columns; `migrations/0001_mirror.sql` creates
/// them. A table missing here cannot be copied (the copy says so).
pub const SPECS: &[Spec] = &[
    spec(
        "readings",
        &["device", "sensor", "minute", "part"],
        &["data"],
    ),
    spec("sealed", &["device", "sensor", "minute", "part"], &["data"]),
    spec("sensors", &["device", "sensor"], &["first_at"]),
    spec("digest_log", &["seq"], &["batch"]),
    spec("last_seen", &["device"], &["at"]),
    spec("presence", &["device"], &["flags", "since"]),
    spec("presence_events", &["idx"], &["event"]),
    spec("presence_notify", &["owner"], &["device", "channel"]),
    spec("devices", &["id"], &["record"]),
    spec("users", &["name"], &["record"]),
    spec("meta", &["name"], &["value"]),
    spec("channels", &["name"], &["record"]),
    spec("channel_members", &["channel", "device", "sensor"], &[]),
    spec("channel_meta", &["channel"], &["first_idx", "next_idx"]),
    spec("channel_items", &["channel", "idx"], &["item"]),
    spec("alerts", &["name"], &["record"]),
    spec("alert_state", &["alert"], &["fired"]),
    spec("alert_events", &["alert", "n"], &["event"]),
    spec("inbox", &["device", "seq"], &["row"]),
    spec("inbox_meta", &["device"], &["next_seq", "pending"]),
    spec("grants", &["kind", "num", "grantee"], &["level"]),
    spec("files", &["name"], &["record"]),
    spec("dead_letters", &["seq"], &["reason"]),
    spec("retention", &["device", "sensor"], &["keep_days"]),
    spec("aggregates", &["device", "sensor", "minute"], &["agg"]),
    spec("targets", &["name"], &["record"]),
    spec("outbox", &["target", "n"], &["body"]),
    spec("outbox_waiting", &["target"], &["waiting"]),
    spec("target_history", &["target", "n"], &["attempt"]),
    spec("notify_dead", &["target", "n"], &["body"]),
    spec("presence_targets", &["owner"], &["target"]),
    spec("commands", &["device", "seq"], &["record"]),
    spec("command_meta", &["device"], &["kept", "delivered_upto"]),
    spec("command_expiry", &["expires_at", "device", "seq"], &[]),
    spec("sensor_labels", &["device", "sensor"], &["labels"]),
    spec(
        "channel_labels",
        &["channel", "device", "sensor"],
        &["label"],
    ),
    spec("alert_member_state", &["alert", "device", "sensor"], &[]),
    spec("deleted_devices", &["device"], &["deleted_at"]),
];

const fn spec(
    table: &'static str,
    key: &'static [&'static str],
    value: &'static [&'static str],
) -> Spec {
    Spec { table, key, value }
}

/// The columns of uploaded files' contents (not a redb table: redb keeps
/// them in the files directory): `file_blobs (sha256, part, bytes)`, in
/// parts of [`BLOB_PART`] bytes.
pub const BLOB_TABLE: &str = "file_blobs";
/// Bytes per `file_blobs` row.
pub const BLOB_PART: usize = 1 << 20;

/// The spec of `table`.
pub fn spec_of(table: &str) -> Result<&'static Spec, String> {
    SPECS.iter().find(|s| s.table == table).ok_or_else(|| {
        format!("table '{table}' has no PostgreSQL image (src/pg/mirror.rs and a migration)")
    })
}

/// The columns of the table of `K` → `V`, with their kinds, checked
/// against its spec's names.
pub fn columns<K: Cols, V: Cols>(spec: &Spec) -> Result<Vec<(&'static str, Kind)>, String> {
    let mut kinds = Vec::new();
    K::kinds(&mut kinds);
    let key = kinds.len();
    V::kinds(&mut kinds);
    if key != spec.key.len() || kinds.len() - key != spec.value.len() {
        return Err(format!(
            "table '{}': redb has {} key and {} value parts, the image {} and {}",
            spec.table,
            key,
            kinds.len() - key,
            spec.key.len(),
            spec.value.len()
        ));
    }
    Ok(spec
        .key
        .iter()
        .chain(spec.value)
        .copied()
        .zip(kinds)
        .collect())
}

/// Check that the database's `table` has exactly `cols` (names, types,
/// order), so a copy can never put a value in the wrong column.
pub async fn check_columns(
    db: &impl tokio_postgres::GenericClient,
    table: &str,
    cols: &[(&str, Kind)],
) -> Result<(), String> {
    let rows = db
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .map_err(|e| super::describe(&e))?;
    let have: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want: Vec<(String, String)> = cols
        .iter()
        .map(|(n, k)| (n.to_string(), k.sql_name().to_string()))
        .collect();
    if have != want {
        return Err(format!(
            "table '{table}' in the database has columns {have:?}, this overlord expects {want:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table of the data file has a spec whose names fit its key and
    /// value types (the database side is checked by tests/export_store.rs).
    #[test]
    fn every_table_has_an_image_that_fits_its_types() {
        let mut seen = Vec::new();
        macro_rules! check {
            ($($t:ident),*) => {$({
                let def = crate::store::AnyTable::def(&crate::store::$t);
                let name = redb::TableHandle::name(&def).to_string();
                let spec = spec_of(&name).unwrap();
                fn cols<K: redb::Key + Cols, V: Cols>(
                    _: redb::TableDefinition<'static, K, V>,
                    spec: &Spec,
                ) -> Vec<(&'static str, Kind)> {
                    columns::<K, V>(spec).unwrap()
                }
                let c = cols(def, spec);
                assert!(!c.is_empty(), "{name}");
                seen.push(name);
            })*};
        }
        crate::ops::every_table!(check);
        assert_eq!(seen.len(), SPECS.len(), "a spec without a table: {seen:?}");
    }

    #[test]
    fn values_go_to_cells_and_back() {
        type K = (u8, u32, &'static str);
        let mut cells = Vec::new();
        K::put(&(7, u32::MAX, "näme"), &mut cells).unwrap();
        assert_eq!(
            cells,
            [
                Cell::Int(7),
                Cell::Int(u32::MAX as i64),
                Cell::Text("näme".into())
            ]
        );
        assert_eq!(K::take(&cells).unwrap(), (7, u32::MAX, "näme"));
        // Out of range either way is an error, never a wrapped value.
        assert!(u64::put(&u64::MAX, &mut Vec::new()).is_err());
        assert!(u8::take(&[Cell::Int(256)]).is_err());
        assert!(u32::take(&[Cell::Int(-1)]).is_err());
        assert!(<&[u8]>::take(&[Cell::Int(1)]).is_err());
        assert!(<(u32, u32)>::take(&[Cell::Int(1)]).is_err());
    }
}
