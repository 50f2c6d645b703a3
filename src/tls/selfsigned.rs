//! A self-signed certificate for a LAN (`overlord tls self-signed`):
//! an ECDSA P-256 key (rcgen, the `ring` provider) and a certificate for
//! the given host names and IP addresses, valid from a day ago for
//! [`VALID_DAYS`]. Devices pin it by its SHA-256 fingerprint, or trust it
//! as its own CA (`curl --cacert cert.pem`).

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use time::{Duration, OffsetDateTime};

/// How long a self-signed certificate is valid: ten years, since devices
/// that pin it cannot follow a renewal by themselves.
pub const VALID_DAYS: i64 = 3650;

/// A new key and certificate, both PEM.
pub struct SelfSigned {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    /// The certificate's SHA-256 fingerprint, `AB:CD:...`.
    pub fingerprint: String,
}

/// Make a key and a certificate naming `hosts` (DNS names or IP
/// addresses; the first is also the subject's common name).
pub fn generate(hosts: &[String]) -> Result<SelfSigned, String> {
    let first = hosts.first().ok_or("give at least one --host")?;
    for h in hosts {
        check_host(h)?;
    }
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(DnType::CommonName, first);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Overlord (self-signed)");
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(VALID_DAYS);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        fingerprint: super::fingerprint(cert.der()),
    })
}

/// A host name (letters, digits, `-` and `.`, at most 253 characters) or
/// an IP address.
fn check_host(h: &str) -> Result<(), String> {
    let name_ok = !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !h.starts_with(['-', '.']);
    if name_ok || h.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(format!(
            "--host '{}': not a host name or an IP address",
            crate::codec::names::log_safe(h)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses() {
        for ok in ["overlord.lan", "pi-4", "192.168.1.10", "::1", "fe80::1"] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "-x", "x/y", "é.lan", "a\nb"] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
    }
}
