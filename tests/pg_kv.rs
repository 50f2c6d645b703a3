//! redb's table interface on PostgreSQL (`overlord::pg::kv`, issue 20):
//! the same random operations on a redb file and on its PostgreSQL image
//! give the same answers and leave the same rows, in the same order; write
//! transactions behave as redb's single writer does (a lost update is
//! refused and run again); a read sees one snapshot; every wait is
//! bounded and a password is never shown.

mod common;

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::pg::Pg;
use common::Rng;
use overlord::pg::kv::{PgKv, PgTxn};
use overlord::pg::Target;
use overlord::store::StoreError;
use redb::{
    Database, Key, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, Value,
};

/// A database whose default collation is a language's (ICU's root
/// locale: "a" < "B" < "ä"), not byte order, so that a text key ordered
/// by the locale would show.
fn database(pg: &Pg, name: &str) -> Arc<PgKv> {
    pg.sql(
        "postgres",
        &format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C'"
        ),
    );
    let kv = Arc::new(
        PgKv::new(
            Target::parse(&pg.url(name)).unwrap(),
            4,
            Duration::from_secs(30),
        )
        .unwrap(),
    );
    assert_eq!(kv.migrate().unwrap(), 0, "an empty database");
    kv
}

/// Strings whose byte order differs from a language's order.
const WORDS: &[&str] = &[
    "",
    "a",
    "B",
    "Z",
    "a b",
    "ab",
    "ä",
    "é",
    "z",
    "Ä",
    "a\u{1F600}",
    "~",
];
/// Byte strings, some prefixes of others.
const BLOBS: &[&[u8]] = &[
    b"", b"\0", b"\0\0", b"\x01", b"\xff", b"\xff\0", b"ab", b"a",
];
const SMALL: &[u32] = &[0, 1, 2, 3, 7, 1000, u32::MAX - 1, u32::MAX];
/// u64 parts a row may have (PostgreSQL's `bigint` holds up to i64::MAX).
const WIDE: &[u64] = &[
    0,
    1,
    2,
    99,
    u32::MAX as u64 + 1,
    i64::MAX as u64 - 1,
    i64::MAX as u64,
];
/// u64 parts asked for: those, and past them.
const WIDE_EDGES: &[u64] = &[
    0,
    1,
    2,
    99,
    i64::MAX as u64,
    i64::MAX as u64 + 1,
    u64::MAX - 1,
    u64::MAX,
];

/// A range with one reading only (a tuple of bounds over `&str` would
/// also be a range of `str`, and the call would not know which).
#[derive(Clone, Copy, Debug)]
struct Span<T>(Bound<T>, Bound<T>);

impl<T> std::ops::RangeBounds<T> for Span<T> {
    fn start_bound(&self) -> Bound<&T> {
        self.0.as_ref()
    }
    fn end_bound(&self) -> Bound<&T> {
        self.1.as_ref()
    }
}

/// `a == b`, or a failure that shows where they first differ.
fn same<T: PartialEq + std::fmt::Debug>(a: &[T], b: &[T], what: &str) {
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
        panic!(
            "{what}: row {i} is {:?} in redb, {:?} in PostgreSQL",
            a[i], b[i]
        );
    }
    assert_eq!(a.len(), b.len(), "{what}: how many rows");
}

fn bytes<T: Value>(v: &T::SelfType<'_>) -> Vec<u8> {
    T::as_bytes(v).as_ref().to_vec()
}

