//! `overlord device ...`: create, list, change and import devices, and
//! rotate their tokens, in the data file (server stopped). The rules are
//! `overlord::devices`', shared with the HTTP API.

use std::path::PathBuf;

use clap::Subcommand;
use overlord::auth::Directory;
use overlord::config::Config;
use overlord::store::Store;
use overlord::{devices, users};

use super::{offline_store, read_input, Advice};

/// `overlord device ...`.
#[derive(Subcommand)]
pub enum DeviceCmd {
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
    /// Delete a device and everything it has (readings, inbox, command
    /// records, grants, channel memberships, alerts on it, labels,
    /// presence); a gateway with devices below it is refused.
    Delete {
        /// Device id.
        id: String,
    },
    /// Delete a device's readings from `--from` (included) to `--to`
    /// (excluded); prints `ok,<removed>`, as `DELETE /v1/devices/ID/readings`.
    DeleteReadings {
        /// Device id.
        id: String,
        /// First instant removed (RFC 3339 or Unix seconds).
        #[arg(long)]
        from: String,
        /// First instant kept after the range.
        #[arg(long)]
        to: String,
        /// Only these sensors, comma-separated (default: all).
        #[arg(long)]
        sensors: Option<String>,
        /// `remove` (default) the aggregates of minutes wholly inside the
        /// range, or `keep` them.
        #[arg(long)]
        aggregates: Option<String>,
    },
    /// Give a device a new token; the previous one works until the next rotation.
    Token {
        /// Device id.
        id: String,
    },
}

/// Run one `device` subcommand (server stopped).
pub fn device(config: &Config, cmd: DeviceCmd) -> Result<(), String> {
    match cmd {
        // Through the server's state: the writer removes the readings.
        DeviceCmd::Delete { id } => super::delete::delete_device(config, &id),
        DeviceCmd::DeleteReadings {
            id,
            from,
            to,
            sensors,
            aggregates,
        } => {
            let opts = [
                ("from", Some(from.as_str())),
                ("to", Some(to.as_str())),
                ("sensors", sensors.as_deref()),
                ("aggregates", aggregates.as_deref()),
            ];
            super::delete::delete_readings(config, &id, &opts)
        }
        cmd => on_records(config, cmd),
    }
}

/// The subcommands that change device records in the data file itself.
fn on_records(config: &Config, cmd: DeviceCmd) -> Result<(), String> {
    let store = offline_store(config, Advice::StopOrHttp)?;
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
        } => create(&store, &directory, &owner, id.as_deref(), name, &set),
        DeviceCmd::List => list(config, &store, directory),
        DeviceCmd::Set { id, fields } => {
            let d = directory
                .device(&id)
                .ok_or_else(|| format!("no device '{id}'"))?;
            devices::update(&store, &directory, &d, &pairs(&fields)?).map_err(|e| e.body())?;
            println!("ok");
            Ok(())
        }
        DeviceCmd::Import { file, owner } => import(&store, &directory, &file, &owner),
        DeviceCmd::Token { id } => {
            let d = directory
                .device(&id)
                .ok_or_else(|| format!("no device '{id}'"))?;
            let token = devices::rotate(&store, &directory, &d).map_err(|e| e.to_string())?;
            println!("id,token\n{id},{token}");
            Ok(())
        }
        DeviceCmd::Delete { .. } | DeviceCmd::DeleteReadings { .. } => {
            unreachable!("`device` runs these through the server's state")
        }
    }
}

/// `device create`: prints `id,token`.
fn create(
    store: &Store,
    directory: &Directory,
    owner: &str,
    id: Option<&str>,
    name: Option<String>,
    set: &[String],
) -> Result<(), String> {
    if directory.user(owner).is_none() {
        return Err(format!("no user '{owner}'"));
    }
    let mut fields = pairs(set)?;
    if let Some(n) = name {
        fields.push(("name".into(), n));
    }
    let (rec, token) =
        devices::create(store, directory, owner, id, &fields).map_err(|e| e.body())?;
    println!("id,token\n{},{token}", rec.id);
    Ok(())
}

/// `device list`: the devices as CSV, with their stored presence.
fn list(config: &Config, store: &Store, directory: Directory) -> Result<(), String> {
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
    Ok(())
}

/// `device import`: all rows or none; prints `id,token` for each.
fn import(
    store: &Store,
    directory: &Directory,
    file: &std::path::Path,
    owner: &str,
) -> Result<(), String> {
    if directory.user(owner).is_none() {
        return Err(format!("no user '{owner}'"));
    }
    let body = read_input(file)?;
    let rows = overlord::api::devices::parse_import(&body).map_err(|e| e.body())?;
    let made =
        devices::create_many(store, directory, owner, rows, None, 0).map_err(|e| e.body())?;
    println!("id,token");
    for (rec, token) in made {
        println!("{},{}", rec.id, token.unwrap_or_default());
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
