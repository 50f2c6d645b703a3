//! The chunk: consecutive readings of one (device, sensor), stored as one
//! redb value under the key `(device, sensor, minute, part)`. `minute` is
//! the chunk's base: every reading in it lies within [`SPAN_MINUTES`]
//! minutes from the start of that minute, and its offset from there is
//! what the chunk stores. Which chunk a reading goes to is the business of
//! [`super::parts`]; this module only encodes and decodes one.
//!
//! Layout (all integers LEB128, signed ones zigzag):
//!
//! ```text
//! unit:u8  count:varint  { offset_delta:varint  value }*count
//! ```
//!
//! - Entries are sorted by their offset within the minute and unique: the
//!   offset is the reading's identity within its chunk.
//! - `unit` is the coarsest of 0 = µs, 1 = ms, 2 = s that divides every
//!   offset, so readings on whole seconds cost one byte of time each.
//! - Values depend on the sensor kind (known from the key): `I` the zigzag
//!   delta from the previous integer; `N` one varint tag: when the value
//!   is an exact decimal at the previous `N` value's scale,
//!   `zigzag(mantissa - previous mantissa) << 1` (so a thermometer going
//!   21.5, 21.6 costs one byte a value); otherwise, for an exact decimal
//!   with at most 9 fraction digits, `(zigzag(mantissa) << 4 | scale) << 1
//!   | 1` (`21.5` alone is two bytes); else `31` and 8 raw bytes LE;
//!   `D` zigzag micros; `L` one byte; `S`/`B` length-prefixed bytes.
//!
//! That is the *hot* form, cheap to append to. A chunk that can no longer
//! receive in-order appends is re-encoded once into the *sealed* form
//! ([`super::sealed`], first byte `0x81`, or `0x80` for version 1); every
//! function here reads both.

use super::sealed;
use super::varint::{self, Corrupt, Reader};
use crate::codec::{SensorKind, Value};

/// Microseconds in a minute (the unit of the key's `minute`).
pub const MINUTE_US: i64 = 60_000_000;

/// Minutes one chunk may span, counted from its key's minute.
pub const SPAN_MINUTES: u32 = 60;

/// Microseconds one chunk may span: offsets are below this (and so fit
/// a `u32`, whose limit is about 71.6 minutes).
pub const SPAN_US: i64 = SPAN_MINUTES as i64 * MINUTE_US;

/// Readings per chunk before the last chunk of a minute is split.
pub const PART_ENTRIES: usize = 512;

/// One entry: offset from the chunk's base minute (µs) and the value.
pub type Entry = (u32, Value);

/// The delta base carried from one value to the next within a chunk. A
/// lone value (digest log, channel item) starts from `Prev::default()`.
#[derive(Debug, Clone, Copy)]
pub struct Prev {
    int: i64,
    mantissa: i64,
    /// Scale of the previous `N` value; `NO_SCALE` when there is none.
    scale: u8,
}

const NO_SCALE: u8 = 0xff;

impl Default for Prev {
    fn default() -> Prev {
        Prev {
            int: 0,
            mantissa: 0,
            scale: NO_SCALE,
        }
    }
}

/// Append one value in its kind's encoding, updating the delta base.
pub fn put_value(out: &mut Vec<u8>, value: &Value, prev: &mut Prev) {
    match value {
        Value::Int(i) => {
            varint::put_i64(out, i.wrapping_sub(prev.int));
            prev.int = *i;
        }
        Value::Num(f) => put_num(out, *f, prev),
        Value::Date(t) => varint::put_i64(out, *t),
        Value::Bool(b) => out.push(u8::from(*b)),
        Value::Str(s) => varint::put_bytes(out, s.as_bytes()),
        Value::Bytes(b) => varint::put_bytes(out, b),
    }
}

/// Read one value of `kind`.
pub fn get_value(r: &mut Reader<'_>, kind: SensorKind, prev: &mut Prev) -> Result<Value, Corrupt> {
    Ok(match kind {
        SensorKind::Int => {
            let v = prev.int.wrapping_add(r.i64()?);
            prev.int = v;
            Value::Int(v)
        }
        SensorKind::Num => Value::Num(get_num(r, prev)?),
        SensorKind::Date => Value::Date(r.i64()?),
        SensorKind::Bool => Value::Bool(match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Corrupt),
        }),
        SensorKind::Str => {
            let s = std::str::from_utf8(r.bytes()?).map_err(|_| Corrupt)?;
            Value::Str(s.into())
        }
        SensorKind::Bytes => Value::Bytes(r.bytes()?.into()),
    })
}

