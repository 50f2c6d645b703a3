//! `overlord check`: is the data file whole (server stopped)?

use overlord::config::Config;
use overlord::store::StoreError;

use super::{offline, Advice};

/// Read every row of every table and verify every page's checksum, on a
/// copy beside the data file (see `ops::check`). Prints `what,rows,state`
/// lines, then `ok`; damage is an error (a non-zero exit).
pub fn check(config: &Config) -> Result<(), String> {
    super::file_only(
        config,
        "check",
        "PostgreSQL checks its own pages (data checksums, amcheck)",
    )?;
    let path = &config.data_file;
    if !path.exists() {
        return Err(super::no_data_file(path));
    }
    // redb panics on some damaged pages; `check` catches and reports
    // them, so keep the default hook's backtraces off the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let report = offline(path, Advice::Stop, |path| {
        // Refuse while a server has the file open (its copy could be
        // torn); a read-only open tells without writing to the file.
        let probe = std::panic::catch_unwind(|| redb::Builder::new().open_read_only(path));
        if let Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) = probe {
            return Err(StoreError::InUse);
        }
        drop(probe);
        overlord::ops::check(path)
    })?;
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
