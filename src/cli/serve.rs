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
/// administrator's token once), and serve until a shutdown signal. On a
/// database another node serves, with `[store] node_listen` set: follow
/// it (forward every connection to it) until this node can serve.
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
    let mut listeners = rt.block_on(bind(&config))?;
    let node_listener = rt.block_on(bind_node(&config))?;
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
    let joins = node_listener.is_some();
    // A node that may follow leaves a serving node that answers alone:
    // it may only be waiting for PostgreSQL to come back to take its own
    // claim again.
    let served = joins && rt.block_on(serving_node_answers(&config));
    let opened = match served {
        true => Err(overlord::store::StoreError::InUse),
        false => app::open(OpenOptions::new(config.clone())),
    };
    let opened = match opened {
        Ok(opened) => Some(opened),
        // Another node serves: follow it.
        // PostgreSQL not reachable yet: a node that may follow waits for
        // it as a follower does (answering 503 meanwhile).
        Err(
            e @ (overlord::store::StoreError::InUse | overlord::store::StoreError::Unavailable(_)),
        ) if joins => {
            if !matches!(e, overlord::store::StoreError::InUse) {
                tracing::warn!(error = %e, "cannot open the database yet; following until it can");
            }
            None
        }
        Err(overlord::store::StoreError::InUse) if !store_name.on_file => return Err(format!(
            "{}: another Overlord node serves this database; set [store] node_listen on every node to run several (docs/scale-out.md)",
            store_name.text
        )),
        Err(e) => return Err(format!("{}: {e}", store_name.text)),
    };
    let mut out = std::io::stdout().lock();
    let mut node_listener = node_listener;
    rt.block_on(async move {
        // A node that serves says where the others forward to before it
        // says it listens.
        if let Some(opened) = &opened {
            if let Some(l) = node_listener.take() {
                listeners.forwarded = Some(advertise(&config, opened, l).await?);
            }
        }
        // The new administrator's token first (tests and scripts read
        // up to "listening on").
        let node_was_following = opened.is_none();
        // A follower knows where to forward before it says it listens.
        let following = match node_was_following {
            true => Some(start_tracking(&config).await?),
            false => None,
        };
        if let Some(opened) = &opened {
            show_admin(&mut out, opened, &store_name.text);
        }
        // Installed before "listening": a SIGHUP from then on reloads the
        // certificate, or is logged; it never stops the server
        // (`systemctl reload` sends one). A follower has no certificate
        // in use (TLS passes through it): it logs, until it serves.
        let hangups = match (&opened, &listeners.tls) {
            (Some(opened), Some((_, acceptor))) => {
                let every = Duration::from_secs(config_reload_secs);
                overlord::tls::watch(acceptor.clone(), every, opened.app.metrics.clone())
                    .map_err(|e| e.to_string())?;
                None
            }
            _ => Some(log_hangups().map_err(|e| e.to_string())?),
        };
        // Before the first "listening on": see `shutdown_signal`.
        let mut shutdown = Box::pin(server::shutdown_signal());
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
        let mut opened = match opened {
            Some(opened) => opened,
            None => {
                let _ = writeln!(
                    out,
                    "following: another node serves {}; connections are forwarded to it",
                    store_name.text
                );
                let _ = out.flush();
                tracing::info!(store = %store_name.text, "following the node that serves the database");
                let (leader, tracker) = following.expect("tracking while following");
                let (got, forwarded) =
                    follow(&config, &listeners, &mqtt, leader, shutdown.as_mut()).await;
                tracker.abort();
                match got {
                    None => {
                        // Stopped while following: no more connections
                        // (the ports close), and the ones it forwarded
                        // finish (bounded), as a serving node's requests
                        // in flight do.
                        drop((listeners, mqtt));
                        let grace = Duration::from_secs(config.limits.shutdown_grace_secs);
                        if !forwarded.drain(grace).await {
                            tracing::warn!("forwarded connections did not finish within the grace period");
                        }
                        return Ok(());
                    }
                    Some(opened) => {
                        let opened = opened?;
                        let _ = writeln!(out, "serving: this node now serves {}", store_name.text);
                        tracing::info!(store = %store_name.text, "this node now serves the database");
                        opened
                    }
                }
            }
        };
        opened.mqtt = mqtt;
        if node_was_following {
            show_admin(&mut out, &opened, &store_name.text);
        }
        if let Some(l) = node_listener {
            // Taken over from the node it followed.
            listeners.forwarded = Some(advertise(&config, &opened, l).await?);
        }
        // Taken over with a certificate: from now on a SIGHUP reloads it.
        if let (true, Some((_, acceptor))) = (node_was_following, &listeners.tls) {
            let every = Duration::from_secs(config_reload_secs);
            overlord::tls::watch(acceptor.clone(), every, opened.app.metrics.clone())
                .map_err(|e| e.to_string())?;
            if let Some(h) = &hangups {
                h.abort();
            }
        }
        let _ = out.flush();
        drop(out);
        // One of several nodes stops when another claims the database
        // (it was cut off for a while and a follower took over): it
        // would refuse writes until restarted, and as a follower again
        // it forwards instead.
        let (shutdown, fenced) = stop_when_fenced(shutdown, joins.then(|| opened.app.store.postgres()).flatten());
        // The accept loop runs on a runtime worker, not on this thread:
        // a connection task spawned from a worker starts on that worker
        // (tokio's LIFO slot) instead of waking another thread for every
        // connection.
        tokio::spawn(server::serve(listeners, opened, shutdown))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        match fenced.load(std::sync::atomic::Ordering::Acquire) {
            true => Err(format!(
                "{}: another node took the database over while this one was cut off from it; this node stopped (start it again to follow that node)",
                store_name.text
            )),
            false => Ok(()),
        }
    })
}

