//! The server's own storage functions on PostgreSQL (issue 20): the same
//! management operations, run through `Store` on a redb file and on a
//! PostgreSQL database, give the same answers and leave the same rows in
//! every table (`ops::fingerprint` on both); and on PostgreSQL, writers in
//! several threads at once (as several nodes would be) still get dense
//! numbers that are never given twice, because a write transaction that
//! cannot be serialized is run again (`Store::write`).

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::pg::Pg;
use overlord::catalog::Catalog;
use overlord::channels::{self, Item, Membership};
use overlord::codec::{SensorId, Value};
use overlord::inbox::{self, Kind, Row};
use overlord::pg::Target;
use overlord::store::{ChannelRecord, DeviceRecord, Store, StoreError};

fn device(id: &str) -> DeviceRecord {
    DeviceRecord {
        num: 0,
        id: id.into(),
        name: format!("{id} name"),
        owner: "ann".into(),
        token: [7; 32],
        prev_token: None,
        created: 1_700_000_000_000_000,
        meta: Default::default(),
    }
}

fn channel(name: &str) -> ChannelRecord {
    ChannelRecord {
        num: 0,
        name: name.into(),
        owner: "ann".into(),
        retention: 3,
        created: 1_700_000_000_000_000,
        description: String::new(),
    }
}

fn row(text: &str) -> Row {
    Row {
        kind: Kind::Message,
        time: 1_700_000_000_000_000,
        from: "user:ann".into(),
        sensor: String::new(),
        value: text.into(),
        device: String::new(),
    }
}

fn postgres(pg: &Pg, db: &str) -> Store {
    pg.create_db(db);
    Store::open_postgres(
        Target::parse(&pg.url(db)).unwrap(),
        8,
        Duration::from_secs(30),
    )
    .expect("a store on PostgreSQL")
}

/// Management operations as the HTTP handlers run them; every answer,
/// as text.
fn scenario(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    let mut say = |what: &str, v: String| out.push(format!("{what}: {v}"));
    let catalog = Catalog::new(Vec::new(), Vec::new(), Vec::new(), &[]);

    let devs = store
        .create_devices(vec![device("d-a"), device("d-b"), device("ä-c")])
        .unwrap();
    say(
        "devices",
        format!("{:?}", devs.iter().map(|d| d.num).collect::<Vec<_>>()),
    );
    say(
        "again",
        format!("{:?}", store.create_device(device("d-b")).err()),
    );

    let g = channels::create(store, &catalog, channel("green"), 10).unwrap();
    let h = channels::create(store, &catalog, channel("house"), 10).unwrap();
    say("channels", format!("{} {}", g.num, h.num));
    say(
        "taken",
        format!(
            "{:?}",
            channels::create(store, &catalog, channel("green"), 10).err()
        ),
    );
    let d = channels::describe(store, &catalog, "green", "the greenhouse".into()).unwrap();
    say("described", d.description);
    let t = SensorId::parse("N1").unwrap().code();
    channels::change_member(
        store,
        &catalog,
        (g.num, devs[0].num, t),
        &Membership::Add(Some("left".into())),
    )
    .unwrap();
    channels::change_member(
        store,
        &catalog,
        (g.num, devs[1].num, t),
        &Membership::Add(None),
    )
    .unwrap();
    channels::change_member(
        store,
        &catalog,
        (g.num, devs[1].num, t),
        &Membership::Remove,
    )
    .unwrap();

    // Five items into a channel that keeps three: indexes 1..=5, 3..=5 kept.
    for i in 0..5 {
        let item = Item {
            added: 1_700_000_000_000_000 + i,
            time: 1_700_000_000_000_000 + i,
            device: devs[0].num,
            sensor: SensorId::parse("N1").unwrap(),
            value: Value::Num(20.5 + i as f64),
        };
        let idx = store
            .write(|tx| channels::append(tx, g.num, &item, g.retention))
            .unwrap();
        say("appended", idx.to_string());
    }
    say(
        "bounds",
        format!("{:?}", channels::bounds(store, g.num).unwrap()),
    );
    let items = channels::read_after(store, g.num, 0, 10).unwrap();
    say(
        "items",
        format!(
            "{:?}",
            items
                .iter()
                .map(|(i, it)| (*i, it.value.clone()))
                .collect::<Vec<_>>()
        ),
    );

    // An inbox of at most three rows: the fourth is refused, nothing kept.
    for text in ["one", "two", "three", "four"] {
        let r = store
            .write(|tx| inbox::push(tx, devs[0].num, &[row(text)], 3))
            .unwrap();
        say("pushed", format!("{r:?}"));
    }
    let (n, rows) = inbox::pending(store, devs[0].num, 10).unwrap();
    say(
        "pending",
        format!(
            "{n} {:?}",
            rows.iter()
                .map(|(s, r)| (*s, r.value.clone()))
                .collect::<Vec<_>>()
        ),
    );
    let acked = store.write(|tx| inbox::ack(tx, devs[0].num, 2)).unwrap();
    say("acked", format!("{acked:?}"));
    say(
        "left",
        format!("{:?}", inbox::pending(store, devs[0].num, 10).unwrap().0),
    );

    overlord::notify::set_presence_choice(store, "ann", "d-a", "").unwrap();
    say(
        "presence choice",
        format!(
            "{:?}",
            overlord::notify::presence_choice(store, "ann").unwrap()
        ),
    );
    say(
        "loaded devices",
        format!(
            "{:?}",
            store
                .load_devices()
                .unwrap()
                .iter()
                .map(|d| (d.num, d.id.clone()))
                .collect::<Vec<_>>()
        ),
    );
    out
}

