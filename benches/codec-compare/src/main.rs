//! The sealed chunk encoding (`overlord::store::sealed`) against the hot
//! one and against maintained crates (pco, zstd, lz4_flex), chunk by
//! chunk, on the data of `benches/compare.sh`: its day (random walks, 10 s
//! apart, 360 readings a chunk) and its second set (the same walks 1 s
//! apart, 1,000 readings a sensor). Prints bytes per reading and encode
//! and decode time per 1,000 readings. Run from `benches/codec-compare`:
//! `cargo run --release`.

use std::time::Instant;

use overlord::codec::{SensorKind, Value};
use overlord::store::{chunk, sealed};

/// (decimals, start, min, max, largest step): `benches/load/load.rs`.
const KINDS: [(u32, i64, i64, i64, i64); 4] = [
    (1, 215, -100, 450, 2),
    (1, 480, 50, 990, 5),
    (2, 101_325, 95_000, 105_000, 7),
    (3, 3_300, 2_900, 3_400, 2),
];

/// One chunk: offsets (µs from the base minute), mantissas and decimals.
struct Chunk {
    offs: Vec<u32>,
    mant: Vec<i64>,
    decimals: u32,
    entries: Vec<(u32, Value)>,
}

/// The load tool's generator: `devices` × 4 walks, `steps` rows `step`
/// seconds apart, cut into chunks of `per_chunk` readings.
fn data(devices: usize, steps: usize, step: u32, per_chunk: usize) -> Vec<Chunk> {
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut state: Vec<i64> = (0..devices * 4)
        .map(|i| KINDS[i % 4].1 + ((i / 4) as i64 % 17) * KINDS[i % 4].4)
        .collect();
    let mut series: Vec<Vec<i64>> = vec![Vec::with_capacity(steps); devices * 4];
    for _ in 0..steps {
        for (i, s) in state.iter_mut().enumerate() {
            let k = KINDS[i % 4];
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let r = rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let delta = (r % (2 * k.4 as u64 + 1)) as i64 - k.4;
            *s = (*s + delta).clamp(k.2, k.3);
            series[i].push(*s);
        }
    }
    let mut out = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let decimals = KINDS[i % 4].0;
        for (c, part) in s.chunks(per_chunk).enumerate() {
            let _ = c;
            let offs: Vec<u32> = (0..part.len() as u32)
                .map(|j| j * step * 1_000_000)
                .collect();
            let p = 10f64.powi(decimals as i32);
            let entries = offs
                .iter()
                .zip(part)
                .map(|(o, m)| (*o, Value::Num(*m as f64 / p)))
                .collect();
            out.push(Chunk {
                offs,
                mant: part.to_vec(),
                decimals,
                entries,
            });
        }
    }
    out
}

struct Row {
    name: &'static str,
    bytes: usize,
    enc_ns: f64,
    dec_ns: f64,
}

fn measure(
    chunks: &[Chunk],
    name: &'static str,
    enc: impl Fn(&Chunk) -> Vec<u8>,
    dec: impl Fn(&Chunk, &[u8]) -> usize,
) -> Row {
    let readings: usize = chunks.iter().map(|c| c.offs.len()).sum();
    let t = Instant::now();
    let encoded: Vec<Vec<u8>> = chunks.iter().map(&enc).collect();
    let enc_ns = t.elapsed().as_nanos() as f64 / readings as f64 * 1000.0;
    let t = Instant::now();
    let mut n = 0;
    for (c, e) in chunks.iter().zip(&encoded) {
        n += dec(c, e);
    }
    let dec_ns = t.elapsed().as_nanos() as f64 / readings as f64 * 1000.0;
    assert_eq!(n, readings, "{name} decoded every reading");
    Row {
        name,
        bytes: encoded.iter().map(Vec::len).sum(),
        enc_ns,
        dec_ns,
    }
}

fn hot(c: &Chunk) -> Vec<u8> {
    let mut out = Vec::new();
    chunk::encode(&c.entries, &mut out);
    out
}

fn decode_all(b: &[u8]) -> usize {
    let mut n = 0;
    chunk::decode(b, SensorKind::Num, |_, _| n += 1).unwrap();
    n
}

fn run(label: &str, chunks: &[Chunk]) {
    let readings: usize = chunks.iter().map(|c| c.offs.len()).sum();
    let pco_cfg = pco::ChunkConfig::default();
    let rows = vec![
        measure(chunks, "hot (today's chunk)", hot, |_, b| decode_all(b)),
        measure(
            chunks,
            "sealed (hand-written)",
            |c| {
                let mut out = Vec::new();
                sealed::encode(&c.entries, SensorKind::Num, &mut out);
                out
            },
            |_, b| decode_all(b),
        ),
        measure(
            chunks,
            "pco (times + mantissas)",
            |c| {
                let t: Vec<i64> = c.offs.iter().map(|o| i64::from(*o)).collect();
                let mut a = pco::standalone::simple_compress(&t, &pco_cfg).unwrap();
                let b = pco::standalone::simple_compress(&c.mant, &pco_cfg).unwrap();
                a.push(c.decimals as u8);
                let mut out = (a.len() as u32).to_le_bytes().to_vec();
                out.extend(a);
                out.extend(b);
                out
            },
            |_, b| {
                let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
                let t: Vec<i64> = pco::standalone::simple_decompress(&b[4..4 + n - 1]).unwrap();
                let p = 10f64.powi(i32::from(b[3 + n]));
                let m: Vec<i64> = pco::standalone::simple_decompress(&b[4 + n..]).unwrap();
                let v: Vec<f64> = m.iter().map(|x| *x as f64 / p).collect();
                assert_eq!(t.len(), v.len());
                v.len()
            },
        ),
        measure(
            chunks,
            "zstd -3 of the hot chunk",
            |c| zstd::bulk::compress(&hot(c), 3).unwrap(),
            |_, b| decode_all(&zstd::bulk::decompress(b, 1 << 20).unwrap()),
        ),
        measure(
            chunks,
            "zstd -19 of the hot chunk",
            |c| zstd::bulk::compress(&hot(c), 19).unwrap(),
            |_, b| decode_all(&zstd::bulk::decompress(b, 1 << 20).unwrap()),
        ),
        measure(
            chunks,
            "lz4_flex of the hot chunk",
            |c| lz4_flex::compress_prepend_size(&hot(c)),
            |_, b| decode_all(&lz4_flex::decompress_size_prepended(b).unwrap()),
        ),
    ];
    println!("\n{label}: {} chunks, {readings} readings", chunks.len());
    println!("| encoding | bytes/reading | encode µs/1,000 | decode µs/1,000 |");
    println!("| --- | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {:.3} | {:.1} | {:.1} |",
            r.name,
            r.bytes as f64 / readings as f64,
            r.enc_ns / 1000.0,
            r.dec_ns / 1000.0
        );
    }
}

fn main() {
    run(
        "compare.sh's day (10 s apart, 360 a chunk; 100 devices x 4 sensors x 24 h)",
        &data(100, 8640, 10, 360),
    );
    run(
        "second set (1 s apart, 1,000 a sensor; 1,000 devices x 4 sensors)",
        &data(1000, 1000, 1, 1000),
    );
}
