//! `text/csv` bodies (`API.md` §3).
//!
//! The header row names `time` (optional for a single row), an optional
//! `device` column (for a principal that may write several devices), and
//! sensor columns. An empty field means "no value for this sensor at this
//! time". Errors carry the CSV line and column. A large body may be
//! parsed in two halves at once (`split.rs`), with the same result.

use super::{timefmt, CodecError, Limits, Micros, Reading, SensorId, Value};

mod split;

pub use split::{parse_csv_charged, parse_csv_split, SPLIT_BYTES};

/// A parsed CSV body.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CsvReadings {
    /// Distinct values of the `device` column, in order of first use; empty
    /// when the body has no `device` column.
    pub devices: Vec<String>,
    /// Each reading with the index into `devices` of its row's device
    /// (`None` when there is no `device` column).
    pub readings: Vec<(Option<u32>, Reading)>,
    /// Data rows in the body.
    pub rows: usize,
}

enum Column {
    Time,
    Device,
    Sensor(SensorId),
}

/// Parse a whole CSV body. `now` stands for `time` in a single-row body
/// without a `time` column.
pub fn parse_csv(body: &[u8], now: Micros, limits: &Limits) -> Result<CsvReadings, CodecError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    parse_part(body, now, limits, true, &|_| true)
}

/// Bytes of memory per parsed reading in [`CsvReadings::readings`]: what a
/// caller charges against its memory budget through the `grow` hook of
/// [`parse_csv_charged`].
pub const READING_BYTES: usize = std::mem::size_of::<(Option<u32>, Reading)>();

/// Asked before the readings vector grows, with the bytes it would add;
/// `false` stops the parse with `over_budget`. It must be callable from
/// two threads at once (a split parse).
pub type Grow<'a> = &'a (dyn Fn(usize) -> bool + Sync);

/// The error when `grow` refused: the body's readings do not fit the
/// memory the caller has for them.
pub const OVER_BUDGET: &str = "over_budget";

fn over_budget() -> CodecError {
    CodecError::new(
        OVER_BUDGET,
        "not enough memory for the readings of this body",
    )
}

/// Parse `body` (BOM removed). `whole`: it is the whole body, so it must
/// have a data row; a half of a split body need not.
fn parse_part(
    body: &[u8],
    now: Micros,
    limits: &Limits,
    whole: bool,
    grow: Grow<'_>,
) -> Result<CsvReadings, CodecError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_reader(body);
    let mut record = csv::ByteRecord::new();
    let mut lines = LineCounter::default();

    // Header row.
    if !read(&mut rdr, &mut record, body, &mut lines)? {
        return Err(CodecError::new("bad_csv", "empty body: expected a header row").at(1, None));
    }
    let header_line = lines.line_of(body, record.position()).max(1);
    let header = Header::parse(&record, header_line, limits)?;

    let mut out = CsvReadings::default();
    let mut device_index: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut first_line = None;
    while read(&mut rdr, &mut record, body, &mut lines)? {
        let line = lines.line_of(body, record.position());
        out.rows += 1;
        if out.rows == 2 && header.time_col.is_none() {
            return Err(CodecError::new(
                "missing_time",
                "a body with more than one row needs a time column",
            )
            .at(first_line.unwrap_or(line), None));
        }
        first_line.get_or_insert(line);
        let row = Row {
            record: &record,
            columns: &header.columns,
            line,
        };
        let time = match header.time_col {
            Some(i) => timefmt::parse_time(row.field(i)?, now, limits)
                .map_err(|e| e.named("time").at(line, Some(i + 1)))?,
            None => now,
        };
        let device = match header.device_col {
            Some(i) => Some(row.device(i, &mut out.devices, &mut device_index)?),
            None => None,
        };
        row.push_readings(time, device, limits, grow, &mut out.readings)?;
    }
    if out.rows == 0 && whole {
        return Err(
            CodecError::new("bad_csv", "a header row but no data rows").at(header_line, None)
        );
    }
    Ok(out)
}

/// The header row: the columns in order, and where `time` and `device` are.
struct Header {
    columns: Vec<(String, Column)>,
    time_col: Option<usize>,
    device_col: Option<usize>,
}

