//! The throw-away PostgreSQL of the tests (`common::pg`) can do what a
//! failover test needs: a synchronous streaming replica that follows its
//! primary, keeps what the primary committed when the primary crashes,
//! and takes writes once promoted; and a server crashed and started again
//! keeps its committed rows, on the same port. Every file and process is
//! gone once dropped.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::pg::Pg;

fn count(pg: &Pg, db: &str) -> u64 {
    pg.value(db, "SELECT count(*) FROM t").parse().unwrap()
}

/// The replica's copy is applied shortly after the primary's commit
/// returns (a synchronous commit waits for the replica's disk, not for
/// its replay): poll, bounded.
fn wait_for_rows(pg: &Pg, db: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = count(pg, db);
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica has {have} rows, not {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The SQLSTATE of `sql` run on `pg`, `None` when it succeeds.
fn sqlstate(pg: &Pg, db: &str, sql: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&pg.url(db), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .simple_query(sql)
            .await
            .err()
            .map(|e| e.code().expect("a server error").code().to_string())
    })
}

#[test]
fn replica_follows_and_takes_over() {
    let started = Instant::now();
    let Some(primary) = Pg::start() else { return };
    primary.create_db("app");
    primary.sql("app", "CREATE TABLE t (id int PRIMARY KEY, note text)");

    let replica = primary.start_replica(true);
    assert_ne!(replica.port, primary.port);
    assert_eq!(replica.value("postgres", "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(
        primary.value(
            "postgres",
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'replica1'"
        ),
        "sync"
    );
    println!("primary and replica up: {:?}", started.elapsed());

    // Rows written on the primary reach the replica, which refuses writes
    // of its own (25006: read_only_sql_transaction).
    primary.sql(
        "app",
        "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g",
    );
    wait_for_rows(&replica, "app", 100);
    assert_eq!(
        sqlstate(
            &replica,
            "app",
            "INSERT INTO t VALUES (0, 'on the replica')"
        )
        .as_deref(),
        Some("25006")
    );

    // A row committed just before the primary crashes: synchronous, so
    // it is on the replica's disk, and a promotion replays it. No wait
    // for the replica in between.
    primary.sql("app", "INSERT INTO t VALUES (101, 'last before the crash')");
    primary.stop_immediate();
    assert!(!primary.is_up());
    replica.promote();
    assert_eq!(replica.value("postgres", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(count(&replica, "app"), 101);
    assert_eq!(
        replica.value("app", "SELECT note FROM t WHERE id = 101"),
        "last before the crash"
    );
    // Writes now, and do not wait for a standby of its own.
    replica.sql("app", "INSERT INTO t VALUES (102, 'after the promotion')");
    assert_eq!(count(&replica, "app"), 102);
    println!("failed over: {:?}", started.elapsed());

    // A single server crashed and started again: same port, its
    // committed rows recovered.
    let single = Pg::start().expect("started above");
    single.create_db("app");
    single.sql("app", "CREATE TABLE t (id int PRIMARY KEY, note text)");
    single.sql(
        "app",
        "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 50) g",
    );
    let port = single.port;
    single.stop_immediate();
    assert!(!single.is_up());
    single.start_again();
    assert!(single.is_up());
    assert_eq!(single.port, port);
    assert_eq!(count(&single, "app"), 50);
    single.sql("app", "INSERT INTO t VALUES (51, 'after the restart')");
    assert_eq!(count(&single, "app"), 51);
    println!("crashed and started again: {:?}", started.elapsed());

    // Dropped: stopped (nothing listens on its port) and its directory
    // removed.
    let servers = [primary, replica, single];
    let left: Vec<(u16, PathBuf)> = servers
        .iter()
        .map(|pg| (pg.port, pg.dir().to_path_buf()))
        .collect();
    for (_, dir) in &left {
        assert!(dir.join("data").exists());
    }
    drop(servers);
    for (port, dir) in &left {
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(
            TcpStream::connect(("127.0.0.1", *port)).is_err(),
            "a server still listens on {port}"
        );
    }
    println!("all gone: {:?}", started.elapsed());
}
