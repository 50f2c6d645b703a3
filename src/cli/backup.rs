//! `overlord backup` and `overlord restore`: consistent copies of the data
//! file, and putting one back. `backup --url` asks a running server for
//! the copy with a small HTTP client of its own ([`download`]).

use std::io::Write;
use std::path::Path;

use overlord::config::Config;
use overlord::ops;
use overlord::store::{Store, StoreError};
use redb::ReadableDatabase;

use super::{offline, offline_or_create, progress, Advice};

/// `overlord backup FILE [--url URL]`: a consistent copy of the data file
/// at `file` (which must not exist). With `url` a running server makes it
/// (`GET /v1/admin/backup`, the administrator token in `OVERLORD_TOKEN`)
/// and it is downloaded and verified; without, from the data file with
/// the server stopped. Prints `ok,ROWS,BYTES` (local) or `ok,BYTES`.
pub fn backup(config: &Config, file: &Path, url: Option<&str>) -> Result<(), String> {
    if file.exists() {
        return Err(format!("{} exists; give a new file name", file.display()));
    }
    let Some(url) = url else {
        super::file_only(
            config,
            "backup FILE",
            "use --url to have the running node write the database into a data file, or pg_dump",
        )?;
        let rows = offline(&config.data_file, Advice::Url, |data| {
            let store = Store::open(data)?;
            let txn = store.db()?.begin_read()?;
            let bar = progress(ops::count_rows(&txn)?, "rows");
            let n = ops::backup_file(&txn, file, &|n| bar.set_position(n))?;
            bar.finish_and_clear();
            Ok(n)
        })?;
        println!("ok,{rows},{}", Store::file_len(file));
        return Ok(());
    };
    let tmp = ops::temp_beside(file, "download");
    let result = download_backup(url, &tmp).and_then(|len| {
        std::fs::rename(&tmp, file).map_err(|e| format!("{}: {e}", file.display()))?;
        ops::sync_dir_of(file).map_err(|e| e.to_string())?;
        Ok(len)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    println!("ok,{}", result?);
    Ok(())
}

/// The running server at `url` makes a consistent copy of its data file
/// (`GET /v1/admin/backup`, the administrator token in `OVERLORD_TOKEN`);
/// it is downloaded to `dest`, fsynced and checked to open as an Overlord
/// data file. Returns its length. `dest` is left for the caller to rename
/// or remove, also on an error.
pub(super) fn download_backup(url: &str, dest: &Path) -> Result<u64, String> {
    let token = std::env::var("OVERLORD_TOKEN")
        .map_err(|_| "set OVERLORD_TOKEN to an administrator's API token".to_string())?;
    let len = download(url, "/v1/admin/backup", &token, dest)?;
    ops::verify(dest).map_err(|e| format!("the downloaded copy does not open: {e}"))?;
    Ok(len)
}

/// `GET path` from `url` (`http://host:port`) with a Bearer token, the
/// body written to `dest` and fsynced. Returns its length. Plain HTTP/1.1
/// over a socket: the server always sends `Content-Length`.
fn download(url: &str, path: &str, token: &str, dest: &Path) -> Result<u64, String> {
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

/// `overlord restore FILE`: replace the data file with the backup `file`
/// (server stopped); the old one is kept as `<data file>.pre-restore-<UTC time>`.
/// Prints `ok,BYTES,KEPT`.
pub fn restore(config: &Config, file: &Path) -> Result<(), String> {
    super::file_only(
        config,
        "restore",
        "copy the backup into an empty database with `overlord export-store --to postgres FILE`",
    )?;
    let len = Store::file_len(file);
    let bar = progress(len, "bytes");
    // Only "in use" is about the data file: any other failure names the
    // backup (most are: it does not verify).
    // A lost data file is what a restore is for: it may create it.
    let kept = offline_or_create(&config.data_file, Advice::Stop, |data| {
        match ops::restore(file, data, &|n| bar.set_position(n)) {
            Err(StoreError::InUse) => Err(StoreError::InUse),
            other => Ok(other),
        }
    })?
    .map_err(|e| format!("{}: {e}", file.display()))?;
    bar.finish_and_clear();
    match kept {
        Some(k) => println!("ok,{len},{}", k.display()),
        None => println!("ok,{len},"),
    }
    Ok(())
}
