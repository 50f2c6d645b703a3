//! The policy: may this caller do this? [`Directory::authorize`] is the one
//! choke point every handler asks before it touches a resource, and
//! [`visible`] the one lookup of a named device, channel, alert or file
//! (one the caller may not see looks like one that does not exist).
//! [`Directory::user_may_device`] and [`Directory::user_may_channel`]
//! re-check, every time it is carried out, what a user set up once.

use std::sync::Arc;

use super::credentials::Principal;
use super::registry::Directory;
use crate::app::App;
use crate::catalog::AlertEntry;
use crate::codec::names::clip;
use crate::error::WireError;
use crate::store::{ChannelRecord, DeviceRecord, FileRecord, Role};

/// What the caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Store readings for a device.
    WriteReadings,
    /// Query a device's readings.
    ReadReadings,
    /// See a device's record.
    ViewDevice,
    /// Create devices.
    CreateDevice,
    /// Rotate a device's token.
    RotateDevice,
    /// Change a device's metadata (name, location, parent, ...).
    EditDevice,
    /// Delete a device and everything it has (owner, administrators).
    DeleteDevice,
    /// Delete a device's readings in a time range (owner, administrators,
    /// a `control` grant).
    DeleteReadings,
    /// Give a device to another user (owner, administrators).
    TransferDevice,
    /// Delete a channel and its items (owner, administrators; a
    /// `control` grant manages it but does not delete it).
    DeleteChannel,
    /// Read a device's inbox.
    ReadInbox,
    /// Acknowledge (remove) rows of a device's inbox.
    AckInbox,
    /// Put a message or command in a device's inbox.
    SendToDevice,
    /// Give a device's sensors labels, units and descriptions (the
    /// device itself, a gateway for a device below it, or `control`).
    DescribeSensors,
    /// Create channels or alerts.
    CreateOwned,
    /// Change or delete a channel or alert, or send to a channel.
    ManageOwned,
    /// Read a channel's items or an alert's events.
    ReadOwned,
    /// See the digest's dead letters.
    ViewDeadLetters,
    /// Create users, rotate or revoke others' credentials.
    ManageUsers,
    /// Revoke a device's tokens.
    RevokeDevice,
    /// Rotate or revoke a user's token, set their password.
    ManageCredentials,
    /// Grant or withdraw access to a device, channel or file.
    Grant,
    /// Server operations (a backup of the whole data file).
    Administer,
    /// Download a file by its password: the caller presented the file's
    /// current or previous download password, checked with
    /// [`token_matches`](super::token_matches) just before. Allows reading
    /// that file only.
    ReadFileByPassword,
}

/// What the action is on.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// Nothing in particular (creating, listing).
    None,
    /// A device.
    Device(&'a DeviceRecord),
    /// A user, by name (their own credentials).
    User(&'a str),
    /// A channel, an alert or a file, by its owner.
    Owned {
        /// What it is: [`KIND_CHANNEL`], [`KIND_ALERT`] or [`KIND_FILE`].
        kind: u8,
        /// Its number.
        num: u32,
        /// Its name.
        name: &'a str,
        /// Its owner.
        owner: &'a str,
    },
}

/// Grant kinds (the first part of a `grants` key): a device.
pub const KIND_DEVICE: u8 = 1;
/// A channel.
pub const KIND_CHANNEL: u8 = 2;
/// An alert (alerts are not granted; the kind names them in errors).
pub const KIND_ALERT: u8 = 3;
/// A file for devices (`/v1/files/NAME`).
pub const KIND_FILE: u8 = 4;
/// A notification target (targets are not granted; the kind names them
/// in errors).
pub const KIND_TARGET: u8 = 5;

/// A grant lets a user, a device or `anonymous` read a device or channel,
/// or control it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// See it: query readings, list members, read channel items, see an
    /// inbox.
    Read = 1,
    /// Read, plus send messages and commands (to a device, or to a
    /// channel's devices) and change a channel's members.
    Control = 2,
}

impl Level {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Control => "control",
        }
    }

    /// Parse the word on the wire.
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "read" => Some(Level::Read),
            "control" => Some(Level::Control),
            _ => None,
        }
    }

    /// From its stored byte.
    pub fn from_u8(v: u8) -> Option<Level> {
        match v {
            1 => Some(Level::Read),
            2 => Some(Level::Control),
            _ => None,
        }
    }
}

