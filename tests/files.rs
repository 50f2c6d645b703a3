//! Files for devices through real HTTP: upload, download, ranges,
//! conditional requests, passwords, permissions, names, size limits, and
//! resuming a cut download with curl and wget.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{basic, TestServer};
use sha2::{Digest, Sha256};

/// A binary reply (the common client reads text).
struct Bin {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Bin {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn code(&self) -> String {
        let t = self.text();
        assert!(t.starts_with("error,"), "not an error line: {t:?}");
        t.split(',').nth(1).unwrap().to_string()
    }
}

/// Send a request (head lines without the blank line, then `body`), read
/// to EOF. `head_only`: the reply has no body whatever it announces.
fn send(addr: SocketAddr, head: &str, body: &[u8], head_only: bool) -> Bin {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a reply head");
    let head = String::from_utf8(buf[..split].to_vec()).unwrap();
    let body = buf[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let r = Bin {
        status,
        headers,
        body,
    };
    assert!(r.header("Transfer-Encoding").is_none(), "never chunked");
    if status == 304 {
        // hyper omits Content-Length on a 304, which has no body by
        // definition (RFC 9110 15.4.5).
        assert!(r.body.is_empty(), "no body after 304");
        return r;
    }
    let len: usize = r
        .header("Content-Length")
        .expect("Content-Length on every reply")
        .parse()
        .unwrap();
    if head_only {
        assert!(r.body.is_empty(), "no body after HEAD or 304");
    } else {
        assert_eq!(len, r.body.len(), "Content-Length matches the body");
    }
    r
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}\r\n")
}

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A server with users ann (owner) and bob, device `ad` of ann's and `bd`
/// of bob's. Returns (server, ann, bob, ad token, bd token).
fn world() -> (TestServer, String, String, String, String) {
    let s = TestServer::start_with(|c| {
        c.limits.auth_failures_per_window = 0;
        c.limits.max_file_bytes = 1 << 20;
    });
    let user = |name: &str| {
        let r = s.admin_form("POST", "/v1/users", &format!("name={name}"));
        assert_eq!(r.status, 201, "{}", r.body);
        common::token_of(&r.body)
    };
    let (ann, bob) = (user("ann"), user("bob"));
    let device = |owner: &str, id: &str| {
        let r = send(
            s.addr,
            &format!(
                "POST /v1/devices HTTP/1.1\r\nHost: t\r\n{}Content-Type: application/x-www-form-urlencoded\r\n",
                bearer(owner)
            ),
            format!("id={id}").as_bytes(),
            false,
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.text()
            .lines()
            .nth(1)
            .unwrap()
            .split_once(',')
            .unwrap()
            .1
            .to_string()
    };
    let (ad, bd) = (device(&ann, "ad"), device(&bob, "bd"));
    (s, ann, bob, ad, bd)
}

fn put(s: &TestServer, who: &str, method: &str, name: &str, body: &[u8]) -> Bin {
    send(
        s.addr,
        &format!("{method} /v1/files/{name} HTTP/1.1\r\nHost: t\r\n{who}Content-Type: application/octet-stream\r\n"),
        body,
        false,
    )
}

fn get(s: &TestServer, path: &str, extra: &str) -> Bin {
    send(
        s.addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}"),
        b"",
        false,
    )
}

#[test]
fn upload_download_round_trip_with_manifest() {
    let (s, ann, bob, ad, bd) = world();
    let v1 = data(300_000, 1);
    let r = put(&s, &bearer(&ann), "PUT", "fw.bin", &v1);
    assert_eq!(r.status, 201, "{}", r.text());
    let row = r.text();
    let mut lines = row.lines();
    assert_eq!(lines.next(), Some("name,size,sha256,updated"));
    let fields: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(fields[..3], ["fw.bin", "300000", sha_hex(&v1).as_str()]);
    assert!(fields[3].ends_with('Z'), "{row}");

    // A device of the owner downloads it, by parameters or Basic.
    for extra in [String::new(), basic("ad", &ad)] {
        let path = if extra.is_empty() {
            format!("/v1/files/fw.bin?device=ad&token={ad}")
        } else {
            "/v1/files/fw.bin".to_string()
        };
        let r = get(&s, &path, &extra);
        assert_eq!(r.status, 200);
        assert_eq!(sha_hex(&r.body), sha_hex(&v1));
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
        assert_eq!(
            r.header("ETag"),
            Some(format!("\"{}\"", sha_hex(&v1)).as_str())
        );
    }

    // Replacing by POST: 200, new content, new ETag, owner unchanged.
    let v2 = data(1000, 2);
    let r = put(&s, &bearer(&ann), "POST", "fw.bin", &v2);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&s, "/v1/files/fw.bin", &bearer(&ann));
    assert_eq!(r.body, v2);
    assert_eq!(
        r.header("ETag"),
        Some(format!("\"{}\"", sha_hex(&v2)).as_str())
    );
    // An empty file is a file.
    assert_eq!(put(&s, &bearer(&ann), "PUT", "empty", b"").status, 201);
    assert_eq!(get(&s, "/v1/files/empty", &bearer(&ann)).body, b"");

