//! The sealed chunk: the compact form a chunk is re-encoded into once it
//! can no longer receive in-order appends (see [`super::seal`]). Its first
//! byte is [`TAG_V2`] (chunks sealed before it: [`TAG_V1`], read as they
//! are); a hot chunk's first byte is its time unit (0, 1 or 2), so the
//! forms are always told apart.
//!
//! Layout (varints LEB128, signed ones zigzag; `packed(n)` below):
//!
//! ```text
//! 0x81  count:varint  unit:u8  first:varint  [delta:varint  packed(count-2) dod]
//!       values
//! ```
//!
//! - Times: the first offset and the first gap in `unit`s (µs, ms or s,
//!   the coarsest that divides every offset), then every later gap as its
//!   zigzag difference from the gap before it (delta-of-delta): a sensor
//!   on a regular interval costs nothing per reading.
//! - `N`: mode `0`, `scale:u8  first:zigzag  packed(count-1)`: when every
//!   value is an exact decimal `m / 10^scale` (scale ≤ 9, |m| < 9e15),
//!   the mantissas' zigzag deltas; else mode `1`, `packed(count)` of each
//!   value's bits XOR the previous value's bits.
//! - `I` and `D`: `packed(count)` zigzag deltas (wrapping), from 0.
//! - `L`: `packed(count)` of 0/1.
//! - `S` and `B`: mode `0`, a dictionary `n:varint {len:varint bytes}*n`
//!   in first-use order then `packed(count)` indexes; or mode `1`, every
//!   value length-prefixed (when most values differ).
//!
//! `packed(n)`: `n` unsigned integers in blocks of [`BLOCK`]: one head per
//! block, then every value in its block's code, least significant bit
//! first, padded to a byte at the end. A head is a width byte `w` (0..=64,
//! the bits of the block's largest value `max`): every value in `w` bits;
//! or, when `max + 1` is not a power of two (`2 ≤ w < 64`), `0x80 | w`
//! and `gap:varint` (`2^w - 2 - max`): a truncated binary code over the
//! `max + 1` values, the smallest `u = gap + 1 = 2^w - 1 - max` of them in
//! `w - 1` bits and the rest in `w` (a value `v < u` is `v` in `w - 1` bits; a larger one is
//! `(v + u) >> 1` in `w - 1` bits, then `(v + u) & 1`). A walk whose steps
//! are -2..=2 (zigzag 0..=4) costs 2.4 bits a step instead of 3. Version 1
//! ([`TAG_V1`]) has width bytes only.

use super::chunk::{Entry, SPAN_US};
use super::varint::{self, Corrupt, Reader};
use crate::codec::{SensorKind, Value};

/// First byte of a sealed chunk, format version 1 (plain widths only).
pub const TAG_V1: u8 = 0x80;

/// First byte of a sealed chunk, format version 2 (the one written).
pub const TAG_V2: u8 = 0x81;

/// A block head's flag: its values are in a truncated binary code.
const TRUNCATED: u8 = 0x80;

/// The most entries a decode reserves room for before reading them.
const PREALLOC: usize = 1 << 16;

/// Values per bit-packing block (one head each).
pub const BLOCK: usize = 128;

/// Mantissas at or above this are not stored as decimals (exact in f64).
const MANTISSA_LIMIT: f64 = 9.0e15;

const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Is `bytes` a sealed chunk?
pub fn is_sealed(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&TAG_V1) | Some(&TAG_V2))
}

/// How one block's values are coded: `w` bits each, or, with `u > 0`,
/// the truncated binary code (values below `u` in `w - 1` bits).
#[derive(Debug, Clone, Copy)]
struct Code {
    w: u32,
    u: u64,
}

impl Code {
    /// The shortest code for a block whose largest value is `max`.
    fn of(max: u64) -> Code {
        let w = 64 - max.leading_zeros();
        let full = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
        if (2..64).contains(&w) && max < full {
            Code { w, u: full - max }
        } else {
            Code { w, u: 0 }
        }
    }
}

