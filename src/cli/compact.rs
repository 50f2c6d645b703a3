//! `overlord compact`: compact the data file (server stopped).

use overlord::config::Config;

use super::{offline, Advice};

/// Compact the data file; prints `before,after` sizes in bytes.
pub fn compact(config: &Config) -> Result<(), String> {
    super::file_only(
        config,
        "compact",
        "PostgreSQL's autovacuum reclaims space (VACUUM FULL gives it back to the disk)",
    )?;
    let (before, after) = offline(&config.data_file, Advice::Stop, overlord::ops::compact)?;
    println!("before,after\n{before},{after}");
    Ok(())
}
