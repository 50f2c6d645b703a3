//! The subcommands of the `overlord` binary, one file per command group.
//! `main.rs` parses the command line and calls in here; every command
//! returns `Err(message)`, which `main` prints as `overlord: message`
//! with a non-zero exit.
//!
//! Every command but `serve` and `backup --url` works on the data file
//! with the server stopped, and opens it only through [`offline`]: the
//! one place that says "in use by a running server", and that a command
//! run where there is no data file says `no data file at PATH` instead
//! of creating an empty one. Only `serve`, `init` and `restore` (which
//! puts a backup where the data file was lost) create the file
//! ([`offline_or_create`]).

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use overlord::app;
use overlord::config::{Config, StoreKind};
use overlord::error::WireError;
use overlord::store::{Store, StoreError};

pub mod backup;
pub mod check;
pub mod compact;
pub mod delete;
pub mod device;
pub mod export;
pub mod init;
pub mod retention;
pub mod serve;
pub mod store;
pub mod tls;
pub mod user;

/// What a command suggests when a running server has the data file.
#[derive(Clone, Copy)]
pub enum Advice {
    /// Stop the server first.
    Stop,
    /// Stop the server, or do the same over the HTTP API.
    StopOrHttp,
    /// Let the running server make the backup (`backup --url`).
    Url,
}

impl Advice {
    fn text(self) -> &'static str {
        match self {
            Advice::Stop => "stop it first",
            Advice::StopOrHttp => "stop it first, or use the HTTP API (see docs/api.md)",
            Advice::Url => "use --url to have it make the backup",
        }
    }
}

/// Run `op` on the data file at `data` with the server stopped: the one
/// way an offline command opens it (`op` is `Store::open`, `app::open` or
/// an `ops` step). A missing file is `no data file at PATH` (a command
/// run in the wrong directory must not start an empty data file). While
/// a server has the file, the error says so with `advice`; any other
/// failure is `<data file>: <error>`.
pub fn offline<T>(
    data: &Path,
    advice: Advice,
    op: impl FnOnce(&Path) -> Result<T, StoreError>,
) -> Result<T, String> {
    if !data.exists() {
        return Err(no_data_file(data));
    }
    offline_or_create(data, advice, op)
}

/// The store an offline command works on, with the server stopped: the
/// data file ([`offline`]), or with `[store] kind = "postgres"` the
/// database, taking the node's hold on it, so a running node is refused
/// as a running server on the file is.
pub fn offline_store(config: &Config, advice: Advice) -> Result<Store, String> {
    match config.store.kind {
        StoreKind::Redb => offline(&config.data_file, advice, Store::open),
        StoreKind::Postgres => {
            Store::open_node(&config.store).map_err(|e| on_postgres(config, advice, e))
        }
    }
}

/// The server's whole state opened by an offline command (its writer
/// runs; shut it down after), on the data file or the database.
pub fn offline_app(config: &Config, advice: Advice) -> Result<app::Opened, String> {
    let open = || app::open(app::OpenOptions::new(config.clone()));
    match config.store.kind {
        StoreKind::Redb => offline(&config.data_file, advice, |_| open()),
        StoreKind::Postgres => open().map_err(|e| on_postgres(config, advice, e)),
    }
}

/// A failure to open the PostgreSQL store, as an offline command says it.
fn on_postgres(config: &Config, advice: Advice, e: StoreError) -> String {
    let at = overlord::pg::Target::parse(&config.store.postgres_url)
        .map(|t| format!("PostgreSQL at {}", t.shown))
        .unwrap_or_else(|e| e);
    match e {
        StoreError::InUse => format!("{at} is served by a running node; {}", advice.text()),
        other => format!("{at}: {other}"),
    }
}

/// Refuse a command that only works on the data file when the
/// configuration serves from PostgreSQL (`[store] kind = "postgres"`),
/// rather than run it on a data file the server does not use.
pub fn file_only(config: &Config, command: &str, instead: &str) -> Result<(), String> {
    match config.store.kind {
        StoreKind::Redb => Ok(()),
        StoreKind::Postgres => Err(format!(
            "`overlord {command}` works on a redb data file, and this configuration serves from PostgreSQL ([store] kind = \"postgres\"); {instead}"
        )),
    }
}

/// What an offline command says when the data file is not there.
pub fn no_data_file(data: &Path) -> String {
    format!(
        "no data file at {}; start the server once (or run `overlord init`) to create it, or pass --config naming the right one",
        data.display()
    )
}

/// [`offline`] for the commands that may create the data file: `init`
/// and `restore`.
pub fn offline_or_create<T>(
    data: &Path,
    advice: Advice,
    op: impl FnOnce(&Path) -> Result<T, StoreError>,
) -> Result<T, String> {
    op(data).map_err(|e| match e {
        StoreError::InUse => format!(
            "{} is in use by a running server; {}",
            data.display(),
            advice.text()
        ),
        other => format!("{}: {other}", data.display()),
    })
}

/// A wire error as a command's message: its `error,<code>,<detail>` line,
/// as the HTTP API would answer (the CLI and HTTP reject alike).
pub fn wire_text(e: impl Into<WireError>) -> String {
    e.into().body().trim_end().to_string()
}

/// The bytes of `file`, or of standard input for `-`.
pub fn read_input(file: &Path) -> Result<Vec<u8>, String> {
    if file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map_err(|e| e.to_string())?;
        Ok(b)
    } else {
        std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal (so
/// scripts and logs get no control characters). `len` 0: a spinner.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = if len == 0 {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::new(len)
    };
    let template = if len == 0 {
        format!("{{spinner}} {what} {{pos}} {{per_sec}} {{elapsed}}")
    } else {
        format!("{what} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}")
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}
