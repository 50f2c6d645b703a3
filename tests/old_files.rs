//! Data files written before the typed tables (`store::typed`) open and
//! read as they are: the record tables keep their names and `&[u8]`
//! values, so no migration is needed, and a file written now still opens
//! with the byte-valued definitions an older server used.

mod common;

use common::{hour_ago, TestServer};
use overlord::auth::hash_token;
use overlord::codec::SensorId;
use overlord::store::{AlertRecord, ChannelRecord, DeviceMeta, DeviceRecord, Role, UserRecord};
use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};

/// The record tables as an older server declared them: bytes values.
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const CHANNELS: TableDefinition<&str, &[u8]> = TableDefinition::new("channels");
const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ALERT_EVENTS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("alert_events");
const INBOX: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("inbox");

const ADMIN_TOKEN: &str = "0123456789abcdef0123456789abcdef";
const DEVICE_TOKEN: &str = "fedcba9876543210fedcba9876543210";

/// A data file as an older server left it: only the tables it had, a
/// device record from before device metadata, a channel record from
/// before descriptions, an alert from before targets.
fn write_old_file(path: &std::path::Path) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let admin = UserRecord {
            name: "admin".into(),
            role: Role::Administrator,
            token: hash_token(ADMIN_TOKEN),
            prev_token: None,
            created: 1,
            password: None,
        };
        txn.open_table(USERS)
            .unwrap()
            .insert("admin", admin.encode().as_slice())
            .unwrap();
        let dev = DeviceRecord {
            num: 1,
            id: "gh1".into(),
            name: "Greenhouse".into(),
            owner: "admin".into(),
            token: hash_token(DEVICE_TOKEN),
            prev_token: None,
            created: 2,
            meta: DeviceMeta::default(),
        };
        // Before metadata: the record ended after `created` (default
        // metadata is nine one-byte fields).
        let full = dev.encode();
        txn.open_table(DEVICES)
            .unwrap()
            .insert("gh1", &full[..full.len() - 9])
            .unwrap();
        let ch = ChannelRecord {
            num: 1,
            name: "farm".into(),
            owner: "admin".into(),
            retention: 100,
            created: 3,
            description: String::new(),
        };
        // Before descriptions: no trailing length byte.
        let full = ch.encode();
        txn.open_table(CHANNELS)
            .unwrap()
            .insert("farm", &full[..full.len() - 1])
            .unwrap();
        let alert = AlertRecord {
            id: 1,
            name: "hot".into(),
            owner: "admin".into(),
            device: 1,
            sensor: SensorId::parse("N1").unwrap().code(),
            min: None,
            max: Some(30.0),
            hysteresis: 0.0,
            message: "too hot".into(),
            to_device: Some(1),
            to_channel: None,
            created: 4,
            to_target: None,
            channel: None,
        };
        txn.open_table(ALERTS)
            .unwrap()
            .insert("hot", alert.encode().as_slice())
            .unwrap();
        let mut meta = txn.open_table(META).unwrap();
        for (k, v) in [("next_device", 2), ("next_channel", 2), ("next_alert", 2)] {
            meta.insert(k, v).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn a_file_from_before_typed_tables_opens_reads_and_takes_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("overlord.redb");
    write_old_file(&data);
    let s = TestServer::restart(tmp, ADMIN_TOKEN.into(), |_| {});

    // The records read through the typed tables, old forms included.
    let r = s.get_admin("/v1/devices");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.lines().any(|l| l.starts_with("gh1,")), "{}", r.body);
    let r = s.get_admin("/v1/channels");
    assert!(r.body.lines().any(|l| l.starts_with("farm,")), "{}", r.body);
    let r = s.get_admin("/v1/alerts");
    assert!(r.body.lines().any(|l| l.starts_with("hot,")), "{}", r.body);

    // The device's token works; a hot reading fires the old alert, which
    // writes an event and an inbox row through the typed tables.
    let t = hour_ago();
    let r = s.get(&format!(
        "/v1/readings?device=gh1&token={DEVICE_TOKEN}&N1=35&time={t}"
    ));
    assert_eq!((r.status, r.body.as_str()), (200, "ok,1,0\n"));
    let ev = s.admin_until("/v1/alerts/hot/events", |b| b.lines().count() == 2);
    assert_eq!(ev.body.lines().count(), 2, "{}", ev.body);
    assert!(
        ev.body.contains(",gh1,N1,35,too hot (35 > 30),inbox:1"),
        "{}",
        ev.body
    );
    // A channel write too: a description on the old channel record.
    let r = s.admin_form("POST", "/v1/channels/farm", "description=Fields");
    assert_eq!(r.status, 200, "{}", r.body);

    // Stopped, the file still opens with the byte-valued definitions an
    // older server used, and what was written decodes there.
    let (tmp, _admin) = s.stop();
    let db = Database::open(tmp.path().join("overlord.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let dev = txn.open_table(DEVICES).unwrap();
    let rec = DeviceRecord::decode(dev.get("gh1").unwrap().unwrap().value()).unwrap();
    assert_eq!((rec.num, rec.name.as_str()), (1, "Greenhouse"));
    let ch = txn.open_table(CHANNELS).unwrap();
    let rec = ChannelRecord::decode(ch.get("farm").unwrap().unwrap().value()).unwrap();
    assert_eq!(rec.description, "Fields");
    assert_eq!(txn.open_table(ALERT_EVENTS).unwrap().len().unwrap(), 1);
    assert_eq!(txn.open_table(INBOX).unwrap().len().unwrap(), 1);
}
