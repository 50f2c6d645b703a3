//! Per-minute aggregates: what the retention sweep keeps of a minute of a
//! numeric sensor when it removes the minute's readings (see
//! `crate::retention` and `[retention] aggregate_keep_days`).
//!
//! One row per `(device, sensor, minute)` in the `aggregates` table: the
//! count, minimum, maximum and sum of the minute's readings (the mean is
//! sum / count). Only `N` and `I` sensors are aggregated; `S`, `B`, `L`
//! and `D` readings have no meaningful min/max/mean and are simply removed.
//!
//! Layout (integers LEB128, signed ones zigzag):
//!
//! ```text
//! I:  0:u8  count:varint  min:zigzag  max:zigzag  sum:16 bytes LE (i128)
//! N:  1:u8  count:varint  min:f64 LE  max:f64 LE  sum:f64 LE
//! ```
//!
//! An `I` sum is exact (i128 cannot overflow with fewer than 2^64
//! readings); an `N` sum is a float sum.

use super::parts::minute;
use super::query::{SeriesCsv, SeriesQuery};
use super::typed::record;
use super::varint::{self, Corrupt, Reader};
use super::{chunk, StoreError, AGGREGATES};
use crate::codec::{SensorKind, Value};

/// The aggregate of one minute of one sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    /// An `I` sensor's minute.
    Int {
        /// Readings.
        count: u64,
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
        /// Exact sum.
        sum: i128,
    },
    /// An `N` sensor's minute.
    Num {
        /// Readings.
        count: u64,
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
        /// Float sum.
        sum: f64,
    },
}

/// Whether readings of `kind` are aggregated (`N` and `I`).
pub fn aggregated(kind: SensorKind) -> bool {
    matches!(kind, SensorKind::Int | SensorKind::Num)
}

// Stored in `aggregates` (`super::tables::AGGREGATES`).
record!(Agg, (u32, u32, u32));

impl Agg {
    /// The aggregate of one value; `None` for a kind that is not aggregated.
    pub fn of(value: &Value) -> Option<Agg> {
        match *value {
            Value::Int(i) => Some(Agg::Int {
                count: 1,
                min: i,
                max: i,
                sum: i128::from(i),
            }),
            Value::Num(f) => Some(Agg::Num {
                count: 1,
                min: f,
                max: f,
                sum: f,
            }),
            _ => None,
        }
    }

    /// Fold `other` (of the same sensor) into `self`. Aggregates of
    /// different kinds (which one sensor never has) leave `self` as it is.
    pub fn merge(&mut self, other: &Agg) {
        match (self, other) {
            (
                Agg::Int {
                    count,
                    min,
                    max,
                    sum,
                },
                Agg::Int {
                    count: c,
                    min: lo,
                    max: hi,
                    sum: s,
                },
            ) => {
                *count += c;
                *min = (*min).min(*lo);
                *max = (*max).max(*hi);
                *sum += s;
            }
            (
                Agg::Num {
                    count,
                    min,
                    max,
                    sum,
                },
                Agg::Num {
                    count: c,
                    min: lo,
                    max: hi,
                    sum: s,
                },
            ) => {
                *count += c;
                *min = min.min(*lo);
                *max = max.max(*hi);
                *sum += s;
            }
            _ => {}
        }
    }

    /// Readings aggregated.
    pub fn count(&self) -> u64 {
        match self {
            Agg::Int { count, .. } | Agg::Num { count, .. } => *count,
        }
    }

    /// The stored form (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        match *self {
            Agg::Int {
                count,
                min,
                max,
                sum,
            } => {
                out.push(0);
                varint::put_u64(&mut out, count);
                varint::put_i64(&mut out, min);
                varint::put_i64(&mut out, max);
                out.extend_from_slice(&sum.to_le_bytes());
            }
            Agg::Num {
                count,
                min,
                max,
                sum,
            } => {
                out.push(1);
                varint::put_u64(&mut out, count);
                out.extend_from_slice(&min.to_le_bytes());
                out.extend_from_slice(&max.to_le_bytes());
                out.extend_from_slice(&sum.to_le_bytes());
            }
        }
        out
    }

    /// Inverse of [`Agg::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Agg, Corrupt> {
        let mut r = Reader::new(bytes);
        let f64_of = |r: &mut Reader<'_>| -> Result<f64, Corrupt> {
            let b: [u8; 8] = r.take(8)?.try_into().map_err(|_| Corrupt)?;
            Ok(f64::from_le_bytes(b))
        };
        let agg = match r.u8()? {
            0 => {
                let count = r.u64()?;
                let min = r.i64()?;
                let max = r.i64()?;
                let b: [u8; 16] = r.take(16)?.try_into().map_err(|_| Corrupt)?;
                Agg::Int {
                    count,
                    min,
                    max,
                    sum: i128::from_le_bytes(b),
                }
            }
            1 => {
                let count = r.u64()?;
                let min = f64_of(&mut r)?;
                let max = f64_of(&mut r)?;
                let sum = f64_of(&mut r)?;
                Agg::Num {
                    count,
                    min,
                    max,
                    sum,
                }
            }
            _ => return Err(Corrupt),
        };
        if !r.is_empty() {
            return Err(Corrupt);
        }
        Ok(agg)
    }

    /// Append `count,min,max,mean` as four CSV fields.
    pub fn write_csv(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = match *self {
            Agg::Int {
                count,
                min,
                max,
                sum,
            } => write!(
                out,
                "{count},{min},{max},{}",
                sum as f64 / count.max(1) as f64
            ),
            Agg::Num {
                count,
                min,
                max,
                sum,
            } => write!(out, "{count},{min},{max},{}", sum / count.max(1) as f64),
        };
    }
}

