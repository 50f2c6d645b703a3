//! Devices: create, rotate a token, list. Shared by the CLI and the HTTP
//! handlers so both follow the same rules.

use std::sync::Arc;

use crate::auth::{self, Directory};
use crate::codec::names::{clip, write_csv_text};
use crate::codec::timefmt;
use crate::error::WireError;
use crate::presence::{Presence, State};
use crate::store::{DeviceMeta, DeviceRecord, Store, StoreError};

/// Longest device name.
pub const MAX_NAME: usize = 200;

/// Create a device owned by `owner`. `id` is generated when absent;
/// `fields` are metadata as in [`FIELDS`]. Returns the record and its
/// token (shown once). Blocking.
pub fn create(
    store: &Store,
    directory: &Directory,
    owner: &str,
    id: Option<&str>,
    fields: &[(String, String)],
) -> Result<(DeviceRecord, String), WireError> {
    let (rec, token) = new_record(directory, owner, id, fields)?;
    let rec = store.create_device(rec).map_err(conflict)?;
    directory.put_device(rec.clone());
    Ok((rec, token))
}

fn conflict(e: StoreError) -> WireError {
    match e {
        StoreError::Conflict(m) => WireError::new(409, "device_exists", m),
        other => WireError::from(other),
    }
}

/// A new record (number 0 until stored) and its token.
fn new_record(
    directory: &Directory,
    owner: &str,
    id: Option<&str>,
    fields: &[(String, String)],
) -> Result<(DeviceRecord, String), WireError> {
    let id = match id {
        Some(id) if !auth::valid_id(id) => {
            return Err(WireError::bad_request(
                "bad_id",
                format!("'{}': a device id is 1-64 of A-Z a-z 0-9 . _ ~ -", clip(id)),
            ))
        }
        Some(id) => id.to_string(),
        None => auth::generate_id(),
    };
    let token = auth::generate_token();
    let mut rec = DeviceRecord {
        num: 0,
        name: id.clone(),
        id,
        owner: owner.to_string(),
        token: auth::hash_token(&token),
        prev_token: None,
        created: timefmt::now_micros(),
        meta: DeviceMeta::default(),
    };
    for (k, v) in fields {
        set_field(directory, &mut rec, k, v)?;
    }
    Ok((rec, token))
}

/// One row of a bulk registration: the id and its metadata fields.
pub type NewDevice = (String, Vec<(String, String)>);

/// Register many devices at once, all or none, in one transaction.
///
/// With `gateway`, every device is placed below it (its `parent` is the
/// gateway whatever the row says), and a device that already exists
/// below this gateway is left as it is and listed without a token, so a
/// gateway can register its devices again on every boot. Any other
/// existing id is `409 device_exists`. With `quota` > 0 the owner may
/// own at most that many devices afterwards (`403 quota_exceeded`; see
/// [`crate::quotas`]). Returns `(record, Some(token))` for every new
/// device. Blocking.
pub fn create_many(
    store: &Store,
    directory: &Directory,
    owner: &str,
    rows: Vec<NewDevice>,
    gateway: Option<&DeviceRecord>,
    quota: u64,
) -> Result<Vec<(DeviceRecord, Option<String>)>, WireError> {
    // Count and create under the quota lock, until the directory holds
    // the new devices, so concurrent creations cannot overshoot.
    let _quota = crate::quotas::guard();
    let mut out: Vec<(DeviceRecord, Option<String>)> = Vec::with_capacity(rows.len());
    let mut fresh = Vec::new();
    let mut tokens = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut labels = Vec::new();
    for (id, fields) in rows {
        let (described, mut fields) = crate::sensors::split_columns(fields)?;
        if !seen.insert(id.clone()) {
            return Err(WireError::bad_request(
                "duplicate_field",
                format!("device '{}' is listed twice", clip(&id)),
            ));
        }
        if let Some(gw) = gateway {
            fields.retain(|(k, _)| k != "parent" && k != "gateway");
            fields.push(("parent".into(), gw.id.clone()));
            if let Some(existing) = directory.device(&id) {
                if existing.meta.parent == Some(gw.num) {
                    out.push(((*existing).clone(), None));
                    continue;
                }
                return Err(WireError::new(
                    409,
                    "device_exists",
                    format!(
                        "device '{}' exists and is not below this gateway",
                        clip(&id)
                    ),
                ));
            }
        }
        let (rec, token) = new_record(directory, owner, Some(&id), &fields)?;
        fresh.push(rec);
        tokens.push(token);
        labels.push(described);
    }
    crate::quotas::check(
        "devices",
        "devices_per_user",
        quota,
        directory.count_owned_devices(owner),
        fresh.len() as u64,
    )?;
    // Sensor labels (`N1.label` columns) in the devices' transaction.
    let stored = store
        .create_devices_with(fresh, |txn, recs| {
            for (rec, described) in recs.iter().zip(&labels) {
                for (sensor, l) in described {
                    crate::sensors::put(txn, rec.num, *sensor, l)?;
                }
            }
            Ok(())
        })
        .map_err(conflict)?;
    for (rec, token) in stored.into_iter().zip(tokens) {
        directory.put_device(rec.clone());
        out.push((rec, Some(token)));
    }
    Ok(out)
}

