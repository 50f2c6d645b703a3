//! Opening everything a running server needs, in order: the store, the
//! in-memory directory, presence, the digest pool and the writer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::auth::Directory;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::codec::{self, timefmt};
use crate::config::{Config, StoreKind};
use crate::digest::{Digest, DigestHook};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::store::faults::DiskFaults;
use crate::store::{Role, Store, StoreError, UserRecord, ALERTS, CHANNELS, CHANNEL_MEMBERS};
use crate::throttle::{RateLimit, Throttle};
use crate::users;
use crate::writer::{self, IngestHandle, Writer};

/// Shared state of a running server; every handler gets an `Arc<App>`.
pub struct App {
    /// The configuration it was started with.
    pub config: Config,
    /// Codec limits derived from the config.
    pub limits: codec::Limits,
    /// The data file.
    pub store: Arc<Store>,
    /// Devices and users, in memory.
    pub directory: Arc<Directory>,
    /// Last contact per device.
    pub presence: Arc<Presence>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The queue to the writer thread.
    pub ingest: IngestHandle,
    /// Channels, members and alerts, in memory.
    pub catalog: Arc<Catalog>,
    /// Changes after every commit that added channel items.
    pub channel_events: watch::Receiver<u64>,
    /// Rung for an inbox after a commit added rows to it (the writer's
    /// alert and presence notices, messages and commands): MQTT inbox
    /// subscribers wait on it.
    pub inbox_bells: Arc<crate::inbox::Bells>,
    /// Slots for channel long-polls (in all and per caller).
    pub long_polls: Arc<crate::longpoll::LongPolls>,
    /// Failed-credential counters.
    pub throttle: Throttle,
    /// Slots for password (argon2) checks and hashes: taken with a
    /// try-acquire, so a flood of logins is refused (`503`), not queued.
    pub password_checks: Arc<Semaphore>,
    /// Per-device readings request limit.
    pub device_rate: RateLimit,
    /// Files for devices: the files directory and its index.
    pub files: Arc<crate::files::Files>,
    /// How long readings are kept (the writer enforces it).
    pub retention: Arc<crate::retention::Retention>,
    /// Bytes of request bodies and parsed readings in flight, across all
    /// requests (`[limits] body_budget_bytes`).
    pub body_budget: Arc<crate::budget::Budget>,
    /// The webhook sender's thread (stopped and joined when the app is
    /// dropped).
    pub sender: crate::sender::Sender,
    /// "Now" for presence contacts (see [`crate::clock`]).
    pub clock: Clock,
    /// When a command next expires (the writer removes expired ones).
    pub command_expiry: Arc<crate::commands::Expiry>,
    /// Whether deleted devices have rows left for the writer to remove.
    pub deletions: Arc<crate::deletion::Sweep>,
}

impl App {
    /// What delivering inbox rows needs (`inbox::send::deliver`).
    pub fn inboxes(&self) -> crate::inbox::send::Inboxes<'_> {
        crate::inbox::send::Inboxes {
            store: &self.store,
            directory: &self.directory,
            catalog: &self.catalog,
            bells: &self.inbox_bells,
            max_inbox: self.config.limits.max_inbox,
            commands_kept: self.config.limits.commands_kept,
        }
    }
}

/// An opened server, not yet listening.
pub struct Opened {
    /// Shared state.
    pub app: Arc<App>,
    /// The writer thread, joined on shutdown.
    pub writer: Writer,
    /// On the first start with an empty data file: the administrator's API
    /// token, to be shown once.
    pub admin_token: Option<String>,
    /// The bound MQTT listeners, if any (`crate::mqtt::bind`,
    /// `bind_tls`); served by `server::serve`.
    pub mqtt: crate::mqtt::Listeners,
}

/// What [`open`] opens: the configuration, and the seams only Rust code
/// can set (tests). `OpenOptions::from(config)` is a plain start.
pub struct OpenOptions {
    /// The configuration to start with.
    pub config: Config,
    /// A digest fault-injection hook (tests; see `digest`).
    pub digest_hook: Option<DigestHook>,
    /// With it, the data file goes through the fault-injecting storage
    /// backend that it switches (disk-fault tests; see `store::faults`).
    /// Only Rust code holding the handle can inject a fault; nothing in
    /// the config or on the network reaches it.
    pub disk_faults: Option<DiskFaults>,
    /// The clock presence, retention and commits read: the system clock,
    /// or one a test moves forward (see [`crate::clock`]).
    pub clock: Clock,
}

