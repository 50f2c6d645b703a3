//! The `overlord` binary: `overlord` serves; subcommands manage the data
//! file directly (with the server stopped) for set-up and recovery.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use overlord::app::{OpenOptions, Opened};
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
    /// is kept as `<data file>.pre-restore`.
    Restore {
        /// The backup.
        file: PathBuf,
    },
    /// Write one device's readings as CSV (as `GET /v1/devices/ID/readings`
    /// answers), server stopped.
    Export {
        /// Device id.
        #[arg(long)]
        device: String,
        /// Sensors, comma-separated (default: all the device has).
        #[arg(long)]
        sensors: Option<String>,
        /// From this time (RFC 3339 or unix seconds), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// To this time, inclusive.
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Spreadsheet-safe: a text field starting with = + - @ TAB or CR
        /// (and not a plain number) gets a leading ' (as `safe=1`).
        #[arg(long)]
        safe: bool,
    },
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
    Retention(RetentionCmd),
}

#[derive(Subcommand)]
enum RetentionCmd {
    /// `overlord retention set DEVICE [SENSOR] DAYS`: keep the device's
    /// (or one sensor's) readings DAYS days; 0 keeps them forever,
    /// `default` goes back to the default. Prints the device's settings.
    Set {
        /// Device id.
        device: String,
        /// `[SENSOR] DAYS`.
        #[arg(
            required = true,
            num_args = 1..=2,
            allow_hyphen_values = true,
            value_name = "[SENSOR] DAYS"
        )]
        args: Vec<String>,
    },
    /// Every setting as CSV `device,sensor,keep_days` (sensor `*`: the
    /// whole device); the last row `*,*,DAYS` is the configured default.
    List,
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
        Command::Backup { file, url } => backup(&config, &file, url.as_deref()),
        Command::Restore { file } => restore(&config, &file),
        Command::Export {
            device,
            sensors,
            from,
            to,
            out,
            safe,
        } => export(&config, &device, sensors, from, to, out, safe),
        Command::Import { file, device } => import(config, &file, device.as_deref()),
        Command::Check => check(&config),
        Command::Compact => compact(&config),
        Command::Retention(cmd) => retention(&config, cmd),
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
    // Take the port before touching the data file: a second server started
    // on a taken port must fail without creating a data file or an
    // administrator token.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("overlord-http")
        .build()
        .map_err(|e| e.to_string())?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&listen))
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let opened =
        app::open(OpenOptions::new(config)).map_err(|e| format!("{}: {e}", data_file.display()))?;
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
    rt.block_on(async move {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
        drop(out);
        tracing::info!(%addr, data_file = %data_file.display(), "overlord started");
        // The accept loop runs on a runtime worker, not on this thread:
        // a connection task spawned from a worker starts on that worker
        // (tokio's LIFO slot) instead of waking another thread for every
        // connection.
        tokio::spawn(server::run(listener, opened, server::shutdown_signal()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    })
}

fn check(config: &Config) -> Result<(), String> {
    let path = &config.data_file;
    if !path.exists() {
        return Err(format!("{}: no such data file", path.display()));
    }
    // redb panics on some damaged pages; `check` catches and reports
    // them, so keep the default hook's backtraces off the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    // Refuse while a server has the file open (its copy could be torn);
    // a read-only open tells without writing to the file.
    let probe = std::panic::catch_unwind(|| redb::Builder::new().open_read_only(path));
    if let Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) = probe {
        return Err(format!(
            "{} is in use by a running server; stop it first",
            path.display()
        ));
    }
    drop(probe);
    let report = overlord::ops::check(path).map_err(|e| store_err(path, e))?;
    let _ = std::panic::take_hook();
    let mut out = String::from("what,rows,state\n");
    for (what, rows, state) in &report.lines {
        let mut line = format!("{what},{rows},");
        overlord::codec::names::write_csv_text(state, &mut line);
        out.push_str(&line);
        out.push('\n');
    }
    print!("{out}");
    if report.damaged {
        Err(format!(
            "{} is damaged: stop using it; restore a backup (`overlord restore FILE`), or salvage what still reads with `overlord export` (see docs/storage.md, \"Damaged data\")",
            path.display()
        ))
    } else {
        println!("ok");
        Ok(())
    }
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
            let made = devices::create_many(&store, &directory, &owner, rows, None, 0)
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

fn retention(config: &Config, cmd: RetentionCmd) -> Result<(), String> {
    use overlord::retention::{parse_days, Retention};
    let store = open_store(config)?;
    let policy = Retention::new(
        &config.retention,
        Retention::load(&store).map_err(|e| e.to_string())?,
    );
    let devices = store.load_devices().map_err(|e| e.to_string())?;
    let wire = |e: overlord::error::WireError| e.body().trim_end().to_string();
    match cmd {
        RetentionCmd::Set { device, args } => {
            let d = devices
                .iter()
                .find(|d| d.id == device)
                .ok_or_else(|| format!("no device '{device}'"))?;
            let (sensor, days) = match args.as_slice() {
                [days] => (None, days),
                [sensor, days] => (
                    Some(overlord::codec::SensorId::parse(sensor).map_err(|e| wire(e.into()))?),
                    days,
                ),
                _ => return Err("expected [SENSOR] DAYS".into()),
            };
            let days = if days == "default" {
                None
            } else if days.trim().is_empty() {
                return Err("DAYS: a number of days, 0 (forever) or 'default'".into());
            } else {
                parse_days(days).map_err(wire)?
            };
            policy
                .set(&store, d.num, sensor, days)
                .map_err(|e| e.to_string())?;
            print!("{}", policy.settings_csv(d.num));
        }
        RetentionCmd::List => {
            let ids: std::collections::HashMap<u32, &str> =
                devices.iter().map(|d| (d.num, d.id.as_str())).collect();
            let mut out = String::from("device,sensor,keep_days\n");
            for ((num, code), days) in policy.all_overrides() {
                let id = ids.get(&num).copied().unwrap_or("?");
                match overlord::codec::SensorId::from_code(code) {
                    Some(s) if code != 0 => out.push_str(&format!("{id},{s},{days}\n")),
                    _ => out.push_str(&format!("{id},*,{days}\n")),
                }
            }
            out.push_str(&format!("*,*,{}\n", policy.default_days()));
            print!("{out}");
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
            // The same rule as `POST /v1/users`: a user's name goes into
            // inbox rows (`from` = `user:NAME`) and CSV listings, so a
            // new one is 1-64 URL-safe characters (never a line break).
            let exists = store
                .load_users()
                .map_err(|e| e.to_string())?
                .iter()
                .any(|u| u.name == name);
            if !exists && (!overlord::auth::valid_id(&name) || name == "anonymous") {
                return Err("a user name is 1-64 of A-Z a-z 0-9 . _ ~ -".into());
            }
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

/// A progress bar on stderr, drawn only when stderr is a terminal (so
/// scripts and logs get no control characters). `len` 0: a spinner.
fn progress(len: u64, what: &str) -> ProgressBar {
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

fn store_err(path: &std::path::Path, e: store::StoreError) -> String {
    match e {
        store::StoreError::InUse => format!(
            "{} is in use by a running server; stop it first",
            path.display()
        ),
        other => format!("{}: {other}", path.display()),
    }
}

fn backup(config: &Config, file: &std::path::Path, url: Option<&str>) -> Result<(), String> {
    if file.exists() {
        return Err(format!("{} exists; give a new file name", file.display()));
    }
    let Some(url) = url else {
        let rows = {
            let counted = store::Store::open(&config.data_file)
                .and_then(|s| {
                    let t = redb::ReadableDatabase::begin_read(&**s.db()?)?;
                    overlord::ops::count_rows(&t)
                })
                .map_err(|e| match e {
                    store::StoreError::InUse => format!(
                        "{} is in use by a running server; use --url to have it make the backup",
                        config.data_file.display()
                    ),
                    other => format!("{}: {other}", config.data_file.display()),
                })?;
            let bar = progress(counted, "rows");
            let n = overlord::ops::backup_file(&config.data_file, file, &|n| bar.set_position(n))
                .map_err(|e| store_err(&config.data_file, e))?;
            bar.finish_and_clear();
            n
        };
        println!("ok,{rows},{}", store::Store::file_len(file));
        return Ok(());
    };
    let token = std::env::var("OVERLORD_TOKEN")
        .map_err(|_| "set OVERLORD_TOKEN to an administrator's API token".to_string())?;
    let tmp = overlord::ops::temp_beside(file, "download");
    let result = download(url, "/v1/admin/backup", &token, &tmp).and_then(|len| {
        overlord::ops::verify(&tmp)
            .map_err(|e| format!("the downloaded copy does not open: {e}"))?;
        std::fs::rename(&tmp, file).map_err(|e| format!("{}: {e}", file.display()))?;
        overlord::ops::sync_dir_of(file).map_err(|e| e.to_string())?;
        Ok(len)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    println!("ok,{}", result?);
    Ok(())
}

/// `GET path` from `url` (`http://host:port`) with a Bearer token, the
/// body written to `dest` and fsynced. Returns its length. Plain HTTP/1.1
/// over a socket: the server always sends `Content-Length`.
fn download(url: &str, path: &str, token: &str, dest: &std::path::Path) -> Result<u64, String> {
    use std::io::{BufRead, BufReader, Read};
    let host = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{url}': give an http:// address (put TLS in front of both ends)"))?
        .trim_end_matches('/');
    let stream = std::net::TcpStream::connect(host).map_err(|e| format!("{host}: {e}"))?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    write!(
        w,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP reply: {}", line.trim()))?;
    let mut len = None;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<u64>().ok();
            }
        }
    }
    let len = len.ok_or("the reply has no Content-Length")?;
    if status != 200 {
        let mut body = String::new();
        let _ = r.take(len.min(4096)).read_to_string(&mut body);
        return Err(format!("the server answered {status}: {}", body.trim()));
    }
    let mut out = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    let bar = progress(len, "bytes");
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    while done < len {
        let n = r.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("the connection ended after {done} of {len} bytes"));
        }
        let n = n.min((len - done) as usize);
        out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        done += n as u64;
        bar.set_position(done);
    }
    out.sync_all().map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    Ok(len)
}

fn restore(config: &Config, file: &std::path::Path) -> Result<(), String> {
    let len = store::Store::file_len(file);
    let bar = progress(len, "bytes");
    let kept =
        overlord::ops::restore(file, &config.data_file, &|n| bar.set_position(n)).map_err(|e| {
            match e {
                store::StoreError::InUse => format!(
                    "{} is in use by a running server; stop it first",
                    config.data_file.display()
                ),
                other => format!("{}: {other}", file.display()),
            }
        })?;
    bar.finish_and_clear();
    match kept {
        Some(k) => println!("ok,{len},{}", k.display()),
        None => println!("ok,{len},"),
    }
    Ok(())
}

fn export(
    config: &Config,
    device: &str,
    sensors: Option<String>,
    from: Option<String>,
    to: Option<String>,
    out: Option<PathBuf>,
    safe: bool,
) -> Result<(), String> {
    use overlord::codec::{timefmt, SensorId};
    use overlord::store::query::{read_series, SeriesQuery};
    let store = open_store(config)?;
    let d = store
        .load_devices()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|d| d.id == device)
        .ok_or_else(|| format!("no device '{device}'"))?;
    let time = |v: Option<String>, dflt: i64| -> Result<i64, String> {
        match v {
            None => Ok(dflt),
            Some(v) => {
                timefmt::parse_instant(&v).map_err(|why| format!("'{v}' is not a time ({why})"))
            }
        }
    };
    let mut q = SeriesQuery {
        device: d.num,
        sensors: Vec::new(),
        from: time(from, 0)?,
        to: time(to, i64::MAX)?,
        limit: 100_000,
    };
    // Fix the columns once, so every page has the same header.
    let cols = match sensors {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                SensorId::parse(s).map_err(|e| {
                    overlord::error::WireError::from(e)
                        .body()
                        .trim_end()
                        .to_string()
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    q.sensors = cols;
    let mut w: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(p)
                .map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = progress(0, "rows");
    let mut first = true;
    let mut rows = 0u64;
    loop {
        let page = store
            .db()
            .and_then(|db| read_series(&db, &q))
            .map_err(|e| e.to_string())?;
        if first && q.sensors.is_empty() {
            // Columns from the first page's header: later pages use them.
            let header = page.text.lines().next().unwrap_or("time");
            q.sensors = header
                .split(',')
                .skip(1)
                .filter_map(|s| SensorId::parse(s).ok())
                .collect();
        }
        let text = if first {
            page.text.as_str()
        } else {
            page.text.split_once('\n').map_or("", |(_, rest)| rest)
        };
        let safe_text;
        let text = if safe {
            safe_text = overlord::codec::spreadsheet::make_safe(text);
            safe_text.as_str()
        } else {
            text
        };
        w.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        first = false;
        rows += page.rows as u64;
        bar.set_position(rows);
        match page.next_from {
            Some(next) => q.from = next,
            None => break,
        }
    }
    w.flush().map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    eprintln!("overlord: exported {rows} rows");
    Ok(())
}

fn import(config: Config, file: &std::path::Path, device: Option<&str>) -> Result<(), String> {
    use overlord::codec::{csvbody, timefmt};
    let body = if file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map_err(|e| e.to_string())?;
        b
    } else {
        std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?
    };
    // The same parser and limits as `POST /v1/readings` (but no body-size
    // limit: the file is local). Nothing is stored unless all of it parses.
    let limits = config.codec_limits();
    let parsed = csvbody::parse_csv(&body, timefmt::now_micros(), &limits).map_err(|e| {
        overlord::error::WireError::from(e)
            .body()
            .trim_end()
            .to_string()
    })?;
    drop(body);
    let data_file = config.data_file.clone();
    let opened = app::open(OpenOptions::new(config)).map_err(|e| store_err(&data_file, e))?;
    let result = (|| {
        let dir = &opened.app.directory;
        let num = |id: &str| {
            dir.device(id)
                .map(|d| d.num)
                .ok_or_else(|| format!("no device '{id}'"))
        };
        let nums: Vec<u32> = parsed
            .devices
            .iter()
            .map(|id| num(id))
            .collect::<Result<_, _>>()?;
        let default = match device {
            Some(id) => Some(num(id)?),
            None => None,
        };
        if nums.is_empty() && default.is_none() {
            return Err("say which device: --device ID or a device column".to_string());
        }
        let readings: Vec<(u32, overlord::codec::Reading)> = parsed
            .readings
            .into_iter()
            .map(|(i, r)| (i.map_or(default.unwrap_or(0), |i| nums[i as usize]), r))
            .collect();
        let total = readings.len() as u64;
        let bar = progress(total, "readings");
        let (mut accepted, mut new) = (0u64, 0u64);
        let mut it = readings.into_iter().peekable();
        while it.peek().is_some() {
            // Jobs of a bounded size through the writer, as HTTP would
            // send them: each committed (fsynced) before the next.
            let job: Vec<_> = it.by_ref().take(50_000).collect();
            // One job at a time, so the queue is never full.
            let rx = opened
                .app
                .ingest
                .try_submit(job, None)
                .map_err(|_| "the writer is not taking readings".to_string())?;
            let o = rx
                .blocking_recv()
                .map_err(|_| "the writer stopped".to_string())?
                .map_err(|e| e.to_string())?;
            accepted += o.accepted as u64;
            new += o.new as u64;
            bar.set_position(accepted);
        }
        bar.finish_and_clear();
        Ok((accepted, new))
    })();
    if let Some(token) = &opened.admin_token {
        eprintln!(
            "overlord: created the administrator '{}'; its API token is shown only now: {token}",
            users::FIRST_ADMIN
        );
    }
    let Opened { writer, app, .. } = opened;
    drop(app);
    writer.shutdown();
    let (accepted, new) = result?;
    println!("ok,{accepted},{new}");
    Ok(())
}

fn compact(config: &Config) -> Result<(), String> {
    let (before, after) = overlord::ops::compact(&config.data_file).map_err(|e| match e {
        store::StoreError::InUse => format!(
            "{} is in use by a running server; stop it first",
            config.data_file.display()
        ),
        other => format!("{}: {other}", config.data_file.display()),
    })?;
    println!("before,after\n{before},{after}");
    Ok(())
}
