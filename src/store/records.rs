//! Device and user records as stored in the `devices` and `users` tables.
//!
//! Encoding: a version byte, then fields in a fixed order, each a
//! length-prefixed byte string or a varint. Fields are only ever appended;
//! a decoder that finds the record ending early uses defaults for the rest.

use super::typed::record;
use super::varint::{self, Corrupt, Reader};
use crate::codec::Micros;

/// A SHA-256 digest of a secret token.
pub type TokenHash = [u8; 32];

/// A device as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    /// Internal number, used in storage keys (allocated on create).
    pub num: u32,
    /// The opaque, URL-safe id the device authenticates with.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Owning user.
    pub owner: String,
    /// Digest of the current token.
    pub token: TokenHash,
    /// Digest of the previous token, valid until the next rotation.
    pub prev_token: Option<TokenHash>,
    /// When it was created.
    pub created: Micros,
    /// Descriptive metadata, parent gateway and presence settings.
    pub meta: DeviceMeta,
}

/// What a device is and where, editable over HTTP and the CLI.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceMeta {
    /// Free text.
    pub description: String,
    /// Where it is, as text ("greenhouse 3, north wall").
    pub location: String,
    /// Degrees north, -90..=90.
    pub latitude: Option<f64>,
    /// Degrees east, -180..=180.
    pub longitude: Option<f64>,
    /// What it is ("plug", "thermometer"); free text.
    pub kind: String,
    /// Number of the gateway device it sits behind.
    pub parent: Option<u32>,
    /// May register devices below it and send and receive for them.
    pub gateway: bool,
    /// Labels for search.
    pub tags: Vec<String>,
    /// Seconds of silence before it counts as offline (`None`: the
    /// configured default).
    pub offline_after: Option<u32>,
}

impl DeviceMeta {
    fn encode(&self, out: &mut Vec<u8>) {
        varint::put_bytes(out, self.description.as_bytes());
        varint::put_bytes(out, self.location.as_bytes());
        put_opt_f64(out, self.latitude);
        put_opt_f64(out, self.longitude);
        varint::put_bytes(out, self.kind.as_bytes());
        put_opt_u32(out, self.parent);
        out.push(u8::from(self.gateway));
        varint::put_u64(out, self.tags.len() as u64);
        for t in &self.tags {
            varint::put_bytes(out, t.as_bytes());
        }
        put_opt_u32(out, self.offline_after);
    }

    fn decode(r: &mut Reader<'_>) -> Result<DeviceMeta, Corrupt> {
        let description = get_str(r)?;
        let location = get_str(r)?;
        let latitude = get_opt_f64(r)?;
        let longitude = get_opt_f64(r)?;
        let kind = get_str(r)?;
        let parent = get_opt_u32(r)?;
        let gateway = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Corrupt),
        };
        let n = r.u64()?;
        if n > 1024 {
            return Err(Corrupt);
        }
        let mut tags = Vec::with_capacity(n as usize);
        for _ in 0..n {
            tags.push(get_str(r)?);
        }
        let offline_after = get_opt_u32(r)?;
        Ok(DeviceMeta {
            description,
            location,
            latitude,
            longitude,
            kind,
            parent,
            gateway,
            tags,
            offline_after,
        })
    }
}

/// What a user may do, coarsely; claims refine it (issue "users, roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Administrator,
    /// Their own devices and what they were granted.
    User,
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Digest of the current API token.
    pub token: TokenHash,
    /// Digest of the previous API token.
    pub prev_token: Option<TokenHash>,
    /// When it was created.
    pub created: Micros,
    /// argon2id hash (PHC string) of the password, if one is set.
    pub password: Option<String>,
}

const VERSION: u8 = 1;

fn put_hash(out: &mut Vec<u8>, h: Option<&TokenHash>) {
    varint::put_bytes(out, h.map_or(&[][..], |h| &h[..]));
}

fn get_hash(r: &mut Reader<'_>) -> Result<Option<TokenHash>, Corrupt> {
    let b = r.bytes()?;
    if b.is_empty() {
        return Ok(None);
    }
    Ok(Some(b.try_into().map_err(|_| Corrupt)?))
}

fn get_str(r: &mut Reader<'_>) -> Result<String, Corrupt> {
    String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Corrupt)
}