/// Change metadata `fields` of a device and store it. Blocking.
pub fn update(
    store: &Store,
    directory: &Directory,
    rec: &DeviceRecord,
    fields: &[(String, String)],
) -> Result<DeviceRecord, WireError> {
    let mut new = rec.clone();
    for (k, v) in fields {
        set_field(directory, &mut new, k, v)?;
    }
    store.put_device(&new)?;
    directory.put_device(new.clone());
    Ok(new)
}

/// The metadata fields a device has, as named in forms, CSV imports and
/// listings.
pub const FIELDS: &[&str] = &[
    "name",
    "description",
    "location",
    "latitude",
    "longitude",
    "kind",
    "parent",
    "gateway",
    "tags",
    "offline_after",
];

/// Gateways nest at most this deep.
pub const MAX_DEPTH: usize = 8;

/// Longest description or location.
pub const MAX_TEXT: usize = 1000;
/// Most tags, and longest tag.
pub const MAX_TAGS: usize = 32;

fn coordinate(field: &str, v: &str, limit: f64) -> Result<Option<f64>, WireError> {
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() && f.abs() <= limit => Ok(Some(f)),
        _ => Err(WireError::bad_request(
            "bad_value",
            format!("{field}: a number of degrees in -{limit}..{limit}"),
        )),
    }
}

/// Set one metadata field from its text form (empty clears it).
pub fn set_field(
    directory: &Directory,
    rec: &mut DeviceRecord,
    field: &str,
    v: &str,
) -> Result<(), WireError> {
    let m = &mut rec.meta;
    match field {
        "name" => rec.name = name_field(v)?,
        "description" => m.description = crate::text::text(field, v, MAX_TEXT)?,
        "location" => m.location = crate::text::text(field, v, MAX_TEXT)?,
        "kind" => m.kind = crate::text::text(field, v, 64)?,
        "latitude" => m.latitude = coordinate(field, v, 90.0)?,
        "longitude" => m.longitude = coordinate(field, v, 180.0)?,
        "gateway" => m.gateway = gateway_field(v)?,
        "tags" => m.tags = tags_field(v)?,
        "offline_after" => m.offline_after = offline_after_field(v)?,
        "parent" => m.parent = parent_field(directory, &rec.id, v)?,
        other => {
            return Err(WireError::bad_request(
                "bad_parameter",
                format!("unknown field '{}'; use {}", clip(other), FIELDS.join(", ")),
            ))
        }
    }
    Ok(())
}

/// `name`: printable text, not empty.
fn name_field(v: &str) -> Result<String, WireError> {
    if v.is_empty() {
        return Err(WireError::bad_request("bad_name", "a name cannot be empty"));
    }
    crate::text::text("name", v, MAX_NAME).map_err(|_| {
        WireError::bad_request(
            "bad_name",
            "a name is at most 200 bytes of printable text, without bidirectional overrides",
        )
    })
}

/// `gateway`: `true`/`1` or `false`/`0`/empty.
fn gateway_field(v: &str) -> Result<bool, WireError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(WireError::bad_request(
            "bad_value",
            "gateway: true or false",
        )),
    }
}

