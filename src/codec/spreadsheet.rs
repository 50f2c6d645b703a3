//! Spreadsheet-safe CSV (`safe=1` on any CSV reply, `overlord export
//! --safe`).
//!
//! A spreadsheet opening a CSV file runs a cell that starts with `=`, `+`,
//! `-` or `@` as a formula (and some treat a leading TAB or CR the same
//! way), so an `S` reading, a device name or a description such as
//! `=HYPERLINK(...)` or `-2+3` would execute on the reader's machine.
//! Following the OWASP advice on CSV injection, such a field gets a
//! leading `'` (which spreadsheets read as "this is text" and do not
//! show). A field that is a plain decimal number (`-3.5`, `+7`, `-1e3`:
//! everything an `N` or `I` column, a coordinate or a count holds) is
//! left alone, so numbers stay numbers: they are never formulas. Every
//! other field is written back exactly as it was.
//!
//! The input is CSV this server wrote (RFC 4180, `\n` line ends); the
//! output is the same table with those fields changed.

use super::names::write_csv_text;

/// Could a spreadsheet take `field` for a formula? It starts with `=`,
/// `+`, `-`, `@`, TAB or CR and is not a plain decimal number.
pub fn is_risky(field: &str) -> bool {
    field.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_plain_number(field)
}

/// Digits, sign, point and exponent only, and a valid float: what a
/// spreadsheet reads as a number, never as a formula.
fn is_plain_number(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && s.parse::<f64>().is_ok()
}

/// Rewrite `csv` so that no field can run as a formula (see the module
/// documentation). Fields that need no change are copied byte for byte.
pub fn make_safe(csv: &str) -> String {
    let mut out = String::with_capacity(csv.len() + 64);
    let mut rest = csv;
    let mut field = String::new();
    while !rest.is_empty() {
        // One field: quoted (RFC 4180, "" is a quote) or up to , or \n.
        let (raw_len, quoted) = if let Some(body) = rest.strip_prefix('"') {
            field.clear();
            let mut i = 0;
            let b = body.as_bytes();
            loop {
                match body[i..].find('"') {
                    None => {
                        // Unterminated (never written by the server): the
                        // rest is the field.
                        field.push_str(&body[i..]);
                        i = body.len();
                        break;
                    }
                    Some(q) => {
                        field.push_str(&body[i..i + q]);
                        i += q + 1;
                        if b.get(i) == Some(&b'"') {
                            field.push('"');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            (1 + i, true)
        } else {
            let end = rest.find([',', '\n']).unwrap_or(rest.len());
            field.clear();
            field.push_str(&rest[..end]);
            (end, false)
        };
        if is_risky(&field) {
            let mut safe = String::with_capacity(field.len() + 1);
            safe.push('\'');
            safe.push_str(&field);
            write_csv_text(&safe, &mut out);
        } else if quoted {
            out.push_str(&rest[..raw_len]);
        } else {
            out.push_str(&field);
        }
        rest = &rest[raw_len..];
        // The separator after it, if any.
        if let Some(sep) = rest.chars().next() {
            out.push(sep);
            rest = &rest[sep.len_utf8()..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused_numbers_are_kept() {
        let cases: &[(&str, &str)] = &[
            ("time,N1,S2\n", "time,N1,S2\n"),
            (
                "2026-11-23T10:00:00Z,-3.5,=1+1\n",
                "2026-11-23T10:00:00Z,-3.5,'=1+1\n",
            ),
            ("-2+3,+7,-1e3,@SUM(A1)\n", "'-2+3,+7,-1e3,'@SUM(A1)\n"),
            (
                "\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",ok\n",
                "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",ok\n",
            ),
            ("\"a,b\",\"-x,y\"\n", "\"a,b\",\"'-x,y\"\n"),
            ("\"\tx\",-,+,-inf,-nan\n", "'\tx,'-,'+,'-inf,'-nan\n"),
            (",,\n\n", ",,\n\n"),
            ("plain", "plain"),
            ("\"two\nlines\",=x", "\"two\nlines\",'=x"),
        ];
        for (input, want) in cases {
            assert_eq!(&make_safe(input), want, "{input:?}");
        }
    }

    /// A plain RFC 4180 reader (char by char), to check `make_safe` by
    /// another route than its own.
    fn read_csv(text: &str) -> Vec<Vec<String>> {
        let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
        let (mut quoted, mut chars) = (false, text.chars().peekable());
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => field.push(c),
            }
        }
        rows
    }

    proptest::proptest! {
        /// Every field comes back as it was, or with a `'` before it when
        /// it could run as a formula; the table keeps its shape.
        #[test]
        fn only_risky_fields_change(rows in proptest::collection::vec(
            proptest::collection::vec("[-=+@0-9a-z.,\"\n\t e]{0,8}", 1..5), 0..6)) {
            let mut csv = String::new();
            for row in &rows {
                for (i, f) in row.iter().enumerate() {
                    if i > 0 {
                        csv.push(',');
                    }
                    write_csv_text(f, &mut csv);
                }
                csv.push('\n');
            }
            let got = read_csv(&make_safe(&csv));
            let want: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|f| if is_risky(f) { format!("'{f}") } else { f.clone() })
                        .collect()
                })
                .collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
