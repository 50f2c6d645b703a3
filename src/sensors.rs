//! Sensor labels: a human name, a unit and a description per (device,
//! sensor). The wire names (`N1`, `L2`) stay the keys everywhere; labels
//! are shown next to them (`/sensors?labels=1`, `labels=1` on readings
//! queries, the dashboard) and never change what a device sends.
//!
//! Written by management requests on blocking threads (one sensor over
//! HTTP, many in a device bulk import), each in its own transaction.

use crate::codec::names::write_csv_text;
use crate::codec::SensorId;
use crate::error::WireError;
use crate::store::typed::record;
use crate::store::varint::{self, Corrupt, Reader};
use crate::store::{Records, Store, StoreError, SENSOR_LABELS};

/// Longest label, in bytes.
pub const MAX_LABEL: usize = 64;
/// Longest unit, in bytes.
pub const MAX_UNIT: usize = 16;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION: usize = 1000;

/// The fields that describe a sensor, in their column order.
pub const FIELDS: [&str; 3] = ["label", "unit", "description"];

/// `sensor_labels`, read and written as [`Labels`].
pub const LABELS: Records<Labels> = Records::of(SENSOR_LABELS);
record!(Labels, (u32, u32));

/// What a sensor is called and measured in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// A short name: `Temperature`.
    pub label: String,
    /// The unit: `°C`.
    pub unit: String,
    /// Free text.
    pub description: String,
}

impl Labels {
    /// No label, unit or description.
    pub fn is_empty(&self) -> bool {
        self.label.is_empty() && self.unit.is_empty() && self.description.is_empty()
    }

    /// Set `field` (one of [`FIELDS`]) to `value`, checked: printable
    /// one-line text within its bound (`400 bad_value`).
    pub fn set(&mut self, field: &str, value: &str) -> Result<(), WireError> {
        let (slot, max) = match field {
            "label" => (&mut self.label, MAX_LABEL),
            "unit" => (&mut self.unit, MAX_UNIT),
            "description" => (&mut self.description, MAX_DESCRIPTION),
            other => {
                return Err(WireError::bad_request(
                    "bad_parameter",
                    format!(
                        "'{}' is not label, unit or description",
                        crate::codec::names::clip(other)
                    ),
                ))
            }
        };
        *slot = crate::text::text(field, value, max)?;
        Ok(())
    }

    /// Append `,label,unit,description` (RFC 4180 text).
    pub fn write_csv(&self, out: &mut String) {
        for s in [&self.label, &self.unit, &self.description] {
            out.push(',');
            write_csv_text(s, out);
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in [&self.label, &self.unit, &self.description] {
            varint::put_bytes(&mut out, s.as_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Labels, Corrupt> {
        let mut r = Reader::new(bytes);
        let mut s = || String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Corrupt);
        Ok(Labels {
            label: s()?,
            unit: s()?,
            description: s()?,
        })
    }
}

/// Labels of some of a device's sensors.
pub type Described = Vec<(SensorId, Labels)>;

/// A bulk-import column that describes a sensor: `N1.label`,
/// `n1.unit`, `L2.description`. `None` for any other column; `Err` for a
/// column with a `.` that is not one (`400 bad_csv`). Returns the
/// canonical name (`N1.label`) with the sensor and field.
pub fn column(name: &str) -> Option<Result<(String, SensorId, &'static str), WireError>> {
    let (sensor, field) = name.split_once('.')?;
    let Some(field) = FIELDS.iter().find(|f| **f == field) else {
        return Some(Err(WireError::bad_request(
            "bad_csv",
            format!(
                "line 1: column '{}': a sensor's column is SENSOR.label, SENSOR.unit or SENSOR.description",
                crate::codec::names::clip(name)
            ),
        )));
    };
    Some(match SensorId::parse(sensor) {
        Ok(id) => Ok((format!("{id}.{field}"), id, *field)),
        Err(e) => Err(WireError::from(e)),
    })
}

/// Split an imported device's fields into its sensors' labels (the
/// columns of [`column`], checked) and its own fields. Empty cells
/// describe nothing.
pub fn split_columns(
    fields: Vec<(String, String)>,
) -> Result<(Described, Vec<(String, String)>), WireError> {
    let mut labels: Vec<(SensorId, Labels)> = Vec::new();
    let mut rest = Vec::new();
    for (k, v) in fields {
        let Some(col) = column(&k) else {
            rest.push((k, v));
            continue;
        };
        let (_, sensor, field) = col?;
        let i = match labels.iter().position(|(s, _)| *s == sensor) {
            Some(i) => i,
            None => {
                labels.push((sensor, Labels::default()));
                labels.len() - 1
            }
        };
        labels[i].1.set(field, &v)?;
    }
    labels.retain(|(_, l)| !l.is_empty());
    Ok((labels, rest))
}

/// The labels of `sensor` of device `dev` (empty when it has none).
pub fn get_in<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    dev: u32,
    sensor: SensorId,
) -> Result<Labels, StoreError> {
    let txn = txn.into();
    Ok(LABELS
        .open(txn)?
        .get((dev, sensor.code()))?
        .unwrap_or_default())
}

/// Store `labels` for `sensor` of `dev`; empty ones remove the row.
pub fn put<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    dev: u32,
    sensor: SensorId,
    labels: &Labels,
) -> Result<(), StoreError> {
    let txn = txn.into();
    let mut table = LABELS.open(txn)?;
    if labels.is_empty() {
        table.remove((dev, sensor.code()))?;
    } else {
        table.insert((dev, sensor.code()), labels)?;
    }
    Ok(())
}

/// Change the given fields (`label`, `unit`, `description`; an empty
/// value clears one) of `sensor` of device `dev`, keeping the others, in
/// one transaction; the labels as stored. The caller checked each field
/// (`Labels::set`): one that does not pass is left out. Blocking.
pub fn describe(
    store: &Store,
    dev: u32,
    sensor: SensorId,
    given: &[(String, String)],
) -> Result<Labels, StoreError> {
    let labels = store.write(|txn| {
        let mut labels = get_in(txn, dev, sensor)?;
        for (k, v) in given {
            let _ = labels.set(k, v);
        }
        put(txn, dev, sensor, &labels)?;
        Ok::<_, StoreError>(labels)
    })?;
    Ok(labels)
}

/// Every labelled sensor of `dev`, in storage-code order (a device has
/// few; one range scan).
pub fn of_device<'t>(
    txn: impl Into<crate::store::Tx<'t>>,
    dev: u32,
) -> Result<Vec<(SensorId, Labels)>, StoreError> {
    let txn = txn.into();
    let table = LABELS.read(txn)?;
    let mut out = Vec::new();
    for r in table.range((dev, 0)..=(dev, u32::MAX))? {
        let (k, labels) = r?;
        if let Some(id) = SensorId::from_code(k.value().1) {
            out.push((id, labels));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_are_checked() {
        let mut l = Labels::default();
        l.set("label", "Temperature").unwrap();
        l.set("unit", "°C").unwrap();
        l.set("description", "Air, by the door").unwrap();
        assert_eq!(Labels::decode(&l.encode()), Ok(l.clone()));
        let mut s = String::new();
        l.write_csv(&mut s);
        assert_eq!(s, ",Temperature,°C,\"Air, by the door\"");
        for (f, v) in [
            ("label", "x".repeat(65)),
            ("unit", "x".repeat(17)),
            ("label", "a\nb".into()),
            ("unit", "\u{202E}C".into()),
            ("colour", "red".into()),
        ] {
            assert!(l.set(f, &v).is_err(), "{f}={v:?}");
        }
    }
}