#[test]
fn management_operations_answer_and_store_alike_on_both_stores() {
    let Some(pg) = Pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = Store::open(&dir.path().join("a.redb")).unwrap();
    let db = postgres(&pg, "same");
    let a = scenario(&file);
    let b = scenario(&db);
    assert_eq!(a, b);
    assert!(a.iter().any(|l| l == "appended: 5"), "{a:?}");
    assert!(a.iter().any(|l| l == "left: 1"), "{a:?}");
    // Every table, row for row.
    let on_file = file.read(|tx| overlord::ops::fingerprint(tx)).unwrap();
    let on_db = db.read(|tx| overlord::ops::fingerprint(tx)).unwrap();
    assert_eq!(on_file, on_db);
    assert!(on_db.iter().map(|t| t.1).sum::<u64>() > 15, "{on_db:?}");
    // The store has no file to lend; it says so.
    assert!(matches!(db.db(), Err(StoreError::Io(_))));
}

/// Six threads at once, each creating devices and channels and pushing
/// to one inbox: every number is given once and none is skipped.
#[test]
fn writers_at_once_get_dense_numbers_given_once() {
    let Some(pg) = Pg::start() else { return };
    let store = Arc::new(postgres(&pg, "busy"));
    let first = store.create_device(device("target")).unwrap().num;
    let catalog = Arc::new(Catalog::new(Vec::new(), Vec::new(), Vec::new(), &[]));
    let start = Arc::new(Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (store, catalog, start) = (store.clone(), catalog.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut seqs = Vec::new();
                for i in 0..12 {
                    store.create_device(device(&format!("t{t}-{i}"))).unwrap();
                    channels::create(&store, &catalog, channel(&format!("c{t}-{i}")), 1000)
                        .unwrap();
                    let s = store
                        .write(|tx| inbox::push(tx, first, &[row("x")], 10_000))
                        .unwrap()
                        .unwrap();
                    seqs.extend(s);
                }
                seqs
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=72).collect::<Vec<u64>>(), "inbox seqs");
    let mut nums: Vec<u32> = store
        .load_devices()
        .unwrap()
        .iter()
        .map(|d| d.num)
        .collect();
    nums.sort_unstable();
    assert_eq!(nums, (1..=73).collect::<Vec<u32>>(), "device numbers");
    let mut chans: Vec<u32> = store
        .load_all(overlord::store::CHANNELS)
        .unwrap()
        .iter()
        .map(|c| c.num)
        .collect();
    chans.sort_unstable();
    assert_eq!(chans, (1..=72).collect::<Vec<u32>>(), "channel numbers");
    assert_eq!(inbox::pending(&store, first, 1).unwrap().0, 72);
}