    // The manifest lists what the caller may read.
    let m = get(&s, "/v1/files", &bearer(&ann)).text();
    assert_eq!(
        m,
        format!(
            "name,size,sha256,updated\nempty,0,{},{}\nfw.bin,1000,{},{}\n",
            sha_hex(b""),
            m.lines().nth(1).unwrap().rsplit(',').next().unwrap(),
            sha_hex(&v2),
            m.lines().nth(2).unwrap().rsplit(',').next().unwrap()
        )
    );
    let m = get(&s, &format!("/v1/files?device=ad&token={ad}"), "");
    assert_eq!(m.status, 200);
    assert_eq!(m.text().lines().count(), 3);
    assert_eq!(
        get(&s, "/v1/files", &bearer(&bob)).text(),
        "name,size,sha256,updated\n"
    );
    assert_eq!(
        get(&s, "/v1/files", &basic("bd", &bd))
            .text()
            .lines()
            .count(),
        1
    );
    assert_eq!(get(&s, "/v1/files", "").status, 401);

    // Others may not see it: 404 like a missing file; nobody: 401.
    for who in [bearer(&bob), basic("bd", &bd)] {
        let r = get(&s, "/v1/files/fw.bin", &who);
        assert_eq!((r.status, r.code().as_str()), (404, "unknown_file"));
    }
    assert_eq!(get(&s, "/v1/files/fw.bin", "").status, 401);
    // Credentials are checked before existence.
    assert_eq!(
        get(&s, "/v1/files/nope?device=ad&token=wrong", "").status,
        401
    );
    assert_eq!(get(&s, "/v1/files/nope", &basic("ad", &ad)).status, 404);
    // A Basic id that is a device is the device, even if a file has its name.
    assert_eq!(
        put(&s, &bearer(&ann), "PUT", "ad", b"same name").status,
        201
    );
    assert_eq!(
        get(&s, "/v1/files/ad", &basic("ad", &ad)).body,
        b"same name"
    );
    assert_eq!(put(&s, &bearer(&bob), "PUT", "fw.bin", b"evil").status, 404);
    assert_eq!(
        put(&s, &basic("ad", &ad), "PUT", "fw.bin", b"evil").status,
        403
    );
    assert_eq!(
        put(&s, &basic("ad", &ad), "PUT", "new.bin", b"x").status,
        403
    );
    assert_eq!(put(&s, "", "PUT", "new.bin", b"x").status, 401);
    let del = |who: &str, name: &str| {
        send(
            s.addr,
            &format!("DELETE /v1/files/{name} HTTP/1.1\r\nHost: t\r\n{who}"),
            b"",
            false,
        )
    };
    assert_eq!(del(&bearer(&bob), "fw.bin").status, 404);
    assert_eq!(del(&basic("ad", &ad), "fw.bin").status, 403);
    assert_eq!(
        get(&s, "/v1/files/fw.bin", &bearer(&ann)).body,
        v2,
        "unchanged"
    );

    // A read grant lets bob read it, not replace it.
    let r = send(
        s.addr,
        &format!(
            "POST /v1/grants HTTP/1.1\r\nHost: t\r\n{}Content-Type: application/x-www-form-urlencoded\r\n",
            bearer(&ann)
        ),
        b"resource=file:fw.bin&to=user:bob&level=read",
        false,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(&s, "/v1/files/fw.bin", &bearer(&bob)).body, v2);
    assert_eq!(put(&s, &bearer(&bob), "PUT", "fw.bin", b"evil").status, 403);

