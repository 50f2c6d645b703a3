//! `overlord compact`: compact the data file (server stopped).

use overlord::config::Config;

use super::{offline, Advice};

/// Compact the data file; prints `before,after` sizes in bytes.
pub fn compact(config: &Config) -> Result<(), String> {
    let (before, after) = offline(&config.data_file, Advice::Stop, overlord::ops::compact)?;
    println!("before,after\n{before},{after}");
    Ok(())
}
