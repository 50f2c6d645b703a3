//! The real clients devices use from cron jobs: curl, wget and busybox
//! wget, run as a user would type them. CI installs all three; on a
//! machine without one, that client's check is skipped with a note
//! (and under CI=true a missing client fails the test).

mod common;

use std::process::Command;

use common::{hour_ago, rfc3339, TestServer};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run client");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn curl_wget_and_busybox_wget_send_and_read_back() {
    let s = TestServer::start();
    let tok = s.create_device("cron");
    let base = format!("http://{}", s.addr);
    let t = hour_ago();
    let mut expected = vec!["time,N1".to_string()];
    if common::have("curl") {
        let url = format!("{base}/v1/readings?device=cron&token={tok}&N1=1.5&time={t}");
        assert_eq!(
            run(Command::new("curl").args(["-sS", "--fail", &url])),
            "ok,1,0\n"
        );
        // curl --data-binary with a CSV file, and -u for Basic auth.
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("day.csv");
        std::fs::write(&day, format!("time,N1\n{},2.5\n{},3.5\n", t + 1, t + 2)).unwrap();
        let out = run(Command::new("curl").args([
            "-sS",
            "--fail",
            "-u",
            &format!("cron:{tok}"),
            "-H",
            "Content-Type: text/csv",
            "--data-binary",
            &format!("@{}", day.display()),
            &format!("{base}/v1/readings"),
        ]));
        assert_eq!(out, "ok,2,0\n");
        expected.extend([
            format!("{},1.5", rfc3339(t)),
            format!("{},2.5", rfc3339(t + 1)),
            format!("{},3.5", rfc3339(t + 2)),
        ]);
    }
    if common::have("wget") {
        let url = format!(
            "{base}/v1/readings?device=cron&token={tok}&N1=4.5&time={}",
            t + 3
        );
        assert_eq!(run(Command::new("wget").args(["-qO-", &url])), "ok,1,0\n");
        expected.push(format!("{},4.5", rfc3339(t + 3)));
    }
    if common::have("busybox") {
        // busybox wget --post-data sends a form.
        let out = run(Command::new("busybox").args([
            "wget",
            "-qO-",
            "--post-data",
            &format!("device=cron&token={tok}&N1=5.5&time={}", t + 4),
            &format!("{base}/v1/readings"),
        ]));
        assert_eq!(out, "ok,1,0\n");
        expected.push(format!("{},5.5", rfc3339(t + 4)));
    }
    let q = s.get(&format!("/v1/devices/cron/readings?token={tok}&sensors=N1"));
    assert_eq!(q.body, expected.join("\n") + "\n");
}