impl DeviceRecord {
    /// Encode for the `devices` table.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        varint::put_u64(&mut out, u64::from(self.num));
        varint::put_bytes(&mut out, self.id.as_bytes());
        varint::put_bytes(&mut out, self.name.as_bytes());
        varint::put_bytes(&mut out, self.owner.as_bytes());
        put_hash(&mut out, Some(&self.token));
        put_hash(&mut out, self.prev_token.as_ref());
        varint::put_i64(&mut out, self.created);
        self.meta.encode(&mut out);
        out
    }

    /// Decode from the `devices` table.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corrupt> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(Corrupt);
        }
        Ok(DeviceRecord {
            num: u32::try_from(r.u64()?).map_err(|_| Corrupt)?,
            id: get_str(&mut r)?,
            name: get_str(&mut r)?,
            owner: get_str(&mut r)?,
            token: get_hash(&mut r)?.ok_or(Corrupt)?,
            prev_token: get_hash(&mut r)?,
            created: r.i64()?,
            // Appended: absent in records written before it existed.
            meta: if r.is_empty() {
                DeviceMeta::default()
            } else {
                DeviceMeta::decode(&mut r)?
            },
        })
    }
}

impl UserRecord {
    /// Encode for the `users` table.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        varint::put_bytes(&mut out, self.name.as_bytes());
        out.push(match self.role {
            Role::Administrator => 0,
            Role::User => 1,
        });
        put_hash(&mut out, Some(&self.token));
        put_hash(&mut out, self.prev_token.as_ref());
        varint::put_i64(&mut out, self.created);
        varint::put_bytes(&mut out, self.password.as_deref().unwrap_or("").as_bytes());
        out
    }

    /// Decode from the `users` table.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corrupt> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(Corrupt);
        }
        Ok(UserRecord {
            name: get_str(&mut r)?,
            role: match r.u8()? {
                0 => Role::Administrator,
                1 => Role::User,
                _ => return Err(Corrupt),
            },
            token: get_hash(&mut r)?.ok_or(Corrupt)?,
            prev_token: get_hash(&mut r)?,
            created: r.i64()?,
            // Appended field: absent in records written before it existed.
            password: if r.is_empty() {
                None
            } else {
                Some(get_str(&mut r)?).filter(|p| !p.is_empty())
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let d = DeviceRecord {
            num: 7,
            id: "greenhouse-3".into(),
            name: "Greenhouse, north".into(),
            owner: "admin".into(),
            token: [1; 32],
            prev_token: Some([2; 32]),
            created: 123,
            meta: DeviceMeta::default(),
        };
        assert_eq!(DeviceRecord::decode(&d.encode()), Ok(d.clone()));
        let mut g = d.clone();
        g.meta = DeviceMeta {
            description: "plug computer".into(),
            location: "shed".into(),
            latitude: Some(52.5),
            longitude: Some(-13.25),
            kind: "plug".into(),
            parent: Some(0),
            gateway: true,
            tags: vec!["north".into(), "solar".into()],
            offline_after: Some(90),
        };
        assert_eq!(DeviceRecord::decode(&g.encode()), Ok(g.clone()));
        // A record from before the metadata existed still reads.
        // Default metadata is nine one-byte fields at the end.
        let old = d.encode();
        assert_eq!(DeviceRecord::decode(&old[..old.len() - 9]), Ok(d.clone()));
        let u = UserRecord {
            name: "ann".into(),
            role: Role::User,
            token: [3; 32],
            prev_token: None,
            created: 5,
            password: Some("$argon2id$v=19$...".into()),
        };
        assert_eq!(UserRecord::decode(&u.encode()), Ok(u));
        assert_eq!(DeviceRecord::decode(&d.encode()[..10]), Err(Corrupt));
    }
}

/// A channel as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRecord {
    /// Internal number used in keys.
    pub num: u32,
    /// Unique, URL-safe name.
    pub name: String,
    /// Owning user.
    pub owner: String,
    /// Items kept; older ones are removed as new ones arrive.
    pub retention: u64,
    /// When it was created.
    pub created: Micros,
    /// Free text saying what the channel is (stored after `created`;
    /// records written before it existed have none).
    pub description: String,
}