/// The aggregates of chosen sensors of one device over a time range, as
/// CSV `time,N1_count,N1_min,N1_max,N1_mean,...`: one row per minute
/// (its start time, within `from..=to`) that has an aggregate of any of
/// the sensors, oldest first, empty fields for a sensor without one.
/// `q.sensors` empty means every `N` and `I` sensor the device has; the
/// caller has checked that the sensors are `N` or `I`. Blocking.
pub fn read_aggregates(
    store: &crate::store::Store,
    q: &SeriesQuery,
) -> Result<SeriesCsv, StoreError> {
    store.read(|txn| {
        let table = AGGREGATES.read(txn)?;
        let sensors = if q.sensors.is_empty() {
            let mut all = super::query::device_sensors(txn, q.device)?;
            all.retain(|s| aggregated(s.kind));
            all
        } else {
            q.sensors.clone()
        };
        let from = q.from.max(0);
        let to = q.to;
        let want = q.limit.saturating_add(1);
        // One sorted stream of (minute start, aggregate) per sensor.
        let mut series: Vec<Vec<(i64, Agg)>> = Vec::with_capacity(sensors.len());
        for s in &sensors {
            let mut out = Vec::new();
            if from <= to {
                for row in table
                    .range((q.device, s.code(), minute(from))..=(q.device, s.code(), minute(to)))?
                {
                    let (k, agg) = row?;
                    let t = i64::from(k.value().2) * chunk::MINUTE_US;
                    if t < from || t > to {
                        continue;
                    }
                    out.push((t, agg));
                    if out.len() >= want {
                        break;
                    }
                }
            }
            series.push(out);
        }

        let mut text = String::from("time");
        for s in &sensors {
            for col in ["count", "min", "max", "mean"] {
                text.push_str(&format!(",{s}_{col}"));
            }
        }
        text.push('\n');
        let (rows, next_from) =
            super::query::merge_rows(&series, q.limit, &mut text, |a, out| match a {
                Some(a) => a.write_csv(out),
                None => out.push_str(",,,"),
            });
        Ok(SeriesCsv {
            text,
            rows,
            next_from,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_round_trip_and_merge() {
        let mut a = Agg::of(&Value::Int(-5)).unwrap();
        a.merge(&Agg::of(&Value::Int(i64::MAX)).unwrap());
        a.merge(&Agg::of(&Value::Int(i64::MAX)).unwrap());
        assert_eq!(a.count(), 3);
        assert_eq!(Agg::decode(&a.encode()).unwrap(), a);
        let Agg::Int { min, max, sum, .. } = a else {
            panic!("{a:?}")
        };
        assert_eq!((min, max), (-5, i64::MAX));
        assert_eq!(sum, 2 * i128::from(i64::MAX) - 5, "no overflow");

        let mut n = Agg::of(&Value::Num(1.5)).unwrap();
        n.merge(&Agg::of(&Value::Num(-2.5)).unwrap());
        n.merge(&Agg::of(&Value::Num(7.0)).unwrap());
        assert_eq!(Agg::decode(&n.encode()).unwrap(), n);
        let mut s = String::new();
        n.write_csv(&mut s);
        assert_eq!(s, "3,-2.5,7,2");
        // Kinds never mix.
        let before = n;
        n.merge(&a);
        assert_eq!(n, before);
        assert!(Agg::of(&Value::Bool(true)).is_none());
        assert!(Agg::decode(&[2, 1]).is_err());
        let mut long = n.encode();
        long.push(0);
        assert!(Agg::decode(&long).is_err());
    }
}