/// Run `steps` transactions of random operations on table `$def` in a
/// redb file and in PostgreSQL, comparing every answer, then every row.
macro_rules! exercise {
    ($kv:expr, $seed:expr, $steps:expr, $K:ty, $V:ty, $name:expr, $key:expr, $val:expr) => {
        exercise!($kv, $seed, $steps, $K, $V, $name, $key, $val, $key)
    };
    // `$edge`: the keys asked for (get, remove, range bounds), which may
    // be keys no row can have (a part over `bigint`, `u64::MAX`).
    ($kv:expr, $seed:expr, $steps:expr, $K:ty, $V:ty, $name:expr, $key:expr, $val:expr, $edge:expr) => {{
        const DEF: TableDefinition<$K, $V> = TableDefinition::new($name);
        let kv: &Arc<PgKv> = $kv;
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let mut r = Rng($seed);
        let key: fn(&mut Rng) -> <$K as Value>::SelfType<'static> = $key;
        let val: fn(&mut Rng) -> <$V as Value>::SelfType<'static> = $val;
        let edge: fn(&mut Rng) -> <$K as Value>::SelfType<'static> = $edge;
        let kb = |k: &<$K as Value>::SelfType<'_>| bytes::<$K>(k);
        let vb = |v: &<$V as Value>::SelfType<'_>| bytes::<$V>(v);
        let cmp = |a: &<$K as Value>::SelfType<'_>, b: &<$K as Value>::SelfType<'_>| {
            <$K as Key>::compare(&kb(a), &kb(b))
        };
        let mut answers = 0usize;
        for step in 0..$steps {
            let rtx = db.begin_write().unwrap();
            let ptx = kv.begin_write().unwrap();
            {
                let mut rt = rtx.open_table(DEF).unwrap();
                let mut pt = ptx.open_table(DEF).unwrap();
                // Bulk first, so that ranges span several pages.
                let ops = if step == 0 { 600 } else { 1 + r.below(30) };
                for _ in 0..ops {
                    let op = if step == 0 { 0 } else { r.below(12) };
                    let what = format!("seed {} step {step} op {op}", $seed);
                    match op {
                        0..=2 => {
                            let (k, v) = (key(&mut r), val(&mut r));
                            let a = rt.insert(k, v).unwrap().map(|g| vb(&g.value()));
                            let b = pt.insert(k, v).unwrap().map(|g| vb(&g.value()));
                            assert_eq!(a, b, "insert {what}");
                        }
                        3 => {
                            let k = edge(&mut r);
                            let a = rt.remove(k).unwrap().map(|g| vb(&g.value()));
                            let b = pt.remove(k).unwrap().map(|g| vb(&g.value()));
                            assert_eq!(a, b, "remove {what}");
                        }
                        4 => {
                            let k = edge(&mut r);
                            let a = rt.get(k).unwrap().map(|g| vb(&g.value()));
                            let b = pt.get(k).unwrap().map(|g| vb(&g.value()));
                            assert_eq!(a, b, "get {what}");
                        }
                        5 | 6 => {
                            // A random range, read from random ends.
                            let (mut lo, mut hi) = (edge(&mut r), edge(&mut r));
                            if cmp(&lo, &hi) == Ordering::Greater {
                                std::mem::swap(&mut lo, &mut hi);
                            }
                            let same = cmp(&lo, &hi) == Ordering::Equal;
                            let lo = match r.below(3) {
                                0 => Bound::Included(lo),
                                1 if !same => Bound::Excluded(lo),
                                _ => Bound::Unbounded,
                            };
                            let hi = match r.below(3) {
                                0 => Bound::Included(hi),
                                1 if !same => Bound::Excluded(hi),
                                _ => Bound::Unbounded,
                            };
                            let ends: Vec<bool> =
                                (0..r.below(700)).map(|_| r.below(3) == 0).collect();
                            let mut a = rt.range(Span(lo, hi)).unwrap();
                            let mut b = pt.range(Span(lo, hi)).unwrap();
                            for back in ends {
                                let x = if back { a.next_back() } else { a.next() };
                                let y = if back { b.next_back() } else { b.next() };
                                let x = x.map(|x| {
                                    x.map(|(k, v)| (kb(&k.value()), vb(&v.value()))).unwrap()
                                });
                                let y = y.map(|y| {
                                    y.map(|(k, v)| (kb(&k.value()), vb(&v.value()))).unwrap()
                                });
                                assert_eq!(x, y, "range {what} ({lo:?}, {hi:?}) back={back}");
                                answers += 1;
                            }
                        }
                        7 => {
                            let a = rt
                                .first()
                                .unwrap()
                                .map(|(k, v)| (kb(&k.value()), vb(&v.value())));
                            let b = pt
                                .first()
                                .unwrap()
                                .map(|(k, v)| (kb(&k.value()), vb(&v.value())));
                            assert_eq!(a, b, "first {what}");
                            let a = rt
                                .last()
                                .unwrap()
                                .map(|(k, v)| (kb(&k.value()), vb(&v.value())));
                            let b = pt
                                .last()
                                .unwrap()
                                .map(|(k, v)| (kb(&k.value()), vb(&v.value())));
                            assert_eq!(a, b, "last {what}");
                            assert_eq!(rt.len().unwrap(), pt.len().unwrap(), "len {what}");
                            assert_eq!(rt.is_empty().unwrap(), pt.is_empty().unwrap());
                        }
                        8 => {
                            // Remove about a third of a range.
                            let (mut lo, mut hi) = (edge(&mut r), edge(&mut r));
                            if cmp(&lo, &hi) == Ordering::Greater {
                                std::mem::swap(&mut lo, &mut hi);
                            }
                            let salt = r.next();
                            let keep =
                                |k: <$K as Value>::SelfType<'_>, _: <$V as Value>::SelfType<'_>| {
                                    let h = kb(&k)
                                        .iter()
                                        .fold(salt, |h, b| h.wrapping_mul(31) ^ u64::from(*b));
                                    h % 3 != 0
                                };
                            let span = Span(Bound::Included(lo), Bound::Included(hi));
                            rt.retain_in(span, keep).unwrap();
                            pt.retain_in(span, keep).unwrap();
                        }
                        10 => {
                            // Many rows at once (a key may come twice:
                            // its last state counts), as redb does them
                            // one by one.
                            let batch: Vec<_> = (0..1 + r.below(40))
                                .map(|_| {
                                    let k = key(&mut r);
                                    let v = (r.below(3) != 0).then(|| val(&mut r));
                                    (k, v)
                                })
                                .collect();
                            for (k, v) in &batch {
                                match v {
                                    Some(v) => drop(rt.insert(*k, *v).unwrap()),
                                    None => drop(rt.remove(*k).unwrap()),
                                }
                            }
                            pt.set_many(batch).unwrap();
                        }
                        11 => {
                            let keys: Vec<_> = (0..r.below(40)).map(|_| edge(&mut r)).collect();
                            let a: Vec<_> = keys
                                .iter()
                                .map(|k| rt.get(*k).unwrap().map(|g| vb(&g.value())))
                                .collect();
                            let b: Vec<_> = pt
                                .get_many(keys.iter().copied())
                                .unwrap()
                                .into_iter()
                                .map(|g| g.map(|g| vb(&g.value())))
                                .collect();
                            assert_eq!(a, b, "get_many {what}");
                        }
                        _ => {
                            let front = r.below(2) == 0;
                            let a = if front { rt.pop_first() } else { rt.pop_last() };
                            let b = if front { pt.pop_first() } else { pt.pop_last() };
                            let a = a.unwrap().map(|(k, v)| (kb(&k.value()), vb(&v.value())));
                            let b = b.unwrap().map(|(k, v)| (kb(&k.value()), vb(&v.value())));
                            assert_eq!(a, b, "pop {what}");
                        }
                    }
                    answers += 1;
                }
            }
            // Now and then both are rolled back instead.
            if r.below(8) == 0 {
                drop(rtx);
                drop(ptx);
            } else {
                rtx.commit().unwrap();
                ptx.commit().unwrap();
            }
            // Every row, in order, through a read transaction each.
            let rtx = db.begin_read().unwrap();
            let ptx = kv.begin_read().unwrap();
            let rt = rtx.open_table(DEF).unwrap();
            let pt = ptx.open_table(DEF).unwrap();
            let a: Vec<_> = rt
                .iter()
                .unwrap()
                .map(|x| {
                    let (k, v) = x.unwrap();
                    (kb(&k.value()), vb(&v.value()))
                })
                .collect();
            let b: Vec<_> = pt
                .iter()
                .unwrap()
                .map(|x| {
                    let (k, v) = x.unwrap();
                    (kb(&k.value()), vb(&v.value()))
                })
                .collect();
            same(&a, &b, &format!("rows after step {step}"));
            let back: Vec<_> = pt
                .iter()
                .unwrap()
                .rev()
                .map(|x| {
                    let (k, v) = x.unwrap();
                    (kb(&k.value()), vb(&v.value()))
                })
                .collect();
            assert_eq!(
                back.into_iter().rev().collect::<Vec<_>>(),
                a,
                "backwards after step {step}"
            );
        }
        answers
    }};
}

