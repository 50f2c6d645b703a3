//! Presence's unit tests: contacts, the sweep, damping, gateways, restart.

use super::*;
use crate::store::records::{DeviceMeta, DeviceRecord};

const S: i64 = US;

fn presence(after: u32) -> Presence {
    Presence::new(Arc::new(Directory::default()), after, vec![], vec![])
}

fn kinds(p: &Presence) -> Vec<bool> {
    p.take_changes().iter().map(|c| c.online).collect()
}

#[test]
fn offline_once_online_once() {
    let p = presence(60);
    p.saw(1, 0);
    assert_eq!(kinds(&p), vec![true]);
    for t in (0..600).step_by(7) {
        p.sweep(t * S);
    }
    // Silent since 0: offline once, at the first sweep past 60 s.
    let c = p.take_changes();
    assert_eq!(c.len(), 1);
    assert!(!c[0].online && c[0].at >= 60 * S && c[0].at < 67 * S);
    assert_eq!(p.state(1), State::Offline);
    p.saw(1, 700 * S);
    p.saw(1, 701 * S);
    assert_eq!(kinds(&p), vec![true]);
    assert_eq!(p.state(1), State::Online);
}

#[test]
fn regular_contact_keeps_a_device_online_cheaply() {
    let p = presence(60);
    p.saw(1, 0);
    p.take_changes();
    let mut looked = 0;
    for t in 0..600 {
        p.saw(1, t * S);
        looked += p.sweep(t * S);
    }
    assert!(p.take_changes().is_empty());
    // One heap entry pushed back about once per offline_after.
    assert!(looked <= 12, "{looked} heap entries looked at");
}

#[test]
fn a_device_at_the_edge_flaps_at_most_once() {
    let p = presence(60);
    // Reports every 61 s (just past offline_after), swept every second.
    let mut changes = Vec::new();
    let mut next = 0;
    for t in 0..3_600 {
        if t == next {
            p.saw(1, t * S);
            next += 61;
        }
        p.sweep(t * S);
        changes.extend(kinds(&p));
    }
    assert_eq!(changes, vec![true, false, true], "{changes:?}");
    // A real outage still goes offline (after twice the silence).
    for t in 3_600..3_800 {
        p.sweep(t * S);
    }
    assert_eq!(kinds(&p), vec![false]);
}

#[test]
fn a_device_falling_silent_with_its_gateway_is_unreachable_not_offline() {
    let d = Arc::new(Directory::default());
    let device = |num: u32, meta: DeviceMeta| DeviceRecord {
        num,
        id: format!("d{num}"),
        name: String::new(),
        owner: "admin".into(),
        token: [0; 32],
        prev_token: None,
        created: 0,
        meta,
    };
    d.put_device(device(
        1,
        DeviceMeta {
            gateway: true,
            ..DeviceMeta::default()
        },
    ));
    d.put_device(device(
        2,
        DeviceMeta {
            parent: Some(1),
            ..DeviceMeta::default()
        },
    ));
    let p = Presence::new(d, 60, vec![], vec![]);
    // The child's last reading came through the gateway, which spoke
    // once more 2 ms later; then both fall silent. A sweep between the
    // two deadlines must not call the child offline on its own.
    p.saw(2, 100 * S);
    p.saw(1, 100 * S + 2_000);
    p.take_changes();
    p.sweep(160 * S + 1_000);
    assert!(p.take_changes().is_empty());
    p.sweep(161 * S);
    let c = p.take_changes();
    assert_eq!(
        c.iter().map(|c| (c.device, c.online)).collect::<Vec<_>>(),
        [(1, false)]
    );
    assert_eq!(p.state(2), State::Unreachable);
    // A gateway that keeps talking: the child's silence is its own.
    p.saw(1, 200 * S);
    p.saw(2, 200 * S);
    p.take_changes();
    for t in 200..300 {
        p.saw(1, t * S);
        p.sweep(t * S);
    }
    let c = p.take_changes();
    assert_eq!(
        c.iter().map(|c| (c.device, c.online)).collect::<Vec<_>>(),
        [(2, false)]
    );
}

#[test]
fn restart_reports_a_silent_device_once() {
    let d = Arc::new(Directory::default());
    // Stored online, last heard 10 minutes before the restart.
    let p = Presence::new(d.clone(), 60, vec![(1, 0)], vec![(1, 1, 0)]);
    p.sweep(600 * S);
    p.sweep(601 * S);
    assert_eq!(kinds(&p), vec![false]);
    // Stored offline: no new event after another restart.
    let p = Presence::new(d, 60, vec![(1, 0)], vec![(1, 0, 600 * S)]);
    p.sweep(1_000 * S);
    assert!(p.take_changes().is_empty());
    assert_eq!(p.state(1), State::Offline);
}