const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
const RAW_TAG: u64 = 15;

/// The decimal `f = m / 10^scale` at `scale`, if exact.
fn mantissa_at(f: f64, scale: usize) -> Option<i64> {
    let p = POW10[scale];
    let m = (f * p).round();
    (m.abs() < 9.0e15 && m / p == f && !(f == 0.0 && f.is_sign_negative())).then_some(m as i64)
}

fn put_num(out: &mut Vec<u8>, f: f64, prev: &mut Prev) {
    // Same scale as the previous value: store the mantissa's delta.
    if prev.scale != NO_SCALE {
        if let Some(m) = mantissa_at(f, usize::from(prev.scale)) {
            // Two mantissas below 9e15 differ by less than 2^55.
            varint::put_u64(out, zigzag(m - prev.mantissa) << 1);
            prev.mantissa = m;
            return;
        }
    }
    for scale in 0..POW10.len() {
        if let Some(m) = mantissa_at(f, scale) {
            varint::put_u64(out, (((zigzag(m) << 4) | scale as u64) << 1) | 1);
            prev.mantissa = m;
            prev.scale = scale as u8;
            return;
        }
    }
    varint::put_u64(out, (RAW_TAG << 1) | 1);
    out.extend_from_slice(&f.to_le_bytes());
    prev.scale = NO_SCALE;
}

