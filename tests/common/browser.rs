//! What the browser tests share (`tests/dashboard.rs`,
//! `tests/dashboard_truth.rs`): whether headless Chromium and the
//! `web/` packages are here, the user who logs in, and running one of
//! the `web/*.mjs` scripts against a [`TestServer`].
//!
//! Without Chromium or `web/node_modules` a test prints why and passes,
//! unless `REQUIRE_BROWSER=1` or `CI` is set (`.ci/run` installs both):
//! then it fails and says which is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::TestServer;

/// The password of the user [`user`] creates.
pub const PASSWORD: &str = "correct horse battery";

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Chromium binary: `$CHROMIUM` or Debian's.
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Can the browser test run here? `Err(why)` when not.
fn browser_ready() -> Result<(), String> {
    if !chromium().exists() {
        return Err(format!(
            "{} is not installed (apt-get install chromium)",
            chromium().display()
        ));
    }
    if !root().join("web/node_modules/playwright-core").exists() {
        return Err("web/node_modules is missing (cd web && npm ci)".into());
    }
    Ok(())
}

/// `true` when the test should go on; prints and returns `false` to skip.
pub fn require_browser() -> bool {
    match browser_ready() {
        Ok(()) => true,
        Err(why)
            if std::env::var("REQUIRE_BROWSER").as_deref() == Ok("1")
                || std::env::var_os("CI").is_some() =>
        {
            panic!("the browser test must run here, but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED dashboard browser test: {why}");
            false
        }
    }
}

/// Where screenshots go: `target/dashboard/`.
pub fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    target.join("dashboard")
}

/// A user `ann` with [`PASSWORD`]; returns her API token.
pub fn user(s: &TestServer) -> String {
    let r = s.admin_form(
        "POST",
        "/v1/users",
        &format!("name=ann&password={}", super::enc(PASSWORD)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    super::token_of(&r.body)
}

/// Run `node web/<script>` against `s` as `ann`, with `envs` added.
pub fn run_node(s: &TestServer, script: &str, envs: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .current_dir(root().join("web"))
        .env("OVERLORD_URL", format!("http://{}", s.addr))
        .env("OVERLORD_USER", "ann")
        .env("OVERLORD_PASSWORD", PASSWORD)
        .env("OVERLORD_OUT", out_dir())
        .env("CHROMIUM", chromium());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run node")
}

/// [`run_node`], printing its output and failing the test unless the
/// script succeeded; returns its standard output.
pub fn expect_pass(s: &TestServer, script: &str, envs: &[(&str, String)]) -> String {
    let out = run_node(s, script, envs);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed (screenshots in {}):\n{stdout}\n{stderr}",
        out_dir().display()
    );
    stdout
}
