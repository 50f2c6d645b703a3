//! `overlord export-store`: the whole store into PostgreSQL, or from
//! PostgreSQL into a new data file (`overlord::pg::transfer`).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use overlord::config::Config;
use overlord::ops;
use overlord::pg::transfer::Copied;
use overlord::pg::{self, Target};
use overlord::store::StoreError;
use redb::ReadableDatabase;

use super::{offline, progress, Advice};

/// Where `export-store` copies to.
#[derive(Clone, Copy, ValueEnum)]
pub enum To {
    /// From the data file (server stopped) into an empty PostgreSQL
    /// database.
    Postgres,
    /// From PostgreSQL into a new data file FILE.
    Redb,
}

/// `overlord export-store --to postgres|redb [FILE] [--url URL]`.
#[derive(Args)]
pub struct ExportStoreArgs {
    /// `postgres`: the data file into PostgreSQL; `redb`: PostgreSQL
    /// into the new data file FILE.
    #[arg(long, value_enum)]
    to: To,
    /// With `--to redb`: the new data file (must not exist); the uploaded
    /// files' contents go to the configuration's `files_dir` when it is
    /// set, else to `FILE.files` (where a server on FILE looks), which
    /// must not exist or be empty.
    file: Option<PathBuf>,
    /// The PostgreSQL connection string; default `[store] postgres_url`
    /// (`OVERLORD_STORE__POSTGRES_URL`: the place for one with a password,
    /// where `ps` does not show it).
    #[arg(long)]
    url: Option<String>,
    /// With `--to postgres`: replace the Overlord data the database holds
    /// (in the same transaction: on an error the old copy stays).
    #[arg(long)]
    replace: bool,
    /// With `--to postgres`: copy from this running server instead of the
    /// data file (`http://HOST:PORT`; it makes a consistent copy as for
    /// `backup --url`, administrator token in `OVERLORD_TOKEN`). Uploaded
    /// files' contents are read from the configured files directory.
    #[arg(long)]
    server: Option<String>,
}

/// Run it; prints `ok,ROWS,FILES,FILE_BYTES`.
pub fn export_store(config: &Config, args: ExportStoreArgs) -> Result<(), String> {
    let url = args
        .url
        .unwrap_or_else(|| config.store.postgres_url.clone());
    if url.trim().is_empty() {
        return Err(
            "give --url, or set [store] postgres_url (OVERLORD_STORE__POSTGRES_URL)".into(),
        );
    }
    let target = Target::parse(&url)?;
    let rt = pg::runtime()?;
    let copied = match args.to {
        To::Postgres => {
            if args.file.is_some() {
                return Err(
                    "--to postgres copies the configured data file (or --server's); it takes no FILE".into(),
                );
            }
            let files_dir = config.files_dir();
            let cache = config.cache_bytes();
            // Read-only: the source is not written (it may be a backup on
            // read-only media), and redb's cache is the configured one.
            // Opening still takes the file's lock: a running server's
            // file is refused (`offline` words it).
            let export = |data: &Path| -> Result<Result<Copied, String>, StoreError> {
                let db = match redb::Builder::new()
                    .set_cache_size(cache)
                    .open_read_only(data)
                {
                    Ok(db) => db,
                    Err(redb::DatabaseError::RepairAborted) => {
                        return Ok(Err(format!(
                            "{} was not closed cleanly: start the server on it once (it repairs the file), stop it, then copy",
                            data.display()
                        )))
                    }
                    Err(e) => return Err(e.into()),
                };
                let txn = db.begin_read()?;
                let bar = progress(overlord::ops::count_rows(&txn)?, "rows");
                let r = rt.block_on(pg::transfer::to_postgres(
                    &target,
                    &txn,
                    &files_dir,
                    args.replace,
                    &|n| bar.set_position(n),
                ));
                bar.finish_and_clear();
                Ok(r)
            };
            match &args.server {
                None => offline(&config.data_file, Advice::Stop, export)??,
                Some(server) => from_server(config, server, export)?,
            }
        }
        To::Redb => {
            if args.replace || args.server.is_some() {
                return Err("--replace and --server go with --to postgres".into());
            }
            let file = args.file.ok_or("--to redb needs FILE, the new data file")?;
            if file.to_string_lossy().contains("password=") {
                return Err("FILE looks like part of a connection string: quote the value of --url (or use OVERLORD_STORE__POSTGRES_URL)".into());
            }
            // Where a server whose configuration names FILE as its data
            // file looks for the contents: `files_dir` when set, else
            // `FILE.files`.
            let files_dir = {
                let mut c = config.clone();
                c.data_file = file.clone();
                c.files_dir()
            };
            eprintln!("the uploaded files' contents go to {}", files_dir.display());
            let bar = progress(0, "rows");
            let cache = config.cache_bytes();
            let r = rt.block_on(pg::transfer::to_redb(
                &target,
                &file,
                Some(&files_dir),
                cache,
                &|n| bar.set_position(n),
            ));
            bar.finish_and_clear();
            r?
        }
    };
    println!("ok,{},{},{}", copied.rows, copied.blobs, copied.blob_bytes);
    Ok(())
}

/// `export` run on a consistent copy that the running `server` makes
/// (`GET /v1/admin/backup`), downloaded to a temp file beside the data
/// file and removed afterwards.
fn from_server(
    config: &Config,
    server: &str,
    export: impl FnOnce(&Path) -> Result<Result<Copied, String>, StoreError>,
) -> Result<Copied, String> {
    let tmp = ops::temp_beside(&config.data_file, "export-store");
    let result = super::backup::download_backup(server, &tmp)
        .and_then(|_| export(&tmp).map_err(|e| format!("the downloaded copy: {e}"))?);
    let _ = std::fs::remove_file(&tmp);
    result
}