/// `tags`: up to [`MAX_TAGS`] printable tags separated by `;`.
fn tags_field(v: &str) -> Result<Vec<String>, WireError> {
    let tags: Vec<String> = v
        .split(';')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if tags.len() > MAX_TAGS
        || tags.iter().any(|t| {
            t.len() > 64
                || t.chars()
                    .any(|c| c.is_control() || crate::text::is_bidi_control(c))
        })
    {
        return Err(WireError::bad_request(
            "bad_value",
            "tags: at most 32, separated by ';', each at most 64 bytes of printable text",
        ));
    }
    Ok(tags)
}

/// `offline_after`: seconds, 1..31536000 (a year); empty: the default.
fn offline_after_field(v: &str) -> Result<Option<u32>, WireError> {
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<u32>() {
        Ok(s) if (1..=31_536_000).contains(&s) => Ok(Some(s)),
        _ => Err(WireError::bad_request(
            "bad_value",
            "offline_after: seconds, 1..31536000",
        )),
    }
}

/// `parent`: a gateway (by id) that device `id` may sit below: no
/// cycle, at most [`MAX_DEPTH`] gateways deep. Empty: none.
fn parent_field(directory: &Directory, id: &str, v: &str) -> Result<Option<u32>, WireError> {
    if v.is_empty() {
        return Ok(None);
    }
    let p = directory
        .device(v)
        .ok_or_else(|| WireError::new(404, "unknown_device", format!("no device '{}'", clip(v))))?;
    if !p.meta.gateway {
        return Err(WireError::bad_request(
            "bad_parent",
            format!("'{}' is not a gateway (set gateway=true on it)", p.id),
        ));
    }
    // No cycles: walk up from the new parent.
    let mut up = Some(p.clone());
    for _ in 0..=MAX_DEPTH {
        let Some(a) = up else { break };
        if a.id == id {
            return Err(WireError::bad_request(
                "bad_parent",
                "a device cannot sit below itself",
            ));
        }
        up = a.meta.parent.and_then(|n| directory.device_by_num(n));
    }
    if up.is_some() {
        return Err(WireError::bad_request(
            "bad_parent",
            format!("gateways nest at most {MAX_DEPTH} deep"),
        ));
    }
    Ok(Some(p.num))
}

/// Give a device a new token; the previous one stays valid until the next
/// rotation, so a fleet can be updated without downtime. Blocking.
pub fn rotate(
    store: &Store,
    directory: &Directory,
    rec: &DeviceRecord,
) -> Result<String, StoreError> {
    let token = auth::generate_token();
    let mut new = rec.clone();
    new.prev_token = Some(rec.token);
    new.token = auth::hash_token(&token);
    store.put_device(&new)?;
    directory.put_device(new);
    Ok(token)
}

/// Revoke both of a device's tokens at once (a new one is issued with
/// [`rotate`]): the stored digests are replaced by one of a random token
/// nobody holds. Blocking.
pub fn revoke(store: &Store, directory: &Directory, rec: &DeviceRecord) -> Result<(), StoreError> {
    let mut new = rec.clone();
    new.token = auth::hash_token(&auth::generate_token());
    new.prev_token = None;
    store.put_device(&new)?;
    directory.put_device(new);
    Ok(())
}

