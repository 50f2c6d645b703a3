//! Where the bytes of a data file go: redb's own statistics of a copy of
//! the file (`filestats FILE`; stop the server first).
use redb::Database;

fn main() {
    let path = std::env::args().nth(1).expect("a data file");
    let copy = std::env::temp_dir().join(format!("filestats-{}.redb", std::process::id()));
    std::fs::copy(&path, &copy).unwrap();
    let db = Database::open(&copy).unwrap();
    let txn = db.begin_write().unwrap();
    let st = txn.stats().unwrap();
    let page = st.page_size() as u64;
    println!("page size {page}");
    println!("tree height {}", st.tree_height());
    println!(
        "leaf pages {} ({} bytes)",
        st.leaf_pages(),
        st.leaf_pages() * page
    );
    println!("branch pages {}", st.branch_pages());
    println!("stored leaf bytes {}", st.stored_bytes());
    println!("metadata bytes {}", st.metadata_bytes());
    println!("fragmented bytes {}", st.fragmented_bytes());
    println!(
        "allocated pages {} ({} bytes)",
        st.allocated_pages(),
        st.allocated_pages() * page
    );
    txn.abort().unwrap();
    drop(db);
    let _ = std::fs::remove_file(&copy);
}