impl ChannelRecord {
    /// Encode for the `channels` table.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        varint::put_u64(&mut out, u64::from(self.num));
        varint::put_bytes(&mut out, self.name.as_bytes());
        varint::put_bytes(&mut out, self.owner.as_bytes());
        varint::put_u64(&mut out, self.retention);
        varint::put_i64(&mut out, self.created);
        varint::put_bytes(&mut out, self.description.as_bytes());
        out
    }

    /// Decode from the `channels` table.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corrupt> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(Corrupt);
        }
        Ok(ChannelRecord {
            num: u32::try_from(r.u64()?).map_err(|_| Corrupt)?,
            name: get_str(&mut r)?,
            owner: get_str(&mut r)?,
            retention: r.u64()?,
            created: r.i64()?,
            // Appended: absent in records written before it existed.
            description: if r.is_empty() {
                String::new()
            } else {
                get_str(&mut r)?
            },
        })
    }
}

/// A file for devices (firmware, scripts) as stored in the `files` table.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    /// Internal number (grants are keyed by it).
    pub num: u32,
    /// Unique name (see `files::valid_name`).
    pub name: String,
    /// Uploading user.
    pub owner: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the content; also its name in the files directory.
    pub sha256: [u8; 32],
    /// When the content was last replaced.
    pub updated: Micros,
    /// Digest of the current download password, if one was issued.
    pub password: Option<TokenHash>,
    /// Digest of the previous password, valid until the next rotation.
    pub prev_password: Option<TokenHash>,
}

impl FileRecord {
    /// Encode for the `files` table.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        varint::put_u64(&mut out, u64::from(self.num));
        varint::put_bytes(&mut out, self.name.as_bytes());
        varint::put_bytes(&mut out, self.owner.as_bytes());
        varint::put_u64(&mut out, self.size);
        varint::put_bytes(&mut out, &self.sha256);
        varint::put_i64(&mut out, self.updated);
        put_hash(&mut out, self.password.as_ref());
        put_hash(&mut out, self.prev_password.as_ref());
        out
    }

    /// Decode from the `files` table.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corrupt> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(Corrupt);
        }
        Ok(FileRecord {
            num: u32::try_from(r.u64()?).map_err(|_| Corrupt)?,
            name: get_str(&mut r)?,
            owner: get_str(&mut r)?,
            size: r.u64()?,
            sha256: r.bytes()?.try_into().map_err(|_| Corrupt)?,
            updated: r.i64()?,
            password: get_hash(&mut r)?,
            prev_password: get_hash(&mut r)?,
        })
    }
}

/// An alert on one numeric sensor of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// Internal number used in keys.
    pub id: u32,
    /// Unique, URL-safe name (rows say `alert:<name>`).
    pub name: String,
    /// Owning user.
    pub owner: String,
    /// Device number watched.
    pub device: u32,
    /// Sensor code watched (`I` or `N`).
    pub sensor: u32,
    /// Values below this are in alarm.
    pub min: Option<f64>,
    /// Values above this are in alarm.
    pub max: Option<f64>,
    /// Re-arm only once the value is this far inside the normal range.
    pub hysteresis: f64,
    /// Text sent when it fires.
    pub message: String,
    /// Device whose inbox is told (usually the watched one), if any.
    pub to_device: Option<u32>,
    /// Channel that gets an item when it fires, if any.
    pub to_channel: Option<u32>,
    /// When it was created.
    pub created: Micros,
    /// Notification target told when it fires, if any (stored after
    /// `created`; records written before targets existed have none).
    pub to_target: Option<u32>,
    /// The channel whose every member sensor it watches (then `device`
    /// and `sensor` are 0, and a `to_device` of `Some(0)` means the
    /// member device that fired); stored after `to_target`.
    pub channel: Option<u32>,
}

fn put_opt_f64(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(f) => {
            out.push(1);
            out.extend_from_slice(&f.to_le_bytes());
        }
        None => out.push(0),
    }
}

fn get_opt_f64(r: &mut Reader<'_>) -> Result<Option<f64>, Corrupt> {
    Ok(match r.u8()? {
        0 => None,
        1 => Some(f64::from_le_bytes(
            r.take(8)?.try_into().map_err(|_| Corrupt)?,
        )),
        _ => return Err(Corrupt),
    })
}

fn put_opt_u32(out: &mut Vec<u8>, v: Option<u32>) {
    varint::put_u64(out, v.map_or(0, |x| u64::from(x) + 1));
}

fn get_opt_u32(r: &mut Reader<'_>) -> Result<Option<u32>, Corrupt> {
    let v = r.u64()?;
    if v == 0 {
        return Ok(None);
    }
    u32::try_from(v - 1).map(Some).map_err(|_| Corrupt)
}

