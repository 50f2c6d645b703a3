//! `overlord init`: create an empty data file (server stopped), so that
//! the other offline commands can set up users and devices before the
//! first start. They never create one themselves.

use overlord::config::Config;
use overlord::store::Store;

use super::{offline_or_create, Advice};

/// Create the data file named by the configuration with every table and
/// no rows; an existing file is refused (nothing is overwritten). Prints
/// `created,PATH`. The first `serve` still creates the administrator.
pub fn init(config: &Config) -> Result<(), String> {
    super::file_only(
        config,
        "init",
        "a node makes the database's schema when it starts, and the offline `user` and `device` commands work on the database",
    )?;
    let data = &config.data_file;
    if data.exists() {
        return Err(format!("{} exists already", data.display()));
    }
    offline_or_create(data, Advice::Stop, Store::open)?;
    println!("created,{}", data.display());
    Ok(())
}
