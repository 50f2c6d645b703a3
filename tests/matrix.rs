//! The permission matrix: every endpoint × every kind of caller, with the
//! status each must get. Generated from the router's own endpoint table:
//! an endpoint without a row here fails the test, so none can be added
//! without deciding who may use it. (`docs/permissions.md` is this table
//! in prose.)

mod common;

use std::collections::HashMap;

use common::{basic, hour_ago, TestServer};
use overlord::api::{Endpoint, ENDPOINTS};

/// Callers, in column order.
const ROLES: [&str; 7] = [
    "admin", "owner", "grantee", "other", "device", "odevice", "anon",
];

/// Expected statuses per endpoint, in [`ROLES`] order.
fn expectations() -> HashMap<Endpoint, [u16; 7]> {
    use Endpoint::*;
    HashMap::from([
        //                      admin owner grant other dev  odev anon
        (Healthz, [200, 200, 200, 200, 200, 200, 200]),
        (Metrics, [200, 200, 200, 200, 200, 200, 200]),
        (ReadingsGet, [200, 200, 403, 404, 200, 404, 401]),
        (ReadingsPost, [200, 200, 403, 404, 200, 404, 401]),
        (InboxRead, [400, 400, 400, 400, 200, 200, 401]),
        (InboxAck, [400, 400, 400, 400, 200, 200, 401]),
        (DeviceList, [200, 200, 200, 200, 200, 200, 401]),
        (DeviceCreate, [201, 201, 201, 201, 403, 403, 401]),
        (DeviceTree, [200, 200, 200, 200, 200, 200, 401]),
        (DeviceShow, [200, 200, 200, 404, 200, 404, 401]),
        (DeviceUpdate, [200, 200, 403, 404, 403, 404, 401]),
        (DeviceDelete, [200, 200, 403, 404, 403, 404, 401]),
        (DeviceTransfer, [200, 200, 403, 404, 403, 404, 401]),
        (PresenceEvents, [200, 200, 200, 200, 200, 200, 401]),
        (PresenceNotify, [200, 200, 200, 200, 403, 403, 401]),
        (PresenceNotifySet, [200, 200, 200, 404, 403, 403, 401]),
        (DeviceReadings, [200, 200, 200, 404, 200, 404, 401]),
        (DeviceReadingsDelete, [200, 200, 200, 404, 403, 404, 401]),
        (DeviceAggregates, [200, 200, 200, 404, 200, 404, 401]),
        (DeviceToken, [200, 200, 403, 404, 403, 404, 401]),
        (DeviceRevoke, [200, 200, 403, 404, 403, 404, 401]),
        (DeviceInboxView, [200, 200, 200, 404, 403, 404, 401]),
        (DeviceInboxSend, [201, 201, 201, 404, 403, 404, 401]),
        (DeviceCommands, [200, 200, 200, 404, 403, 404, 401]),
        (ChannelList, [200, 200, 200, 200, 200, 200, 401]),
        (ChannelCreate, [201, 201, 201, 201, 403, 403, 401]),
        (ChannelDelete, [200, 200, 403, 404, 404, 404, 401]),
        (ChannelUpdate, [200, 200, 200, 404, 404, 404, 401]),
        (ChannelMembers, [200, 200, 200, 404, 404, 404, 401]),
        (ChannelMemberAdd, [201, 201, 201, 404, 404, 404, 401]),
        (ChannelMemberRemove, [200, 200, 200, 404, 404, 404, 401]),
        (ChannelItems, [200, 200, 200, 404, 404, 404, 401]),
        (ChannelMessage, [201, 201, 201, 404, 404, 404, 401]),
        (AlertList, [200, 200, 200, 200, 200, 200, 401]),
        (AlertCreate, [201, 201, 201, 404, 403, 403, 401]),
        (AlertDelete, [200, 200, 404, 404, 404, 404, 401]),
        (AlertEvents, [200, 200, 404, 404, 404, 404, 401]),
        (DeadLetters, [200, 403, 403, 403, 403, 403, 401]),
        (UserList, [200, 403, 403, 403, 403, 403, 401]),
        (UserCreate, [201, 403, 403, 403, 403, 403, 401]),
        (UserToken, [200, 200, 403, 403, 403, 403, 401]),
        (UserPassword, [200, 200, 403, 403, 403, 403, 401]),
        (UserRevoke, [200, 200, 403, 403, 403, 403, 401]),
        (UserDelete, [200, 403, 403, 403, 403, 403, 401]),
        (Login, [200, 200, 200, 200, 200, 200, 200]),
        (GrantList, [200, 200, 403, 404, 403, 404, 401]),
        (GrantAdd, [201, 201, 403, 404, 404, 404, 401]),
        (GrantRemove, [200, 200, 403, 404, 404, 404, 401]),
        // `fw` is owner's; grantee has `control`; `device` is owner's.
        (FileList, [200, 200, 200, 200, 200, 200, 401]),
        (FileGet, [200, 200, 200, 404, 200, 404, 401]),
        (FilePut, [200, 200, 200, 404, 403, 404, 401]),
        (FileDelete, [200, 200, 200, 404, 403, 404, 401]),
        (FilePassword, [200, 200, 200, 404, 403, 404, 401]),
        (RetentionShow, [200, 200, 200, 404, 200, 404, 401]),
        (RetentionSet, [200, 200, 403, 404, 403, 404, 401]),
        (AdminBackup, [200, 403, 403, 403, 403, 403, 401]),
        (Logout, [200, 200, 200, 200, 403, 403, 401]),
        (Session, [200, 200, 200, 200, 403, 403, 401]),
        (DeviceSensors, [200, 200, 200, 404, 200, 404, 401]),
        (DeviceSensorDescribe, [200, 200, 200, 404, 200, 404, 401]),
        // The dashboard's files are public; its data comes from the API.
        (Dashboard, [200, 200, 200, 200, 200, 200, 200]),
        (DashboardAsset, [200, 200, 200, 200, 200, 200, 200]),
        // Targets are like alerts: users create them, only the owner
        // (and administrators) see them; they are not granted.
        (TargetList, [200, 200, 200, 200, 200, 200, 401]),
        (TargetCreate, [201, 201, 201, 201, 403, 403, 401]),
        (TargetDelete, [200, 200, 404, 404, 404, 404, 401]),
        (TargetTest, [201, 201, 404, 404, 404, 404, 401]),
        (TargetDeliveries, [200, 200, 404, 404, 404, 404, 401]),
        (TargetDeadLetters, [200, 200, 404, 404, 404, 404, 401]),
        // Line protocol writes like POST /v1/readings (the device tag
        // names `own`); a ThingSpeak update is a device's own.
        (InfluxWriteV1, [204, 204, 403, 404, 204, 404, 401]),
        (InfluxWriteV2, [204, 204, 403, 404, 204, 404, 401]),
        (ThingSpeakUpdate, [403, 403, 403, 403, 200, 200, 401]),
        (ThingSpeakBulk, [403, 403, 403, 403, 202, 202, 401]),
    ])
}

