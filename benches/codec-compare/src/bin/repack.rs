//! Experiment: repack the `sealed` table of a copy of a data file into
//! full leaves (extract a key range, insert it back through a cursor),
//! then compact; print the file size before and after.
use std::ops::Bound;

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};

type K = (u32, u32, u32, u16);
const SEALED: TableDefinition<K, &[u8]> = TableDefinition::new("sealed");

fn main() {
    let path = std::env::args().nth(1).expect("a data file");
    let per: usize = std::env::args().nth(2).map_or(4096, |s| s.parse().unwrap());
    let copy = std::env::temp_dir().join(format!("repack-{}.redb", std::process::id()));
    std::fs::copy(&path, &copy).unwrap();
    let mut db = Database::open(&copy).unwrap();
    db.compact().unwrap();
    println!("compacted: {}", std::fs::metadata(&copy).unwrap().len());
    let t = std::time::Instant::now();
    let mut from: Bound<K> = Bound::Unbounded;
    let mut txns = 0;
    loop {
        let txn = db.begin_write().unwrap();
        let mut last = None;
        {
            let mut table = txn.open_table(SEALED).unwrap();
            let rows: Vec<(K, Vec<u8>)> = table
                .extract_from_if((from, Bound::Unbounded), |_, _| true)
                .unwrap()
                .take(per)
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value(), v.value().to_vec())
                })
                .collect();
            if let Some((k, _)) = rows.first() {
                let mut c = table.lower_bound_mut(Bound::Included(k)).unwrap();
                for (k, v) in &rows {
                    c.insert_before(k, v.as_slice()).unwrap();
                }
                c.close().unwrap();
                last = rows.last().map(|(k, _)| *k);
            }
        }
        txn.commit().unwrap();
        txns += 1;
        match last {
            Some(k) => from = Bound::Excluded(k),
            None => break,
        }
    }
    println!("repacked in {txns} transactions, {:?}", t.elapsed());
    let t = std::time::Instant::now();
    db.compact().unwrap();
    println!("compacted again in {:?}: {}", t.elapsed(), std::fs::metadata(&copy).unwrap().len());
    let txn = db.begin_write().unwrap();
    let st = txn.stats().unwrap();
    println!("leaf pages {} stored {} ", st.leaf_pages(), st.stored_bytes());
    txn.abort().unwrap();
    let r = db.begin_read().unwrap();
    println!("rows {}", r.open_table(SEALED).unwrap().len().unwrap());
    drop(r);
    drop(db);
    let _ = std::fs::remove_file(&copy);
}
