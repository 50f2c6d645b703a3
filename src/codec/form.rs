//! Query strings and `application/x-www-form-urlencoded` bodies.
//!
//! `a=1&b=x%20y+z` becomes `[("a","1"), ("b","x y z")]`. Empty segments are
//! skipped, a segment without `=` has an empty value, `+` is a space, and a
//! broken `%` escape or a name/value that is not UTF-8 is `bad_encoding`.

use super::{too_many_fields, CodecError, DEFAULT_MAX_FIELDS};

/// Split and decode `name=value` pairs, keeping their order; at most
/// [`DEFAULT_MAX_FIELDS`] of them (see [`parse_pairs_max`]).
pub fn parse_pairs(input: &[u8]) -> Result<Vec<(String, String)>, CodecError> {
    parse_pairs_max(input, DEFAULT_MAX_FIELDS)
}

/// [`parse_pairs`] with at most `max` pairs: the next one is
/// `too_many_fields`, found before it is decoded, so a body of a million
/// `a&a&...` costs no more than `max` pairs do.
pub fn parse_pairs_max(input: &[u8], max: usize) -> Result<Vec<(String, String)>, CodecError> {
    let mut out = Vec::new();
    for seg in input.split(|&b| b == b'&') {
        if seg.is_empty() {
            continue;
        }
        if out.len() >= max {
            return Err(too_many_fields(max));
        }
        let (name, value) = match seg.iter().position(|&b| b == b'=') {
            Some(i) => (&seg[..i], &seg[i + 1..]),
            None => (seg, &b""[..]),
        };
        let name = decode(name)?;
        let value = decode(value).map_err(|e| e.named(&name))?;
        out.push((name, value));
    }
    Ok(out)
}

/// Percent-decode one component (`+` is a space).
pub fn decode(input: &[u8]) -> Result<String, CodecError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
                let hi = input.get(i + 1).copied().and_then(hex);
                let lo = input.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => {
                        return Err(CodecError::new(
                            "bad_encoding",
                            "'%' must be followed by two hex digits",
                        ))
                    }
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| CodecError::new("bad_encoding", "not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_table() {
        type Want = Result<Vec<(&'static str, &'static str)>, &'static str>;
        let cases: &[(&[u8], Want)] = &[
            (b"", Ok(vec![])),
            (b"a=1", Ok(vec![("a", "1")])),
            (b"a=1&b=2", Ok(vec![("a", "1"), ("b", "2")])),
            (b"a=1&&b=2&", Ok(vec![("a", "1"), ("b", "2")])),
            (b"flag", Ok(vec![("flag", "")])),
            (b"a=", Ok(vec![("a", "")])),
            (b"a=x%20y+z", Ok(vec![("a", "x y z")])),
            (b"a=1=2", Ok(vec![("a", "1=2")])),
            (b"S1=%E2%82%AC", Ok(vec![("S1", "\u{20ac}")])),
            (
                b"t=2026-11-23T10:00:00%2B01:00",
                Ok(vec![("t", "2026-11-23T10:00:00+01:00")]),
            ),
            (b"a=%", Err("bad_encoding")),
            (b"a=%4", Err("bad_encoding")),
            (b"a=%zz", Err("bad_encoding")),
            (b"a=%FF", Err("bad_encoding")),
            (b"a=\xff", Err("bad_encoding")),
            (b"%00=1", Ok(vec![("\0", "1")])),
        ];
        for (input, want) in cases {
            let got = parse_pairs(input).map_err(|e| e.code);
            let want = want.clone().map(|v| {
                v.into_iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn pairs_stop_at_the_cap() {
        assert_eq!(parse_pairs_max(b"a=1&b=2", 2).unwrap().len(), 2);
        assert_eq!(parse_pairs_max(b"a=1&&b=2&", 2).unwrap().len(), 2);
        let e = parse_pairs_max(b"a=1&b=2&c", 2).unwrap_err();
        assert_eq!(e.code, "too_many_fields");
        assert!(e.message.contains("more than 2 fields"), "{e}");
        // The cap is found before a broken pair past it is decoded.
        assert_eq!(
            parse_pairs_max(b"a&b&%zz", 2).unwrap_err().code,
            "too_many_fields"
        );
        let many = "N1=1&".repeat(DEFAULT_MAX_FIELDS + 1);
        assert_eq!(
            parse_pairs(many.as_bytes()).unwrap_err().code,
            "too_many_fields"
        );
    }
}