impl Header {
    /// Read the header `record` (on line `line`): every column a sensor
    /// name, `time` or `device`, none twice, at most `max_fields`.
    fn parse(record: &csv::ByteRecord, line: u64, limits: &Limits) -> Result<Header, CodecError> {
        if record.len() > limits.max_fields {
            return Err(super::too_many_fields(limits.max_fields).at(line, None));
        }
        let mut columns = Vec::with_capacity(record.len());
        let (mut time_col, mut device_col) = (None, None);
        // Sensors seen so far, in a hash set: the duplicate check is O(1) per
        // column, not a scan of every earlier one.
        let mut sensors = std::collections::HashSet::with_capacity(record.len());
        for (i, raw) in record.iter().enumerate() {
            let col = i + 1;
            let name = std::str::from_utf8(raw)
                .map_err(|_| CodecError::new("bad_csv", "header is not UTF-8").at(line, Some(col)))?
                .trim();
            let at = |e: CodecError| e.at(line, Some(col));
            let c = if name.eq_ignore_ascii_case("time") {
                Column::Time
            } else if name.eq_ignore_ascii_case("device") {
                Column::Device
            } else {
                Column::Sensor(SensorId::parse(name).map_err(at)?)
            };
            let dup = match &c {
                Column::Time => time_col.replace(i).is_some(),
                Column::Device => device_col.replace(i).is_some(),
                Column::Sensor(s) => !sensors.insert(*s),
            };
            if dup {
                return Err(at(
                    CodecError::new("duplicate_field", "column given twice").named(name)
                ));
            }
            columns.push((name.to_string(), c));
        }
        Ok(Header {
            columns,
            time_col,
            device_col,
        })
    }
}

/// One data row, with the header's columns and its line number.
struct Row<'a> {
    record: &'a csv::ByteRecord,
    columns: &'a [(String, Column)],
    line: u64,
}

impl Row<'_> {
    /// Field `i` as text.
    #[inline]
    fn field(&self, i: usize) -> Result<&str, CodecError> {
        std::str::from_utf8(&self.record[i]).map_err(|_| {
            CodecError::new("bad_encoding", "not valid UTF-8")
                .named(&self.columns[i].0)
                .at(self.line, Some(i + 1))
        })
    }

    /// The row's device (column `i`) as an index into `devices`, which
    /// gets it on its first use.
    #[inline]
    fn device(
        &self,
        i: usize,
        devices: &mut Vec<String>,
        index: &mut std::collections::HashMap<String, u32>,
    ) -> Result<u32, CodecError> {
        let id = self.field(i)?.trim();
        if id.is_empty() {
            return Err(CodecError::new("unknown_device", "empty device id")
                .named("device")
                .at(self.line, Some(i + 1)));
        }
        Ok(match index.get(id) {
            Some(k) => *k,
            None => {
                let k = devices.len() as u32;
                devices.push(id.to_string());
                index.insert(id.to_string(), k);
                k
            }
        })
    }

    /// Push a reading for each sensor column with a value, asking `grow`
    /// before `readings` takes more memory.
    #[inline]
    fn push_readings(
        &self,
        time: Micros,
        device: Option<u32>,
        limits: &Limits,
        grow: Grow<'_>,
        readings: &mut Vec<(Option<u32>, Reading)>,
    ) -> Result<(), CodecError> {
        for (i, (name, col)) in self.columns.iter().enumerate() {
            let Column::Sensor(sensor) = col else {
                continue;
            };
            let text = self.field(i)?;
            if text.is_empty() {
                continue;
            }
            let value = Value::parse(sensor.kind, text, limits)
                .map_err(|e| e.named(name).at(self.line, Some(i + 1)))?;
            if readings.len() == readings.capacity() {
                // Grow by what there is (at least 1,024, at most 2^20
                // readings at a time), after `grow` said yes.
                let extra = readings.capacity().clamp(1024, 1 << 20);
                if !grow(extra * READING_BYTES) {
                    return Err(over_budget().at(self.line, None));
                }
                readings.reserve_exact(extra);
            }
            readings.push((
                device,
                Reading {
                    sensor: *sensor,
                    time,
                    value,
                },
            ));
        }
        Ok(())
    }
}

/// Line numbers from byte offsets. The csv crate counts a line when it
/// consumes its `\n`, so with CRLF endings a record's position can still
/// be on the previous line's `\n`; counting newlines ourselves gives the
/// same numbers for LF and CRLF bodies. Incremental: each byte is looked
/// at once over the whole body.
#[derive(Default)]
struct LineCounter {
    upto: usize,
    newlines: u64,
}

impl LineCounter {
    fn line_of(&mut self, body: &[u8], pos: Option<&csv::Position>) -> u64 {
        let Some(pos) = pos else { return 0 };
        let at = (pos.byte() as usize).min(body.len());
        if at >= self.upto {
            self.newlines += memchr::memchr_iter(b'\n', &body[self.upto..at]).count() as u64;
            self.upto = at;
        } else {
            self.upto = at;
            self.newlines = memchr::memchr_iter(b'\n', &body[..at]).count() as u64;
        }
        // Still on the `\n` that ends the previous line: the record
        // starts after it.
        self.newlines + 1 + u64::from(body.get(at) == Some(&b'\n'))
    }
}