/// How often a serving node with `node_listen` checks that its claim on
/// the database is still its own.
const FENCE_CHECK: Duration = Duration::from_secs(1);

/// `shutdown`, or the moment `kv` (when given) finds its claim taken by
/// another node, which the flag returned then says.
fn stop_when_fenced(
    shutdown: std::pin::Pin<Box<impl std::future::Future<Output = ()> + Send + 'static>>,
    kv: Option<std::sync::Arc<overlord::pg::kv::PgKv>>,
) -> (
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let fenced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let Some(kv) = kv else {
        return (shutdown, fenced);
    };
    let flag = fenced.clone();
    let stop = async move {
        let lost = async {
            while !kv.claim_lost() {
                tokio::time::sleep(FENCE_CHECK).await;
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = lost => {
                flag.store(true, std::sync::atomic::Ordering::Release);
                tracing::error!("another node claimed the database; stopping this node");
            }
        }
    };
    (Box::pin(stop), fenced)
}

/// On the first start with an empty store: the administrator's token,
/// shown this once.
fn show_admin(out: &mut impl Write, opened: &app::Opened, store: &str) {
    if let Some(token) = &opened.admin_token {
        let _ = writeln!(
            out,
            "Created the administrator '{}' in {store}. Its API token is shown only now:\nadmin token: {token}\nUse it as `Authorization: Bearer TOKEN`. For another: stop the server, run `overlord user token {}`.",
            users::FIRST_ADMIN,
            users::FIRST_ADMIN
        );
    }
}

/// Follow the node that serves the database (`server::forward`): forward
/// every connection on this node's doors to it, and try to take the
/// database whenever it does not answer ([`take_over`]). The opened node
/// once it could (or why it cannot), or `None` on a shutdown signal
/// meanwhile.
async fn follow(
    config: &Config,
    listeners: &Listeners,
    mqtt: &overlord::mqtt::Listeners,
    leader: overlord::server::forward::Leader,
    shutdown: std::pin::Pin<&mut (impl std::future::Future<Output = ()> + ?Sized)>,
) -> (
    Option<Result<app::Opened, String>>,
    overlord::server::forward::Forwarding,
) {
    use overlord::server::forward::{self, Door, Doors};
    // The MQTT doors are std listeners (the MQTT server takes them so):
    // followed through a second handle on the same socket.
    let mut mqtt_doors = Vec::new();
    for (door, l) in [
        (Door::Mqtt, mqtt.plain.as_ref()),
        (Door::Mqtts, mqtt.tls.as_ref().map(|t| &t.0)),
    ] {
        if let Some(l) = l {
            match l.try_clone().and_then(tokio::net::TcpListener::from_std) {
                Ok(l) => mqtt_doors.push((door, l)),
                Err(e) => {
                    return (
                        Some(Err(format!("cannot follow on the MQTT port: {e}"))),
                        forward::Forwarding::none(),
                    )
                }
            }
        }
    }
    let mut doors = Doors::default();
    for (door, l) in [
        (Door::Http, listeners.plain.as_ref()),
        (Door::Https, listeners.tls.as_ref().map(|t| &t.0)),
    ] {
        if let Some(l) = l {
            doors.listeners.push((door, l));
        }
    }
    doors
        .listeners
        .extend(mqtt_doors.iter().map(|(d, l)| (*d, l)));
    let until = async {
        tokio::select! {
            opened = take_over(config.clone(), leader.clone()) => Some(opened),
            () = shutdown => None,
        }
    };
    let mqtt_max = overlord::mqtt::connection_cap(&config.mqtt);
    forward::follow(doors, leader.clone(), &config.limits, mqtt_max, until).await
}

/// Whether `node_hold` names a serving node that answers its probe
/// (bounded: a few seconds when PostgreSQL or the node do not answer).
async fn serving_node_answers(config: &Config) -> bool {
    use overlord::server::forward;
    let look = async {
        let target = overlord::pg::Target::parse(&config.store.postgres_url).ok()?;
        let client = target.connect().await.ok()?;
        let serving = forward::lookup(&target, &client).await.ok()??;
        Some(forward::alive(&serving).await)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), look).await,
        Ok(Some(true))
    )
}

