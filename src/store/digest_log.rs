//! The digest log: readings that the writer committed and the digest has
//! not yet finished with. One row per group commit, keyed by a sequence
//! number that only grows. The writer inserts the row in the same
//! transaction as the readings, and removes it in the transaction that
//! records the digest's results, so a crash anywhere in between leaves the
//! row to be digested again on the next start.
//!
//! The row holds what the digest needs, not every reading: the new
//! readings of the (device, sensor)s that a channel or an alert follows at
//! commit time (the writer records the devices' last contact itself, in
//! the readings' transaction). A bulk upload nobody follows is not logged
//! a second time, and a commit with nothing followed has no row at all.
//!
//! Row layout: `committed_at:zigzag count:varint { device:varint
//! sensor:varint time:zigzag value }*count` (values as in [`super::chunk`]).

use super::chunk;
use super::typed::Record;
use super::varint::{self, Corrupt, Reader};
use crate::codec::{Micros, Reading, SensorId};

/// One committed batch as the digest sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestBatch {
    /// Key in `digest_log`.
    pub seq: u64,
    /// When the writer committed it (the devices' last contact).
    pub committed_at: Micros,
    /// New readings (retries already removed) that a channel or an alert
    /// follows, in commit order.
    pub readings: Vec<(u32, Reading)>,
}

impl DigestBatch {
    /// Encode the row value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.readings.len() * 12);
        varint::put_i64(&mut out, self.committed_at);
        varint::put_u64(&mut out, self.readings.len() as u64);
        for (device, r) in &self.readings {
            varint::put_u64(&mut out, u64::from(*device));
            varint::put_u64(&mut out, u64::from(r.sensor.code()));
            varint::put_i64(&mut out, r.time);
            chunk::put_value(&mut out, &r.value, &mut chunk::Prev::default());
        }
        out
    }

    /// Decode a row.
    pub fn decode(seq: u64, bytes: &[u8]) -> Result<Self, Corrupt> {
        let mut r = Reader::new(bytes);
        let committed_at = r.i64()?;
        let n = r.u64()?;
        let mut readings = Vec::with_capacity(n.min(1 << 20) as usize);
        for _ in 0..n {
            let device = u32::try_from(r.u64()?).map_err(|_| Corrupt)?;
            let code = u32::try_from(r.u64()?).map_err(|_| Corrupt)?;
            let sensor = SensorId::from_code(code).ok_or(Corrupt)?;
            let time = r.i64()?;
            let value = chunk::get_value(&mut r, sensor.kind, &mut chunk::Prev::default())?;
            readings.push((
                device,
                Reading {
                    sensor,
                    time,
                    value,
                },
            ));
        }
        Ok(DigestBatch {
            seq,
            committed_at,
            readings,
        })
    }
}

/// Stored in `digest_log` (`super::tables::DIGEST_LOG`), keyed by its
/// seq.
impl Record for DigestBatch {
    type Key = u64;
    fn to_row(&self) -> Vec<u8> {
        self.encode()
    }
    fn from_row(seq: u64, bytes: &[u8]) -> Result<Self, Corrupt> {
        Self::decode(seq, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Value;

    #[test]
    fn batch_round_trips() {
        let b = DigestBatch {
            seq: 9,
            committed_at: 1_795_428_000_000_000,
            readings: vec![
                (
                    1,
                    Reading {
                        sensor: SensorId::parse("N1").unwrap(),
                        time: 5,
                        value: Value::Num(21.5),
                    },
                ),
                (
                    2,
                    Reading {
                        sensor: SensorId::parse("I7").unwrap(),
                        time: 6,
                        value: Value::Int(-9),
                    },
                ),
                (
                    2,
                    Reading {
                        sensor: SensorId::parse("S2").unwrap(),
                        time: 7,
                        value: Value::Str("hi".into()),
                    },
                ),
            ],
        };
        assert_eq!(DigestBatch::decode(9, &b.encode()), Ok(b));
    }
}