impl OpenOptions {
    /// A plain start with `config`: no hook, the real disk.
    pub fn new(config: Config) -> OpenOptions {
        OpenOptions {
            config,
            digest_hook: None,
            disk_faults: None,
            clock: Clock::system(),
        }
    }
}

impl From<Config> for OpenOptions {
    fn from(config: Config) -> OpenOptions {
        OpenOptions::new(config)
    }
}

/// Open the data file and start the writer and digest threads.
///
/// (Over 80 lines only because the [`App`] literal is here: every handle
/// the handlers share is built and named once, in one place; the stages
/// before it are [`load`], [`Digest::start`], `start_writer` and the
/// sender.)
pub fn open(options: OpenOptions) -> Result<Opened, StoreError> {
    let OpenOptions {
        config,
        digest_hook,
        disk_faults,
        clock,
    } = options;
    let loaded = load(&config, disk_faults)?;
    let metrics = Arc::new(Metrics::default());
    let digest = Digest::start(
        config.digest.workers,
        config.digest.queue,
        loaded.catalog.clone(),
        loaded.directory.clone(),
        loaded.presence.clone(),
        metrics.clone(),
        digest_hook,
    );
    let (ingest, writer, wiring) = start_writer(&config, &loaded, digest, &metrics, &clock)?;
    let sender = crate::sender::Sender::start(
        loaded.store.clone(),
        loaded.catalog.clone(),
        config.notify.clone(),
        &config.smtp,
        metrics.clone(),
        wiring.outbox_wake,
    )
    .map_err(|e| StoreError::Io(format!("starting the notification sender: {e}")))?;
    let limits = config.limits.clone();
    let Loaded {
        store,
        directory,
        admin_token,
        files,
        presence,
        catalog,
        retention,
    } = loaded;
    let app = Arc::new(App {
        limits: config.codec_limits(),
        config,
        store,
        directory,
        presence,
        ingest,
        catalog,
        channel_events: wiring.channel_events,
        inbox_bells: wiring.inbox_bells,
        long_polls: Arc::new(crate::longpoll::LongPolls::new(
            limits.max_long_polls,
            limits.max_long_polls_per_caller,
            metrics.clone(),
        )),
        throttle: Throttle::new(
            limits.auth_failures_per_window,
            Duration::from_secs(limits.auth_window_secs.max(1)),
            clock.clone(),
        ),
        password_checks: Arc::new(Semaphore::new(match limits.password_checks {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        })),
        device_rate: RateLimit::new(
            limits.device_requests_per_sec,
            limits.device_burst,
            clock.clone(),
        ),
        files,
        retention,
        body_budget: crate::budget::Budget::new(limits.body_budget_bytes, metrics.clone()),
        metrics,
        sender,
        clock,
        command_expiry: wiring.command_expiry,
        deletions: wiring.deletions,
    });
    Ok(Opened {
        app,
        writer,
        admin_token,
        mqtt: Default::default(),
    })
}

/// What [`open`] reads from the data file before any thread starts.
struct Loaded {
    store: Arc<Store>,
    directory: Arc<Directory>,
    /// A new administrator's token, to be shown once (see [`first_admin`]).
    admin_token: Option<String>,
    files: Arc<crate::files::Files>,
    presence: Arc<Presence>,
    catalog: Arc<Catalog>,
    retention: Arc<crate::retention::Retention>,
}

/// Open the store and load the in-memory state: users and devices (with
/// a first administrator if there is none), grants, files, presence, the
/// catalog and the retention policy.
fn load(config: &Config, disk: Option<DiskFaults>) -> Result<Loaded, StoreError> {
    let store = Arc::new(match config.store.kind {
        StoreKind::Postgres => Store::open_node(&config.store)?,
        StoreKind::Redb => Store::open_verified(
            &config.data_file,
            disk,
            config.cache_bytes(),
            config.verify_on_start,
        )?,
    });
    let mut users_list = store.load_users()?;
    let admin_token = first_admin(&store, &mut users_list)?;
    let directory = Arc::new(Directory::new(store.load_devices()?, users_list));
    for (kind, num, who, level) in store.load_grants()? {
        if let Some(l) = crate::auth::Level::from_u8(level) {
            directory.put_grant(kind, num, &who, l);
        }
    }
    let files = Arc::new(crate::files::Files::open(config.files_dir(), &store)?);
    let presence = Arc::new(Presence::new(
        directory.clone(),
        config.presence.offline_after_secs,
        store.load_last_seen()?,
        store.load_presence()?,
    ));
    let catalog = Arc::new(load_catalog(&store)?);
    catalog.targets().set_max_waiting(config.notify.max_waiting);
    let retention = Arc::new(crate::retention::Retention::new(
        &config.retention,
        crate::retention::Retention::load(&store)?,
    ));
    Ok(Loaded {
        store,
        directory,
        admin_token,
        files,
        presence,
        catalog,
        retention,
    })
}

