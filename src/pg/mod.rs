//! PostgreSQL (issue 20, docs/scale-out.md): the connection, the
//! versioned schema, and `overlord export-store`, which copies a data file
//! into PostgreSQL and back.
//!
//! What is built: the schema's first version, the image of every redb
//! table ([`mirror`]), created and upgraded by [`migrate`]; and the exact
//! copy both ways ([`transfer`]). The server does not serve from
//! PostgreSQL yet: the store boundary and the shared-state promises of
//! docs/scale-out.md are the steps after this one.
//!
//! Secrets: a connection string may hold a password. It is never printed:
//! errors name the server by [`Target::shown`] (hosts, ports, database,
//! user) and any text that carries the password has it replaced.

pub mod blobs;
pub mod hold;
pub mod kv;
pub mod migrate;
pub mod mirror;
pub mod transfer;

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

/// How long a connection attempt may take (the socket, TLS-less start-up
/// and authentication) when the string sets no `connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long data sent may stay unacknowledged, and a lock may be waited
/// for, before the command gives up: a server that vanished or a session
/// holding a table does not hang it. (A statement may run as long as it
/// takes: a copy of a large store is one.)
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A parsed connection string, and how to name it without its password.
#[derive(Clone)]
pub struct Target {
    config: Config,
    password: Option<String>,
    /// `host=H port=P dbname=D user=U`: what errors and progress show.
    pub shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// Parse a connection string: `key=value` pairs (`host=127.0.0.1
    /// port=5432 user=overlord dbname=overlord`) or a `postgresql://` URL,
    /// as libpq takes them (tokio-postgres' subset: several hosts,
    /// `target_session_attrs`, `connect_timeout`; no TLS yet).
    pub fn parse(url: &str) -> Result<Target, String> {
        let config = Config::from_str(url).map_err(|e| {
            format!(
                "the PostgreSQL connection string does not parse: {}",
                hide(&e.to_string(), password_in(url).as_deref())
            )
        })?;
        let mut config = config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(STALL_TIMEOUT);
        }
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let mut hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        if hosts.is_empty() {
            hosts = config
                .get_hostaddrs()
                .iter()
                .map(|a| a.to_string())
                .collect();
        }
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let shown = format!(
            "host={} port={} dbname={} user={}",
            if hosts.is_empty() {
                "?".into()
            } else {
                hosts.join(",")
            },
            if ports.is_empty() {
                "5432".into()
            } else {
                ports.join(",")
            },
            config.get_dbname().or(config.get_user()).unwrap_or("?"),
            config.get_user().unwrap_or("?"),
        );
        Ok(Target {
            config,
            password,
            shown,
        })
    }

    /// `what: error`, naming the server, never the password (the error's
    /// text has it replaced if it carries it; the name is built without
    /// it, so the replacement never marks where the password equals the
    /// user or the database).
    pub fn error(&self, e: &tokio_postgres::Error) -> String {
        format!("PostgreSQL at {}: {}", self.shown, self.hide(&describe(e)))
    }

    /// `msg` with the password, if it appears, replaced.
    pub fn hide(&self, msg: &str) -> String {
        hide(msg, self.password.as_deref())
    }

    /// Connect, with `synchronous_commit = on` for the session (a commit
    /// returns once its WAL is flushed, whatever the server's default).
    /// The connection's task runs on the current tokio runtime.
    pub async fn connect(&self) -> Result<Client, String> {
        Ok(self.connect_watched().await?.0)
    }

    /// [`Target::connect`], and a receiver that completes when the
    /// session's connection ends (closed by either side, or lost).
    pub async fn connect_watched(
        &self,
    ) -> Result<(Client, tokio::sync::oneshot::Receiver<()>), String> {
        let hosts = self
            .config
            .get_hosts()
            .len()
            .max(self.config.get_hostaddrs().len());
        if hosts == 0 {
            return Err(format!(
                "the PostgreSQL connection string names no host ({})",
                self.shown
            ));
        }
        // `connect_timeout` bounds each socket connect only; the whole
        // start-up (DNS, authentication) is bounded here.
        let limit = *self
            .config
            .get_connect_timeout()
            .unwrap_or(&CONNECT_TIMEOUT);
        // Each host in turn, and one more for the start-up itself.
        let whole = limit * (hosts as u32 + 1);
        let (client, conn) = tokio::time::timeout(whole, self.config.connect(NoTls))
            .await
            .map_err(|_| {
                format!(
                    "PostgreSQL at {}: no session within {}s",
                    self.shown,
                    whole.as_secs()
                )
            })?
            .map_err(|e| self.error(&e))?;
        let (ended, watch) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // Ends when the client is dropped; an error here is what the
            // next statement reports too.
            let _ = conn.await;
            let _ = ended.send(());
        });
        client
            .batch_execute(&format!(
                "SET synchronous_commit = on; SET lock_timeout = '{}s'",
                STALL_TIMEOUT.as_secs()
            ))
            .await
            .map_err(|e| self.error(&e))?;
        Ok((client, watch))
    }
}

/// An error's whole text: tokio-postgres' `Display` and, for an error
/// from the server, its detail.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{}: {} ({d})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => e.to_string(),
    }
}

/// `msg` with every occurrence of `password` replaced by `<hidden>`.
fn hide(msg: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => msg.replace(p, "<hidden>"),
        _ => msg.to_string(),
    }
}

/// The password in a connection string that may not parse: `password=X`
/// (quoted or not) or `scheme://user:X@`.
fn password_in(url: &str) -> Option<String> {
    if let Some(rest) = url.split("://").nth(1) {
        let auth = rest.split('@').next().filter(|_| rest.contains('@'))?;
        return auth.split_once(':').map(|(_, p)| p.to_string());
    }
    let at = url.find("password")?;
    let rest = url[at + "password".len()..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    Some(match rest.strip_prefix('\'') {
        Some(q) => q.split('\'').next().unwrap_or("").to_string(),
        None => rest.split_whitespace().next().unwrap_or("").to_string(),
    })
}

/// A tokio runtime of one thread for the blocking callers (the CLI):
/// `block_on` runs the copy; redb's reads and writes in it are the
/// command's own work, not a server's async workers.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        let t = Target::parse("host=127.0.0.1 port=1 user=u password=s3cret dbname=d").unwrap();
        assert_eq!(t.shown, "host=127.0.0.1 port=1 dbname=d user=u");
        assert_eq!(format!("{t:?}"), t.shown);
        assert_eq!(t.hide("x s3cret y"), "x <hidden> y");
        let t = Target::parse("hostaddr=10.0.0.7 user=u").unwrap();
        assert_eq!(t.shown, "host=10.0.0.7 port=5432 dbname=u user=u");
        let t = Target::parse("postgresql://u:pw%40x@localhost:6/d").unwrap();
        assert!(!t.shown.contains("pw"));
        // What a string that does not parse is searched for.
        assert_eq!(password_in("postgres://u:p@h/d").as_deref(), Some("p"));
        assert_eq!(
            password_in("host=h password = 'x y'").as_deref(),
            Some("x y")
        );
        assert_eq!(password_in("host=h"), None);
    }
}
