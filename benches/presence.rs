//! The presence sweep at 100,000 devices (BENCHMARKS.md, "Presence").
//!
//! One iteration is one second of (virtual) time: 1/60 of the devices
//! report (each device every 60 s; not timed), then the sweep runs (timed).
//! With an `offline_after` of 300 s nobody goes offline, so this is the
//! steady cost of keeping 100,000 devices' presence. The reference,
//! measured in the same run, is the naive design: every second, look at
//! every device's last contact.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use overlord::auth::Directory;
use overlord::presence::Presence;
use overlord::store::{DeviceMeta, DeviceRecord};

const DEVICES: u32 = 100_000;
const S: i64 = 1_000_000;

fn directory() -> Arc<Directory> {
    let d = Directory::default();
    for num in 0..DEVICES {
        d.put_device(DeviceRecord {
            num,
            id: format!("d{num:06}"),
            name: String::new(),
            owner: "admin".into(),
            token: [0; 32],
            prev_token: None,
            created: 0,
            meta: DeviceMeta::default(),
        });
    }
    Arc::new(d)
}

/// The devices that report in virtual second `t`: each once a minute.
fn slice(t: i64) -> std::ops::Range<u32> {
    let per = DEVICES.div_ceil(60);
    let from = (t % 60) as u32 * per;
    from..(from + per).min(DEVICES)
}

fn bench(c: &mut Criterion) {
    let dir = directory();
    let p = Presence::new(dir.clone(), 300, vec![], vec![]);
    for d in 0..DEVICES {
        p.saw(d, 0);
    }
    p.take_changes();
    let mut g = c.benchmark_group("presence_100k");
    let mut t = 0i64;
    // Contacts are recorded outside the timed part: only the sweep counts.
    g.bench_function("heap_sweep_per_second", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                t += 1;
                for d in slice(t) {
                    p.saw(d, t * S);
                }
                let start = Instant::now();
                std::hint::black_box(p.sweep(t * S));
                spent += start.elapsed();
            }
            spent
        })
    });
    assert!(p.take_changes().is_empty(), "nobody went offline");

    // The reference: a full scan every second.
    let mut last: HashMap<u32, i64> = (0..DEVICES).map(|d| (d, 0)).collect();
    let mut t = 0i64;
    g.bench_function("full_scan_per_second", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                t += 1;
                for d in slice(t) {
                    last.insert(d, t * S);
                }
                let start = Instant::now();
                let due = last.values().filter(|&&v| v + 300 * S <= t * S).count();
                std::hint::black_box(due);
                spent += start.elapsed();
            }
            spent
        })
    });
    // The same scan, looking up each device's own offline_after as the
    // real rule must (a device may set its own).
    g.bench_function("full_scan_with_lookups_per_second", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                t += 1;
                for d in slice(t) {
                    last.insert(d, t * S);
                }
                let start = Instant::now();
                let due = last
                    .iter()
                    .filter(|(d, v)| {
                        let after = dir
                            .device_by_num(**d)
                            .and_then(|r| r.meta.offline_after)
                            .unwrap_or(300);
                        **v + i64::from(after) * S <= t * S
                    })
                    .count();
                std::hint::black_box(due);
                spent += start.elapsed();
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
