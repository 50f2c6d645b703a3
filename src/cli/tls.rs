//! `overlord tls ...`: certificates for HTTPS (`[tls]`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use overlord::tls::selfsigned;

/// `overlord tls` subcommands.
#[derive(Subcommand)]
pub enum TlsCmd {
    /// Write a new key and a self-signed certificate for a LAN
    /// (`cert.pem`, and `key.pem` readable by its owner only) and print
    /// the certificate's SHA-256 fingerprint, for pinning on devices.
    SelfSigned {
        /// A host name or IP address clients use to reach the server
        /// (repeat it, or give several).
        #[arg(long = "host", required = true, num_args = 1..)]
        hosts: Vec<String>,
        /// The directory to write them in (created if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

/// Run a `tls` subcommand.
pub fn tls(cmd: TlsCmd) -> Result<(), String> {
    match cmd {
        TlsCmd::SelfSigned { hosts, out } => self_signed(&hosts, &out),
    }
}

fn self_signed(hosts: &[String], out: &Path) -> Result<(), String> {
    let made = selfsigned::generate(hosts)?;
    let cert = out.join("cert.pem");
    let key = out.join("key.pem");
    for f in [&cert, &key] {
        if f.exists() {
            return Err(format!(
                "{} exists; remove it or choose another --out (devices that pinned it would need the new fingerprint)",
                f.display()
            ));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    write_new(&key, made.key_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&cert, made.cert_pem.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(out) {
        let _ = d.sync_all();
    }
    let mut o = std::io::stdout().lock();
    let _ = writeln!(
        o,
        "wrote {} and {} (owner-only)\nsha256 fingerprint: {}\nserve it with, in overlord.toml:\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
        cert.display(),
        key.display(),
        made.fingerprint,
        cert.display(),
        key.display()
    );
    Ok(())
}

/// Create `path` (it must not exist) with `mode`, write `bytes`, fsync.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}
