//! The `overlord` binary: `overlord` serves; subcommands manage the data
//! file directly (with the server stopped) for set-up and recovery.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use overlord::{app, auth::Directory, config::Config, devices, server, store, users};

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
    /// Manage devices in the data file (stop the server first, or use the HTTP API).
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Manage users in the data file.
    #[command(subcommand)]
    User(UserCmd),
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Create a device and print `id,token` (the token is shown only once).
    Create {
        /// Id (1-64 of A-Z a-z 0-9 . _ ~ -); generated when absent.
        #[arg(long)]
        id: Option<String>,
        /// Human name.
        #[arg(long)]
        name: Option<String>,
        /// Owning user.
        #[arg(long, default_value = users::FIRST_ADMIN)]
        owner: String,
        /// Metadata, `FIELD=VALUE` (description, location, latitude,
        /// longitude, kind, parent, gateway, tags, offline_after); repeatable.
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
    },
    /// List devices as CSV (with metadata and stored presence).
    List,
    /// Change a device's metadata: `overlord device set ID FIELD=VALUE...`
    /// (an empty value clears a field).
    Set {
        /// Device id.
        id: String,
        /// `FIELD=VALUE` pairs.
        #[arg(required = true, value_name = "FIELD=VALUE")]
        fields: Vec<String>,
    },
    /// Create devices from a CSV file with an `id` column and any metadata
    /// columns (`-` reads stdin); prints `id,token` for each. All or none.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Owning user.
        #[arg(long, default_value = users::FIRST_ADMIN)]
        owner: String,
    },
    /// Give a device a new token; the previous one works until the next rotation.
    Token {
        /// Device id.
        id: String,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Issue a new API token for a user (creating it if needed); the
    /// previous token works until the next rotation.
    Token {
        /// User name.
        name: String,
        /// Create the user as an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Set a user's password (for the dashboard login), read as one line
    /// from standard input so it stays out of the shell history.
    Password {
        /// User name.
        name: String,
    },
    /// Revoke every credential of a user (tokens, password, sessions).
    Revoke {
        /// User name.
        name: String,
    },
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
        Command::Serve => serve(config),
        Command::Device(cmd) => device(config, cmd),
        Command::User(cmd) => user(config, cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlord: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVERLORD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let listen = config.listen.clone();
    let data_file = config.data_file.clone();
    let opened = app::open(config).map_err(|e| format!("{}: {e}", data_file.display()))?;
    let mut out = std::io::stdout().lock();
    if let Some(token) = &opened.admin_token {
        let _ = writeln!(
            out,
            "Created the administrator '{}' in {}. Its API token is shown only now:\nadmin token: {token}\nUse it as `Authorization: Bearer TOKEN`. For another: stop the server, run `overlord user token {}`.",
            users::FIRST_ADMIN,
            data_file.display(),
            users::FIRST_ADMIN
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("overlord-http")
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
        drop(out);
        tracing::info!(%addr, data_file = %data_file.display(), "overlord started");
        server::run(listener, opened, server::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}

fn open_store(config: &Config) -> Result<store::Store, String> {
    store::Store::open(&config.data_file).map_err(|e| match e {
        store::StoreError::InUse => format!(
            "{} is in use by a running server; stop it first, or use the HTTP API (see API.md)",
            config.data_file.display()
        ),
        other => format!("{}: {other}", config.data_file.display()),
    })
}

fn device(config: Config, cmd: DeviceCmd) -> Result<(), String> {
    let store = open_store(&config)?;
    let directory = Directory::new(
        store.load_devices().map_err(|e| e.to_string())?,
        store.load_users().map_err(|e| e.to_string())?,
    );
    match cmd {
        DeviceCmd::Create {
            id,
            name,
            owner,
            set,
        } => {
            if directory.user(&owner).is_none() {
                return Err(format!("no user '{owner}'"));
            }
            let mut fields = pairs(&set)?;
            if let Some(n) = name {
                fields.push(("name".into(), n));
            }
            let (rec, token) = devices::create(&store, &directory, &owner, id.as_deref(), &fields)
                .map_err(|e| e.body())?;
            println!("id,token\n{},{token}", rec.id);
        }
        DeviceCmd::List => {
            let directory = std::sync::Arc::new(directory);
            let presence = overlord::presence::Presence::new(
                directory.clone(),
                config.presence.offline_after_secs,
                store.load_last_seen().map_err(|e| e.to_string())?,
                store.load_presence().map_err(|e| e.to_string())?,
            );
            let mut out = String::from(devices::LIST_HEADER);
            for d in directory.devices() {
                devices::write_row(&d, &directory, &presence, &mut out);
            }
            print!("{out}");
        }
        DeviceCmd::Set { id, fields } => {
            let d = directory
                .device(&id)
                .ok_or_else(|| format!("no device '{id}'"))?;
            devices::update(&store, &directory, &d, &pairs(&fields)?).map_err(|e| e.body())?;
            println!("ok");
        }
        DeviceCmd::Import { file, owner } => {
            if directory.user(&owner).is_none() {
                return Err(format!("no user '{owner}'"));
            }
            let body = if file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                    .map_err(|e| e.to_string())?;
                b
            } else {
                std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?
            };
            let rows = overlord::api::devices::parse_import(&body).map_err(|e| e.body())?;
            let made = devices::create_many(&store, &directory, &owner, rows, None)
                .map_err(|e| e.body())?;
            println!("id,token");
            for (rec, token) in made {
                println!("{},{}", rec.id, token.unwrap_or_default());
            }
        }
        DeviceCmd::Token { id } => {
            let d = directory
                .device(&id)
                .ok_or_else(|| format!("no device '{id}'"))?;
            let token = devices::rotate(&store, &directory, &d).map_err(|e| e.detail)?;
            println!("id,token\n{id},{token}");
        }
    }
    Ok(())
}

/// `FIELD=VALUE` arguments as pairs.
fn pairs(args: &[String]) -> Result<Vec<(String, String)>, String> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("'{a}': expected FIELD=VALUE"))
        })
        .collect()
}

fn user(config: Config, cmd: UserCmd) -> Result<(), String> {
    let store = open_store(&config)?;
    match cmd {
        UserCmd::Token { name, admin } => {
            let role = if admin {
                store::Role::Administrator
            } else {
                store::Role::User
            };
            let (_, token) = users::issue_token(&store, &name, role).map_err(|e| e.to_string())?;
            println!("user,token\n{name},{token}");
        }
        UserCmd::Password { name } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            let pw = line.trim_end_matches(['\r', '\n']);
            if pw.len() < users::MIN_PASSWORD {
                return Err(format!(
                    "a password is at least {} bytes",
                    users::MIN_PASSWORD
                ));
            }
            users::set_password(&store, &name, Some(pw)).map_err(|e| e.to_string())?;
            println!("ok");
        }
        UserCmd::Revoke { name } => {
            users::revoke(&store, &name).map_err(|e| e.to_string())?;
            println!("ok");
        }
    }
    Ok(())
}