    // Deleted: gone for everyone, and its blob is removed.
    let r = del(&bearer(&ann), "fw.bin");
    assert_eq!((r.status, r.text().as_str()), (200, "ok,fw.bin\n"));
    assert_eq!(get(&s, "/v1/files/fw.bin", &bearer(&ann)).status, 404);
    assert_eq!(del(&bearer(&ann), "fw.bin").status, 404);
    let mut blobs: Vec<String> = std::fs::read_dir(s.dir.join("overlord.redb.files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    blobs.sort();
    let mut want = vec![sha_hex(b""), sha_hex(b"same name")];
    want.sort();
    assert_eq!(blobs, want, "only the remaining files' blobs are left");
}

#[test]
fn ranges_conditionals_and_head() {
    let (s, ann, _, _, _) = world();
    let v = data(10_000, 3);
    assert_eq!(put(&s, &bearer(&ann), "PUT", "f", &v).status, 201);
    let auth = bearer(&ann);
    let ranged = |range: &str| get(&s, "/v1/files/f", &format!("{auth}Range: {range}\r\n"));

    let r = ranged("bytes=0-99");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 0-99/10000"));
    assert_eq!(r.body, &v[..100]);
    let r = ranged("bytes=-500");
    assert_eq!(
        (r.status, r.header("Content-Range")),
        (206, Some("bytes 9500-9999/10000"))
    );
    assert_eq!(r.body, &v[9500..]);
    let r = ranged("bytes=100-");
    assert_eq!(
        (r.status, r.header("Content-Range")),
        (206, Some("bytes 100-9999/10000"))
    );
    assert_eq!(r.body, &v[100..]);
    let r = ranged("bytes=9990-20000");
    assert_eq!(r.body, &v[9990..]);
    for bad in ["bytes=10000-", "bytes=-0", "bytes=20000-30000"] {
        let r = ranged(bad);
        assert_eq!(r.status, 416, "{bad}");
        assert_eq!(r.header("Content-Range"), Some("bytes */10000"));
        assert_eq!(r.code(), "bad_range");
    }
    // Several ranges, or a malformed one: the whole file (RFC 9110 allows it).
    for full in ["bytes=0-1,5-6", "bytes=5-1", "lines=1-2"] {
        let r = ranged(full);
        assert_eq!((r.status, r.body.len()), (200, 10_000), "{full}");
    }

    // ETag / If-None-Match / If-Range.
    let etag = format!("\"{}\"", sha_hex(&v));
    let r = get(
        &s,
        "/v1/files/f",
        &format!("{auth}If-None-Match: {etag}\r\n"),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("ETag"), Some(etag.as_str()));
    let r = get(
        &s,
        "/v1/files/f",
        &format!("{auth}If-None-Match: \"other\"\r\n"),
    );
    assert_eq!(r.status, 200);
    let r = get(
        &s,
        "/v1/files/f",
        &format!("{auth}Range: bytes=5-9\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &v[5..10]));
    let r = get(
        &s,
        "/v1/files/f",
        &format!("{auth}Range: bytes=5-9\r\nIf-Range: \"stale\"\r\n"),
    );
    assert_eq!((r.status, r.body.len()), (200, 10_000));

    // HEAD: the headers of the GET, no body.
    let h = send(
        s.addr,
        &format!("HEAD /v1/files/f HTTP/1.1\r\nHost: t\r\n{auth}"),
        b"",
        true,
    );
    assert_eq!(h.status, 200);
    assert_eq!(h.header("Content-Length"), Some("10000"));
    assert_eq!(h.header("ETag"), Some(etag.as_str()));
    let h = send(
        s.addr,
        &format!("HEAD /v1/files/f HTTP/1.1\r\nHost: t\r\n{auth}Range: bytes=-10\r\n"),
        b"",
        true,
    );
    assert_eq!((h.status, h.header("Content-Length")), (206, Some("10")));

    // HTTP/1.0 clients get the file too, with a length and a close.
    let r = send(
        s.addr,
        &format!("GET /v1/files/f HTTP/1.0\r\n{auth}"),
        b"",
        false,
    );
    assert_eq!(r.body, v);
}

#[test]
fn password_rotation_keeps_the_previous_one() {
    let (s, ann, bob, _, _) = world();
    let v = data(5000, 4);
    assert_eq!(put(&s, &bearer(&ann), "PUT", "cook.sh", &v).status, 201);
    assert_eq!(put(&s, &bearer(&ann), "PUT", "other", b"x").status, 201);
    let rotate = |who: &str, name: &str| {
        send(
            s.addr,
            &format!("POST /v1/files/{name}/password HTTP/1.1\r\nHost: t\r\n{who}"),
            b"",
            false,
        )
    };
    let new_password = || {
        let r = rotate(&bearer(&ann), "cook.sh");
        assert_eq!(r.status, 200, "{}", r.text());
        let t = r.text();
        assert_eq!(t.lines().next(), Some("name,password"));
        common::token_of(&t)
    };
    let by_query = |pw: &str| get(&s, &format!("/v1/files/cook.sh?password={pw}"), "").status;
    let by_basic = |pw: &str| get(&s, "/v1/files/cook.sh", &basic("cook.sh", pw)).status;

    assert_eq!(by_query("nothing-set-yet"), 401);
    let p1 = new_password();
    assert_eq!(
        get(&s, &format!("/v1/files/cook.sh?password={p1}"), "").body,
        v
    );
    assert_eq!(by_basic(&p1), 200);
    assert_eq!(get(&s, "/v1/files/cook.sh", &basic("", &p1)).status, 200);
    let p2 = new_password();
    assert_eq!(
        (by_query(&p1), by_query(&p2), by_basic(&p1)),
        (200, 200, 200)
    );
    let p3 = new_password();
    assert_eq!(
        (by_query(&p1), by_basic(&p1)),
        (401, 401),
        "two rotations ago"
    );
    assert_eq!((by_query(&p2), by_query(&p3)), (200, 200));
    let r = get(&s, "/v1/files/cook.sh?password=wrong", "");
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
    // A password opens only its own file, and only for reading.
    assert_eq!(
        get(&s, &format!("/v1/files/other?password={p3}"), "").status,
        401
    );
    assert_eq!(get(&s, &format!("/v1/files?password={p3}"), "").status, 400);
    let r = put(&s, &basic("cook.sh", &p3), "PUT", "cook.sh", b"evil");
    assert_eq!(r.status, 401);
    // Only the owner rotates.
    assert_eq!(rotate(&bearer(&bob), "cook.sh").status, 404);
    assert_eq!(rotate("", "cook.sh").status, 401);
}

#[test]
fn bad_names_and_traversal_are_refused() {
    let (s, ann, _, _, _) = world();
    let auth = bearer(&ann);
    for name in [
        "..",
        ".hidden",
        "a..b",
        "..%2F..%2Fetc%2Fpasswd",
        "a%2Fb",
        "a%00b",
        "%2e%2e",
        &"x".repeat(129),
    ] {
        let r = put(&s, &auth, "PUT", name, b"x");
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "bad_name"),
            "PUT {name}"
        );
        let r = get(&s, &format!("/v1/files/{name}"), &auth);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "bad_name"),
            "GET {name}"
        );
    }
    // More segments are no route at all.
    let r = put(&s, &auth, "PUT", "../../etc/passwd", b"x");
    assert_eq!(r.status, 404);
    let r = get(&s, "/v1/files/../../etc/passwd", &auth);
    assert_eq!(r.status, 404);
    assert_eq!(
        get(&s, "/v1/files/fw?bogus=1", &auth).code(),
        "bad_parameter"
    );
    // Nothing was written anywhere.
    assert_eq!(
        get(&s, "/v1/files", &auth).text(),
        "name,size,sha256,updated\n"
    );
}