/// Append `vals` as `packed(vals.len())`.
pub fn pack(out: &mut Vec<u8>, vals: &[u64]) {
    let codes: Vec<Code> = vals
        .chunks(BLOCK)
        .map(|b| Code::of(b.iter().copied().max().unwrap_or(0)))
        .collect();
    for c in &codes {
        if c.u > 0 {
            out.push(TRUNCATED | c.w as u8);
            varint::put_u64(out, c.u - 1);
        } else {
            out.push(c.w as u8);
        }
    }
    let mut acc: u128 = 0;
    let mut bits: u32 = 0;
    let mut put = |v: u64, w: u32| {
        acc |= u128::from(v) << bits;
        bits += w;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    };
    for (block, c) in vals.chunks(BLOCK).zip(&codes) {
        match *c {
            Code { w: 0, .. } => {}
            Code { w, u: 0 } => block.iter().for_each(|&v| put(v, w)),
            Code { w, u } => {
                for &v in block {
                    if v < u {
                        put(v, w - 1);
                    } else {
                        // `(v + u) >> 1` in w - 1 bits, then its low bit
                        // (least significant first: one put of w bits).
                        let x = v + u;
                        put((x >> 1) | ((x & 1) << (w - 1)), w);
                    }
                }
            }
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

/// `w` bits (1..=64) of `data` from bit `bit`, or `Corrupt` past its end.
#[inline]
fn bits_at(data: &[u8], bit: usize, w: usize) -> Result<u64, Corrupt> {
    if bit + w > data.len() * 8 {
        return Err(Corrupt);
    }
    let (byte, shift) = (bit / 8, bit % 8);
    let v = match data.get(byte..byte + 8) {
        // One unaligned load when the value fits the word.
        Some(word) if w + shift <= 64 => {
            u64::from_le_bytes(word.try_into().expect("8 bytes")) >> shift
        }
        _ => {
            let mut buf = [0u8; 16];
            let end = (byte + 16).min(data.len());
            buf[..end - byte].copy_from_slice(&data[byte..end]);
            (u128::from_le_bytes(buf) >> shift) as u64
        }
    };
    Ok(v & (u64::MAX >> (64 - w)))
}

/// Read `packed(n)`, calling `f` for each value in order.
pub fn unpack(r: &mut Reader<'_>, n: usize, mut f: impl FnMut(u64)) -> Result<(), Corrupt> {
    let blocks = n.div_ceil(BLOCK);
    if blocks > r.remaining() {
        return Err(Corrupt); // a head is at least a byte
    }
    let mut codes: Vec<Code> = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        let head = r.u8()?;
        let w = u32::from(head & !TRUNCATED);
        if w > 64 {
            return Err(Corrupt);
        }
        if head & TRUNCATED == 0 {
            codes.push(Code { w, u: 0 });
            continue;
        }
        // A truncated code is only written for 2 <= w < 64, u < 2^(w-1).
        let u = r.u64()?.checked_add(1).ok_or(Corrupt)?;
        if !(2..64).contains(&w) || u >= 1u64 << (w - 1) {
            return Err(Corrupt);
        }
        codes.push(Code { w, u });
    }
    let data = r.rest();
    let mut bit = 0usize;
    for (i, c) in codes.iter().enumerate() {
        let len = (n - i * BLOCK).min(BLOCK);
        match *c {
            Code { w: 0, .. } => (0..len).for_each(|_| f(0)),
            Code { w, u: 0 } => {
                let w = w as usize;
                for _ in 0..len {
                    f(bits_at(data, bit, w)?);
                    bit += w;
                }
            }
            Code { w, u } => {
                let k = w as usize - 1;
                for _ in 0..len {
                    let x = bits_at(data, bit, k)?;
                    bit += k;
                    if x < u {
                        f(x);
                    } else {
                        let low = bits_at(data, bit, 1)?;
                        bit += 1;
                        f(((x << 1) | low) - u);
                    }
                }
            }
        }
    }
    r.take(bit.div_ceil(8))?;
    Ok(())
}

/// Seal sorted, unique entries (at least one) of `kind` into `out`.
pub fn encode(entries: &[Entry], kind: SensorKind, out: &mut Vec<u8>) {
    debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
    out.push(TAG_V2);
    varint::put_u64(out, entries.len() as u64);
    put_times(out, entries);
    match kind {
        SensorKind::Num => put_nums(out, entries),
        SensorKind::Int | SensorKind::Date => {
            let mut prev = 0i64;
            let deltas: Vec<u64> = entries
                .iter()
                .map(|(_, v)| {
                    let i = match v {
                        Value::Int(i) | Value::Date(i) => *i,
                        _ => 0,
                    };
                    let d = zigzag(i.wrapping_sub(prev));
                    prev = i;
                    d
                })
                .collect();
            pack(out, &deltas);
        }
        SensorKind::Bool => {
            let bits: Vec<u64> = entries
                .iter()
                .map(|(_, v)| u64::from(matches!(v, Value::Bool(true))))
                .collect();
            pack(out, &bits);
        }
        SensorKind::Str | SensorKind::Bytes => put_blobs(out, entries),
    }
}

fn put_times(out: &mut Vec<u8>, entries: &[Entry]) {
    let unit = if entries.iter().all(|(o, _)| o % 1_000_000 == 0) {
        2
    } else if entries.iter().all(|(o, _)| o % 1_000 == 0) {
        1
    } else {
        0
    };
    let div = [1, 1_000, 1_000_000][unit as usize];
    out.push(unit);
    let t: Vec<i64> = entries.iter().map(|(o, _)| i64::from(o / div)).collect();
    varint::put_u64(out, t[0] as u64);
    if t.len() < 2 {
        return;
    }
    let first_gap = t[1] - t[0];
    varint::put_u64(out, first_gap as u64);
    let dods: Vec<u64> = t
        .windows(3)
        .map(|w| zigzag((w[2] - w[1]) - (w[1] - w[0])))
        .collect();
    pack(out, &dods);
}

/// The decimal mantissa of `f` at `scale`, if exact.
fn exact(f: f64, scale: usize) -> Option<i64> {
    let p = POW10[scale];
    let m = (f * p).round();
    (m.abs() < MANTISSA_LIMIT && m / p == f).then_some(m as i64)
}

/// The smallest decimal scale at which every value is exact, with the
/// mantissas; `None` when there is none (or a value is `-0.0`). One pass:
/// when a value needs a finer scale, the mantissas so far are made again
/// at it (at most nine times).
fn common_scale(entries: &[Entry]) -> Option<(usize, Vec<i64>)> {
    let mut scale = 0usize;
    let mut ms: Vec<i64> = Vec::with_capacity(entries.len());
    let mut i = 0;
    while i < entries.len() {
        let Value::Num(f) = entries[i].1 else {
            return None;
        };
        if f == 0.0 && f.is_sign_negative() {
            return None;
        }
        match exact(f, scale) {
            Some(m) => {
                ms.push(m);
                i += 1;
            }
            None => {
                scale += 1;
                if scale == POW10.len() {
                    return None;
                }
                ms.clear();
                i = 0;
            }
        }
    }
    Some((scale, ms))
}

fn put_nums(out: &mut Vec<u8>, entries: &[Entry]) {
    if let Some((scale, ms)) = common_scale(entries) {
        out.push(0);
        out.push(scale as u8);
        varint::put_i64(out, ms[0]);
        let deltas: Vec<u64> = ms.windows(2).map(|w| zigzag(w[1] - w[0])).collect();
        pack(out, &deltas);
        return;
    }
    out.push(1);
    let mut prev = 0u64;
    let xors: Vec<u64> = entries
        .iter()
        .map(|(_, v)| {
            let b = match v {
                Value::Num(f) => f.to_bits(),
                _ => 0,
            };
            let x = b ^ prev;
            prev = b;
            x
        })
        .collect();
    pack(out, &xors);
}

fn blob(v: &Value) -> &[u8] {
    match v {
        Value::Str(s) => s.as_bytes(),
        Value::Bytes(b) => b,
        _ => &[],
    }
}

fn put_blobs(out: &mut Vec<u8>, entries: &[Entry]) {
    let mut dict: Vec<&[u8]> = Vec::new();
    let mut index: std::collections::HashMap<&[u8], u64> = std::collections::HashMap::new();
    let mut idx: Vec<u64> = Vec::with_capacity(entries.len());
    for (_, v) in entries {
        let b = blob(v);
        let i = *index.entry(b).or_insert_with(|| {
            dict.push(b);
            dict.len() as u64 - 1
        });
        idx.push(i);
    }
    if dict.len() * 2 > entries.len() {
        out.push(1);
        for (_, v) in entries {
            varint::put_bytes(out, blob(v));
        }
        return;
    }
    out.push(0);
    varint::put_u64(out, dict.len() as u64);
    for b in &dict {
        varint::put_bytes(out, b);
    }
    pack(out, &idx);
}

/// Decode a sealed chunk of `kind`, calling `f(offset, value)` in offset
/// order.
pub fn decode(
    bytes: &[u8],
    kind: SensorKind,
    mut f: impl FnMut(u32, Value),
) -> Result<(), Corrupt> {
    let mut r = Reader::new(bytes);
    let (count, offsets) = read_times(&mut r)?;
    // A capacity hint only: a damaged count must not ask for gigabytes.
    let mut values: Vec<Value> = Vec::with_capacity(count.min(PREALLOC));
    read_values(&mut r, kind, count, &mut values)?;
    if !r.is_empty() || values.len() != count {
        return Err(Corrupt);
    }
    for (o, v) in offsets.into_iter().zip(values) {
        f(o, v);
    }
    Ok(())
}

/// Count and first offset of a sealed chunk, from its head alone.
pub fn head(bytes: &[u8]) -> Result<(u64, u32), Corrupt> {
    let mut r = Reader::new(bytes);
    if !matches!(r.u8()?, TAG_V1 | TAG_V2) {
        return Err(Corrupt);
    }
    let count = r.u64()?;
    let div = unit_div(r.u8()?)?;
    let first = r.u64()?.checked_mul(div).ok_or(Corrupt)?;
    if count == 0 || first >= SPAN_US as u64 {
        return Err(Corrupt);
    }
    Ok((count, first as u32))
}

fn unit_div(unit: u8) -> Result<u64, Corrupt> {
    match unit {
        0 => Ok(1),
        1 => Ok(1_000),
        2 => Ok(1_000_000),
        _ => Err(Corrupt),
    }
}

/// The head and every offset, checked to be increasing and in the window.
fn read_times(r: &mut Reader<'_>) -> Result<(usize, Vec<u32>), Corrupt> {
    if !matches!(r.u8()?, TAG_V1 | TAG_V2) {
        return Err(Corrupt);
    }
    let count = r.u64()?;
    // Every reading takes at least a microsecond of the window.
    if count == 0 || count > SPAN_US as u64 {
        return Err(Corrupt);
    }
    let count = count as usize;
    let div = unit_div(r.u8()?)? as i64;
    let limit = SPAN_US / div;
    let first = r.u64()?;
    if first >= limit as u64 {
        return Err(Corrupt);
    }
    let mut t = first as i64;
    let mut offsets = Vec::with_capacity(count.min(PREALLOC));
    offsets.push((t * div) as u32);
    if count >= 2 {
        let mut gap = i64::try_from(r.u64()?).map_err(|_| Corrupt)?;
        let mut bad = false;
        let mut step = |gap: i64, offsets: &mut Vec<u32>, t: &mut i64| {
            *t = match t.checked_add(gap) {
                Some(n) if gap > 0 && n < limit => n,
                _ => {
                    bad = true;
                    return;
                }
            };
            offsets.push((*t * div) as u32);
        };
        step(gap, &mut offsets, &mut t);
        unpack(r, count - 2, |z| {
            gap = gap.saturating_add(unzigzag(z));
            step(gap, &mut offsets, &mut t);
        })?;
        if bad {
            return Err(Corrupt);
        }
    }
    Ok((count, offsets))
}

fn read_values(
    r: &mut Reader<'_>,
    kind: SensorKind,
    count: usize,
    values: &mut Vec<Value>,
) -> Result<(), Corrupt> {
    match kind {
        SensorKind::Num => read_nums(r, count, values),
        SensorKind::Int | SensorKind::Date => {
            let mut prev = 0i64;
            unpack(r, count, |z| {
                prev = prev.wrapping_add(unzigzag(z));
                values.push(if kind == SensorKind::Int {
                    Value::Int(prev)
                } else {
                    Value::Date(prev)
                });
            })
        }
        SensorKind::Bool => {
            let mut bad = false;
            unpack(r, count, |b| {
                bad |= b > 1;
                values.push(Value::Bool(b == 1));
            })?;
            if bad {
                return Err(Corrupt);
            }
            Ok(())
        }
        SensorKind::Str | SensorKind::Bytes => read_blobs(r, kind, count, values),
    }
}

fn read_nums(r: &mut Reader<'_>, count: usize, values: &mut Vec<Value>) -> Result<(), Corrupt> {
    match r.u8()? {
        0 => {
            let p = *POW10.get(usize::from(r.u8()?)).ok_or(Corrupt)?;
            let mut m = r.i64()?;
            let mut bad = false;
            values.push(Value::Num(m as f64 / p));
            unpack(r, count - 1, |z| {
                m = m.wrapping_add(unzigzag(z));
                bad |= m.unsigned_abs() >= MANTISSA_LIMIT as u64;
                values.push(Value::Num(m as f64 / p));
            })?;
            if bad {
                return Err(Corrupt);
            }
            Ok(())
        }
        1 => {
            let mut prev = 0u64;
            unpack(r, count, |x| {
                prev ^= x;
                values.push(Value::Num(f64::from_bits(prev)));
            })
        }
        _ => Err(Corrupt),
    }
}

fn make_blob(kind: SensorKind, b: &[u8]) -> Result<Value, Corrupt> {
    Ok(if kind == SensorKind::Str {
        Value::Str(std::str::from_utf8(b).map_err(|_| Corrupt)?.into())
    } else {
        Value::Bytes(b.into())
    })
}

fn read_blobs(
    r: &mut Reader<'_>,
    kind: SensorKind,
    count: usize,
    values: &mut Vec<Value>,
) -> Result<(), Corrupt> {
    match r.u8()? {
        0 => {
            let n = r.u64()?;
            if n == 0 || n > count as u64 {
                return Err(Corrupt);
            }
            let dict: Vec<Value> = (0..n)
                .map(|_| make_blob(kind, r.bytes()?))
                .collect::<Result<_, _>>()?;
            let mut bad = false;
            unpack(r, count, |i| match dict.get(i as usize) {
                Some(v) => values.push(v.clone()),
                None => bad = true,
            })?;
            if bad {
                return Err(Corrupt);
            }
            Ok(())
        }
        1 => {
            for _ in 0..count {
                values.push(make_blob(kind, r.bytes()?)?);
            }
            Ok(())
        }
        _ => Err(Corrupt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(vals: &[u64]) -> usize {
        let mut out = Vec::new();
        pack(&mut out, vals);
        out.push(0xAB); // what follows the packed values is left to read
        let mut r = Reader::new(&out);
        let mut back = Vec::new();
        unpack(&mut r, vals.len(), |v| back.push(v)).unwrap();
        assert_eq!(back, vals);
        assert_eq!(r.rest(), &[0xAB]);
        out.len() - 1
    }

    #[test]
    fn every_block_code_round_trips() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for max in [
            0u64,
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            100,
            255,
            256,
            1 << 40,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX,
        ] {
            for n in [1usize, 2, 127, 128, 129, 300] {
                let mut vals: Vec<u64> = (0..n)
                    .map(|_| {
                        if max == u64::MAX {
                            next()
                        } else {
                            next() % (max + 1)
                        }
                    })
                    .collect();
                vals[n / 2] = max; // the block's largest value is there
                round_trip(&vals);
            }
        }
    }

    #[test]
    fn a_walk_of_two_steps_costs_two_and_a_half_bits_not_three() {
        // zigzag of -2..=2: 0..=4, uniform: 2.4 bits a value, and the
        // block heads (2 bytes per 128); fixed width took 3 and 1 byte.
        let vals: Vec<u64> = (0..1280u64).map(|i| (i * 7 + i / 3) % 5).collect();
        let bytes = round_trip(&vals);
        let bits = (bytes * 8) as f64 / vals.len() as f64;
        assert!(bits < 2.55, "{bits} bits a value");
    }

    #[test]
    fn version_1_chunks_still_read() {
        // Sealed before version 2: I readings 5, 7, 6 at 0, 10 and 20 s.
        let v1 = [TAG_V1, 3, 2, 0, 10, 0x00, 0x04, 0x4A, 0x01];
        assert!(is_sealed(&v1));
        let mut got = Vec::new();
        decode(&v1, SensorKind::Int, |o, v| got.push((o, v))).unwrap();
        let want = vec![
            (0, Value::Int(5)),
            (10_000_000, Value::Int(7)),
            (20_000_000, Value::Int(6)),
        ];
        assert_eq!(got, want);
        assert_eq!(head(&v1).unwrap(), (3, 0));
        // Written again, it is version 2 and reads the same.
        let mut v2 = Vec::new();
        encode(&want, SensorKind::Int, &mut v2);
        assert_eq!(v2[0], TAG_V2);
        let mut again = Vec::new();
        decode(&v2, SensorKind::Int, |o, v| again.push((o, v))).unwrap();
        assert_eq!(again, want);
    }

    #[test]
    fn a_truncated_head_out_of_range_is_corrupt() {
        // w = 1 cannot be truncated; u must stay below 2^(w-1).
        for bad in [
            [TRUNCATED | 1, 0],
            [TRUNCATED | 3, 3],
            [TRUNCATED | 64, 0],
            [65, 0],
        ] {
            let mut r = Reader::new(&bad);
            assert_eq!(unpack(&mut r, 4, |_| {}), Err(Corrupt));
        }
    }
}