/// A server with: users owner, grantee, other; device `own` (owner's) and
/// `odev` (other's); channel `ch` (owner's, member own/N1); alert `al`
/// (owner's, on own/N1); file `fw` (owner's); target `tg` (owner's);
/// grantee has `control` on own, ch and fw.
struct World {
    s: TestServer,
    auth: HashMap<&'static str, String>,
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}\r\n")
}

fn world(with_password: bool) -> World {
    let s = TestServer::start_with(|c| {
        c.limits.device_requests_per_sec = 0.0;
        c.limits.auth_failures_per_window = 0;
    });
    let admin = s.admin.clone();
    let user = |name: &str| {
        let r = s.admin_form("POST", "/v1/users", &format!("name={name}"));
        assert_eq!(r.status, 201, "{}", r.body);
        common::token_of(&r.body)
    };
    let (owner, grantee, other) = (user("owner"), user("grantee"), user("other"));
    let req = |who: &str, method: &str, path: &str, form: &str| {
        s.raw(
            format!(
                "{method} {path} HTTP/1.1\r\n{who}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            )
            .as_bytes(),
        )
    };
    let own = common::token_of(&req(&bearer(&owner), "POST", "/v1/devices", "id=own").body);
    let odev = common::token_of(&req(&bearer(&other), "POST", "/v1/devices", "id=odev").body);
    for (path, form) in [
        ("/v1/channels", "name=ch"),
        ("/v1/channels/ch/members", "device=own&sensor=N1"),
        ("/v1/alerts", "name=al&device=own&sensor=N1&max=100"),
        ("/v1/targets", "name=tg&url=http%3A%2F%2F127.0.0.1%3A9%2F"),
        (
            "/v1/grants",
            "resource=device:own&to=user:grantee&level=control",
        ),
        (
            "/v1/grants",
            "resource=channel:ch&to=user:grantee&level=control",
        ),
    ] {
        let r = req(&bearer(&owner), "POST", path, form);
        assert_eq!(r.status, 201, "{path}: {}", r.body);
    }
    let r = req(&bearer(&owner), "PUT", "/v1/files/fw", "firmware");
    assert_eq!(r.status, 201, "{}", r.body);
    let r = req(
        &bearer(&owner),
        "POST",
        "/v1/grants",
        "resource=file:fw&to=user:grantee&level=control",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    if with_password {
        let r = req(
            &bearer(&owner),
            "POST",
            "/v1/users/owner/password",
            "password=correct+horse",
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let auth = HashMap::from([
        ("admin", bearer(&admin)),
        ("owner", bearer(&owner)),
        ("grantee", bearer(&grantee)),
        ("other", bearer(&other)),
        ("device", basic("own", &own)),
        ("odevice", basic("odev", &odev)),
        ("anon", String::new()),
    ]);
    World { s, auth }
}

/// The request each endpoint is exercised with: (method, path, body type, body).
fn request(ep: Endpoint, role: &str) -> (&'static str, String, &'static str, String) {
    use Endpoint::*;
    let form = "application/x-www-form-urlencoded";
    let t = hour_ago();
    match ep {
        InfluxWriteV1 => (
            "POST",
            "/write?db=x&precision=s".into(),
            "text/plain",
            format!("m,device=own N1=1 {t}"),
        ),
        InfluxWriteV2 => (
            "POST",
            "/api/v2/write?bucket=x&precision=s".into(),
            "text/plain",
            format!("m,device=own N1=1 {t}"),
        ),
        ThingSpeakUpdate => (
            "GET",
            format!("/update?field1=1&created_at={t}"),
            form,
            String::new(),
        ),
        ThingSpeakBulk => (
            "POST",
            "/channels/1/bulk_update.json".into(),
            "application/json",
            format!("{{\"updates\":[{{\"created_at\":\"{t}\",\"field1\":1}}]}}"),
        ),
        Healthz => ("GET", "/healthz".into(), form, String::new()),
        Metrics => ("GET", "/metrics".into(), form, String::new()),
        ReadingsGet => (
            "GET",
            format!("/v1/readings?device=own&N1=1&time={t}"),
            form,
            String::new(),
        ),
        ReadingsPost => (
            "POST",
            "/v1/readings?device=own".into(),
            "text/csv",
            format!("time,N1\n{t},1\n"),
        ),
        InboxRead => ("GET", "/v1/inbox".into(), form, String::new()),
        InboxAck => ("GET", "/v1/inbox/ack?upto=1".into(), form, String::new()),
        DeviceList => ("GET", "/v1/devices".into(), form, String::new()),
        DeviceCreate => ("POST", "/v1/devices".into(), form, format!("id=new-{role}")),
        DeviceTree => ("GET", "/v1/devices/tree".into(), form, String::new()),
        DeviceShow => ("GET", "/v1/devices/own".into(), form, String::new()),
        DeviceUpdate => (
            "POST",
            "/v1/devices/own".into(),
            form,
            "description=by+someone".into(),
        ),
        DeviceDelete => ("DELETE", "/v1/devices/own".into(), form, String::new()),
        DeviceReadingsDelete => (
            "DELETE",
            "/v1/devices/own/readings?from=0&to=1".into(),
            form,
            String::new(),
        ),
        DeviceTransfer => (
            "POST",
            "/v1/devices/own/owner".into(),
            form,
            "to=grantee".into(),
        ),
        PresenceEvents => ("GET", "/v1/presence/events".into(), form, String::new()),
        PresenceNotify => ("GET", "/v1/presence/notify".into(), form, String::new()),
        PresenceNotifySet => (
            "POST",
            "/v1/presence/notify".into(),
            form,
            "notify_device=own".into(),
        ),
        DeviceReadings => (
            "GET",
            "/v1/devices/own/readings".into(),
            form,
            String::new(),
        ),
        DeviceAggregates => (
            "GET",
            "/v1/devices/own/aggregates".into(),
            form,
            String::new(),
        ),
        DeviceToken => ("POST", "/v1/devices/own/token".into(), form, String::new()),
        DeviceRevoke => ("POST", "/v1/devices/own/revoke".into(), form, String::new()),
        DeviceInboxView => ("GET", "/v1/devices/own/inbox".into(), form, String::new()),
        DeviceCommands => (
            "GET",
            "/v1/devices/own/commands".into(),
            form,
            String::new(),
        ),
        DeviceInboxSend => (
            "POST",
            "/v1/devices/own/inbox".into(),
            form,
            "kind=message&value=hi".into(),
        ),
        ChannelList => ("GET", "/v1/channels".into(), form, String::new()),
        ChannelCreate => (
            "POST",
            "/v1/channels".into(),
            form,
            format!("name=c-{role}"),
        ),
        ChannelDelete => ("DELETE", "/v1/channels/ch".into(), form, String::new()),
        ChannelUpdate => (
            "POST",
            "/v1/channels/ch".into(),
            form,
            "description=by+someone".into(),
        ),
        ChannelMembers => ("GET", "/v1/channels/ch/members".into(), form, String::new()),
        ChannelMemberAdd => (
            "POST",
            "/v1/channels/ch/members".into(),
            form,
            "device=own&sensor=N2".into(),
        ),
        ChannelMemberRemove => (
            "DELETE",
            "/v1/channels/ch/members?device=own&sensor=N1".into(),
            form,
            String::new(),
        ),
        ChannelItems => ("GET", "/v1/channels/ch/items".into(), form, String::new()),
        ChannelMessage => (
            "POST",
            "/v1/channels/ch/messages".into(),
            form,
            "kind=message&value=hi".into(),
        ),
        AlertList => ("GET", "/v1/alerts".into(), form, String::new()),
        AlertCreate => (
            "POST",
            "/v1/alerts".into(),
            form,
            format!("name=a-{role}&device=own&sensor=N1&max=5"),
        ),
        AlertDelete => ("DELETE", "/v1/alerts/al".into(), form, String::new()),
        AlertEvents => ("GET", "/v1/alerts/al/events".into(), form, String::new()),
        DeadLetters => ("GET", "/v1/dead-letters".into(), form, String::new()),
        UserList => ("GET", "/v1/users".into(), form, String::new()),
        UserCreate => ("POST", "/v1/users".into(), form, format!("name=u-{role}")),
        UserToken => ("POST", "/v1/users/owner/token".into(), form, String::new()),
        UserPassword => (
            "POST",
            "/v1/users/owner/password".into(),
            form,
            "password=another+one".into(),
        ),
        UserRevoke => ("POST", "/v1/users/owner/revoke".into(), form, String::new()),
        UserDelete => ("DELETE", "/v1/users/grantee".into(), form, String::new()),
        Login => (
            "POST",
            "/v1/login".into(),
            form,
            "name=owner&password=correct+horse".into(),
        ),
        GrantList => (
            "GET",
            "/v1/grants?resource=device:own".into(),
            form,
            String::new(),
        ),
        GrantAdd => (
            "POST",
            "/v1/grants".into(),
            form,
            "resource=channel:ch&to=user:other&level=read".into(),
        ),
        GrantRemove => (
            "DELETE",
            "/v1/grants?resource=channel:ch&to=user:grantee".into(),
            form,
            String::new(),
        ),
        FileList => ("GET", "/v1/files".into(), form, String::new()),
        FileGet => ("GET", "/v1/files/fw".into(), form, String::new()),
        FilePut => (
            "PUT",
            "/v1/files/fw".into(),
            "application/octet-stream",
            "firmware v2".into(),
        ),
        FileDelete => ("DELETE", "/v1/files/fw".into(), form, String::new()),
        FilePassword => ("POST", "/v1/files/fw/password".into(), form, String::new()),
        RetentionShow => (
            "GET",
            "/v1/devices/own/retention".into(),
            form,
            String::new(),
        ),
        RetentionSet => (
            "POST",
            "/v1/devices/own/retention".into(),
            form,
            "keep_days=30".into(),
        ),
        AdminBackup => ("GET", "/v1/admin/backup".into(), form, String::new()),
        Logout => ("POST", "/v1/logout".into(), form, String::new()),
        Session => ("GET", "/v1/session".into(), form, String::new()),
        DeviceSensors => ("GET", "/v1/devices/own/sensors".into(), form, String::new()),
        DeviceSensorDescribe => (
            "POST",
            "/v1/devices/own/sensors/N1".into(),
            form,
            "label=Temperature&unit=%C2%B0C".into(),
        ),
        Dashboard => ("GET", "/".into(), form, String::new()),
        DashboardAsset => ("GET", "/ui/app.js".into(), form, String::new()),
        TargetList => ("GET", "/v1/targets".into(), form, String::new()),
        TargetCreate => (
            "POST",
            "/v1/targets".into(),
            form,
            format!("name=t-{role}&url=http%3A%2F%2F127.0.0.1%3A9%2F"),
        ),
        TargetDelete => ("DELETE", "/v1/targets/tg".into(), form, String::new()),
        TargetTest => ("POST", "/v1/targets/tg/test".into(), form, String::new()),
        TargetDeliveries => (
            "GET",
            "/v1/targets/tg/deliveries".into(),
            form,
            String::new(),
        ),
        TargetDeadLetters => (
            "GET",
            "/v1/targets/tg/dead-letters".into(),
            form,
            String::new(),
        ),
    }
}

#[test]
fn every_endpoint_for_every_caller() {
    let expect = expectations();
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for (_, _, ep) in ENDPOINTS {
        if seen.contains(ep) {
            continue;
        }
        seen.push(*ep);
        let row = expect
            .get(ep)
            .unwrap_or_else(|| panic!("{ep:?} has no row in the permission matrix"));
        for (i, role) in ROLES.iter().enumerate() {
            // A fresh world per cell: no cell sees another's changes.
            let w = world(*ep == Endpoint::Login);
            let (method, path, ctype, body) = request(*ep, role);
            let r = w.s.raw(
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: t\r\n{}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    w.auth[role],
                    body.len()
                )
                .as_bytes(),
            );
            if r.status != row[i] {
                failures.push(format!(
                    "{ep:?} as {role}: expected {}, got {} {}",
                    row[i],
                    r.status,
                    r.body.trim()
                ));
            }
            if r.status >= 400 && *ep == Endpoint::ThingSpeakUpdate {
                // ThingSpeak firmware reads the body as an entry number:
                // `0` is its failure, the error line is in a header.
                assert_eq!(r.body, "0", "{ep:?} as {role}");
                let line = r.header("Overlord-Error").unwrap_or("");
                assert!(line.starts_with("error,"), "{ep:?} as {role}: {line}");
            } else if r.status >= 400 {
                assert!(r.body.starts_with("error,"), "{ep:?} as {role}: {}", r.body);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        seen.len(),
        expect.len(),
        "rows for endpoints that no longer exist"
    );
}

#[test]
fn a_public_channel_is_readable_anonymously() {
    let w = world(false);
    let owner = &w.auth["owner"];
    let send = |extra: &str, method: &str, path: &str, form: &str| {
        w.s.raw(
            format!(
                "{method} {path} HTTP/1.1\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            )
            .as_bytes(),
        )
    };
    assert_eq!(send("", "GET", "/v1/channels/ch/items", "").status, 401);
    assert_eq!(
        send(
            owner,
            "POST",
            "/v1/grants",
            "resource=channel:ch&to=anonymous&level=read"
        )
        .status,
        201
    );
    assert_eq!(send("", "GET", "/v1/channels/ch/items", "").status, 200);
    // Read does not mean control.
    assert_eq!(
        send("", "POST", "/v1/channels/ch/messages", "value=hi").status,
        401
    );
    assert_eq!(
        send(
            owner,
            "DELETE",
            "/v1/grants?resource=channel:ch&to=anonymous",
            ""
        )
        .status,
        200
    );
    assert_eq!(send("", "GET", "/v1/channels/ch/items", "").status, 401);
}

/// `docs/permissions.md` carries this matrix as a table; it must match.
#[test]
fn the_permissions_doc_is_this_matrix() {
    let expect = expectations();
    let mut want = Vec::new();
    let mut seen = Vec::new();
    for (_, _, ep) in ENDPOINTS {
        if seen.contains(ep) {
            continue;
        }
        seen.push(*ep);
        let routes: Vec<String> = ENDPOINTS
            .iter()
            .filter(|(_, _, e)| e == ep)
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect();
        let cells: Vec<String> = expect[ep].iter().map(u16::to_string).collect();
        want.push(format!(
            "| `{}` | {} |",
            routes.join("`, `"),
            cells.join(" | ")
        ));
    }
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/permissions.md"))
        .expect("docs/permissions.md");
    let have: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
    assert_eq!(
        have,
        want,
        "docs/permissions.md is out of date; its table should be:\n{}",
        want.join("\n")
    );
}
