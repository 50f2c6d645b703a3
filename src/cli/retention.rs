//! `overlord retention ...`: how long readings are kept, per device or
//! sensor, in the data file (server stopped; running: the HTTP API).

use clap::Subcommand;
use overlord::codec::SensorId;
use overlord::config::Config;
use overlord::retention::{parse_days, Retention};

use super::{offline_store, wire_text, Advice};

/// `overlord retention ...`.
#[derive(Subcommand)]
pub enum RetentionCmd {
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

/// Run one `retention` subcommand on the data file (server stopped).
pub fn retention(config: &Config, cmd: RetentionCmd) -> Result<(), String> {
    let store = offline_store(config, Advice::StopOrHttp)?;
    let policy = Retention::new(
        &config.retention,
        Retention::load(&store).map_err(|e| e.to_string())?,
    );
    let devices = store.load_devices().map_err(|e| e.to_string())?;
    match cmd {
        RetentionCmd::Set { device, args } => {
            let d = devices
                .iter()
                .find(|d| d.id == device)
                .ok_or_else(|| format!("no device '{device}'"))?;
            let (sensor, days) = match args.as_slice() {
                [days] => (None, days),
                [sensor, days] => (Some(SensorId::parse(sensor).map_err(wire_text)?), days),
                _ => return Err("expected [SENSOR] DAYS".into()),
            };
            let days = if days == "default" {
                None
            } else if days.trim().is_empty() {
                return Err("DAYS: a number of days, 0 (forever) or 'default'".into());
            } else {
                parse_days(days).map_err(wire_text)?
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
                match SensorId::from_code(code) {
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
