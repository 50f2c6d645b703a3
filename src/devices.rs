//! Devices: create, rotate a token, list. Shared by the CLI and the HTTP
//! handlers so both follow the same rules.

use crate::auth::{self, Directory};
use crate::codec::{names::write_csv_text, timefmt};
use crate::error::WireError;
use crate::store::{DeviceRecord, Store, StoreError};

/// Longest device name.
pub const MAX_NAME: usize = 200;

/// Create a device owned by `owner`. `id` is generated when absent.
/// Returns the record and its token (shown once). Blocking.
pub fn create(
    store: &Store,
    directory: &Directory,
    owner: &str,
    id: Option<&str>,
    name: Option<&str>,
) -> Result<(DeviceRecord, String), WireError> {
    let id = match id {
        Some(id) if !auth::valid_id(id) => {
            return Err(WireError::bad_request(
                "bad_id",
                "a device id is 1-64 of A-Z a-z 0-9 . _ ~ -",
            ))
        }
        Some(id) => id.to_string(),
        None => auth::generate_id(),
    };
    let name = name.unwrap_or(&id).to_string();
    if name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(WireError::bad_request(
            "bad_name",
            "a name is at most 200 bytes of printable text",
        ));
    }
    let token = auth::generate_token();
    let rec = DeviceRecord {
        num: 0,
        id,
        name,
        owner: owner.to_string(),
        token: auth::hash_token(&token),
        prev_token: None,
        created: timefmt::now_micros(),
    };
    let rec = store.create_device(rec).map_err(|e| match e {
        StoreError::Conflict(m) => WireError::new(409, "device_exists", m),
        other => WireError::from(other),
    })?;
    directory.put_device(rec.clone());
    Ok((rec, token))
}

/// Give a device a new token; the previous one stays valid until the next
/// rotation, so a fleet can be updated without downtime. Blocking.
pub fn rotate(
    store: &Store,
    directory: &Directory,
    rec: &DeviceRecord,
) -> Result<String, WireError> {
    let token = auth::generate_token();
    let mut new = rec.clone();
    new.prev_token = Some(rec.token);
    new.token = auth::hash_token(&token);
    store.put_device(&new)?;
    directory.put_device(new);
    Ok(token)
}

/// CSV header of [`write_row`].
pub const LIST_HEADER: &str = "id,name,owner,created,last_seen\n";

/// One device as a CSV row.
pub fn write_row(d: &DeviceRecord, last_seen: Option<i64>, out: &mut String) {
    write_csv_text(&d.id, out);
    out.push(',');
    write_csv_text(&d.name, out);
    out.push(',');
    write_csv_text(&d.owner, out);
    out.push(',');
    timefmt::write_time(d.created, out);
    out.push(',');
    if let Some(t) = last_seen {
        timefmt::write_time(t, out);
    }
    out.push('\n');
}