/// Start keeping track of where the serving node is (`forward::track`),
/// and wait (at most 10 s) for its first look.
async fn start_tracking(
    config: &Config,
) -> Result<
    (
        overlord::server::forward::Leader,
        tokio::task::JoinHandle<()>,
    ),
    String,
> {
    use overlord::server::forward;
    let target = overlord::pg::Target::parse(&config.store.postgres_url)?;
    let leader = forward::Leader::default();
    let (first, looked) = tokio::sync::oneshot::channel();
    let tracker = tokio::spawn(forward::track(target, leader.clone(), first));
    let _ = tokio::time::timeout(Duration::from_secs(10), looked).await;
    Ok((leader, tracker))
}

/// Try to open the store as a node every [`forward::FOLLOW_EVERY`] while
/// the serving node does not answer on its `node_listen` (one that does
/// takes its claim back itself, after PostgreSQL restarted), until no
/// other node holds it; the opened node, or why it cannot open.
async fn take_over(
    config: Config,
    leader: overlord::server::forward::Leader,
) -> Result<app::Opened, String> {
    use overlord::server::forward;
    loop {
        let serving = leader.read().clone();
        if let Some(s) = serving {
            if forward::alive(&s).await {
                tokio::time::sleep(forward::FOLLOW_EVERY).await;
                continue;
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = config.clone();
        // Its own thread: opening blocks (and makes its own runtime).
        std::thread::Builder::new()
            .name("overlord-take-over".into())
            .spawn(move || {
                let _ = tx.send(app::open(OpenOptions::new(c)));
            })
            .map_err(|e| e.to_string())?;
        match rx.await {
            Ok(Ok(opened)) => return Ok(opened),
            Ok(Err(overlord::store::StoreError::InUse)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "following: cannot open the database yet"),
            Err(_) => return Err("the thread opening the database stopped".into()),
        }
        tokio::time::sleep(overlord::server::forward::FOLLOW_EVERY).await;
    }
}

/// Bind `[store] node_listen`, when set: the address is taken now (a
/// taken port stops the start), but it listens only once this node
/// serves, so a follower's refuses connections (and is never taken for a
/// serving node's).
async fn bind_node(config: &Config) -> Result<Option<tokio::net::TcpSocket>, String> {
    let listen = config.store.node_listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let err = |e: std::io::Error| format!("cannot listen on {listen} ([store] node_listen): {e}");
    let addr = tokio::net::lookup_host(listen)
        .await
        .map_err(err)?
        .next()
        .ok_or_else(|| format!("[store] node_listen = \"{listen}\" names no address"))?;
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    Ok(Some(socket))
}

/// Publish where the other nodes forward to this one (`node_address`, or
/// the address `l` is bound to) with a new key, under this node's claim.
async fn advertise(
    config: &Config,
    opened: &app::Opened,
    socket: tokio::net::TcpSocket,
) -> Result<(tokio::net::TcpListener, overlord::server::forward::Key), String> {
    let l = socket
        .listen(1024)
        .map_err(|e| format!("cannot listen on [store] node_listen: {e}"))?;
    let addr = match config.store.node_address.trim() {
        "" => l.local_addr().map_err(|e| e.to_string())?.to_string(),
        a => a.to_owned(),
    };
    let key = overlord::server::forward::Key::random();
    let Some(kv) = opened.app.store.postgres() else {
        return Err("[store] node_listen is for kind = \"postgres\"".into());
    };
    let k = key.clone();
    overlord::blocking::value("advertise", move || kv.advertise(&addr, k.as_str()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot publish node_address: {e}"))?;
    Ok((l, key))
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
fn log_hangups() -> std::io::Result<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        Ok(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: nothing to reload ([tls] is off, or this node follows)");
            }
        }))
    }
    #[cfg(not(unix))]
    Ok(tokio::spawn(async {}))
}
