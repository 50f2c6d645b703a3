//! The sections about the ways in: `[mqtt]`, `[tls]`, `[thingspeak]`
//! (with its sensor map, [`FieldMap`], checked as it loads) and
//! `[dashboard]`.

use serde::Deserialize;

/// `[mqtt]`: the MQTT 3.1.1 and 5 listener. Payloads are bounded by
/// `[limits] max_body_bytes` (and, before CONNECT is authenticated, by
/// `max_unauthenticated_body_bytes`), like HTTP bodies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Address to listen on; empty: no MQTT listener.
    pub listen: String,
    /// Address for MQTT over TLS (`mqtts`), served with `[tls]`'s
    /// certificate; used only when `[tls]` has one; empty: off.
    pub tls_listen: String,
    /// Open MQTT connections at most (its own cap, beside HTTP's).
    pub max_connections: usize,
    /// Seconds a new connection has to send its whole CONNECT.
    pub connect_timeout_secs: u64,
    /// Publishes one client may have in progress (QoS 1 not yet
    /// acknowledged, QoS 0 not yet stored); more wait in the socket.
    pub max_inflight: u16,
    /// Packets waiting to be written to one client; a client that lets
    /// them pile up for `write_timeout_secs` is disconnected.
    pub outgoing_queue: usize,
    /// Seconds a full outgoing queue (or one write) may wait for a slow
    /// reader before the connection is dropped.
    pub write_timeout_secs: u64,
    /// Longest keep-alive the server honours, in seconds; a client asking
    /// for none (0) or more gets this one (MQTT 5 clients are told).
    pub max_keep_alive_secs: u16,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: "0.0.0.0:1883".into(),
            tls_listen: "0.0.0.0:8883".into(),
            max_connections: 16_384,
            connect_timeout_secs: 10,
            max_inflight: 32,
            outgoing_queue: 64,
            write_timeout_secs: 10,
            max_keep_alive_secs: 1800,
        }
    }
}

/// `[thingspeak]`: which sensor a ThingSpeak `field1`..`field8` is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThingSpeakConfig {
    /// `fieldN` → the Nth sensor (default `N1`..`N8`); `""` refuses it.
    pub fields: FieldMap,
    /// Per device id, a map of its own instead of `fields`.
    pub devices: std::collections::HashMap<String, FieldMap>,
}

impl Default for ThingSpeakConfig {
    fn default() -> Self {
        ThingSpeakConfig {
            fields: FieldMap(
                (1..=8)
                    .map(|n| crate::codec::SensorId::parse(&format!("N{n}")).ok())
                    .collect(),
            ),
            devices: Default::default(),
        }
    }
}

/// `[tls]`: HTTPS on its own port, beside plain HTTP on `listen` (or
/// alone, with `listen = ""`). Off while `cert_file` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first (certbot's `fullchain.pem`).
    pub cert_file: String,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// Address HTTPS listens on.
    pub listen: String,
    /// Send `Strict-Transport-Security` on HTTPS replies.
    pub hsts: bool,
    /// Seconds a client has from connecting to a finished handshake.
    pub handshake_timeout_secs: u64,
    /// Handshakes in progress at once; later ones wait for a slot within
    /// their `handshake_timeout_secs`.
    pub max_handshakes: usize,
    /// Seconds between checks of the two files for a change (0: only
    /// `SIGHUP` reloads them).
    pub reload_check_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: String::new(),
            key_file: String::new(),
            listen: "0.0.0.0:8443".into(),
            hsts: false,
            handshake_timeout_secs: 10,
            max_handshakes: 256,
            reload_check_secs: 5,
        }
    }
}

impl TlsConfig {
    /// Is HTTPS configured? An error when only one of the two files is
    /// named, or HTTPS is on with no address to listen on.
    pub fn enabled(&self) -> Result<bool, String> {
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, true) => Ok(false),
            (false, false) if self.listen.is_empty() => {
                Err("[tls] listen is empty but cert_file is set".into())
            }
            (false, false) => Ok(true),
            (false, true) => Err("[tls] cert_file is set but key_file is not".into()),
            (true, false) => Err("[tls] key_file is set but cert_file is not".into()),
        }
    }
}

/// Up to 8 sensor names (`field1`..`field8`; `""` or a missing entry:
/// not accepted), as a TOML array or a comma-separated string (for
/// `OVERLORD_THINGSPEAK__FIELDS=N1,N2,I3`). Checked when the config loads.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMap(pub Vec<Option<crate::codec::SensorId>>);

impl<'de> Deserialize<'de> for FieldMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            Text(String),
        }
        let names = match Raw::deserialize(d)? {
            Raw::List(v) => v,
            Raw::Text(t) => t.split(',').map(|s| s.trim().to_string()).collect(),
        };
        if names.len() > 8 {
            return Err(serde::de::Error::custom(
                "ThingSpeak has field1..field8: at most 8 names",
            ));
        }
        names
            .iter()
            .map(|n| match n.as_str() {
                "" => Ok(None),
                n => crate::codec::SensorId::parse(n)
                    .map(Some)
                    .map_err(|e| serde::de::Error::custom(format!("thingspeak fields: {e}"))),
            })
            .collect::<Result<_, _>>()
            .map(FieldMap)
    }
}

/// `[dashboard]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Mark the session cookie `Secure` (set this when the server is
    /// reached over HTTPS, e.g. behind a TLS-terminating proxy).
    pub secure_cookie: bool,
    /// A map tile server, `{z}/{x}/{y}` in the URL (empty: none; the map
    /// then shows the world outline shipped in the binary).
    pub tile_url: String,
}