/// Why a device could not change hands.
#[derive(Debug)]
pub enum TransferError {
    /// The new owner is at `[quotas] devices_per_user`.
    Quota(crate::quotas::QuotaExceeded),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for TransferError {
    fn from(e: StoreError) -> Self {
        TransferError::Store(e)
    }
}

/// Give device `rec` to user `to`, whose `[quotas] devices_per_user` is
/// `quota` (0: none): counted and changed under the quota lock, as
/// creations are. Grants on it stay. Blocking.
pub fn transfer(
    store: &Store,
    directory: &Directory,
    rec: &DeviceRecord,
    to: &str,
    quota: u64,
) -> Result<(), TransferError> {
    let _quota = crate::quotas::guard();
    if rec.owner != to {
        let have = directory.count_owned_devices(to);
        crate::quotas::check("devices", "devices_per_user", quota, have, 1)
            .map_err(TransferError::Quota)?;
    }
    let mut new = rec.clone();
    new.owner = to.to_string();
    store.put_device(&new)?;
    directory.put_device(new);
    Ok(())
}

/// CSV header of [`write_row`].
pub const LIST_HEADER: &str = "id,name,owner,created,last_seen,state,parent,gateway,kind,latitude,longitude,location,tags,offline_after,description\n";

/// One device as a CSV row (see [`LIST_HEADER`]).
pub fn write_row(d: &DeviceRecord, directory: &Directory, presence: &Presence, out: &mut String) {
    write_csv_text(&d.id, out);
    out.push(',');
    write_csv_text(&d.name, out);
    out.push(',');
    write_csv_text(&d.owner, out);
    out.push(',');
    timefmt::write_time(d.created, out);
    out.push(',');
    if let Some(t) = presence.last_seen(d.num) {
        timefmt::write_time(t, out);
    }
    out.push(',');
    out.push_str(presence.state(d.num).as_str());
    out.push(',');
    if let Some(p) = d.meta.parent.and_then(|p| directory.device_by_num(p)) {
        write_csv_text(&p.id, out);
    }
    out.push(',');
    out.push_str(if d.meta.gateway { "true" } else { "false" });
    out.push(',');
    write_csv_text(&d.meta.kind, out);
    out.push(',');
    if let Some(f) = d.meta.latitude {
        out.push_str(&f.to_string());
    }
    out.push(',');
    if let Some(f) = d.meta.longitude {
        out.push_str(&f.to_string());
    }
    out.push(',');
    write_csv_text(&d.meta.location, out);
    out.push(',');
    write_csv_text(&d.meta.tags.join(";"), out);
    out.push(',');
    if let Some(s) = d.meta.offline_after {
        out.push_str(&s.to_string());
    }
    out.push(',');
    write_csv_text(&d.meta.description, out);
    out.push('\n');
}

/// Filters of a device listing.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Only devices in this state.
    pub state: Option<State>,
    /// Only devices directly below this gateway.
    pub parent: Option<u32>,
    /// Only devices with this tag.
    pub tag: Option<String>,
    /// Only devices whose id, name, location or tags contain this text
    /// (case-insensitive).
    pub search: Option<String>,
}

impl Filter {
    /// Does `d` pass?
    pub fn matches(&self, d: &DeviceRecord, presence: &Presence) -> bool {
        if self.state.is_some_and(|s| presence.state(d.num) != s) {
            return false;
        }
        if self.parent.is_some() && d.meta.parent != self.parent {
            return false;
        }
        if let Some(t) = &self.tag {
            if !d.meta.tags.iter().any(|x| x == t) {
                return false;
            }
        }
        if let Some(q) = &self.search {
            let q = q.to_lowercase();
            let hit = |s: &str| s.to_lowercase().contains(&q);
            if !(hit(&d.id)
                || hit(&d.name)
                || hit(&d.meta.location)
                || d.meta.tags.iter().any(|t| hit(t)))
            {
                return false;
            }
        }
        true
    }
}

/// Devices in tree order: every device with no (visible) parent, each
/// followed by the devices below it, depth first, ids sorted at each
/// level. Returns `(depth, device)`; devices below a parent the caller
/// cannot see are shown at the top level.
pub fn tree(devices: &[Arc<DeviceRecord>]) -> Vec<(usize, Arc<DeviceRecord>)> {
    use std::collections::{HashMap, HashSet};
    let visible: HashSet<u32> = devices.iter().map(|d| d.num).collect();
    let mut children: HashMap<u32, Vec<Arc<DeviceRecord>>> = HashMap::new();
    let mut roots = Vec::new();
    for d in devices {
        match d.meta.parent.filter(|p| visible.contains(p) && *p != d.num) {
            Some(p) => children.entry(p).or_default().push(d.clone()),
            None => roots.push(d.clone()),
        }
    }
    let mut out = Vec::with_capacity(devices.len());
    let mut stack: Vec<(usize, Arc<DeviceRecord>)> =
        roots.into_iter().rev().map(|d| (0, d)).collect();
    let mut done = HashSet::new();
    while let Some((depth, d)) = stack.pop() {
        if !done.insert(d.num) {
            continue; // a cycle cannot be created, but never loop on one
        }
        if let Some(kids) = children.get(&d.num) {
            stack.extend(kids.iter().rev().map(|k| (depth + 1, k.clone())));
        }
        out.push((depth, d));
    }
    out
}

impl From<TransferError> for WireError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Quota(q) => q.into(),
            TransferError::Store(s) => s.into(),
        }
    }
}