#[test]
fn too_large_uploads_are_refused_and_leave_nothing() {
    let (s, ann, _, _, _) = world();
    let auth = bearer(&ann);
    // Declared too large: refused before reading.
    let r = put(&s, &auth, "PUT", "big", &data((1 << 20) + 1, 5));
    assert_eq!((r.status, r.code().as_str()), (413, "too_large"));
    // Chunked without a length: refused when the count passes the limit.
    let mut st = TcpStream::connect(s.addr).unwrap();
    st.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        st,
        "PUT /v1/files/big HTTP/1.1\r\nHost: t\r\n{auth}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = data(64 * 1024, 6);
    let mut status = None;
    for _ in 0..40 {
        let ok = write!(st, "{:x}\r\n", chunk.len()).is_ok()
            && st.write_all(&chunk).is_ok()
            && st.write_all(b"\r\n").is_ok();
        if !ok {
            break;
        }
    }
    let _ = st.write_all(b"0\r\n\r\n");
    let mut buf = Vec::new();
    let _ = st.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    if let Some(code) = text.split(' ').nth(1) {
        status = code.parse::<u16>().ok();
    }
    assert_eq!(status, Some(413), "{text}");
    assert!(text.contains("error,too_large,"));
    assert_eq!(get(&s, "/v1/files/big", &auth).status, 404);
    // Exactly the limit is fine.
    assert_eq!(put(&s, &auth, "PUT", "big", &data(1 << 20, 7)).status, 201);
    // No temp file is left behind.
    let dir = s.dir.join("overlord.redb.files");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn files_survive_a_restart() {
    let (s, ann, _, ad, _) = world();
    let v = data(70_000, 8);
    assert_eq!(put(&s, &bearer(&ann), "PUT", "keep", &v).status, 201);
    // A crashed upload's temp file and an orphan blob are cleaned up.
    let dir = s.dir.join("overlord.redb.files");
    std::fs::write(dir.join(".tmp-deadbeef"), b"partial").unwrap();
    std::fs::write(dir.join("ab".repeat(32)), b"orphan").unwrap();
    std::fs::write(dir.join("README"), b"not ours").unwrap();
    let (tmp, admin) = s.stop();
    let s = TestServer::restart(tmp, admin, |c| c.limits.auth_failures_per_window = 0);
    let r = get(&s, &format!("/v1/files/keep?device=ad&token={ad}"), "");
    assert_eq!(r.body, v);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec!["README".to_string(), sha_hex(&v)];
    want.sort();
    assert_eq!(names, want);
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .map(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
        .unwrap_or(false)
}

/// A cut download resumed by real clients: the first half is already in
/// the output file; the tool fetches the rest with a `Range` request.
#[test]
fn curl_and_wget_resume_a_cut_download() {
    let (s, ann, _, ad, _) = world();
    let v = data(700_001, 9);
    assert_eq!(put(&s, &bearer(&ann), "PUT", "fw.bin", &v).status, 201);
    let url = format!("http://{}/v1/files/fw.bin?device=ad&token={ad}", s.addr);
    let tmp = tempfile::tempdir().unwrap();
    type Tool = (
        &'static str,
        &'static str,
        fn(&str, &std::path::Path) -> Command,
    );
    let tools: [Tool; 3] = [
        ("curl", "--version", |url, out| {
            let mut c = Command::new("curl");
            c.args(["-sS", "-f", "-w", "%{http_code}", "-C", "-", "-o"])
                .arg(out)
                .arg(url);
            c
        }),
        ("wget", "--version", |url, out| {
            let mut c = Command::new("wget");
            c.args(["-q", "-S", "-c", "-O"]).arg(out).arg(url);
            c
        }),
        ("busybox", "--help", |url, out| {
            let mut c = Command::new("busybox");
            c.args(["wget", "-q", "-S", "-c", "-O"]).arg(out).arg(url);
            c
        }),
    ];
    let mut ran = 0;
    for (tool, probe, cmd) in tools {
        if !have(tool, probe) {
            println!("note: {tool} is not installed; its resume test is skipped");
            continue;
        }
        let out = tmp.path().join(format!("fw-{tool}.bin"));
        std::fs::write(&out, &v[..v.len() / 2]).unwrap();
        let o = cmd(&url, &out).output().unwrap();
        assert!(
            o.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), v.len(), "{tool}: length");
        assert!(got == v, "{tool}: resumed bytes differ");
        // It really resumed: the server answered the second half with 206.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(said.contains("206"), "{tool} did not get a 206: {said}");
        ran += 1;
    }
    assert!(
        ran > 0 || std::env::var_os("CI").is_none(),
        "no download tool in CI"
    );
}