/// The node's own config for database `db`.
fn node_config(pg: &Pg, db: &str) -> overlord::config::StoreConfig {
    overlord::config::StoreConfig {
        kind: overlord::config::StoreKind::Postgres,
        postgres_url: pg.url(db),
        pool_size: 4,
        timeout_secs: 10,
        ..Default::default()
    }
}

#[test]
fn a_node_whose_claim_was_taken_writes_nothing_more() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("claim");
    let a = Store::open_node(&node_config(&pg, "claim")).expect("the node");
    a.create_device(device("d-1"))
        .expect("a write while it holds the claim");
    // A second node is refused while the first holds the lock.
    assert!(matches!(
        Store::open_node(&node_config(&pg, "claim")),
        Err(StoreError::InUse)
    ));
    // Another node claims the database behind this one's back (as one
    // would after a failover the first did not notice yet: the lock is
    // not replicated, the claim is): from then on the first writes
    // nothing, and says why.
    pg.sql("claim", "UPDATE node_hold SET epoch = epoch + 1");
    let e = a.create_device(device("d-2")).unwrap_err();
    assert!(
        matches!(&e, StoreError::Unavailable(m) if m.contains("claim")),
        "{e:?}"
    );
    assert_eq!(pg.value("claim", "SELECT count(*) FROM devices"), "1");
    // When it finds its lock session gone and takes the lock again, it
    // sees the claim moved: it never writes again (a restart reloads what
    // it caches).
    pg.sql(
        "claim",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = {} AND granted",
            overlord::pg::hold::KEY & 0xffff_ffff
        ),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match a.create_device(device("d-3")) {
            Err(StoreError::Unavailable(m)) if m.contains("until it is restarted") => break,
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "not refused for good");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(pg.value("claim", "SELECT count(*) FROM devices"), "1");
    // Restarted, a node claims afresh and writes.
    drop(a);
    let b = Store::open_node(&node_config(&pg, "claim")).expect("a new start");
    b.create_device(device("d-4")).expect("writes again");
}

#[test]
fn many_items_at_once_index_and_trim_as_one_at_a_time() {
    let Some(pg) = Pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = Store::open(&dir.path().join("items.redb")).unwrap();
    let db = postgres(&pg, "items");
    let item = |k: u64| Item {
        added: 1_700_000_000_000_000 + k as i64,
        time: 1_690_000_000_000_000 + k as i64 * 1_000_000,
        device: 3,
        sensor: SensorId::parse("N1").unwrap(),
        value: Value::Num(k as f64 + 0.5),
    };
    // Batches below, at and over the retention (5), on two channels.
    let mut k = 0;
    for (channel, n) in [(1u32, 3usize), (1, 5), (2, 1), (1, 12), (2, 9), (1, 1)] {
        let batch: Vec<Item> = (0..n)
            .map(|_| {
                k += 1;
                item(k)
            })
            .collect();
        file.write(|tx| {
            for i in &batch {
                channels::append(tx, channel, i, 5)?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
        db.write(|tx| channels::append_many(tx, channel, &batch, 5))
            .unwrap();
    }
    let tables = |s: &Store| {
        s.read(|tx| overlord::ops::fingerprint(tx))
            .unwrap()
            .into_iter()
            .filter(|(n, _, _)| n == "channel_items" || n == "channel_meta")
            .collect::<Vec<_>>()
    };
    let (a, b) = (tables(&file), tables(&db));
    assert_eq!(
        a.iter().map(|t| t.1).sum::<u64>(),
        12,
        "5 + 5 items, 2 meta rows: {a:?}"
    );
    assert_eq!(a, b);
}
