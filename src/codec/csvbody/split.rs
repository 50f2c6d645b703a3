//! A large CSV body parsed in two halves at once, with exactly the
//! result (errors and their line numbers included) of a whole parse.

use super::{over_budget, parse_part, CsvReadings, Grow, READING_BYTES};
use crate::codec::{CodecError, Limits, Micros};

/// Bodies at least this big may be parsed in two halves at once.
pub const SPLIT_BYTES: usize = 1 << 20;

/// [`super::parse_csv`], with a large body parsed in two halves at once when
/// `parallel` (the caller has a thread to spare): this thread takes the
/// first half, a scoped thread the second. The result, errors and their
/// line numbers included, is exactly [`super::parse_csv`]'s. Only bodies of
/// [`SPLIT_BYTES`] or more with a `time` column and no quote character
/// are split (a quoted field may hold a line break, so a line might not
/// be a row); anything else is parsed whole.
pub fn parse_csv_split(
    body: &[u8],
    now: Micros,
    limits: &Limits,
    parallel: bool,
) -> Result<CsvReadings, CodecError> {
    parse_csv_charged(body, now, limits, parallel, &|_| true)
}

/// [`parse_csv_split`], asking `grow` before the readings take more
/// memory (see [`Grow`]), so parsing a body of tiny values (`1,1,1,...`,
/// some 28 bytes of readings per 2 bytes of body) cannot take more memory
/// than the caller allows.
pub fn parse_csv_charged(
    body: &[u8],
    now: Micros,
    limits: &Limits,
    parallel: bool,
    grow: Grow<'_>,
) -> Result<CsvReadings, CodecError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let Some((head, first, second)) = split_point(body).filter(|_| parallel) else {
        return parse_part(body, now, limits, true, grow);
    };
    // The second half is parsed as its own body: the header, then its rows.
    let mut tail = Vec::with_capacity(head + second.len());
    tail.extend_from_slice(&body[..head]);
    tail.extend_from_slice(second);
    let (a, b) = std::thread::scope(|sc| {
        // A thread that cannot be started (the system is out of them)
        // means this one parses both halves.
        let other = std::thread::Builder::new()
            .name("overlord-csv".into())
            .spawn_scoped(sc, || parse_part(&tail, now, limits, false, grow))
            .ok();
        let a = parse_part(first, now, limits, false, grow);
        let b = match other {
            Some(t) => t
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => parse_part(&tail, now, limits, false, grow),
        };
        (a, b)
    });
    let mut a = a?;
    let b = b.map_err(|mut e| {
        // Line L of the second half is line L - 1 + (lines of the first).
        let lines_before = memchr::memchr_iter(b'\n', first).count() as u64;
        if let Some(line) = e.at.line.as_mut() {
            *line = *line + lines_before - 1;
        }
        e
    })?;
    let mut index: std::collections::HashMap<&str, u32> = a
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i as u32))
        .collect();
    let mut map = Vec::with_capacity(b.devices.len());
    let mut added = Vec::new();
    for d in &b.devices {
        map.push(match index.get(d.as_str()) {
            Some(k) => *k,
            None => {
                let k = (a.devices.len() + added.len()) as u32;
                index.insert(d.as_str(), k);
                added.push(d.clone());
                k
            }
        });
    }
    drop(index);
    a.devices.extend(added);
    a.rows += b.rows;
    if a.rows == 0 {
        // Nothing but blank lines below the header (line 1: see `split_point`).
        return Err(CodecError::new("bad_csv", "a header row but no data rows").at(1, None));
    }
    let extra = (a.readings.len() + b.readings.len()).saturating_sub(a.readings.capacity());
    if !grow(extra * READING_BYTES) {
        return Err(over_budget());
    }
    a.readings.reserve_exact(b.readings.len());
    a.readings.extend(
        b.readings
            .into_iter()
            .map(|(d, r)| (d.map(|i| map[i as usize]), r)),
    );
    Ok(a)
}

/// Where to cut `body` (BOM already removed) in two: the header's length,
/// the first half (header and rows) and the second half's rows; `None`
/// when it must be parsed whole. The header is the first line (it names
/// `time`, so it is not blank), and the cut is just after a line break.
pub(super) fn split_point(body: &[u8]) -> Option<(usize, &[u8], &[u8])> {
    if body.len() < SPLIT_BYTES || memchr::memchr(b'"', body).is_some() {
        return None;
    }
    let head = memchr::memchr(b'\n', body)? + 1;
    let has_time = body[..head]
        .split(|b| *b == b',')
        .any(|f| f.trim_ascii().eq_ignore_ascii_case(b"time"));
    if !has_time {
        return None;
    }
    let mid = head + (body.len() - head) / 2;
    let cut = mid + memchr::memchr(b'\n', &body[mid..])? + 1;
    if cut >= body.len() {
        return None;
    }
    Some((head, &body[..cut], &body[cut..]))
}
