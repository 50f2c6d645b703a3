//! `OVERLORD_*` environment overrides: `OVERLORD_<KEY>` for a top-level
//! key, `OVERLORD_<SECTION>__<KEY>` for a key of a section; the value is
//! read as the type the key has in the embedded default.

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "OVERLORD_";

/// `OVERLORD_*` variables that are not config keys.
pub(super) const ENV_NOT_CONFIG: &[&str] = &["LOG", "TOKEN"];

/// Set one key from `OVERLORD_<KEY>` or `OVERLORD_<SECTION>__<KEY>`; the
/// value takes the type the key has in the embedded default.
pub(super) fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    var: &str,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let lower = key.to_ascii_lowercase();
    let (section, name) = match lower.split_once("__") {
        Some((s, n)) => (Some(s), n),
        None => (None, lower.as_str()),
    };
    let default = match section {
        Some(s) => defaults
            .get(s)
            .and_then(|t| t.as_table())
            .and_then(|t| t.get(name)),
        None => defaults.get(name).filter(|v| !v.is_table()),
    };
    // Keys with no default value (optional paths) are text.
    let optional_text = section.is_none() && OPTIONAL_TEXT_KEYS.contains(&name);
    if default.is_none() && !optional_text {
        return Err(format!("{var}: no such configuration key"));
    }
    let bad = |what: &str| format!("{var}: '{value}' is not {what}");
    let parsed = match default {
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(value.trim().parse().map_err(|_| bad("an integer"))?)
        }
        Some(toml::Value::Float(_)) => {
            toml::Value::Float(value.trim().parse().map_err(|_| bad("a number"))?)
        }
        Some(toml::Value::Boolean(_)) => {
            toml::Value::Boolean(value.trim().parse().map_err(|_| bad("true or false"))?)
        }
        _ => toml::Value::String(value.to_string()),
    };
    let target = match section {
        Some(s) => table
            .entry(s)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{var}: [{s}] is not a section"))?,
        None => table,
    };
    target.insert(name.to_string(), parsed);
    Ok(())
}

/// Top-level keys that are absent from the default (optional) and text.
const OPTIONAL_TEXT_KEYS: &[&str] = &["files_dir"];

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::Config;

    #[test]
    fn tls_files_come_from_the_environment_and_go_in_pairs() {
        let env = [
            ("OVERLORD_TLS__CERT_FILE", "/etc/o/cert.pem"),
            ("OVERLORD_TLS__KEY_FILE", "/etc/o/key.pem"),
            ("OVERLORD_TLS__HSTS", "true"),
            ("OVERLORD_LISTEN", ""),
        ];
        let c = Config::from_toml_and_env("", env).unwrap();
        assert_eq!(c.tls.cert_file, "/etc/o/cert.pem");
        assert_eq!(c.tls.key_file, "/etc/o/key.pem");
        assert!(c.tls.hsts);
        assert_eq!(c.listen, "", "plain HTTP off");
        assert_eq!(c.tls.enabled(), Ok(true));
        let half = Config::from_toml("[tls]\ncert_file = \"c.pem\"\n").unwrap();
        assert!(half.tls.enabled().unwrap_err().contains("key_file"));
        let nowhere =
            Config::from_toml("[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nlisten = \"\"\n")
                .unwrap();
        assert!(nowhere.tls.enabled().is_err());
    }

    #[test]
    fn environment_overrides_keys_by_type() {
        let env = [
            ("OVERLORD_LISTEN", "127.0.0.1:9000"),
            ("OVERLORD_DATA_FILE", "/srv/o.redb"),
            ("OVERLORD_FILES_DIR", "/srv/files"),
            ("OVERLORD_LIMITS__MAX_BODY_BYTES", "1024"),
            ("OVERLORD_LIMITS__DEVICE_REQUESTS_PER_SEC", "2.5"),
            ("OVERLORD_DIGEST__WORKERS", "3"),
            ("OVERLORD_NOTIFY__ALLOW_PRIVATE_TARGETS", "true"),
            ("OVERLORD_SMTP__PASSWORD", "hunter2"),
            (
                "OVERLORD_STORE__POSTGRES_URL",
                "host=db1 user=ov password=hunter3 dbname=ov",
            ),
            ("OVERLORD_LOG", "debug"),
            ("PATH", "/bin"),
        ];
        let c = Config::from_toml_and_env("[limits]\nmax_inbox = 7\n", env).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.data_file, PathBuf::from("/srv/o.redb"));
        assert_eq!(c.files_dir(), PathBuf::from("/srv/files"));
        assert_eq!(c.limits.max_body_bytes, 1024);
        assert_eq!(c.limits.device_requests_per_sec, 2.5);
        assert_eq!(c.limits.max_inbox, 7, "the file's keys stay");
        assert_eq!(c.digest.workers, 3);
        assert!(c.notify.allow_private_targets);
        assert_eq!(c.smtp.password, "hunter2");
        assert!(
            !format!("{:?}", c.smtp).contains("hunter2"),
            "Debug hides it"
        );
        assert_eq!(
            c.store.postgres_url,
            "host=db1 user=ov password=hunter3 dbname=ov"
        );
        let shown = format!("{c:?}");
        assert!(
            shown.contains("host=db1") && !shown.contains("hunter3"),
            "{shown}"
        );
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            Config::from_toml_and_env("", none)
                .unwrap()
                .limits
                .max_body_bytes,
            32 << 20
        );
    }

    #[test]
    fn bad_environment_overrides_are_errors() {
        for (k, v) in [
            ("OVERLORD_LISTN", "x"),
            ("OVERLORD_LIMITS__NOPE", "1"),
            ("OVERLORD_LIMITS__MAX_BODY_BYTES", "lots"),
            ("OVERLORD_NOPE__WORKERS", "1"),
        ] {
            let err = Config::from_toml_and_env("", [(k, v)]).unwrap_err();
            assert!(err.contains(k) || err.contains("invalid"), "{k}: {err}");
        }
    }
}
