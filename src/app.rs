//! Opening everything a running server needs, in order: the store, the
//! in-memory directory, presence, the digest pool and the writer.

use std::sync::Arc;

use crate::auth::Directory;
use crate::codec::{self, timefmt};
use crate::config::Config;
use crate::digest::Digest;
use crate::ingest::{self, IngestHandle, Writer};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::store::{Role, Store, StoreError, UserRecord};
use crate::users;

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
}

/// Open the data file and start the writer and digest threads.
pub fn open(config: Config) -> Result<Opened, StoreError> {
    let store = Arc::new(Store::open(&config.data_file)?);
    let mut users_list = store.load_users()?;
    let mut admin_token = None;
    if users_list.is_empty() {
        let token = crate::auth::generate_token();
        let admin = UserRecord {
            name: users::FIRST_ADMIN.into(),
            role: Role::Administrator,
            token: crate::auth::hash_token(&token),
            prev_token: None,
            created: timefmt::now_micros(),
        };
        store.put_user(&admin)?;
        users_list.push(admin);
        admin_token = Some(token);
    }
    let directory = Arc::new(Directory::new(store.load_devices()?, users_list));
    let presence = Arc::new(Presence::from_stored(store.load_last_seen()?));
    let metrics = Arc::new(Metrics::default());
    let digest = Digest::start(
        config.digest.workers,
        config.digest.queue,
        presence.clone(),
        metrics.clone(),
    );
    let (ingest, writer) = ingest::start(
        store.clone(),
        digest,
        metrics.clone(),
        config.limits.ingest_queue,
    )?;
    let app = Arc::new(App {
        limits: config.codec_limits(),
        config,
        store,
        directory,
        presence,
        metrics,
        ingest,
    });
    Ok(Opened {
        app,
        writer,
        admin_token,
    })
}
