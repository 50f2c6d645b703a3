//! Reloading the certificate without a restart: on `SIGHUP`, and when
//! either file changes (checked every `[tls] reload_check_secs`), so a
//! certbot or acme renewal is picked up by itself.
//!
//! A change is seen in the files' metadata (modification time, size,
//! inode, device; through symlinks, as certbot's `live/` links are): a
//! poll is a `stat` of two files, no extra crate and no inotify watch to
//! lose when a renewal replaces a directory. A reload that fails (a half
//! written pair, a key that does not match) keeps the certificate in use
//! and logs why; the next change or `SIGHUP` tries again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::TlsAcceptor;
use crate::metrics::Metrics;

/// What a file looked like at the last check.
type Stamp = Option<(SystemTime, u64, u64, u64)>;

/// Reload `acceptor`'s files on every `SIGHUP` and, every `every` (zero:
/// never), when they changed; runs until the runtime stops. The `SIGHUP`
/// handler is installed before this returns, so a `SIGHUP` sent once the
/// server says it is listening never kills it.
pub fn watch(acceptor: TlsAcceptor, every: Duration, metrics: Arc<Metrics>) -> std::io::Result<()> {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let files: Vec<PathBuf> = acceptor.files().iter().map(|p| p.to_path_buf()).collect();
    tokio::spawn(async move {
        let mut seen = stamps(files.clone()).await;
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = hup.recv();
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            let why = tokio::select! {
                _ = hangup => "SIGHUP",
                _ = tick.tick(), if !every.is_zero() => {
                    let now = stamps(files.clone()).await;
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "the files changed"
                }
            };
            reload(&acceptor, why, &metrics).await;
        }
    });
    Ok(())
}

/// Reload on a blocking thread (file IO) and log the outcome.
async fn reload(acceptor: &TlsAcceptor, why: &'static str, metrics: &Metrics) {
    let a = acceptor.clone();
    match crate::blocking::value("TLS reload", move || a.reload()).await {
        Ok(Ok(fingerprint)) => {
            tracing::info!(%fingerprint, "TLS certificate reloaded ({why})");
        }
        Ok(Err(e)) => {
            metrics.tls_reload_failures.inc();
            tracing::warn!(error = %e, "TLS certificate not reloaded ({why}); keeping the one in use");
        }
        Err(e) => tracing::warn!(error = %e, "TLS reload failed"),
    }
}

/// Each file's [`Stamp`], read on a blocking thread.
async fn stamps(files: Vec<PathBuf>) -> Vec<Stamp> {
    crate::blocking::value("TLS file stamps", move || {
        files.iter().map(|f| stamp(f)).collect()
    })
    .await
    .unwrap_or_default()
}

fn stamp(path: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (ino, dev) = {
        use std::os::unix::fs::MetadataExt;
        (m.ino(), m.dev())
    };
    #[cfg(not(unix))]
    let (ino, dev) = (0, 0);
    Some((m.modified().ok()?, m.len(), ino, dev))
}