/// First start (or a data file whose only users came from the CLI):
/// make sure there is an administrator to manage the server with. Its
/// token, when one was made.
fn first_admin(
    store: &Store,
    users_list: &mut Vec<UserRecord>,
) -> Result<Option<String>, StoreError> {
    let has_admin = users_list.iter().any(|u| u.role == Role::Administrator);
    let name_free = !users_list.iter().any(|u| u.name == users::FIRST_ADMIN);
    if !has_admin && !name_free {
        tracing::warn!("no administrator: create one with `overlord user token NAME --admin`");
    }
    if has_admin || !name_free {
        return Ok(None);
    }
    let token = crate::auth::generate_token();
    let admin = UserRecord {
        name: users::FIRST_ADMIN.into(),
        role: Role::Administrator,
        token: crate::auth::hash_token(&token),
        prev_token: None,
        created: timefmt::now_micros(),
        password: None,
    };
    store.put_user(&admin)?;
    users_list.push(admin);
    Ok(Some(token))
}

/// What the writer shares with the rest of the server: the signals it
/// sends (channel items, inbox rows, outbox work) and the state it
/// sweeps (command expiry, deleted devices).
struct Wiring {
    channel_events: watch::Receiver<u64>,
    inbox_bells: Arc<crate::inbox::Bells>,
    outbox_wake: Arc<tokio::sync::Notify>,
    command_expiry: Arc<crate::commands::Expiry>,
    deletions: Arc<crate::deletion::Sweep>,
}

/// Start the writer thread over the loaded state.
fn start_writer(
    config: &Config,
    loaded: &Loaded,
    digest: Digest,
    metrics: &Arc<Metrics>,
    clock: &Clock,
) -> Result<(IngestHandle, Writer, Wiring), StoreError> {
    let (events_tx, channel_events) = watch::channel(0u64);
    let wiring = Wiring {
        channel_events,
        inbox_bells: Arc::new(crate::inbox::Bells::default()),
        outbox_wake: Arc::new(tokio::sync::Notify::new()),
        command_expiry: Arc::new(crate::commands::Expiry::default()),
        deletions: Arc::new(crate::deletion::Sweep::default()),
    };
    let (ingest, writer) = writer::start(
        loaded.store.clone(),
        digest,
        metrics.clone(),
        writer::WriterContext {
            queue: config.limits.ingest_queue,
            max_inbox: config.limits.max_inbox,
            catalog: loaded.catalog.clone(),
            channel_events: events_tx,
            inbox_bells: wiring.inbox_bells.clone(),
            presence: loaded.presence.clone(),
            directory: loaded.directory.clone(),
            presence_events_kept: config.presence.events_kept,
            retention: loaded.retention.clone(),
            seal_idle: std::time::Duration::from_secs(config.storage.seal_idle_secs),
            seal_chunks_per_step: config.storage.seal_chunks_per_step,
            compact_idle: std::time::Duration::from_secs(config.storage.compact_idle_secs),
            outbox_wake: wiring.outbox_wake.clone(),
            clock: clock.clone(),
            command_expiry: wiring.command_expiry.clone(),
            deletions: wiring.deletions.clone(),
        },
    )?;
    Ok((ingest, writer, wiring))
}

/// Load channels, members, alerts and alert states.
fn load_catalog(store: &Store) -> Result<Catalog, StoreError> {
    let channels = store.load_all(CHANNELS)?;
    let alerts = store.load_all(ALERTS)?;
    let (members, fired, fired_members) = store.read(|txn| {
        let mut members = Vec::new();
        for row in txn.open_table(CHANNEL_MEMBERS)?.iter()? {
            members.push(row?.0.value());
        }
        let fired = crate::alerts::fired_ids(txn)?;
        let fired_members = crate::alerts::fired_members(txn)?;
        Ok::<_, StoreError>((members, fired, fired_members))
    })?;
    let catalog = Catalog::new(channels, members, alerts, &fired);
    catalog.load_member_states(&fired_members);
    for t in store.load_all(crate::targets::RECORDS)? {
        catalog.targets().put(t);
    }
    Ok(catalog)
}
