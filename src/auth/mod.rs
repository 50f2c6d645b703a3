//! Who is calling, and may they do this?
//!
//! - [`registry`]: the in-memory [`Directory`] of devices, users and
//!   grants (and the login sessions' table), loaded on start and updated
//!   after every commit, so checking a request never waits for the disk.
//! - [`credentials`]: tokens (generated, stored as SHA-256 digests,
//!   compared in constant time), login sessions, CSRF tokens, the Basic
//!   header; [`request`]: finding a request's credentials and turning
//!   them into a [`Principal`] ([`authenticate`]).
//! - [`policy`]: [`Directory::authorize`], the one choke point every
//!   handler asks before it touches a resource, and [`visible`], the one
//!   lookup of a named device, channel, alert or file.

pub mod credentials;
pub mod policy;
pub mod registry;
pub mod request;

pub use credentials::{
    credential_stamp, csrf_for, csrf_matches, ct_eq, generate_token, hash_token, parse_basic,
    secret_matches, token_matches, Principal, MAX_SESSIONS,
};
pub use policy::{
    visible, Action, Level, Noun, Resource, ANONYMOUS, KIND_ALERT, KIND_CHANNEL, KIND_DEVICE,
    KIND_FILE,
};
pub use registry::{generate_id, valid_id, Directory};
pub use request::{
    authenticate, authenticate_login, authenticate_secret, came_by_session, session_cookie,
    session_set_cookie, CSRF_HEADER, SESSION_COOKIE,
};
