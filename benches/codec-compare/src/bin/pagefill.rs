//! How redb's file grows and fills for a simulated day of chunks (4,000
//! sensors x 24 chunks of 360 readings, 87 upload commits of ~2 bytes a
//! reading), then sealed into values of a given size, written different
//! ways: `pagefill SENSORS SEALED_BYTES MODE...` with modes `none` (hot
//! only), `inplace` / `remove-insert` / `other-table` / `odd-even` (sealed
//! after the upload) and `during` / `during-remove` / `during-other-table`
//! (finished groups sealed after every upload commit). Prints bytes per
//! reading (file size and allocated blocks) and redb's tree statistics.
//! See docs/storage.md, "Bytes on disk".
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::os::unix::fs::MetadataExt;

type K = (u32, u32, u32, u16);
const T: TableDefinition<K, &[u8]> = TableDefinition::new("readings");
const S: TableDefinition<K, &[u8]> = TableDefinition::new("sealed");

fn sizes(path: &std::path::Path) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap();
    (m.len(), m.blocks() * 512)
}

fn main() {
    let sensors: u32 = std::env::args().nth(1).map_or(4000, |s| s.parse().unwrap());
    let sealed_len: usize = std::env::args().nth(2).map_or(175, |s| s.parse().unwrap());
    let modes: Vec<String> = std::env::args().skip(3).collect();
    for mode in modes.iter().map(String::as_str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        let db = Database::create(&path).unwrap();
        // The upload: 87 commits of 100 steps (1,000 s) per sensor, a
        // chunk per hour (360 readings), ~2 bytes a reading hot.
        for c in 0..87u32 {
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(T).unwrap();
                for s in 0..sensors {
                    let (d, code) = (s / 4, s % 4 + 1);
                    for step in [c * 100, c * 100 + 99] {
                        let hour = step / 360;
                        let n = ((c * 100 + 100).min((hour + 1) * 360) - hour * 360) as usize;
                        t.insert((d, code, hour * 60, 0), vec![7u8; n * 2].as_slice())
                            .unwrap();
                    }
                }
            }
            txn.commit().unwrap();
            if mode.starts_with("during") {
                // Seal, after every commit, the groups that are not the
                // sensor's last (its hour is over).
                let txn = db.begin_write().unwrap();
                {
                    let mut t = txn.open_table(T).unwrap();
                    let mut s = txn.open_table(S).unwrap();
                    let hour_now = (c * 100 + 99) / 360;
                    for sn in 0..sensors {
                        let (d, code) = (sn / 4, sn % 4 + 1);
                        for h in hour_now.saturating_sub(2)..hour_now {
                            if t.get((d, code, h * 60, 0)).unwrap().is_some() {
                                if mode == "during-other-table" {
                                    t.remove((d, code, h * 60, 0)).unwrap();
                                    s.insert(
                                        (d, code, h * 60, 0),
                                        vec![9u8; sealed_len].as_slice(),
                                    )
                                    .unwrap();
                                } else if mode == "during-remove" {
                                    if t.get((d, code, h * 60, 0)).unwrap().unwrap().value().len()
                                        != sealed_len
                                    {
                                        t.remove((d, code, h * 60, 0)).unwrap();
                                        t.insert(
                                            (d, code, h * 60, 0),
                                            vec![9u8; sealed_len].as_slice(),
                                        )
                                        .unwrap();
                                    }
                                } else if t
                                    .get((d, code, h * 60, 0))
                                    .unwrap()
                                    .unwrap()
                                    .value()
                                    .len()
                                    != sealed_len
                                {
                                    t.insert(
                                        (d, code, h * 60, 0),
                                        vec![9u8; sealed_len].as_slice(),
                                    )
                                    .unwrap();
                                }
                            }
                        }
                    }
                }
                txn.commit().unwrap();
            }
        }
        let hot = sizes(&path);
        // Sealing, 512 groups a transaction, in key order.
        let keys: Vec<K> = {
            let txn = db.begin_read().unwrap();
            let t = txn.open_table(T).unwrap();
            t.iter().unwrap().map(|r| r.unwrap().0.value()).collect()
        };
        let order: Vec<K> = if mode == "odd-even" {
            keys.iter()
                .step_by(2)
                .chain(keys.iter().skip(1).step_by(2))
                .copied()
                .collect()
        } else {
            keys.clone()
        };
        let val = vec![9u8; sealed_len];
        for batch in order.chunks(512) {
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(T).unwrap();
                match mode {
                    "none" => {}
                    "inplace" | "odd-even" | "during" | "during-remove" => {
                        for k in batch {
                            t.insert(*k, val.as_slice()).unwrap();
                        }
                    }
                    "remove-insert" => {
                        let (lo, hi) = (batch[0], *batch.last().unwrap());
                        t.retain_in(lo..=hi, |_, _| false).unwrap();
                        for k in batch {
                            t.insert(*k, val.as_slice()).unwrap();
                        }
                    }
                    _ => {
                        let mut s = txn.open_table(S).unwrap();
                        for k in batch {
                            t.remove(*k).unwrap();
                            s.insert(*k, val.as_slice()).unwrap();
                        }
                    }
                }
            }
            txn.commit().unwrap();
        }
        let after = sizes(&path);
        let st = {
            let txn = db.begin_write().unwrap();
            let st = txn.stats().unwrap();
            txn.abort().unwrap();
            st
        };
        println!(
            "  tree: {} leaf pages, {} branch pages, stored leaf bytes {}, metadata {}, fragmented {}, allocated pages {}, page {}",
            st.leaf_pages(), st.branch_pages(), st.stored_bytes(), st.metadata_bytes(), st.fragmented_bytes(), st.allocated_pages(), st.page_size()
        );
        drop(db);
        let n = f64::from(sensors) * 8640.0;
        println!(
            "{mode:14} hot {:.2} b/r (alloc {:.2}); sealed {:.2} b/r (alloc {:.2}); payload {:.3}",
            hot.0 as f64 / n,
            hot.1 as f64 / n,
            after.0 as f64 / n,
            after.1 as f64 / n,
            sealed_len as f64 / 360.0
        );
    }
}
