//! A 64 MiB file goes up and comes down streamed: neither the server nor
//! this client ever holds it whole, so the process's peak memory grows by
//! far less than the file. (Its own binary so no other test's memory
//! muddies the measurement. Files of 1 GiB and more work the same way;
//! CI uses 64 MiB to stay quick.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::TestServer;
use sha2::{Digest, Sha256};

const SIZE: usize = 64 << 20;
const CHUNK: usize = 256 << 10;

/// Peak resident memory of this process (server included), in KiB.
fn peak_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Chunk `i` of the file: cheap deterministic bytes.
fn chunk(i: usize, buf: &mut [u8]) {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
}

#[test]
fn sixty_four_mib_streams_both_ways_in_bounded_memory() {
    let s = TestServer::start_with(|c| c.limits.max_file_bytes = SIZE as u64);
    let before = peak_kib();

    // Upload, generated and hashed chunk by chunk.
    let mut st = TcpStream::connect(s.addr).unwrap();
    st.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        st,
        "PUT /v1/files/big.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n",
        s.admin
    )
    .unwrap();
    let mut sent = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    for i in 0..SIZE / CHUNK {
        chunk(i, &mut buf);
        sent.update(&buf);
        st.write_all(&buf).unwrap();
    }
    let sent = hex(&sent.finalize());
    let mut reply = String::new();
    st.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    assert!(
        reply.contains(&format!("big.bin,{SIZE},{sent},")),
        "{reply}"
    );

    // Download, hashed as it arrives.
    let mut st = TcpStream::connect(s.addr).unwrap();
    st.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        st,
        "GET /v1/files/big.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        s.admin
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        st.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {SIZE}\r\n")),
        "{head}"
    );
    assert!(!head.contains("Transfer-Encoding"), "{head}");
    let mut got = Sha256::new();
    let mut n = 0usize;
    loop {
        let k = st.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got.update(&buf[..k]);
        n += k;
    }
    assert_eq!(n, SIZE);
    assert_eq!(hex(&got.finalize()), sent);

    if let (Some(a), Some(b)) = (before, peak_kib()) {
        let grew = b.saturating_sub(a);
        println!(
            "peak memory grew by {grew} KiB for a {} KiB file",
            SIZE >> 10
        );
        assert!(
            grew < (SIZE as u64 >> 10) / 2,
            "peak memory grew by {grew} KiB: the file was buffered"
        );
    } else {
        println!("note: no /proc/self/status; memory bound not measured");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
