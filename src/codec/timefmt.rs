//! Times of readings: RFC 3339 (any offset, stored as UTC) or unix seconds
//! with an optional fraction, held as microseconds since the epoch.
//!
//! Precision is one microsecond: further fraction digits are truncated, so
//! `…00.1234567Z` and `…00.1234568Z` are the same reading time. Times before
//! 1970 are rejected (the store keys minutes as unsigned numbers).

use super::{CodecError, Limits, Micros};

/// Parse a time as sent, without range checks beyond "representable".
pub fn parse_instant(text: &str) -> Result<Micros, &'static str> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty time");
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return parse_unix(t);
    }
    parse_rfc3339(t)
}

/// Parse the time of a reading and check it against the clock: not before
/// 1970 and not beyond `now + limits.max_future_skew`.
pub fn parse_time(text: &str, now: Micros, limits: &Limits) -> Result<Micros, CodecError> {
    let t = parse_instant(text).map_err(|why| {
        CodecError::new(
            "bad_time",
            format!(
                "'{}' is not a time ({why}); use RFC 3339 or unix seconds",
                super::names::clip(text)
            ),
        )
    })?;
    check_time(t, now, limits)
}

/// Check a reading's time against the clock: not before 1970 and not
/// beyond `now + limits.max_future_skew` (what [`parse_time`] checks).
pub fn check_time(t: Micros, now: Micros, limits: &Limits) -> Result<Micros, CodecError> {
    if t < 0 {
        return Err(CodecError::new("bad_time", "time is before 1970"));
    }
    if t > now.saturating_add(limits.max_future_skew) {
        return Err(CodecError::new(
            "bad_time",
            format!(
                "{} is more than {} s ahead of the server clock",
                format_time(t),
                limits.max_future_skew / 1_000_000
            ),
        ));
    }
    Ok(t)
}

fn parse_unix(t: &str) -> Result<Micros, &'static str> {
    let (secs, frac) = match t.split_once('.') {
        Some((s, f)) => (s, f),
        None => (t, ""),
    };
    if secs.is_empty() || frac.contains('.') {
        return Err("malformed unix seconds");
    }
    if secs.len() > 12 {
        return Err("unix seconds out of range");
    }
    let s: i64 = secs.parse().map_err(|_| "malformed unix seconds")?;
    let mut micros: i64 = 0;
    for (i, d) in frac.bytes().enumerate() {
        if i < 6 {
            micros = micros * 10 + i64::from(d - b'0');
        }
    }
    for _ in frac.len()..6 {
        micros *= 10;
    }
    Ok(s * 1_000_000 + micros)
}

fn parse_rfc3339(t: &str) -> Result<Micros, &'static str> {
    use time::format_description::well_known::Rfc3339;
    // In a query string an unencoded `+01:00` arrives as ` 01:00`: put the
    // plus back when the space stands exactly where an offset sign goes.
    let fixed;
    let t =
        if t.len() >= 6 && t.as_bytes()[t.len() - 6] == b' ' && t.as_bytes()[t.len() - 3] == b':' {
            fixed = format!("{}+{}", &t[..t.len() - 6], &t[t.len() - 5..]);
            fixed.as_str()
        } else {
            t
        };
    let dt = time::OffsetDateTime::parse(t, &Rfc3339).map_err(|_| "not RFC 3339")?;
    let nanos = dt.unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1000)).map_err(|_| "time out of range")
}

/// Append a time as RFC 3339 UTC: `2026-11-23T10:00:00Z`, with a fraction
/// (trailing zeros trimmed) only when it is not whole seconds.
pub fn write_time(t: Micros, out: &mut String) {
    let secs = t.div_euclid(1_000_000);
    let micros = t.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let mut buf = [0u8; 32];
    let mut n = 0;
    let put = |v: u32, width: usize, buf: &mut [u8; 32], n: &mut usize| {
        let mut div = 10u32.pow(width as u32 - 1);
        for _ in 0..width {
            buf[*n] = b'0' + ((v / div) % 10) as u8;
            *n += 1;
            div /= 10;
        }
    };
    if (0..=9999).contains(&y) {
        put(y as u32, 4, &mut buf, &mut n);
    } else {
        out.push_str(&y.to_string());
    }
    for (sep, v) in [
        (b'-', m),
        (b'-', d),
        (b'T', sod / 3600),
        (b':', sod / 60 % 60),
        (b':', sod % 60),
    ] {
        buf[n] = sep;
        n += 1;
        put(v, 2, &mut buf, &mut n);
    }
    if micros != 0 {
        buf[n] = b'.';
        n += 1;
        let mut digits = 6;
        let mut f = micros;
        while f.is_multiple_of(10) {
            f /= 10;
            digits -= 1;
        }
        put(f, digits, &mut buf, &mut n);
    }
    buf[n] = b'Z';
    n += 1;
    out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or(""));
}

/// [`write_time`] into a new string.
pub fn format_time(t: Micros) -> String {
    let mut s = String::with_capacity(27);
    write_time(t, &mut s);
    s
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The current time as microseconds since the epoch.
pub fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as Micros)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Micros = 1_795_428_000_000_000; // 2026-11-23T10:00:00Z

    #[test]
    fn instants() {
        let cases: &[(&str, Result<Micros, ()>)] = &[
            ("2026-11-23T10:00:00Z", Ok(T)),
            ("2026-11-23T10:00:00z", Ok(T)),
            ("2026-11-23T11:00:00+01:00", Ok(T)),
            ("2026-11-23T11:00:00 01:00", Ok(T)),
            ("2026-11-23T05:00:00-05:00", Ok(T)),
            ("2026-11-23T10:00:00.25Z", Ok(T + 250_000)),
            ("2026-11-23T10:00:00.1234569Z", Ok(T + 123_456)),
            ("1795428000", Ok(T)),
            ("1795428000.5", Ok(T + 500_000)),
            ("1795428000.0000019", Ok(T + 1)),
            ("0", Ok(0)),
            ("", Err(())),
            ("1795428000.", Ok(T)),
            (".5", Err(())),
            ("1.2.3", Err(())),
            ("-5", Err(())),
            ("2026-11-23", Err(())),
            ("2026-11-23T10:00:00", Err(())),
            ("2026-13-23T10:00:00Z", Err(())),
            ("9999999999999999999", Err(())),
            ("tomorrow", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(parse_instant(input).map_err(|_| ()), *want, "{input:?}");
        }
    }

    #[test]
    fn reading_times_are_checked_against_the_clock() {
        let lim = Limits::default();
        assert_eq!(parse_time("1795428000", T, &lim), Ok(T));
        assert_eq!(parse_time("1795428300", T, &lim), Ok(T + 300_000_000));
        assert_eq!(
            parse_time("1795428301", T, &lim).unwrap_err().code,
            "bad_time"
        );
        assert_eq!(
            parse_time("1969-12-31T23:59:59Z", T, &lim)
                .unwrap_err()
                .code,
            "bad_time"
        );
    }

    #[test]
    fn formatting() {
        let cases: &[(Micros, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (T, "2026-11-23T10:00:00Z"),
            (T + 500_000, "2026-11-23T10:00:00.5Z"),
            (T + 1, "2026-11-23T10:00:00.000001Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00Z"),
            (4_102_444_799_000_000, "2099-12-31T23:59:59Z"),
        ];
        for (t, want) in cases {
            assert_eq!(format_time(*t), *want);
            assert_eq!(parse_instant(want), Ok(*t));
        }
    }
}
