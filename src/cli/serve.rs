//! `overlord` / `overlord serve`: run the server.

use std::io::Write;
use std::time::Duration;

use overlord::app::{self, OpenOptions};
use overlord::config::{Config, LogConfig, LogFormat, LogLevel, StoreKind};
use overlord::server::{self, Listeners};
use overlord::tls::TlsAcceptor;
use overlord::users;

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

/// What the server serves from, as messages name it: the data file's
/// path, or `PostgreSQL at HOST:PORT/DB` (never the password).
struct StoreName {
    text: String,
    on_file: bool,
}

fn store_name(config: &Config) -> StoreName {
    match config.store.kind {
        StoreKind::Redb => StoreName {
            text: config.data_file.display().to_string(),
            on_file: true,
        },
        StoreKind::Postgres => StoreName {
            text: overlord::pg::Target::parse(&config.store.postgres_url)
                .map(|t| format!("PostgreSQL at {}", t.shown))
                .unwrap_or_else(|e| e),
            on_file: false,
        },
    }
}

/// Log to stderr, take the port, open the data file (printing a new
/// administrator's token once), and serve until a shutdown signal.
pub fn serve(config: Config) -> Result<(), String> {
    init_log(&config.log);
    // Take the ports (and load the certificate) before touching the data
    // file: a second server started on a taken port must fail without
    // creating a data file or an administrator token.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("overlord-http")
        .build()
        .map_err(|e| e.to_string())?;
    let listeners = rt.block_on(bind(&config))?;
    let config_reload_secs = config.tls.reload_check_secs;
    // The MQTT ports too, before the data file (empty `[mqtt] listen`:
    // off; `tls_listen` only with `[tls]`, sharing its acceptor).
    let mqtt = bind_mqtt(&config, &listeners)?;
    let mqtt_addrs = [
        ("", mqtt.plain.as_ref()),
        ("mqtts://", mqtt.tls.as_ref().map(|t| &t.0)),
    ]
    .map(|(scheme, l)| (scheme, l.and_then(|l| l.local_addr().ok())));
    let store_name = store_name(&config);
    let mut opened = app::open(OpenOptions::new(config)).map_err(|e| match e {
        overlord::store::StoreError::InUse if !store_name.on_file => format!(
            "{}: another Overlord node serves this database; one node serves a database at a time (docs/scale-out.md)",
            store_name.text
        ),
        e => format!("{}: {e}", store_name.text),
    })?;
    opened.mqtt = mqtt;
    let mut out = std::io::stdout().lock();
    if let Some(token) = &opened.admin_token {
        let _ = writeln!(
            out,
            "Created the administrator '{}' in {}. Its API token is shown only now:\nadmin token: {token}\nUse it as `Authorization: Bearer TOKEN`. For another: stop the server, run `overlord user token {}`.",
            users::FIRST_ADMIN,
            store_name.text,
            users::FIRST_ADMIN
        );
    }
    rt.block_on(async move {
        // Installed before "listening": a SIGHUP from then on reloads the
        // certificate, or is logged; it never stops the server (`systemctl
        // reload` sends one).
        match &listeners.tls {
            Some((_, acceptor)) => {
                let every = Duration::from_secs(config_reload_secs);
                overlord::tls::watch(acceptor.clone(), every, opened.app.metrics.clone())
                    .map_err(|e| e.to_string())?;
            }
            None => log_hangups().map_err(|e| e.to_string())?,
        }
        // Before the first "listening on": see `shutdown_signal`.
        let shutdown = server::shutdown_signal();
        for (scheme, l) in [
            ("", listeners.plain.as_ref()),
            ("https://", listeners.tls.as_ref().map(|t| &t.0)),
        ] {
            if let Some(addr) = l.and_then(|l| l.local_addr().ok()) {
                let _ = writeln!(out, "listening on {scheme}{addr}");
                tracing::info!(%addr, store = %store_name.text, "overlord started {}", if scheme.is_empty() { "(http)" } else { "(https)" });
            }
        }
        for (scheme, addr) in mqtt_addrs {
            if let Some(m) = addr {
                let _ = writeln!(out, "mqtt listening on {scheme}{m}");
            }
        }
        let _ = out.flush();
        drop(out);
        // The accept loop runs on a runtime worker, not on this thread:
        // a connection task spawned from a worker starts on that worker
        // (tokio's LIFO slot) instead of waking another thread for every
        // connection.
        tokio::spawn(server::serve(listeners, opened, shutdown))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    })
}

/// Bind plain HTTP on `listen` (unless it is empty) and HTTPS on `[tls]
/// listen` (when `[tls]` names a certificate, which is loaded here).
async fn bind(config: &Config) -> Result<Listeners, String> {
    let tls_on = config.tls.enabled()?;
    if config.listen.is_empty() && !tls_on {
        return Err("listen is empty and [tls] is off: nothing to listen on".into());
    }
    let mut listeners = Listeners::default();
    if !config.listen.is_empty() {
        let listen = &config.listen;
        let l = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        listeners.plain = Some(l);
    }
    if tls_on {
        let tls = config.tls.clone();
        let acceptor =
            overlord::blocking::value("TLS load", move || TlsAcceptor::from_config(&tls))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("[tls]: {e}"))?;
        let listen = &config.tls.listen;
        let l = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen} ([tls] listen): {e}"))?;
        listeners.tls = Some((l, acceptor));
    }
    Ok(listeners)
}

/// Bind `[mqtt] listen` and, when `[tls]` is on, `[mqtt] tls_listen`
/// (served with the HTTPS listener's acceptor).
fn bind_mqtt(config: &Config, http: &Listeners) -> Result<overlord::mqtt::Listeners, String> {
    let mqtt = &config.mqtt;
    let plain = overlord::mqtt::bind(mqtt).map_err(|e| {
        format!(
            "cannot listen for MQTT on {}: {e} (set [mqtt] listen, or OVERLORD_MQTT__LISTEN= to turn MQTT off)",
            mqtt.listen
        )
    })?;
    let tls = match &http.tls {
        Some((_, acceptor)) => overlord::mqtt::bind_tls(mqtt, true)
            .map_err(|e| {
                format!(
                    "cannot listen for MQTT over TLS on {}: {e} (set [mqtt] tls_listen, or OVERLORD_MQTT__TLS_LISTEN= to turn it off)",
                    mqtt.tls_listen
                )
            })?
            // No ALPN: HTTPS offers `http/1.1`, which an MQTT client
            // offering `mqtt` would be refused for.
            .map(|l| (l, acceptor.with_alpn(Vec::new()))),
        None => None,
    };
    Ok(overlord::mqtt::Listeners { plain, tls })
}

/// Without `[tls]` there is nothing to reload on `SIGHUP`: log it.
fn log_hangups() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: nothing to reload ([tls] is off)");
            }
        });
    }
    Ok(())
}
