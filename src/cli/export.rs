//! `overlord export` and `overlord import`: readings out of and into the
//! data file as CSV (server stopped), in the wire format of
//! `GET /v1/devices/ID/readings` and `POST /v1/readings`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use overlord::app::{App, Opened};
use overlord::codec::csvbody::{self, CsvReadings};
use overlord::codec::{timefmt, Reading, SensorId};
use overlord::config::Config;
use overlord::store::query::{read_series, SeriesQuery};
use overlord::store::Store;
use overlord::users;

use super::{offline_app, offline_store, progress, read_input, wire_text, Advice};

// `overlord export`'s flags (no doc comment here: the command's help
// text is the doc comment on `Command::Export` in main.rs).
#[derive(Args)]
pub struct ExportArgs {
    /// Device id.
    #[arg(long)]
    device: String,
    /// Sensors, comma-separated (default: all the device has).
    #[arg(long)]
    sensors: Option<String>,
    /// From this time (RFC 3339 or unix seconds), inclusive.
    #[arg(long)]
    from: Option<String>,
    /// To this time, inclusive.
    #[arg(long)]
    to: Option<String>,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Spreadsheet-safe: a text field starting with = + - @ TAB or CR
    /// (and not a plain number) gets a leading ' (as `safe=1`).
    #[arg(long)]
    safe: bool,
}

/// `overlord export`: one device's readings as CSV, as
/// `GET /v1/devices/ID/readings` answers, page by page (server stopped).
pub fn export(config: &Config, args: ExportArgs) -> Result<(), String> {
    let ExportArgs {
        device,
        sensors,
        from,
        to,
        out,
        safe,
    } = args;
    let store = offline_store(config, Advice::StopOrHttp)?;
    let d = store
        .load_devices()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|d| d.id == device)
        .ok_or_else(|| format!("no device '{device}'"))?;
    let time = |v: Option<String>, dflt: i64| -> Result<i64, String> {
        match v {
            None => Ok(dflt),
            Some(v) => {
                timefmt::parse_instant(&v).map_err(|why| format!("'{v}' is not a time ({why})"))
            }
        }
    };
    let mut q = SeriesQuery {
        device: d.num,
        sensors: Vec::new(),
        from: time(from, 0)?,
        to: time(to, i64::MAX)?,
        limit: 100_000,
    };
    // Fix the columns once, so every page has the same header.
    let cols = match sensors {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SensorId::parse(s).map_err(wire_text))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    q.sensors = cols;
    let mut w: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(p)
                .map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let rows = write_pages(&store, q, safe, &mut w)?;
    eprintln!("overlord: exported {rows} rows");
    Ok(())
}

/// Write the answer to `q` to `w` a page at a time, one header first
/// (`safe`: spreadsheet-safe). Returns the rows written.
fn write_pages(
    store: &Store,
    mut q: SeriesQuery,
    safe: bool,
    w: &mut dyn Write,
) -> Result<u64, String> {
    let bar = progress(0, "rows");
    let mut first = true;
    let mut rows = 0u64;
    loop {
        let page = read_series(store, &q).map_err(|e| e.to_string())?;
        if first && q.sensors.is_empty() {
            // Columns from the first page's header: later pages use them.
            let header = page.text.lines().next().unwrap_or("time");
            q.sensors = header
                .split(',')
                .skip(1)
                .filter_map(|s| SensorId::parse(s).ok())
                .collect();
        }
        let text = if first {
            page.text.as_str()
        } else {
            page.text.split_once('\n').map_or("", |(_, rest)| rest)
        };
        let safe_text;
        let text = if safe {
            safe_text = overlord::codec::spreadsheet::make_safe(text);
            safe_text.as_str()
        } else {
            text
        };
        w.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        first = false;
        rows += page.rows as u64;
        bar.set_position(rows);
        match page.next_from {
            Some(next) => q.from = next,
            None => break,
        }
    }
    w.flush().map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    Ok(rows)
}

/// `overlord import FILE [--device ID]`: store readings from a CSV file
/// (`-`: stdin) with the parser and limits of `POST /v1/readings`,
/// through the writer (server stopped). All of the file parses, or
/// nothing is stored. Prints `ok,ACCEPTED,NEW`.
pub fn import(config: Config, file: &Path, device: Option<&str>) -> Result<(), String> {
    let body = read_input(file)?;
    // The same parser and limits as `POST /v1/readings` (but no body-size
    // limit: the file is local). Nothing is stored unless all of it parses.
    let limits = config.codec_limits();
    let parsed = csvbody::parse_csv(&body, timefmt::now_micros(), &limits).map_err(wire_text)?;
    drop(body);
    let opened = offline_app(&config, Advice::Stop)?;
    let result = submit_all(&opened.app, parsed, device);
    if let Some(token) = &opened.admin_token {
        eprintln!(
            "overlord: created the administrator '{}'; its API token is shown only now: {token}",
            users::FIRST_ADMIN
        );
    }
    let Opened { writer, app, .. } = opened;
    drop(app);
    writer.shutdown();
    let (accepted, new) = result?;
    println!("ok,{accepted},{new}");
    Ok(())
}

/// Map `parsed`'s readings to device numbers (its `device` column, else
/// `device`) and store them through the writer of `app`, in bounded
/// jobs, each committed before the next. Returns `(accepted, new)`.
fn submit_all(app: &App, parsed: CsvReadings, device: Option<&str>) -> Result<(u64, u64), String> {
    let dir = &app.directory;
    let num = |id: &str| {
        dir.device(id)
            .map(|d| d.num)
            .ok_or_else(|| format!("no device '{id}'"))
    };
    let nums: Vec<u32> = parsed
        .devices
        .iter()
        .map(|id| num(id))
        .collect::<Result<_, _>>()?;
    let default = match device {
        Some(id) => Some(num(id)?),
        None => None,
    };
    if nums.is_empty() && default.is_none() {
        return Err("say which device: --device ID or a device column".to_string());
    }
    let readings: Vec<(u32, Reading)> = parsed
        .readings
        .into_iter()
        .map(|(i, r)| (i.map_or(default.unwrap_or(0), |i| nums[i as usize]), r))
        .collect();
    let total = readings.len() as u64;
    let bar = progress(total, "readings");
    let (mut accepted, mut new) = (0u64, 0u64);
    let mut it = readings.into_iter().peekable();
    while it.peek().is_some() {
        // Jobs of a bounded size through the writer, as HTTP would
        // send them: each committed (fsynced) before the next.
        let job: Vec<_> = it.by_ref().take(50_000).collect();
        // One job at a time, so the queue is never full.
        let rx = app
            .ingest
            .try_submit(job, None)
            .map_err(|_| "the writer is not taking readings".to_string())?;
        let o = rx
            .blocking_recv()
            .map_err(|_| "the writer stopped".to_string())?
            .map_err(|e| e.to_string())?;
        accepted += o.accepted as u64;
        new += o.new as u64;
        bar.set_position(accepted);
    }
    bar.finish_and_clear();
    Ok((accepted, new))
}