#[test]
fn random_operations_answer_as_redb_does() {
    let Some(pg) = Pg::start() else { return };
    let mut answers = 0;
    for (i, seed) in [1u64, 0x9e37_79b9_7f4a_7c15].into_iter().enumerate() {
        let kv = database(&pg, &format!("kv{i}"));
        // A tuple key with a text part (the collation), a small value.
        answers += exercise!(
            &kv,
            seed,
            30,
            (u8, u32, &'static str),
            u8,
            "grants",
            |r| (r.below(3) as u8, r.pick(SMALL), r.pick(WORDS)),
            |r| r.below(256) as u8
        );
        // Four integer parts, the widest; byte values.
        answers += exercise!(
            &kv,
            seed,
            30,
            (u32, u32, u32, u16),
            &'static [u8],
            "readings",
            |r| (
                r.pick(SMALL),
                r.below(4) as u32,
                r.pick(SMALL),
                r.pick(&[0u16, 1, u16::MAX])
            ),
            |r| r.pick(BLOBS)
        );
        // A text key alone; a u64 value up to i64::MAX.
        answers += exercise!(
            &kv,
            seed,
            30,
            &'static str,
            u64,
            "meta",
            |r| r.pick(WORDS),
            |r| r.pick(&[0u64, 1, i64::MAX as u64])
        );
        // A set (no value columns).
        answers += exercise!(
            &kv,
            seed,
            30,
            (u32, u32, u32),
            (),
            "channel_members",
            |r| (r.below(5) as u32, r.pick(SMALL), r.below(40) as u32),
            |_| ()
        );
        // A tuple value with a negative part.
        answers += exercise!(
            &kv,
            seed,
            30,
            u32,
            (u8, i64),
            "presence",
            |r| r.below(2000) as u32,
            |r| (r.below(4) as u8, r.pick(&[i64::MIN, -1, 0, i64::MAX]))
        );
        // A u64 key part: rows up to i64::MAX, asked for up to u64::MAX
        // (the server's "to the end" bound, as in `(device, u64::MAX)`).
        answers += exercise!(
            &kv,
            seed,
            30,
            (u32, u64),
            &'static [u8],
            "channel_items",
            |r| (r.below(3) as u32, r.pick(WIDE)),
            |r| r.pick(BLOBS),
            |r| (r.below(3) as u32, r.pick(WIDE_EDGES))
        );
    }
    assert!(answers > 10_000, "{answers} answers compared");
}

const COUNTER: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn read_counter(kv: &Arc<PgKv>) -> u64 {
    let tx = kv.begin_read().unwrap();
    let t = tx.open_table(COUNTER).unwrap();
    let v = t.get("n").unwrap().map(|g| g.value()).unwrap_or(0);
    v
}

fn read(tx: &PgTxn) -> Result<u64, StoreError> {
    Ok(tx
        .open_table(COUNTER)?
        .get("n")?
        .map(|g| g.value())
        .unwrap_or(0))
}

fn write(tx: &PgTxn, n: u64) -> Result<(), StoreError> {
    tx.open_table(COUNTER)?.insert("n", n)?;
    Ok(())
}

fn bump(tx: &PgTxn) -> Result<(), StoreError> {
    write(tx, read(tx)? + 1)
}

/// Two transactions that both read a counter and write it back: redb
/// runs them one after the other; here the second to commit is refused
/// as not serializable, so neither increment is lost.
#[test]
fn a_lost_update_is_refused_and_many_writers_lose_nothing() {
    let Some(pg) = Pg::start() else { return };
    let kv = database(&pg, "counter");
    let a = kv.begin_write().unwrap();
    let b = kv.begin_write().unwrap();
    // Both read 0; a writes 1 and commits; b, writing 1 too, would lose
    // a's increment.
    let (na, nb) = (read(&a).unwrap(), read(&b).unwrap());
    write(&a, na + 1).unwrap();
    a.commit().unwrap();
    let b_done = write(&b, nb + 1).and_then(|()| b.commit());
    assert!(
        matches!(b_done, Err(StoreError::Retry(_))),
        "the second writer must be refused: {b_done:?}"
    );
    assert_eq!(read_counter(&kv), 1);

    // Four threads, fifty increments each, through `write` (which runs a
    // refused transaction again): every increment is there once.
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (kv, start) = (kv.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..50 {
                    kv.write(bump).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(read_counter(&kv), 201);
}

/// A read transaction sees the data committed when it began, whatever
/// commits after; a change through it is refused.
#[test]
fn a_read_is_one_snapshot() {
    let Some(pg) = Pg::start() else { return };
    let kv = database(&pg, "snap");
    kv.write(|tx| {
        tx.open_table(COUNTER)?.insert("n", 5)?;
        Ok::<_, StoreError>(())
    })
    .unwrap();
    let read = kv.begin_read().unwrap();
    let before = read.open_table(COUNTER).unwrap();
    assert_eq!(before.get("n").unwrap().unwrap().value(), 5);
    kv.write(|tx| {
        let mut t = tx.open_table(COUNTER)?;
        t.insert("n", 6)?;
        t.insert("m", 1)?;
        Ok::<_, StoreError>(())
    })
    .unwrap();
    assert_eq!(before.get("n").unwrap().unwrap().value(), 5);
    assert_eq!(before.iter().unwrap().count(), 1);
    assert_eq!(read_counter(&kv), 6);
    let mut t = read.open_table(COUNTER).unwrap();
    assert!(matches!(t.insert("x", 1), Err(StoreError::Io(_))));
}

/// No server: `Unavailable` at once, naming the server without its
/// password. A full pool: `Unavailable` after the configured wait.
#[test]
fn waits_are_bounded_and_the_password_never_shows() {
    let Some(pg) = Pg::start() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = Target::parse(&format!(
        "host=127.0.0.1 port={port} user=ov password=hunter2secret dbname=x connect_timeout=2"
    ))
    .unwrap();
    let kv = Arc::new(PgKv::new(target, 2, Duration::from_millis(300)).unwrap());
    match kv.begin_write() {
        Err(StoreError::Unavailable(why)) => {
            assert!(why.contains(&format!("port={port}")), "{why}");
            assert!(!why.contains("hunter2secret"), "{why}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }

    let kv = Arc::new(
        PgKv::new(
            Target::parse(&pg.url("postgres")).unwrap(),
            1,
            Duration::from_millis(300),
        )
        .unwrap(),
    );
    let held = kv.begin_read().unwrap();
    match kv.begin_read() {
        Err(StoreError::Unavailable(why)) => {
            assert!(why.contains("no PostgreSQL session free"), "{why}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    drop(held);
    kv.begin_read().expect("the session is back in the pool");
}