fn zigzag(m: i64) -> u64 {
    ((m << 1) ^ (m >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn get_num(r: &mut Reader<'_>, prev: &mut Prev) -> Result<f64, Corrupt> {
    let tag = r.u64()?;
    if tag & 1 == 0 {
        // A delta at the previous value's scale.
        let p = *POW10.get(usize::from(prev.scale)).ok_or(Corrupt)?;
        prev.mantissa = prev
            .mantissa
            .checked_add(unzigzag(tag >> 1))
            .ok_or(Corrupt)?;
        return Ok(prev.mantissa as f64 / p);
    }
    let tag = tag >> 1;
    let scale = (tag & 15) as u8;
    if u64::from(scale) == RAW_TAG {
        let raw: [u8; 8] = r.take(8)?.try_into().map_err(|_| Corrupt)?;
        prev.scale = NO_SCALE;
        return Ok(f64::from_le_bytes(raw));
    }
    let p = *POW10.get(usize::from(scale)).ok_or(Corrupt)?;
    prev.mantissa = unzigzag(tag >> 4);
    prev.scale = scale;
    Ok(prev.mantissa as f64 / p)
}

/// Encode sorted, unique entries.
pub fn encode(entries: &[Entry], out: &mut Vec<u8>) {
    let unit = if entries.iter().all(|(o, _)| o % 1_000_000 == 0) {
        2
    } else if entries.iter().all(|(o, _)| o % 1_000 == 0) {
        1
    } else {
        0
    };
    let div = [1, 1_000, 1_000_000][unit as usize];
    out.push(unit);
    varint::put_u64(out, entries.len() as u64);
    let mut prev_off = 0u32;
    let mut prev = Prev::default();
    for (off, value) in entries {
        debug_assert!(*off >= prev_off);
        varint::put_u64(out, u64::from((off - prev_off) / div));
        prev_off = *off;
        put_value(out, value, &mut prev);
    }
}

/// Decode a chunk of `kind` (either form), calling `f(offset, value)` in
/// offset order.
pub fn decode(
    bytes: &[u8],
    kind: SensorKind,
    mut f: impl FnMut(u32, Value),
) -> Result<(), Corrupt> {
    if sealed::is_sealed(bytes) {
        return sealed::decode(bytes, kind, f);
    }
    let mut r = Reader::new(bytes);
    let div = match r.u8()? {
        0 => 1,
        1 => 1_000,
        2 => 1_000_000,
        _ => return Err(Corrupt),
    };
    let count = r.u64()?;
    let mut off = 0u64;
    let mut prev = Prev::default();
    for _ in 0..count {
        off = r
            .u64()?
            .checked_mul(div)
            .and_then(|d| d.checked_add(off))
            .ok_or(Corrupt)?;
        if off >= SPAN_US as u64 {
            return Err(Corrupt);
        }
        let v = get_value(&mut r, kind, &mut prev)?;
        f(off as u32, v);
    }
    if !r.is_empty() {
        return Err(Corrupt);
    }
    Ok(())
}

/// Append `incoming` (sorted by offset, ties in arrival order) to the
/// chunk `bytes` when every one of them is after its last entry and on
/// its time unit — the common write: readings newer than what is stored.
/// Then the stored entries are only walked (for the delta base), not
/// merged and re-encoded. Writes the new chunk to `out`, calls `fresh`
/// for every index stored (a repeat of the same offset within `incoming`
/// is not) and returns the chunk's new entry count; `None` (with `out`
/// untouched) when the fast path does not apply (always for a sealed
/// chunk: it is decoded, merged and sealed again).
pub fn append(
    bytes: &[u8],
    kind: SensorKind,
    incoming: &[(u32, &Value)],
    out: &mut Vec<u8>,
    mut fresh: impl FnMut(usize),
) -> Result<Option<usize>, Corrupt> {
    if sealed::is_sealed(bytes) {
        return Ok(None);
    }
    let mut r = Reader::new(bytes);
    let unit = r.u8()?;
    let div: u32 = match unit {
        0 => 1,
        1 => 1_000,
        2 => 1_000_000,
        _ => return Err(Corrupt),
    };
    if incoming.iter().any(|(o, _)| o % div != 0) {
        return Ok(None);
    }
    let count = r.u64()?;
    let body = bytes.len() - r.remaining();
    let mut off = 0u64;
    let mut prev = Prev::default();
    for _ in 0..count {
        off = r
            .u64()?
            .checked_mul(u64::from(div))
            .and_then(|d| d.checked_add(off))
            .ok_or(Corrupt)?;
        if off >= SPAN_US as u64 {
            return Err(Corrupt);
        }
        get_value(&mut r, kind, &mut prev)?;
    }
    if !r.is_empty() {
        return Err(Corrupt);
    }
    if count > 0 && incoming.first().is_some_and(|(o, _)| u64::from(*o) <= off) {
        return Ok(None);
    }
    let mut tail = Vec::with_capacity(incoming.len() * 3);
    let mut last = (count > 0).then_some(off as u32);
    let mut added = 0usize;
    for (i, (o, value)) in incoming.iter().enumerate() {
        if last == Some(*o) {
            continue; // the same reading twice in one write: the first stands
        }
        let prev_off = last.unwrap_or(0);
        varint::put_u64(&mut tail, u64::from((o - prev_off) / div));
        put_value(&mut tail, value, &mut prev);
        last = Some(*o);
        added += 1;
        fresh(i);
    }
    let total = count as usize + added;
    out.clear();
    out.push(unit);
    varint::put_u64(out, total as u64);
    out.extend_from_slice(&bytes[body..]);
    out.extend_from_slice(&tail);
    Ok(Some(total))
}

/// How many readings a chunk holds, without decoding them.
pub fn count(bytes: &[u8]) -> Result<u64, Corrupt> {
    if sealed::is_sealed(bytes) {
        return Ok(sealed::head(bytes)?.0);
    }
    let mut r = Reader::new(bytes);
    r.u8()?;
    r.u64()
}

/// The offset of a chunk's first entry (`None` for an empty chunk),
/// without decoding the rest.
pub fn first_offset(bytes: &[u8]) -> Result<Option<u32>, Corrupt> {
    if sealed::is_sealed(bytes) {
        return Ok(Some(sealed::head(bytes)?.1));
    }
    let mut r = Reader::new(bytes);
    let div: u64 = match r.u8()? {
        0 => 1,
        1 => 1_000,
        2 => 1_000_000,
        _ => return Err(Corrupt),
    };
    if r.u64()? == 0 {
        return Ok(None);
    }
    let off = r.u64()?.checked_mul(div).ok_or(Corrupt)?;
    if off >= SPAN_US as u64 {
        return Err(Corrupt);
    }
    Ok(Some(off as u32))
}

/// Encode `entries` in the form of the chunk `like`: sealed if it was
/// sealed (and `entries` is not empty), hot otherwise. What a rewrite of
/// a stored chunk (a late reading, a retention trim) uses, so a sealed
/// chunk stays sealed.
pub fn encode_like(like: &[u8], entries: &[Entry], kind: SensorKind, out: &mut Vec<u8>) {
    out.clear();
    if sealed::is_sealed(like) && !entries.is_empty() {
        sealed::encode(entries, kind, out);
    } else {
        encode(entries, out);
    }
}

/// Merge `incoming` (sorted by offset; equal offsets keep arrival order)
/// into the chunk `existing`. A reading whose offset is already present is
/// a retry and is dropped, as is a later duplicate within `incoming`: the
/// first stored value stands. Returns the new encoding and calls `fresh`
/// with the index in `incoming` of every entry that was actually added.
pub fn merge(
    existing: Option<&[u8]>,
    kind: SensorKind,
    incoming: &[(u32, &Value)],
    out: &mut Vec<u8>,
    fresh: impl FnMut(usize),
) -> Result<(), Corrupt> {
    let mut old: Vec<Entry> = Vec::new();
    if let Some(bytes) = existing {
        decode(bytes, kind, |o, v| old.push((o, v)))?;
    }
    encode(&merge_entries(old, incoming, fresh), out);
    Ok(())
}

/// [`merge`] on decoded entries, returning the merged entries instead of
/// their encoding, so the caller can split them into parts.
pub fn merge_entries(
    old: Vec<Entry>,
    incoming: &[(u32, &Value)],
    mut fresh: impl FnMut(usize),
) -> Vec<Entry> {
    let mut merged: Vec<Entry> = Vec::with_capacity(old.len() + incoming.len());
    let mut old_iter = old.into_iter().peekable();
    let mut last: Option<u32> = None;
    for (i, (off, value)) in incoming.iter().enumerate() {
        while let Some((o, _)) = old_iter.peek() {
            if *o < *off {
                merged.push(old_iter.next().expect("peeked"));
            } else {
                break;
            }
        }
        let in_old = old_iter.peek().is_some_and(|(o, _)| o == off);
        if in_old || last == Some(*off) {
            continue;
        }
        last = Some(*off);
        merged.push((*off, (*value).clone()));
        fresh(i);
    }
    merged.extend(old_iter);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(kind: SensorKind, entries: Vec<Entry>) -> usize {
        let mut out = Vec::new();
        encode(&entries, &mut out);
        let mut back = Vec::new();
        decode(&out, kind, |o, v| back.push((o, v))).unwrap();
        assert_eq!(back, entries);
        out.len()
    }

    /// Encode `nums` as one chunk and check every value comes back bit
    /// for bit.
    fn assert_nums_round_trip(nums: &[f64]) {
        let entries: Vec<Entry> = nums
            .iter()
            .enumerate()
            .map(|(i, f)| (i as u32, Value::Num(*f)))
            .collect();
        let mut out = Vec::new();
        encode(&entries, &mut out);
        let mut back = Vec::new();
        decode(&out, SensorKind::Num, |_, v| back.push(v)).unwrap();
        assert_eq!(back.len(), nums.len());
        for (f, v) in nums.iter().zip(&back) {
            let Value::Num(b) = v else { panic!() };
            assert_eq!(f.to_bits(), b.to_bits(), "{f} came back as {b}");
        }
    }

    #[test]
    fn values_round_trip() {
        let nums = [
            0.0,
            -0.0,
            21.5,
            -21.7,
            0.1,
            1e-9,
            1.5e-10,
            123456.789,
            f64::MAX,
            f64::MIN_POSITIVE,
            9.1e15,
            1e300,
        ];
        assert_nums_round_trip(&nums);
        roundtrip(
            SensorKind::Int,
            vec![
                (0, Value::Int(i64::MIN)),
                (1, Value::Int(i64::MAX)),
                (2, Value::Int(-1)),
            ],
        );
        roundtrip(
            SensorKind::Bool,
            vec![(0, Value::Bool(true)), (59_999_999, Value::Bool(false))],
        );
        roundtrip(SensorKind::Str, vec![(5, Value::Str("door open".into()))]);
        roundtrip(
            SensorKind::Bytes,
            vec![(5, Value::Bytes(vec![0, 1, 255].into()))],
        );
        roundtrip(
            SensorKind::Date,
            vec![(5, Value::Date(-3)), (6, Value::Date(1 << 60))],
        );
    }

    #[test]
    fn whole_second_readings_are_small() {
        // Six readings ten seconds apart, values like a thermometer's.
        let entries: Vec<Entry> = (0..6)
            .map(|i| (i * 10_000_000, Value::Num(21.5 + f64::from(i) / 10.0)))
            .collect();
        let len = roundtrip(SensorKind::Num, entries);
        assert!(len <= 2 + 6 * 3, "{len} bytes for six readings");
    }

    #[test]
    fn slowly_changing_decimals_cost_a_byte() {
        // A random-walk pressure with 2 decimals: each value after the
        // first is a small delta at the same scale.
        let vals = [1013.27, 1013.25, 1013.31, 1013.3, 1013.4, 1012.0, 1013.27];
        let entries: Vec<Entry> = vals
            .iter()
            .enumerate()
            .map(|(i, f)| (i as u32 * 1_000_000, Value::Num(*f)))
            .collect();
        let len = roundtrip(SensorKind::Num, entries);
        // unit + count + 7 one-byte offsets + 4 bytes for the first value +
        // four one-byte deltas and two (-140, +127) of two bytes.
        assert_eq!(len, 2 + 7 + 4 + 4 + 2 * 2, "{len} bytes");
        // Mixed scales and raw values in between still round-trip exactly.
        assert_nums_round_trip(&[1.5, 1.25, f64::MAX, 1.25, 3.0, -0.0, 0.1, 1e-9, 2.0]);
    }

    #[test]
    fn first_offset_reads_only_the_head() {
        let mut out = Vec::new();
        encode(
            &[(3_000_000, Value::Int(1)), (4_000_000, Value::Int(2))],
            &mut out,
        );
        assert_eq!(first_offset(&out), Ok(Some(3_000_000)));
        out.clear();
        encode(&[], &mut out);
        assert_eq!(first_offset(&out), Ok(None));
        assert_eq!(first_offset(&[7, 1, 0]), Err(Corrupt));
    }

    #[test]
    fn append_equals_a_full_merge_or_declines() {
        let decode_all = |b: &[u8], kind| {
            let mut v = Vec::new();
            decode(b, kind, |o, x| v.push((o, x))).unwrap();
            v
        };
        let nums = |offs: &[u32], base: f64| -> Vec<Entry> {
            offs.iter()
                .enumerate()
                .map(|(i, o)| (*o, Value::Num(base + i as f64 / 10.0)))
                .collect()
        };
        let old = nums(&[1_000_000, 11_000_000, 21_000_000], 20.5);
        let mut stored = Vec::new();
        encode(&old, &mut stored);
        let new = nums(&[31_000_000, 31_000_000, 3_599_000_000], 30.1);
        let incoming: Vec<(u32, &Value)> = new.iter().map(|(o, v)| (*o, v)).collect();
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        let n = append(&stored, SensorKind::Num, &incoming, &mut out, |i| {
            fresh.push(i)
        })
        .unwrap();
        assert_eq!(n, Some(5));
        assert_eq!(fresh, [0, 2], "the repeat of the same offset is not stored");
        let mut want = Vec::new();
        encode(&merge_entries(old.clone(), &incoming, |_| {}), &mut want);
        assert_eq!(
            decode_all(&out, SensorKind::Num),
            decode_all(&want, SensorKind::Num)
        );
        // Declines, leaving `out` alone: not after the last entry, or off
        // the chunk's unit (whole seconds here).
        for offs in [[21_000_000u32], [31_500_000]] {
            let one = nums(&offs, 1.0);
            let inc: Vec<(u32, &Value)> = one.iter().map(|(o, v)| (*o, v)).collect();
            let mut out = vec![7];
            assert_eq!(
                append(&stored, SensorKind::Num, &inc, &mut out, |_| ()),
                Ok(None)
            );
            assert_eq!(out, [7]);
        }
        assert_eq!(
            append(&[9, 0], SensorKind::Num, &incoming, &mut out, |_| ()),
            Err(Corrupt)
        );
    }

    #[test]
    fn merge_keeps_first_value_and_reports_fresh() {
        let mut first = Vec::new();
        encode(&[(10, Value::Int(1)), (30, Value::Int(3))], &mut first);
        let (a, b, c, d) = (Value::Int(100), Value::Int(2), Value::Int(4), Value::Int(5));
        let incoming = [(10, &a), (20, &b), (40, &c), (40, &d)];
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        merge(Some(&first), SensorKind::Int, &incoming, &mut out, |i| {
            fresh.push(i)
        })
        .unwrap();
        assert_eq!(fresh, vec![1, 2]);
        let mut back = Vec::new();
        decode(&out, SensorKind::Int, |o, v| back.push((o, v))).unwrap();
        assert_eq!(
            back,
            vec![
                (10, Value::Int(1)),
                (20, Value::Int(2)),
                (30, Value::Int(3)),
                (40, Value::Int(4))
            ]
        );
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for bytes in [
            &b""[..],
            &[9],
            &[0, 5, 1],
            &[2, 1, 0xa0, 0x1f, 0], // 4,000 s: beyond a chunk's hour
            &[0, 1, 0, 2],
            &[0, 1, 0],
        ] {
            assert_eq!(
                decode(bytes, SensorKind::Bool, |_, _| {}),
                Err(Corrupt),
                "{bytes:?}"
            );
        }
    }
}
