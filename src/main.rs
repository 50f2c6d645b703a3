//! The `overlord` binary: `overlord` serves; subcommands manage the data
//! file directly (with the server stopped) for set-up and recovery.
//!
//! This file is the command line (clap) and the dispatch; each command
//! group's code is in `cli/` (`cli/mod.rs` lists them).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use overlord::config::Config;

mod cli;

#[derive(Parser)]
#[command(
    version,
    about = "Overlord IoT device server: flat CSV over plain HTTP"
)]
struct Cli {
    /// Configuration file (default: ./overlord.toml, else the embedded default).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Create an empty data file (server stopped), to set up users and
    /// devices before the first start. Other commands never create one.
    Init,
    /// Manage devices in the data file (stop the server first, or use the HTTP API).
    #[command(subcommand)]
    Device(cli::device::DeviceCmd),
    /// Manage users in the data file.
    #[command(subcommand)]
    User(cli::user::UserCmd),
    /// Write a consistent copy of the data file to FILE. With --url, a
    /// running server makes it (GET /v1/admin/backup, administrator token
    /// in OVERLORD_TOKEN); without, the server must be stopped.
    Backup {
        /// Where the copy goes (must not exist).
        file: PathBuf,
        /// A running server, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
    },
    /// Replace the data file with a backup (server stopped). The old file
    /// is kept as `<data file>.pre-restore-<UTC time>`.
    Restore {
        /// The backup.
        file: PathBuf,
    },
    /// Write one device's readings as CSV (as `GET /v1/devices/ID/readings`
    /// answers), server stopped.
    Export(cli::export::ExportArgs),
    /// Store readings from a CSV file (`-`: stdin) with the validation of
    /// `POST /v1/readings`, server stopped (running: POST the file there).
    Import {
        /// The CSV file: `time` and sensor columns, optionally `device`.
        file: PathBuf,
        /// The device, unless the file has a `device` column.
        #[arg(long)]
        device: Option<String>,
    },
    /// Check the data file (server stopped): read every row of every table
    /// and verify every page's checksum, on a copy beside it (the file is
    /// not written). Prints `what,rows,state`; exits non-zero if damaged.
    Check,
    /// Compact the data file (server stopped); prints the sizes.
    Compact,
    /// How long readings are kept, per device or sensor (server stopped;
    /// running: `POST /v1/devices/ID/retention`).
    #[command(subcommand)]
    Retention(cli::retention::RetentionCmd),
    /// HTTPS certificates (`[tls]`): `tls self-signed --host NAME...`.
    #[command(subcommand)]
    Tls(cli::tls::TlsCmd),
    /// Copy the whole store into an empty PostgreSQL database (`--to
    /// postgres`, server stopped), or from PostgreSQL into a new data file
    /// (`--to redb FILE`). Prints `ok,ROWS,FILES,FILE_BYTES`.
    ExportStore(cli::store::ExportStoreArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("overlord: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => cli::serve::serve(config),
        Command::Init => cli::init::init(&config),
        Command::Device(cmd) => cli::device::device(&config, cmd),
        Command::User(cmd) => cli::user::user(&config, cmd),
        Command::Backup { file, url } => cli::backup::backup(&config, &file, url.as_deref()),
        Command::Restore { file } => cli::backup::restore(&config, &file),
        Command::Export(args) => cli::export::export(&config, args),
        Command::Import { file, device } => cli::export::import(config, &file, device.as_deref()),
        Command::Check => cli::check::check(&config),
        Command::Compact => cli::compact::compact(&config),
        Command::Retention(cmd) => cli::retention::retention(&config, cmd),
        Command::Tls(cmd) => cli::tls::tls(cmd),
        Command::ExportStore(args) => cli::store::export_store(&config, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlord: {e}");
            ExitCode::FAILURE
        }
    }
}
