//! A throw-away PostgreSQL server for a test: `initdb` in a temp dir,
//! `pg_ctl start` on a free loopback port (as the `postgres` user when
//! the tests run as root, which `initdb` refuses), stopped and removed
//! when dropped. Debian's `postgresql` package provides the binaries; in
//! CI (`CI` set) a missing one fails the test, elsewhere it is skipped
//! with a note.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pg {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

/// The directory with `initdb` and `pg_ctl`: on `PATH`, else the newest
/// of `/usr/lib/postgresql/*/bin` (Debian keeps them there).
fn bin_dir() -> Option<PathBuf> {
    if let Ok(o) = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
    {
        let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && !p.is_empty() {
            return Path::new(&p).parent().map(Path::to_path_buf);
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
        // The `postgres` user must reach the directory: under /tmp, not a
        // TMPDIR only root may enter.
        let dir = if as_postgres {
            tempfile::tempdir_in("/tmp")
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let data = dir.path().join("data");
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
        let mut pg = Pg {
            port: 0,
            bin,
            data,
            as_postgres,
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
        // The first matching line of pg_hba.conf wins.
        let hba = pg.data.join("pg_hba.conf");
        let rest = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!("host all ov 127.0.0.1/32 scram-sha-256\n{rest}"),
        )
        .expect("pg_hba.conf");
        // A free port, then start on it; another process may take it in
        // between, hence the retries.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c max_connections=300",
                pg._dir.path().display()
            );
            let log = pg._dir.path().join("log");
            let ok = pg.try_run(
                "pg_ctl",
                &[
                    "-D",
                    pg.data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &opts,
                    "start",
                ],
            );
            if ok {
                pg.port = port;
                return Some(pg);
            }
        }
        let log = std::fs::read_to_string(pg._dir.path().join("log")).unwrap_or_default();
        panic!("PostgreSQL did not start: {log}");
    }

    /// A connection string for database `db` (no password: trust on
    /// loopback in the throw-away server).
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
        let url = self.url(db);
        let sql = sql.to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            let msgs = client.simple_query(&sql).await.expect(&sql);
            msgs.into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect()
        })
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