/// The grantee that makes a device, channel or file public.
pub const ANONYMOUS: &str = "anonymous";

impl Action {
    /// May a grant to `anonymous` (a public device, channel or file) allow
    /// this? Only reading what is published: a device's record and
    /// readings (not its inbox), a channel's items and members, a file.
    fn public(self) -> bool {
        matches!(
            self,
            Action::ReadReadings | Action::ViewDevice | Action::ReadOwned
        )
    }

    /// The grant level that allows this action to a non-owner, if any.
    fn grantable(self) -> Option<Level> {
        use Action::*;
        match self {
            ReadReadings | ViewDevice | ReadOwned | ReadInbox => Some(Level::Read),
            SendToDevice | ManageOwned | DescribeSensors | DeleteReadings => Some(Level::Control),
            _ => None,
        }
    }
}

impl<'a> Resource<'a> {
    /// A channel as a resource.
    pub fn channel(c: &'a ChannelRecord) -> Self {
        Resource::Owned {
            kind: KIND_CHANNEL,
            num: c.num,
            name: &c.name,
            owner: &c.owner,
        }
    }

    /// A file as a resource.
    pub fn file(f: &'a FileRecord) -> Self {
        Resource::Owned {
            kind: KIND_FILE,
            num: f.num,
            name: &f.name,
            owner: &f.owner,
        }
    }

    /// An alert as a resource.
    pub fn alert(a: &'a crate::store::AlertRecord) -> Self {
        Resource::Owned {
            kind: KIND_ALERT,
            num: a.id,
            name: &a.name,
            owner: &a.owner,
        }
    }
}

/// `404` with the code of a missing thing of `kind` (`unknown_device`,
/// `unknown_channel`, `unknown_alert`, `unknown_file`): what a thing that
/// does not exist and one the caller may not see both answer.
fn unknown(kind: u8, name: &str) -> WireError {
    let (code, what) = match kind {
        KIND_DEVICE => ("unknown_device", "device"),
        KIND_CHANNEL => ("unknown_channel", "channel"),
        KIND_FILE => ("unknown_file", "file"),
        KIND_TARGET => ("unknown_target", "target"),
        _ => ("unknown_alert", "alert"),
    };
    WireError::new(404, code, format!("no {what} '{name}'"))
}