impl AlertRecord {
    /// Encode for the `alerts` table.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        varint::put_u64(&mut out, u64::from(self.id));
        varint::put_bytes(&mut out, self.name.as_bytes());
        varint::put_bytes(&mut out, self.owner.as_bytes());
        varint::put_u64(&mut out, u64::from(self.device));
        varint::put_u64(&mut out, u64::from(self.sensor));
        put_opt_f64(&mut out, self.min);
        put_opt_f64(&mut out, self.max);
        out.extend_from_slice(&self.hysteresis.to_le_bytes());
        varint::put_bytes(&mut out, self.message.as_bytes());
        put_opt_u32(&mut out, self.to_device);
        put_opt_u32(&mut out, self.to_channel);
        varint::put_i64(&mut out, self.created);
        if self.to_target.is_some() || self.channel.is_some() {
            put_opt_u32(&mut out, self.to_target);
        }
        if self.channel.is_some() {
            put_opt_u32(&mut out, self.channel);
        }
        out
    }

    /// Decode from the `alerts` table.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corrupt> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(Corrupt);
        }
        let mut rec = AlertRecord {
            id: u32::try_from(r.u64()?).map_err(|_| Corrupt)?,
            name: get_str(&mut r)?,
            owner: get_str(&mut r)?,
            device: u32::try_from(r.u64()?).map_err(|_| Corrupt)?,
            sensor: u32::try_from(r.u64()?).map_err(|_| Corrupt)?,
            min: get_opt_f64(&mut r)?,
            max: get_opt_f64(&mut r)?,
            hysteresis: f64::from_le_bytes(r.take(8)?.try_into().map_err(|_| Corrupt)?),
            message: get_str(&mut r)?,
            to_device: get_opt_u32(&mut r)?,
            to_channel: get_opt_u32(&mut r)?,
            created: r.i64()?,
            to_target: None,
            channel: None,
        };
        if !r.is_empty() {
            rec.to_target = get_opt_u32(&mut r)?;
        }
        if !r.is_empty() {
            rec.channel = get_opt_u32(&mut r)?;
        }
        Ok(rec)
    }
}

// How each record is stored in its table (`super::tables`): the
// encodings above.
record!(DeviceRecord, &'static str);
record!(UserRecord, &'static str);
record!(ChannelRecord, &'static str);
record!(AlertRecord, &'static str);
record!(FileRecord, &'static str);

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn channel_and_alert_round_trip() {
        let c = ChannelRecord {
            num: 3,
            name: "greenhouse".into(),
            owner: "ann".into(),
            retention: 1000,
            created: 9,
            description: String::new(),
        };
        assert_eq!(ChannelRecord::decode(&c.encode()), Ok(c.clone()));
        // A record from before the description existed still reads (an
        // empty description is one length byte at the end).
        let old = c.encode();
        assert_eq!(ChannelRecord::decode(&old[..old.len() - 1]), Ok(c.clone()));
        let described = ChannelRecord {
            description: "Weather sensors in Trinidad".into(),
            ..c
        };
        assert_eq!(ChannelRecord::decode(&described.encode()), Ok(described));
        let a = AlertRecord {
            id: 4,
            name: "too-hot".into(),
            owner: "ann".into(),
            device: 7,
            sensor: 0x0300_0001,
            min: Some(40.0),
            max: None,
            hysteresis: 0.5,
            message: "It's too hot!".into(),
            to_device: Some(7),
            to_channel: None,
            to_target: Some(3),
            created: 11,
            channel: None,
        };
        assert_eq!(AlertRecord::decode(&a.encode()), Ok(a.clone()));
        let on_channel = AlertRecord {
            device: 0,
            sensor: 0,
            to_device: Some(0),
            to_target: None,
            channel: Some(5),
            ..a
        };
        assert_eq!(AlertRecord::decode(&on_channel.encode()), Ok(on_channel));
    }

    #[test]
    fn file_round_trip() {
        let mut f = FileRecord {
            num: 2,
            name: "fw-1.2.bin".into(),
            owner: "ann".into(),
            size: 1 << 33,
            sha256: [9; 32],
            updated: 77,
            password: Some([4; 32]),
            prev_password: None,
        };
        assert_eq!(FileRecord::decode(&f.encode()), Ok(f.clone()));
        f.password = None;
        assert_eq!(FileRecord::decode(&f.encode()), Ok(f.clone()));
        assert_eq!(FileRecord::decode(&f.encode()[..12]), Err(Corrupt));
    }
}