fn read(
    rdr: &mut csv::Reader<&[u8]>,
    record: &mut csv::ByteRecord,
    body: &[u8],
    lines: &mut LineCounter,
) -> Result<bool, CodecError> {
    rdr.read_byte_record(record).map_err(|e| {
        let line = lines.line_of(body, e.position());
        let msg = match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => {
                format!("expected {expected_len} fields like the header, found {len}")
            }
            _ => "malformed CSV".to_string(),
        };
        CodecError::new("bad_csv", msg).at(line, None)
    })
}

#[cfg(test)]
mod tests {
    use super::split::split_point;
    use super::*;

    const NOW: Micros = 1_795_428_000_000_000;

    fn parse(body: &str) -> Result<CsvReadings, CodecError> {
        parse_csv(body.as_bytes(), NOW, &Limits::default())
    }

    /// A body of `rows` rows over 7 devices, just over [`SPLIT_BYTES`].
    fn big(eol: &str, device: bool) -> String {
        let mut b = String::from(if device {
            "time,device,N1,I2"
        } else {
            "time,N1,I2"
        });
        b.push_str(eol);
        let mut i = 0u64;
        while b.len() <= SPLIT_BYTES + 4096 {
            let t = 1_795_000_000 + i;
            if device {
                b.push_str(&format!("{t},dev{},{}.5,{i}{eol}", i % 7, i % 100));
            } else {
                b.push_str(&format!("{t},{}.5,{i}{eol}", i % 100));
            }
            if i % 1000 == 999 {
                b.push_str(eol); // a blank line now and then
            }
            i += 1;
        }
        b
    }

