//! `overlord` / `overlord serve`: run the server.

use std::io::Write;

use overlord::app::{self, OpenOptions};
use overlord::config::Config;
use overlord::{server, users};

/// Log to stderr, take the port, open the data file (printing a new
/// administrator's token once), and serve until a shutdown signal.
pub fn serve(config: Config) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVERLORD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
    // The MQTT port too, before the data file (empty `[mqtt] listen`: off).
    let mqtt = overlord::mqtt::bind(&config.mqtt).map_err(|e| {
        format!(
            "cannot listen for MQTT on {}: {e} (set [mqtt] listen, or OVERLORD_MQTT__LISTEN= to turn MQTT off)",
            config.mqtt.listen
        )
    })?;
    let mqtt_addr = mqtt.as_ref().and_then(|l| l.local_addr().ok());
    let mut opened =
        app::open(OpenOptions::new(config)).map_err(|e| format!("{}: {e}", data_file.display()))?;
    opened.mqtt = mqtt;
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
        if let Some(m) = mqtt_addr {
            let _ = writeln!(out, "mqtt listening on {m}");
        }
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
