//! The schema's versions, applied in order.
//!
//! Each migration is a file `migrations/NNNN_name.sql`, embedded in the
//! binary. [`migrate`] runs the ones a database lacks inside the caller's
//! transaction under an advisory lock held to its end (so processes
//! starting together apply them once, and a copy that fails after them
//! leaves no schema behind), and records each in `schema_version`. A database newer than
//! this binary is refused (never downgraded); one that shipped migration
//! is never edited, the next is added.

use tokio_postgres::Transaction;

use super::Target;

/// `(version, name, SQL)`, in order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "the image of the redb tables",
        include_str!("migrations/0001_mirror.sql"),
    ),
    (
        2,
        "text keys in byte order",
        include_str!("migrations/0002_byte_order.sql"),
    ),
    (
        3,
        "the serving node's claim",
        include_str!("migrations/0003_node_hold.sql"),
    ),
    (
        4,
        "where the serving node takes forwarded connections",
        include_str!("migrations/0004_node_forward.sql"),
    ),
];

/// The schema version this binary writes and reads.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The key of the advisory lock migrations take ("OVRLORD1").
const LOCK: i64 = 0x4f56_524c_4f52_4431;

/// Bring the database to [`latest`] in `tx` (nothing is visible to
/// others until the caller commits); returns the version it had (0: an
/// empty database).
pub async fn migrate(target: &Target, tx: &Transaction<'_>) -> Result<i32, String> {
    let err = |e: tokio_postgres::Error| target.error(&e);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, \
         name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(err)?;
    let had = current(tx).await.map_err(err)?;
    if had > latest() {
        return Err(newer(had));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > had) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| format!("migration {version} ({name}): {}", err(e)))?;
        tx.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(err)?;
    }
    Ok(had)
}

/// The database's version, for a reader that must not change it: an
/// error if there is no schema or a newer one. An older one is read as it
/// is: the reader checks each table's columns before it reads them
/// (`mirror::check_columns`), so a version whose tables this binary
/// cannot read is refused there, naming the table; version 1 differs from
/// 2 only in how text sorts, which a copy does not depend on.
pub async fn expect_readable(
    target: &Target,
    db: &impl tokio_postgres::GenericClient,
) -> Result<(), String> {
    let exists: bool = db
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(|e| target.error(&e))?
        .get(0);
    if !exists {
        return Err(format!(
            "PostgreSQL at {}: no Overlord schema in this database (nothing was exported to it)",
            target.shown
        ));
    }
    let v = current(db).await.map_err(|e| target.error(&e))?;
    if v > latest() {
        return Err(newer(v));
    }
    Ok(())
}

async fn current(db: &impl tokio_postgres::GenericClient) -> Result<i32, tokio_postgres::Error> {
    Ok(db
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?
        .get(0))
}

fn newer(v: i32) -> String {
    format!(
        "schema version {v} is newer than this overlord ({}); upgrade the binary",
        latest()
    )
}
