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

/// Run `iters` virtual seconds: `record(state, t)` records the second's
/// contacts (untimed), then `work(state, t)` is timed.
fn per_second<S>(
    iters: u64,
    t: &mut i64,
    state: &mut S,
    record: impl Fn(&mut S, i64),
    work: impl Fn(&S, i64),
) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        *t += 1;
        record(state, *t);
        let start = Instant::now();
        work(state, *t);
        spent += start.elapsed();
    }
    spent
}

/// Record the contacts of second `t` in a plain map.
fn record_plain(last: &mut (HashMap<u32, i64>, Arc<Directory>), t: i64) {
    for d in slice(t) {
        last.0.insert(d, t * S);
    }
}

fn bench(c: &mut Criterion) {
    let dir = directory();
    let p = Presence::new(dir.clone(), 300, vec![], vec![]);
    for d in 0..DEVICES {
        p.saw(d, 0);
    }
    p.take_changes();
    let mut g = c.benchmark_group("presence_100k");
    // Contacts are recorded outside the timed part: only the sweep counts.
    let mut t = 0i64;
    let mut heap = &p;
    g.bench_function("heap_sweep_per_second", |b| {
        b.iter_custom(|iters| {
            per_second(
                iters,
                &mut t,
                &mut heap,
                |p, t| slice(t).for_each(|d| p.saw(d, t * S)),
                |p, t| {
                    std::hint::black_box(p.sweep(t * S));
                },
            )
        })
    });
    assert!(p.take_changes().is_empty(), "nobody went offline");

    // The reference: a full scan every second...
    let mut plain = (
        (0..DEVICES).map(|d| (d, 0)).collect::<HashMap<u32, i64>>(),
        dir,
    );
    let mut t = 0i64;
    g.bench_function("full_scan_per_second", |b| {
        b.iter_custom(|iters| {
            per_second(iters, &mut t, &mut plain, record_plain, |(last, _), t| {
                let due = last.values().filter(|&&v| v + 300 * S <= t * S).count();
                std::hint::black_box(due);
            })
        })
    });
    // ...and the same scan looking up each device's own offline_after, as
    // the real rule must (a device may set its own).
    g.bench_function("full_scan_with_lookups_per_second", |b| {
        b.iter_custom(|iters| {
            per_second(iters, &mut t, &mut plain, record_plain, |(last, dir), t| {
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
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