impl Directory {
    /// The one authorisation decision: may `who` do `action` on `res`?
    ///
    /// - Administrators may do everything.
    /// - A user may create devices, channels and alerts, and do everything
    ///   to what they own; dead letters, user management and backups are for
    ///   administrators.
    /// - A device may write and read its own readings, see itself, and read
    ///   and acknowledge its own inbox. A gateway device may also register
    ///   devices below it and write, read and see those.
    /// - Anyone (a user or a device) may do what a grant on the device,
    ///   channel or file allows: `read` or `control` ([`Level`]). Alerts
    ///   are not granted.
    /// - A `read` grant to `anonymous` makes a device, channel or file
    ///   public: every caller, with or without credentials, may read it
    ///   ([`Action::public`]: a device's record and readings, not its
    ///   inbox; a channel's items; a file), and nothing more.
    /// - Anonymous callers without a grant get `401`.
    /// - Files: a device may read the files of the user who owns it; a
    ///   file's password ([`Action::ReadFileByPassword`]) reads that file.
    ///
    /// A denial on something the caller may not even see is `404` with the
    /// same code as a missing thing (`unknown_device`, `unknown_channel`,
    /// `unknown_alert`), so existence does not leak; otherwise `403`.
    ///
    /// (Longer than most functions on purpose: the whole decision is here,
    /// read top to bottom, rather than spread over helpers.)
    pub fn authorize(
        &self,
        who: &Principal,
        action: Action,
        res: Resource<'_>,
    ) -> Result<(), WireError> {
        use Action::*;
        if action == ReadFileByPassword {
            return match res {
                Resource::Owned {
                    kind: KIND_FILE, ..
                } => Ok(()),
                _ => Err(WireError::forbidden("a file password opens only its file")),
            };
        }
        let owns = |name: &str| match res {
            Resource::Device(d) => d.owner == name,
            Resource::Owned { owner, .. } => owner == name,
            Resource::User(u) => u == name,
            Resource::None => false,
        };
        let (personal, public) = self.level_for(who, res);
        let granted = personal.max(public);
        let by_grant = action.grantable().is_some_and(|need| {
            personal.is_some_and(|g| g >= need)
                || (action.public() && public.is_some_and(|g| g >= need))
        });
        let allowed = match who {
            Principal::Anonymous if !by_grant => {
                return Err(WireError::unauthorized("credentials required"))
            }
            Principal::Anonymous => true,
            Principal::User(u) if u.role == Role::Administrator => true,
            Principal::User(u) => match action {
                CreateDevice | CreateOwned => true,
                ViewDeadLetters | ManageUsers | Administer => false,
                _ => owns(&u.name) || by_grant,
            },
            Principal::Device(me) => match (action, res) {
                (
                    WriteReadings | ReadReadings | ViewDevice | ReadInbox | AckInbox
                    | DescribeSensors,
                    Resource::Device(d),
                ) if d.num == me.num => true,
                // A gateway registers devices below it, and writes, reads
                // and sees them (their inbox rows come to its own inbox).
                (CreateDevice, Resource::None) if me.meta.gateway => true,
                (
                    WriteReadings | ReadReadings | ViewDevice | DescribeSensors,
                    Resource::Device(d),
                ) if me.meta.gateway && d.meta.parent == Some(me.num) => true,
                (
                    ReadOwned,
                    Resource::Owned {
                        kind: KIND_FILE,
                        owner,
                        ..
                    },
                ) if owner == me.owner => true,
                _ => by_grant,
            },
        };
        if allowed {
            return Ok(());
        }
        let may_see = match (who, res) {
            (_, Resource::None | Resource::User(_)) => true,
            (Principal::User(u), _) if owns(&u.name) => true,
            (Principal::Device(me), Resource::Device(d)) if d.num == me.num => true,
            (Principal::Device(me), Resource::Device(d)) if d.meta.parent == Some(me.num) => true,
            (
                Principal::Device(me),
                Resource::Owned {
                    kind: KIND_FILE,
                    owner,
                    ..
                },
            ) if owner == me.owner => true,
            _ => granted.is_some(),
        };
        match res {
            Resource::Device(d) if !may_see => Err(unknown(KIND_DEVICE, &d.id)),
            Resource::Owned { kind, name, .. } if !may_see => Err(unknown(kind, name)),
            _ => Err(WireError::forbidden("not allowed for this caller")),
        }
    }

    /// May user `name` still do `action` on device `dev`?
    ///
    /// What a user set up once and the server carries out later — a
    /// channel member or an alert fed by the digest, an alert's or a
    /// presence notice's inbox row — is checked again, here, every time it
    /// is carried out: withdrawing a grant stops it at once, with no need
    /// to find and delete what the grantee built on it. A user or device
    /// that no longer exists may nothing.
    pub fn user_may_device(&self, name: &str, action: Action, dev: u32) -> bool {
        let (Some(u), Some(d)) = (self.user(name), self.device_by_num(dev)) else {
            return false;
        };
        // The common cases without building a label: administrators and
        // owners may do everything to a device.
        if u.role == Role::Administrator || d.owner == u.name {
            return true;
        }
        self.authorize(&Principal::User(u), action, Resource::Device(&d))
            .is_ok()
    }

    /// May user `name` still do `action` on channel `ch`? (See
    /// [`Directory::user_may_device`].)
    pub fn user_may_channel(&self, name: &str, action: Action, ch: &ChannelRecord) -> bool {
        let Some(u) = self.user(name) else {
            return false;
        };
        if u.role == Role::Administrator || ch.owner == u.name {
            return true;
        }
        self.authorize(&Principal::User(u), action, Resource::channel(ch))
            .is_ok()
    }

    /// May user `name` still have notices sent to target `t`? Its owner
    /// and administrators may (targets are not granted). (See
    /// [`Directory::user_may_device`].)
    pub fn user_may_target(&self, name: &str, t: &crate::targets::TargetRecord) -> bool {
        self.user(name)
            .is_some_and(|u| u.role == Role::Administrator || t.owner == u.name)
    }

