//! A throw-away PostgreSQL server for a test: `initdb` in a temp dir,
//! `pg_ctl start` on a free loopback port (as the `postgres` user when
//! the tests run as root, which `initdb` refuses), stopped and removed
//! when dropped. Debian's `postgresql` package provides the binaries; in
//! CI (`CI` set) a missing one fails the test, elsewhere it is skipped
//! with a note.
//!
//! A server can also be crashed and started again (`stop_immediate`,
//! `start_again`), and followed by a streaming replica
//! (`start_replica`) that can take over (`promote`): what a failover
//! test needs, without a cluster manager.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Pg {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    /// The `-o` options it was started with (port, socket directory,
    /// ...): `start_again` reuses them, so it comes back where it was.
    opts: String,
    _dir: tempfile::TempDir,
}

/// How long a start, stop, promotion or replication catch-up may take
/// before the test fails rather than hangs.
const WAIT: Duration = Duration::from_secs(60);

/// The `application_name` a replica announces to its primary, by which
/// `synchronous_standby_names` and `pg_stat_replication` know it.
const REPLICA_NAME: &str = "replica1";

/// The directory with `initdb` and `pg_ctl` (and `pg_basebackup`): that
/// of the `pg_ctl` on `PATH`, else the newest of
/// `/usr/lib/postgresql/*/bin` (Debian keeps them there). The one on
/// `PATH` may be a lone symlink into that directory, next to none of the
/// other tools: its target's directory, then.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(o) = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
    {
        let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && !p.is_empty() {
            let p = std::fs::canonicalize(&p).unwrap_or_else(|_| PathBuf::from(&p));
            return p.parent().map(Path::to_path_buf);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A temp dir for a server's files. As root the server runs as
/// `postgres`, which must reach and own it: under /tmp (not a TMPDIR only
/// root may enter), and given to `postgres`.
fn server_dir(as_postgres: bool) -> tempfile::TempDir {
    let dir = if as_postgres {
        tempfile::tempdir_in("/tmp")
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    if as_postgres {
        let out = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .expect("id");
        let uid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a postgres user (Debian's package makes it)");
        std::os::unix::fs::chown(dir.path(), Some(uid), None).expect("chown");
    }
    dir
}

/// A port nobody listens on right now (another process may take it
/// before the server does; callers retry).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `done` every 50 ms until it holds; fail after `WAIT`, saying
/// `what` was awaited. For states another process reaches (a replica
/// streaming, a promotion finished), which send no notice to wait on.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not after {}s",
            WAIT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Pg {
    /// Start one, or `None` (outside CI) when PostgreSQL is not installed.
    pub fn start() -> Option<Pg> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL (initdb, pg_ctl) must be installed in CI"
            );
            println!("note: PostgreSQL is not installed; skipping what needs it");
            return None;
        };
        let as_postgres = is_root();
        let dir = server_dir(as_postgres);
        let data = dir.path().join("data");
        let mut pg = Pg {
            port: 0,
            bin,
            data,
            as_postgres,
            opts: String::new(),
            _dir: dir,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // Role `ov` must give its password over TCP (a test of a refused
        // login); every other role is trusted on this throw-away server.
        // The first matching line of pg_hba.conf wins, so `ov`'s stays
        // first. `replication` is no database `all` matches: a replica's
        // `pg_basebackup` and WAL stream need their own line (initdb's
        // defaults have one today, but this does not lean on them).
        let hba = pg.data.join("pg_hba.conf");
        let rest = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "host all ov 127.0.0.1/32 scram-sha-256\n\
                 host replication postgres 127.0.0.1/32 trust\n{rest}"
            ),
        )
        .expect("pg_hba.conf");
        // WAL for a replica (`replica` is 15's default, `10` senders too;
        // said here so that a changed default does not break a replica).
        pg.start_on_free_port("-c wal_level=replica -c max_wal_senders=10");
        Some(pg)
    }

    /// Start on a free port with the usual options plus `extra`; another
    /// process may take the port in between, hence the retries.
    fn start_on_free_port(&mut self, extra: &str) {
        for _ in 0..5 {
            let port = free_port();
            self.opts = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c max_connections=300 {extra}",
                self._dir.path().display()
            );
            if self.try_start() {
                self.port = port;
                return;
            }
        }
        panic!("PostgreSQL did not start: {}", self.log());
    }

    /// `pg_ctl start` with the stored options, waiting (bounded) until it
    /// accepts connections; whether it did.
    fn try_start(&self) -> bool {
        let log = self._dir.path().join("log");
        self.try_run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                &WAIT.as_secs().to_string(),
                "-o",
                &self.opts,
                "start",
            ],
        )
    }

    /// The server's log so far (for a failure message).
    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// The directory holding its data directory, log and socket; removed
    /// when it is dropped.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Kill it as a crash would (`pg_ctl -m immediate`: no checkpoint, no
    /// goodbye to clients), keeping its data directory: `start_again`
    /// then runs crash recovery, and a replica may `promote`.
    pub fn stop_immediate(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "-t",
                &WAIT.as_secs().to_string(),
                "stop",
            ],
        );
    }

    /// Start it again after `stop_immediate`, on the same port with the
    /// same options (a client's connection string stays right), returning
    /// once it accepts connections. The port is not held while it is
    /// down: if another process took it, this fails rather than moves.
    pub fn start_again(&self) {
        assert!(
            self.try_start(),
            "PostgreSQL did not start again on port {}: {}",
            self.port,
            self.log()
        );
    }

    /// Whether it accepts connections and answers a query now.
    pub fn is_up(&self) -> bool {
        self.try_sql("postgres", "SELECT 1").is_ok()
    }

    /// A streaming replica of this server, started and streaming, named
    /// `replica1` to the primary (one replica per primary, then). With
    /// `synchronous`, the primary's commits wait for it
    /// (`synchronous_standby_names`, `synchronous_commit = on`), so a row
    /// committed on the primary survives its crash once the replica is
    /// promoted; and, while the replica is down, every commit on the
    /// primary waits (for ever: stop the primary first, or promote). A
    /// copy of the primary as it is now: its databases, tables and roles,
    /// and its `pg_hba.conf`.
    pub fn start_replica(&self, synchronous: bool) -> Pg {
        let dir = server_dir(self.as_postgres);
        let data = dir.path().join("data");
        let mut replica = Pg {
            port: 0,
            bin: self.bin.clone(),
            data,
            as_postgres: self.as_postgres,
            opts: String::new(),
            _dir: dir,
        };
        // `-R` writes `standby.signal` and a `primary_conninfo`; `-X
        // stream` brings the WAL written during the copy, so the copy is
        // consistent without an archive. `--checkpoint=fast`: the default
        // spreads the backup's checkpoint over `checkpoint_timeout`, and
        // after a `CREATE DATABASE` (900 dirty buffers) that took 92 s.
        replica.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                replica.data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "--checkpoint=fast",
            ],
        );
        // The last setting in postgresql.auto.conf wins: a connection that
        // names the replica (`-R`'s has no `application_name`, and
        // `synchronous_standby_names` matches on it). And none of the
        // primary's synchronous standbys: once promoted, the replica would
        // wait for a standby of its own that never comes, and hang every
        // commit.
        let auto = replica.data.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).expect("postgresql.auto.conf");
        conf.push_str(&format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name={REPLICA_NAME}'\n\
             synchronous_standby_names = ''\n",
            self.port
        ));
        std::fs::write(&auto, conf).expect("postgresql.auto.conf");
        // The primary's own options, so that a promoted replica can have
        // replicas too; its `max_connections` must be at least the
        // primary's for hot standby.
        replica.start_on_free_port("-c wal_level=replica -c max_wal_senders=10 -c hot_standby=on");
        if synchronous {
            // ALTER SYSTEM may not run in a transaction block: one
            // statement per call.
            self.sql(
                "postgres",
                &format!("ALTER SYSTEM SET synchronous_standby_names = '{REPLICA_NAME}'"),
            );
            self.sql("postgres", "ALTER SYSTEM SET synchronous_commit = on");
            self.sql("postgres", "SELECT pg_reload_conf()");
        }
        let want = if synchronous { "sync" } else { "async" };
        wait_until(
            &format!("replica on port {} streaming ({want})", replica.port),
            || {
                self.value(
                    "postgres",
                    &format!(
                        "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{REPLICA_NAME}' \
                         AND state = 'streaming' AND sync_state = '{want}'"
                    ),
                ) == "1"
            },
        );
        replica
    }

    /// Make this replica a primary (`pg_ctl promote`), returning once it
    /// takes writes: out of recovery.
    pub fn promote(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-w",
                "-t",
                &WAIT.as_secs().to_string(),
                "promote",
            ],
        );
        wait_until(&format!("promotion of port {}", self.port), || {
            self.value("postgres", "SELECT pg_is_in_recovery()") == "f"
        });
    }

    /// A connection string for database `db` (no password: trust on
    /// loopback in the throw-away server).
    /// A primary with database `db` and a synchronous streaming standby
    /// of it, and a connection string naming both hosts that keeps to the
    /// one taking writes (what a node uses to follow a failover).
    pub fn with_standby(db: &str) -> Option<(Pg, Pg, String)> {
        let primary = Pg::start()?;
        primary.create_db(db);
        let standby = primary.start_replica(true);
        let url = format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname={db} target_session_attrs=read-write connect_timeout=2",
            primary.port, standby.port
        );
        Some((primary, standby, url))
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// Create database `name`.
    pub fn create_db(&self, name: &str) {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
    }

    /// Run `sql` in database `db`; the rows as text, one `Vec` per row.
    pub fn sql(&self, db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        self.try_sql(db, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `sql`, or what failed: the connection or the statement.
    fn try_sql(&self, db: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let url = self.url(db);
        let sql = sql.to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let query = async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            tokio::spawn(conn);
            let msgs = client
                .simple_query(&sql)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            Ok(msgs
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect())
        };
        // Bounded: a server in the middle of a crash or a promotion may
        // take a connection and not answer; a test fails, not hangs.
        rt.block_on(async { tokio::time::timeout(WAIT, query).await })
            .unwrap_or_else(|_| Err(format!("{sql}: no answer in {}s", WAIT.as_secs())))
    }

    /// The one value `sql` selects.
    pub fn value(&self, db: &str, sql: &str) -> String {
        let rows = self.sql(db, sql);
        rows[0][0].clone().expect("not null")
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args).current_dir("/");
        cmd
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> bool {
        self.command(tool, args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"))
            .status
            .success()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool, args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Pg {
    /// Stop now and remove its directory (for the one shared by a whole
    /// test binary, which no `Drop` reaches).
    pub fn stop_now(&self) {
        if self.data.join("postmaster.pid").exists() {
            let data = self.data.to_str().unwrap().to_string();
            let _ = self.try_run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        }
        let _ = std::fs::remove_dir_all(self._dir.path());
    }
}

/// With `TEST_STORE=postgres`, the test servers of this binary
/// serve from PostgreSQL (`OpenOptions::postgres`): one throw-away server
/// for the whole binary, stopped when the process exits, and a database
/// per data directory (a restart in the same directory finds its data).
/// `None` otherwise.
pub fn store_for(data_file: &Path) -> Option<String> {
    use std::hash::{Hash, Hasher};
    use std::sync::OnceLock;
    static SHARED: OnceLock<Pg> = OnceLock::new();
    extern "C" fn stop_shared() {
        if let Some(pg) = SHARED.get() {
            pg.stop_now();
        }
    }
    if std::env::var("TEST_STORE").ok().as_deref() != Some("postgres") {
        return None;
    }
    let pg = SHARED.get_or_init(|| {
        let pg = Pg::start().expect("TEST_STORE=postgres needs PostgreSQL (initdb, pg_ctl)");
        // SAFETY: registers a plain function; it runs once at exit.
        unsafe { libc::atexit(stop_shared) };
        pg
    });
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_file.hash(&mut h);
    let name = format!("t{:016x}", h.finish());
    let have = pg.value(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    );
    if have == "0" {
        pg.create_db(&name);
    }
    eprintln!("test store: PostgreSQL, database {name}");
    Some(pg.url(&name))
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Also after a start that timed out: the server may be up anyway.
        if self.data.join("postmaster.pid").exists() {
            let data = self.data.to_str().unwrap().to_string();
            let _ = self.try_run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        }
    }
}
