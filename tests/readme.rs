//! The README's "First steps", run as written: every `sh` block of that
//! section, in order, against a fresh server, with only what the README
//! tells the reader to fill in — the server's address (the README's
//! `127.0.0.1:8080` is where a default server listens; here it is the
//! test's port), `$ADMIN` (step 1 prints it) and `$TOK` (step 2's reply
//! holds it). Each command must succeed (an HTTP error fails it), and
//! each `text` block after a command block is what that block prints.

mod common;

use std::io::BufRead;

/// A fenced block of the section: its language and its lines, without
/// the list item's indentation.
struct Block {
    lang: String,
    lines: Vec<String>,
}

fn first_steps(readme: &str) -> Vec<Block> {
    let start = readme
        .find("## First steps")
        .expect("a First steps section");
    let rest = &readme[start + 3..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut blocks = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for line in section.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some((
                    indent,
                    Block {
                        lang: lang.trim().to_string(),
                        lines: Vec::new(),
                    },
                ))
            }
            (Some(_), Some("")) => blocks.push(open.take().unwrap().1),
            (Some((ind, b)), _) => b.lines.push(line.get(*ind..).unwrap_or("").to_string()),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code fence in First steps");
    blocks
}

/// Does `got` (what ran) show `want` (a README text block)? Line by
/// line; a line ending in `...` stands for any line that starts with
/// what is before it.
fn shows(got: &[String], want: &[String]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| match w.strip_suffix("...") {
                Some(prefix) => g.starts_with(prefix),
                None => g == w,
            })
}

#[test]
fn first_steps_work_as_written() {
    if !common::have("sh") || !common::have("curl") {
        return;
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = first_steps(&readme);
    assert!(blocks.len() >= 6, "{} blocks", blocks.len());

    // Step 1: start the server (here on a free port, in an empty dir).
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("overlord.toml");
    // MQTT on a free port too: the README's steps are HTTP.
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_overlord"))
        .arg("--config")
        .arg(&cfg)
        .current_dir(tmp.path())
        .env("OVERLORD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut printed = Vec::new();
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        let done = line.starts_with("listening on ");
        printed.push(line);
        if done {
            break;
        }
    }
    let addr = printed
        .last()
        .and_then(|l| l.strip_prefix("listening on "))
        .expect("the server listens")
        .to_string();
    let admin = printed
        .iter()
        .find_map(|l| l.strip_prefix("admin token: "))
        .expect("step 1 prints the administrator's token")
        .to_string();
    let result =
        std::panic::catch_unwind(|| run_steps(&blocks, &printed, &addr, &admin, tmp.path()));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

fn run_steps(blocks: &[Block], printed: &[String], addr: &str, admin: &str, dir: &std::path::Path) {
    let port = addr.rsplit(':').next().unwrap();
    let mut tok = String::new();
    // What the last command block printed, for the text block after it.
    let mut last: Option<(usize, Vec<String>)> = None;
    let mut ran = 0;
    for (i, b) in blocks.iter().enumerate() {
        match b.lang.as_str() {
            "text" if i == 0 => {
                // Step 1's block is what the server prints.
                let want: Vec<String> = b
                    .lines
                    .iter()
                    .map(|l| l.replace("0.0.0.0:8080", &format!("127.0.0.1:{port}")))
                    .collect();
                assert!(
                    shows(printed, &want),
                    "step 1 prints {printed:?}, the README shows {want:?}"
                );
            }
            "text" => {
                let (at, got) = last.take().expect("a text block follows a command block");
                assert!(
                    shows(&got, &b.lines),
                    "block {at} printed {got:?}; the README shows {:?}",
                    b.lines
                );
            }
            "sh" => {
                let script = b.lines.join("\n").replace("127.0.0.1:8080", addr);
                // curl as the reader runs it, except that an HTTP error
                // fails the step instead of printing an error line.
                let script = format!(
                    "curl() {{ command curl --fail-with-body -sS \"$@\"; }}\nset -e\n{script}\n"
                );
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&script)
                    .current_dir(dir)
                    .env("ADMIN", admin)
                    .env("TOK", &tok)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    out.status.success(),
                    "README block {i} failed:\n{}\n{stdout}{}",
                    b.lines.join("\n"),
                    String::from_utf8_lossy(&out.stderr)
                );
                // Step 2's reply holds the device's token: `id,token`, `gh3,TOKEN`.
                if tok.is_empty() && stdout.starts_with("id,token\n") {
                    tok = common::token_of(&stdout);
                }
                last = Some((i, stdout.lines().map(str::to_string).collect()));
                ran += 1;
            }
            other => panic!("block {i}: a {other:?} block in First steps"),
        }
    }
    assert!(!tok.is_empty(), "step 2 gave a device token");
    assert!(ran >= 5, "{ran} command blocks ran");
    // What the steps did is there: the readings of step 3.
    let r = common::raw(
        addr.parse().unwrap(),
        format!("GET /v1/devices/gh3/readings?token={tok}&sensors=N1,L2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.lines().count(), 4, "{}", r.body);
}