    #[test]
    fn a_split_parse_is_exactly_the_whole_parse() {
        let lim = Limits::default();
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for (eol, device) in [("\n", false), ("\r\n", true), ("\n", true)] {
            bodies.push(big(eol, device).into_bytes());
        }
        // BOM; a device first seen in the second half.
        let mut b = b"\xEF\xBB\xBF".to_vec();
        b.extend_from_slice(big("\n", true).as_bytes());
        b.extend_from_slice(b"1795300000,late-device,1,1\n");
        bodies.push(b);
        // Errors early, late, and on the line right after the cut.
        let base = big("\n", false).into_bytes();
        let (_, first, _) = split_point(&base).unwrap();
        let cut = first.len();
        for at in [40, base.len() - 10, cut + 3] {
            let mut b = base.clone();
            b[at] = b'x';
            bodies.push(b);
        }
        // Two errors, one in each half: the first one is reported.
        let mut b = base.clone();
        b[60] = b'x';
        b[base.len() - 10] = b'x';
        bodies.push(b);
        for (k, body) in bodies.iter().enumerate() {
            let whole = parse_csv(body, NOW, &lim);
            assert_eq!(whole.is_err(), k >= 4, "case {k}: {whole:?}");
            assert!(
                split_point(body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)).is_some(),
                "case {k} is split"
            );
            assert_eq!(parse_csv_split(body, NOW, &lim, true), whole, "case {k}");
            assert_eq!(parse_csv_split(body, NOW, &lim, false), whole, "case {k}");
        }
        // Not split: small, quoted, or no time column.
        assert!(split_point(b"time,N1\n1,2\n").is_none());
        let mut quoted = base.clone();
        quoted[30] = b'"';
        assert!(split_point(&quoted).is_none());
        let no_time = big("\n", false).replacen("time,", "N9,", 1);
        assert!(split_point(no_time.as_bytes()).is_none());
    }

    /// `(body, readings or error code, error line)`: one case per line.
    #[test]
    fn bodies() {
        type Want = Result<usize, (&'static str, u64)>;
        let cases: &[(&[u8], Want)] = &[
            (b"time,N1,I2,S3\n2026-11-23T10:00:00Z,21.5,3,door open\n2026-11-23T10:01:00Z,21.7,,\n", Ok(4)),
            (b"N1,L2\n21.5,1\n", Ok(2)),
            (b"N1,L2\r\n21.5,1\r\n", Ok(2)),
            (b"time,N1\r\n1795428000,1\n1795428060,2\r\n", Ok(2)),
            (b"\xEF\xBB\xBFtime,N1\n1795428000,1\n", Ok(1)),
            (b"time,S1\n1795428000,\"a, \"\"quoted\"\"\nvalue\"\n1795428060,x\n", Ok(2)),
            (b"time,N1\n1795428000,1\n\n1795428060,2\n", Ok(2)),
            (b"Time,n1\n1795428000,1\n", Ok(1)),
            (b"time,N1\n1795428000,\n", Ok(0)),
            (b"", Err(("bad_csv", 1))),
            (b"\xEF\xBB\xBF", Err(("bad_csv", 1))),
            (b"time,N1\n", Err(("bad_csv", 1))),
            (b"N1\n1\n2\n", Err(("missing_time", 2))),
            (b"time,N1,N1\n1795428000,1,2\n", Err(("duplicate_field", 1))),
            (b"time,N1,time\n1795428000,1,2\n", Err(("duplicate_field", 1))),
            (b"time,X1\n1795428000,1\n", Err(("bad_sensor_name", 1))),
            (b"time,,N1\n1795428000,1,2\n", Err(("bad_sensor_name", 1))),
            (b"time,N1\n1795428000,NaN\n", Err(("bad_value", 2))),
            (b"time,I1\n1795428000,1\n1795428060,99999999999999999999\n", Err(("bad_value", 3))),
            (b"time,N1\n1795428000,1,2\n", Err(("bad_csv", 2))),
            (b"time,N1\n1795428000\n", Err(("bad_csv", 2))),
            (b"time,S1\n1795428000,\xff\xfe\n", Err(("bad_encoding", 2))),
            (b"time,N1\nnot-a-time,1\n", Err(("bad_time", 2))),
            (b"time,N1\n,1\n", Err(("bad_time", 2))),
            (b"time,N1\n99999999999,1\n", Err(("bad_time", 2))),
            (b"t\xffme,N1\n1,2\n", Err(("bad_csv", 1))),
            (b"time,device,N1,device\n1795428000,a,1,a\n", Err(("duplicate_field", 1))),
        ];
        for (body, want) in cases {
            let got = parse_csv(body, NOW, &Limits::default());
            let got = got
                .map(|r| r.readings.len())
                .map_err(|e| (e.code, e.at.line.unwrap_or(0)));
            assert_eq!(got, *want, "body {:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn positions_are_reported() {
        let e = parse("time,N1,I2\n1795428000,1,2\n1795428060,1,x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3 column 3: I2: 'x' is not a 64-bit integer"
        );
    }

    #[test]
    fn positions_count_crlf_lines_like_lf_lines() {
        for nl in ["\n", "\r\n"] {
            let body = format!("time,S1{nl}1795428000,a{nl}1795428001,b\0{nl}");
            let e = parse(&body).unwrap_err();
            assert!(e.to_string().starts_with("line 3 "), "{nl:?}: {e}");
        }
    }

    #[test]
    fn quoted_text_with_newline_survives() {
        let r = parse("time,S1\n1795428000,\"two\nlines\"\n").unwrap();
        assert_eq!(r.readings[0].1.value, Value::Str("two\nlines".into()));
    }

    #[test]
    fn device_column_is_indexed() {
        let r = parse("time,device,N1\n1795428000,a,1\n1795428000,b,2\n1795428060,a,3\n").unwrap();
        assert_eq!(r.devices, vec!["a", "b"]);
        let devs: Vec<_> = r.readings.iter().map(|(d, _)| *d).collect();
        assert_eq!(devs, vec![Some(0), Some(1), Some(0)]);
    }

    #[test]
    fn readings_grow_only_as_far_as_grow_allows() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let mut body = String::from("time,I1,I2,I3,I4\n");
        for t in 0..2000 {
            body.push_str(&format!("{},1,2,3,4\n", 1_795_000_000 + t));
        }
        let asked = AtomicUsize::new(0);
        let all = parse_csv_charged(body.as_bytes(), NOW, &Limits::default(), false, &|n| {
            asked.fetch_add(n, Ordering::Relaxed);
            true
        })
        .unwrap();
        assert_eq!(all.readings.len(), 8000);
        let asked = asked.into_inner();
        assert_eq!(
            asked,
            all.readings.capacity() * READING_BYTES,
            "every byte asked for"
        );
        // A budget for fewer readings than the body has stops the parse.
        let total = AtomicUsize::new(0);
        let e = parse_csv_charged(body.as_bytes(), NOW, &Limits::default(), false, &|n| {
            total.fetch_add(n, Ordering::Relaxed) + n <= 4096 * READING_BYTES
        })
        .map(|r| r.readings.len())
        .unwrap_err();
        assert_eq!(e.code, OVER_BUDGET);
    }

    #[test]
    fn a_header_over_max_fields_is_refused() {
        let lim = Limits {
            max_fields: 3,
            ..Limits::default()
        };
        let ok = parse_csv(b"time,N1,N2\n1795428000,1,2\n", NOW, &lim).unwrap();
        assert_eq!(ok.readings.len(), 2);
        let e = parse_csv(b"time,N1,N2,N3\n1795428000,1,2,3\n", NOW, &lim).unwrap_err();
        assert_eq!((e.code, e.at.line), ("too_many_fields", Some(1)));
        assert!(e.to_string().contains("more than 3 fields"), "{e}");
    }

    #[test]
    fn ten_megabyte_line_is_a_bad_value_not_a_crash() {
        let body = format!("time,S1\n1795428000,{}\n", "x".repeat(10 << 20));
        assert_eq!(parse(&body).unwrap_err().code, "bad_value");
    }
}
