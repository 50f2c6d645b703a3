//! `overlord` / `overlord serve`: run the server.

use std::io::Write;

use overlord::app::{self, OpenOptions};
use overlord::config::{Config, LogConfig, LogFormat, LogLevel};
use overlord::{server, users};

/// The log filter: `OVERLORD_LOG` (default `info`), plus the request
/// log's level from `[log] requests` unless `OVERLORD_LOG` names the
/// request log's target itself.
pub fn log_filter(env: Option<&str>, requests: LogLevel) -> String {
    let base = env.filter(|e| !e.trim().is_empty()).unwrap_or("info");
    if base.contains("overlord::request") {
        base.to_string()
    } else {
        format!("{base},overlord::request={}", requests.as_str())
    }
}

/// Log to stderr as `[log]` says: text (colours only on a terminal) or
/// one JSON object per line.
fn init_log(log: &LogConfig) {
    let env = std::env::var("OVERLORD_LOG").ok();
    let filter = log_filter(env.as_deref(), log.requests);
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("overlord: OVERLORD_LOG: {e}; using info");
        tracing_subscriber::EnvFilter::new(log_filter(None, log.requests))
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => fmt.json().with_ansi(false).init(),
    }
}

/// Log to stderr, take the port, open the data file (printing a new
/// administrator's token once), and serve until a shutdown signal.
pub fn serve(config: Config) -> Result<(), String> {
    init_log(&config.log);
    let listen = config.listen.clone();
    let data_file = config.data_file.clone();
    // Take the port before touching the data file: a second server started
    // on a taken port must fail without creating a data file or an
    // administrator token.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("overlord-http")
        .build()
        .map_err(|e| e.to_string())?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&listen))
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let opened =
        app::open(OpenOptions::new(config)).map_err(|e| format!("{}: {e}", data_file.display()))?;
    let mut out = std::io::stdout().lock();
    if let Some(token) = &opened.admin_token {
        let _ = writeln!(
            out,
            "Created the administrator '{}' in {}. Its API token is shown only now:\nadmin token: {token}\nUse it as `Authorization: Bearer TOKEN`. For another: stop the server, run `overlord user token {}`.",
            users::FIRST_ADMIN,
            data_file.display(),
            users::FIRST_ADMIN
        );
    }
    rt.block_on(async move {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
        drop(out);
        tracing::info!(%addr, data_file = %data_file.display(), "overlord started");
        // The accept loop runs on a runtime worker, not on this thread:
        // a connection task spawned from a worker starts on that worker
        // (tokio's LIFO slot) instead of waking another thread for every
        // connection.
        tokio::spawn(server::run(listener, opened, server::shutdown_signal()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    })
}