    /// The grants on `res` that apply to `who`: (its own, the public
    /// one). A grant to `anonymous` makes the thing public: it applies to
    /// every caller, with or without credentials, but only for the
    /// [`Action::public`] reads, whatever level it was stored with.
    fn level_for(&self, who: &Principal, res: Resource<'_>) -> (Option<Level>, Option<Level>) {
        let key = match res {
            Resource::Device(d) => (KIND_DEVICE, d.num),
            Resource::Owned {
                kind: kind @ (KIND_CHANNEL | KIND_FILE),
                num,
                ..
            } => (kind, num),
            _ => return (None, None),
        };
        let g = self.grants.read();
        let Some(list) = g.get(&key) else {
            return (None, None);
        };
        let me = who.label();
        let level = |want: &str| {
            list.iter()
                .filter(|(p, _)| p == want)
                .filter_map(|(_, l)| Level::from_u8(*l))
                .max()
        };
        let public = level(ANONYMOUS).map(|_| Level::Read);
        let personal = if matches!(who, Principal::Anonymous) {
            None
        } else {
            level(&me)
        };
        (personal, public)
    }
}

/// Something a caller names in a request and may or may not be allowed
/// to see: a device, a channel, an alert or a file. [`visible`] looks each
/// of them up the same way.
pub trait Noun: Sized {
    /// What it is ([`KIND_DEVICE`], [`KIND_CHANNEL`], [`KIND_ALERT`],
    /// [`KIND_FILE`]); names it in a `404`.
    const KIND: u8;
    /// Is a missing one `401` for a caller without credentials, like a
    /// private one, rather than `404`? True for every noun: anonymous
    /// callers learn nothing about which devices, channels, alerts or files
    /// exist (docs/permissions.md, "Public devices, channels and files").
    const HIDDEN_FROM_ANONYMOUS: bool = true;
    /// Find it by name (`Err` for a name that cannot be one).
    fn find(app: &App, name: &str) -> Result<Option<Arc<Self>>, WireError>;
    /// It as the resource of an [`Action`].
    fn resource(&self) -> Resource<'_>;
}

impl Noun for DeviceRecord {
    const KIND: u8 = KIND_DEVICE;
    fn find(app: &App, id: &str) -> Result<Option<Arc<Self>>, WireError> {
        Ok(app.directory.device(id))
    }
    fn resource(&self) -> Resource<'_> {
        Resource::Device(self)
    }
}

impl Noun for ChannelRecord {
    const KIND: u8 = KIND_CHANNEL;
    fn find(app: &App, name: &str) -> Result<Option<Arc<Self>>, WireError> {
        Ok(app.catalog.channel(name))
    }
    fn resource(&self) -> Resource<'_> {
        Resource::channel(self)
    }
}

impl Noun for AlertEntry {
    const KIND: u8 = KIND_ALERT;
    fn find(app: &App, name: &str) -> Result<Option<Arc<Self>>, WireError> {
        Ok(app.catalog.alert(name))
    }
    fn resource(&self) -> Resource<'_> {
        Resource::alert(&self.rec)
    }
}

impl Noun for crate::targets::TargetRecord {
    const KIND: u8 = KIND_TARGET;
    fn find(app: &App, name: &str) -> Result<Option<Arc<Self>>, WireError> {
        Ok(app.catalog.targets().get(name))
    }
    fn resource(&self) -> Resource<'_> {
        Resource::Owned {
            kind: KIND_TARGET,
            num: self.id,
            name: &self.name,
            owner: &self.owner,
        }
    }
}

impl Noun for FileRecord {
    const KIND: u8 = KIND_FILE;
    fn find(app: &App, name: &str) -> Result<Option<Arc<Self>>, WireError> {
        crate::files::check_name(name)?;
        Ok(app.files.get(name))
    }
    fn resource(&self) -> Resource<'_> {
        Resource::file(self)
    }
}

/// The one lookup of a named device, channel, alert or file for `action`:
/// it, if `who` may do `action` to it ([`Directory::authorize`]). One that
/// does not exist is `404 unknown_<kind>`, and one the caller may not see
/// is reported exactly like it, so existence does not leak.
pub fn visible<T: Noun>(
    app: &App,
    who: &Principal,
    action: Action,
    name: &str,
) -> Result<Arc<T>, WireError> {
    let Some(found) = T::find(app, name)? else {
        if T::HIDDEN_FROM_ANONYMOUS && matches!(who, Principal::Anonymous) {
            return Err(WireError::unauthorized("credentials required"));
        }
        return Err(unknown(T::KIND, &clip(name)));
    };
    app.directory.authorize(who, action, found.resource())?;
    Ok(found)
}
