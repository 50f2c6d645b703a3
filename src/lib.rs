//! Overlord: an IoT device server. Devices send readings as flat CSV over
//! plain HTTP; one process keeps them in one redb file.
//!
//! # Layout
//!
//! A request's path through the code, in order:
//!
//! - [`server`]: the accept loop (connection cap, header timeout,
//!   HTTP/1.0 and bare-LF clients, graceful shutdown), one for plain HTTP
//!   and HTTPS alike; `server/admission.rs` decides who gets a slot,
//!   `server/conn.rs` serves one connection. `server::serve` is used by
//!   `overlord serve` (`src/cli/serve.rs`), `server::run` (plain HTTP) by
//!   most tests.
//! - [`tls`]: HTTPS: the shareable `TlsAcceptor` (certificate, bounded
//!   handshakes), reloads on `SIGHUP` and file change, and the
//!   self-signed certificate of `overlord tls self-signed`.
//! - [`api`]: the router and one handler module per noun (`readings`,
//!   `devices`, `inbox`, `commands`, `channels`, `alerts`, `targets`,
//!   `files` with `upload`, `sensors`, `users`, `remove`, `ops`,
//!   `dashboard`) and per door for what devices already speak (`influx`:
//!   line protocol, `thingspeak`); `api::safe` is `safe=1` on any
//!   endpoint. A handler parses, authorises, runs the feature's domain
//!   function on the blocking pool ([`blocking`]) and formats the reply;
//!   [`http`] has the reply type, bounded body reading and management
//!   forms; [`budget`] bounds the bytes of request data held across all
//!   requests at once.
//! - Management operations are functions of the feature's module, shared
//!   by HTTP, MQTT and the CLI, each with its own error type:
//!   [`channels`] (create, describe, members), [`alerts`] (create,
//!   delete), [`targets`] (create, delete, test), [`grants`],
//!   [`inbox::send`] (messages, commands, reads, acks), [`sensors`]
//!   (labels), [`devices`] (rotate, revoke, transfer), [`notify`] (where
//!   presence notices go), [`retention`] (keep-for settings).
//! - [`auth`]: who is calling and may they. [`auth::registry`] holds the
//!   in-memory [`auth::Directory`]; [`auth::request`] finds a request's
//!   credentials ([`auth::authenticate`]) and [`auth::credentials`]
//!   checks them (token digests, sessions, CSRF, Basic);
//!   [`auth::policy`] has [`auth::Directory::authorize`], the one
//!   authorisation choke point, and [`auth::visible`], the one lookup of
//!   a named device, channel, alert or file for a caller.
//! - [`intake`]: the ingest seam every door into the store shares:
//!   parse a payload into a [`intake::Batch`], [`intake::resolve`] its
//!   devices for the caller, [`intake::submit`] it and wait for the fsync.
//! - [`codec`]: pure parsing of query strings, forms, CSV bodies
//!   ([`codec::csvbody`], a large one in two halves at once), line
//!   protocol, sensor names, values and times. No I/O.
//! - [`writer`]: the bounded queue and the writer thread that group-commits
//!   readings (one fsync per batch) before any `200` is sent, then applies
//!   the digest's results in digest-log order. It schedules; each feature
//!   stores its own part with functions taking the write transaction:
//!   [`channels`] (items), [`alerts`] (state, per-member state of an
//!   alert on a channel, events), [`inbox`] (rows,
//!   routing through gateways), [`commands`] (command records: deliveries
//!   seen in readings replies, expiry), [`presence`] (`presence::store`: last
//!   contact, state, events), [`dead_letters`], [`retention`] (the sweep's
//!   steps). [`notify`] is the one way the writer tells an inbox, a
//!   channel and a notification target (alert firings, presence
//!   notices); a target's notices go to the [`outbox`] in the same
//!   transaction.
//! - [`targets`] (webhooks and e-mail addresses users own) and
//!   [`sender`]: the thread that delivers the outbox at least once, in
//!   order per target, signed, with retries, refusing private addresses
//!   (handlers in `api::targets`).
//! - [`store`]: the redb tables (record tables read and written as their
//!   record types, `store::typed`), the chunk encoding and the read path.
//! - [`digest`]: the thread pool that processes committed readings in
//!   per-device order against the in-memory [`catalog`]; [`presence`]
//!   keeps every device's last contact and state.
//! - [`files`]: files for devices: names, the files directory, durable
//!   uploads, byte ranges (handlers in `api::files`).
//! - [`retention`]: keep-for policies and the sweep the writer runs;
//!   [`purge`]: deleting a device's readings in a time range, through
//!   the writer;
//!   [`ops`]: consistent backup copies, restore, check, compact (CLI and
//!   `GET /v1/admin/backup`).
//! - [`longpoll`]: slots for channel long-polls, in all and per caller.
//! - [`mqtt`]: the MQTT 3.1.1 and 5 listener, another door into the same
//!   ingest path, inbox and channels (started by `server::run`).
//! - [`clock`]: "now" for presence, retention and commits; tests move it
//!   forward instead of sleeping.
//! - [`error`]: every failure becomes one `error,<code>,<detail>` line;
//!   each feature's error converts itself beside its type.
//! - [`text`]: the rule for free text users give things.
//! - [`blocking`]: the one helper that runs blocking work off the async
//!   workers and turns a panicked task into the caller's internal error.
//! - [`app`]: start-up; `app::open` takes an [`app::OpenOptions`] (the
//!   config and the test seams, among them the [`clock::Clock`]), loads
//!   the data file's state, then starts the digest pool, the writer and
//!   the sender.
//! - [`config`]: settings, one file per group of sections
//!   ([`config::limits`], [`config::data`], [`config::doors`],
//!   [`config::log`]) and the `OVERLORD_*` overrides.
//! - [`metrics`]: counters for `/metrics`; their Prometheus text is one
//!   table row per family.
//! - [`devices`], [`users`]: management logic shared by CLI and HTTP.
//!
//! The `overlord` binary is `src/main.rs` (the clap command line and the
//! dispatch) and `src/cli/`, one file per command group (`serve`, `init`,
//! `device`, `user`, `retention`, `backup` and `restore`, `export` and
//! `import`, `check`, `compact`, `tls`). Every command that works with the
//! server stopped opens the data file through `cli::offline`, which
//! refuses a missing one (only `serve`, `init` and `restore` create it).
//!
//! `ARCHITECTURE.md` at the repository root has the data path, the code map
//! and the invariants.

#![warn(missing_docs)]

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod blocking;
pub mod budget;
pub mod catalog;
pub mod channel_labels;
pub mod channels;
pub mod clock;
pub mod codec;
pub mod commands;
pub mod config;
pub mod dead_letters;
pub mod deletion;
pub mod devices;
pub mod digest;
pub mod error;
pub mod files;
pub mod grants;
pub mod http;
pub mod inbox;
pub mod intake;
pub mod longpoll;
pub mod metrics;
pub mod mqtt;
pub mod notify;
pub mod ops;
pub mod outbox;
pub mod pg;
pub mod presence;
pub mod purge;
pub mod quotas;
pub mod retention;
pub mod sender;
pub mod sensors;
pub mod server;
pub mod store;
pub mod targets;
pub mod text;
pub mod throttle;
pub mod tls;
pub mod users;
pub mod writer;
