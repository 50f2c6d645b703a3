//! `overlord device delete ID`, `overlord device delete-readings ID
//! --from T --to T` and `overlord user delete NAME [--cascade]` (server
//! stopped): the deletions of `DELETE /v1/devices/ID`, `DELETE
//! /v1/devices/ID/readings` (`overlord::purge`, through the writer) and
//! `DELETE /v1/users/NAME` (`overlord::deletion`),
//! run on the data file through the server's own state; the writer
//! removes the devices' readings before the command returns.

use std::time::Duration;

use overlord::app::Opened;
use overlord::config::Config;

use super::{offline_app, Advice};

/// Delete device `id` and all its data; prints
/// `ok,<inbox rows>,<channel memberships>,<alerts>` as the HTTP API does.
pub fn delete_device(config: &Config, id: &str) -> Result<(), String> {
    let r = with_app(config, |app| match app.directory.device(id) {
        None => Err(format!("no device '{id}'")),
        Some(d) => {
            overlord::deletion::delete_device(app, &d).map_err(|e| e.body().trim_end().to_string())
        }
    })?;
    println!("ok,{},{},{}", r.inbox_rows, r.memberships, r.alerts);
    Ok(())
}

/// Delete the readings of device `id` in a range (`opts`: the options of
/// `DELETE /v1/devices/ID/readings`), through the writer as the server
/// does; prints `ok,<removed>`.
pub fn delete_readings(
    config: &Config,
    id: &str,
    opts: &[(&str, Option<&str>)],
) -> Result<(), String> {
    let removed = with_app(config, |app| {
        let d = app
            .directory
            .device(id)
            .ok_or_else(|| format!("no device '{id}'"))?;
        let get = |k: &str| opts.iter().find(|(n, _)| *n == k).and_then(|(_, v)| *v);
        let range =
            overlord::purge::parse(d.num, get).map_err(|e| e.body().trim_end().to_string())?;
        let rx = app
            .ingest
            .try_purge(range)
            .map_err(|_| "the writer is busy".to_string())?;
        match rx.blocking_recv() {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the writer stopped".to_string()),
        }
    })?;
    println!("ok,{removed}");
    Ok(())
}

/// Delete user `name` (with what they own when `cascade`); prints
/// `ok,<devices>,<channels>,<alerts>,<files>` as the HTTP API does.
pub fn delete_user(config: &Config, name: &str, cascade: bool) -> Result<(), String> {
    let r = with_app(config, |app| {
        overlord::deletion::delete_user(app, name, cascade)
            .map_err(|e| e.body().trim_end().to_string())
    })?;
    println!("ok,{},{},{},{}", r.devices, r.channels, r.alerts, r.files);
    Ok(())
}

/// Open the server's state on the data file, run `op`, wait until the
/// writer has removed every deleted device's rows, shut down.
fn with_app<T>(
    config: &Config,
    op: impl FnOnce(&overlord::app::App) -> Result<T, String>,
) -> Result<T, String> {
    let opened = offline_app(config, Advice::StopOrHttp)?;
    let result = op(&opened.app);
    if result.is_ok() {
        // The writer removes the readings a bounded batch per commit, at
        // least every 250 ms; wait until it has removed them all.
        while opened.app.deletions.pending() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(token) = &opened.admin_token {
        eprintln!(
            "overlord: created the administrator '{}'; its API token is shown only now: {token}",
            overlord::users::FIRST_ADMIN
        );
    }
    let Opened { writer, app, .. } = opened;
    drop(app);
    writer.shutdown();
    result
}
