//! `overlord device delete ID` (server stopped): the deletion of
//! `DELETE /v1/devices/ID` (`overlord::deletion`), run on the data file
//! through the server's own state, then the writer removes the device's
//! readings before the command returns.

use std::time::Duration;

use overlord::app::{self, OpenOptions, Opened};
use overlord::config::Config;

use super::{offline, Advice};

/// Delete device `id` and all its data; prints
/// `ok,<inbox rows>,<channel memberships>,<alerts>` as the HTTP API does.
pub fn delete_device(config: &Config, id: &str) -> Result<(), String> {
    let opened = offline(&config.data_file, Advice::StopOrHttp, |_| {
        app::open(OpenOptions::new(config.clone()))
    })?;
    let result = match opened.app.directory.device(id) {
        None => Err(format!("no device '{id}'")),
        Some(d) => overlord::deletion::delete_device(&opened.app, &d)
            .map_err(|e| e.body().trim_end().to_string()),
    };
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
    let r = result?;
    println!("ok,{},{},{}", r.inbox_rows, r.memberships, r.alerts);
    Ok(())
}
