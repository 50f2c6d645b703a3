//! The one place a failure becomes a wire reply: a 4xx/5xx status and a
//! body of exactly one CSV line, `error,<code>,<detail>`.
//!
//! Codec and store errors convert here; each feature's error type converts
//! itself beside its definition (`impl From<ChannelError> for WireError` in
//! `channels.rs`), so this module imports no feature and sits below them
//! all. The test table at the end checks every feature's reply.

use crate::codec::names::write_csv_text;
use crate::codec::CodecError;
use crate::store::StoreError;

/// `Retry-After` of a `507 disk_full`: long enough not to hammer a server
/// whose disk is full, short enough that buffered readings go out soon
/// after an operator frees space.
pub const DISK_FULL_RETRY_SECS: u32 = 5;

/// A rejected request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// HTTP status.
    pub status: u16,
    /// Stable lower-case token.
    pub code: &'static str,
    /// What and where, for a person.
    pub detail: String,
    /// Seconds for `Retry-After` (503/429/507).
    pub retry_after: Option<u32>,
    /// Methods for the `Allow` header of a `405`.
    pub allow: Option<String>,
}

impl WireError {
    /// Any status and code.
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        WireError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            allow: None,
        }
    }

    /// `400` with a code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(400, code, detail)
    }

    /// `401 unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", detail)
    }

    /// `403 forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(403, "forbidden", detail)
    }

    /// `500 internal`: the server failed in a way the client cannot fix
    /// (a blocking task that panicked, a broken invariant); `what` names
    /// the work.
    pub fn internal(what: impl Into<String>) -> Self {
        Self::new(500, "internal", what)
    }

    /// `503 overloaded` with `Retry-After`.
    pub fn overloaded(detail: impl Into<String>) -> Self {
        let mut e = Self::new(503, "overloaded", detail);
        e.retry_after = Some(1);
        e
    }

    /// `429 rate_limited` with `Retry-After: secs`.
    pub fn rate_limited(detail: impl Into<String>, secs: u64) -> Self {
        let mut e = Self::new(429, "rate_limited", detail);
        e.retry_after = Some(secs.min(u64::from(u32::MAX)) as u32);
        e
    }

    /// The body line: `error,<code>,<detail>\n`, the detail quoted per
    /// RFC 4180 if it needs to be.
    pub fn body(&self) -> String {
        let mut s = String::with_capacity(16 + self.detail.len());
        s.push_str("error,");
        s.push_str(self.code);
        s.push(',');
        let detail: String = self
            .detail
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        write_csv_text(&detail, &mut s);
        s.push('\n');
        s
    }
}

impl From<CodecError> for WireError {
    fn from(e: CodecError) -> Self {
        let status = match e.code {
            "unknown_device" => 404,
            _ => 400,
        };
        WireError::new(status, e.code, e.to_string())
    }
}

impl From<&StoreError> for WireError {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::DiskFull => {
                // Spoken back-pressure, like `503`: the writer stores again
                // as soon as space is freed (it retries every second), so a
                // client should resend later rather than give up.
                let mut e =
                    WireError::new(507, "disk_full", "the server's disk is full; retry later");
                e.retry_after = Some(DISK_FULL_RETRY_SECS);
                e
            }
            StoreError::Conflict(m) => WireError::new(409, "conflict", m.clone()),
            StoreError::InUse => WireError::new(500, "storage", "data file in use"),
            StoreError::Damaged(_) => WireError::new(
                500,
                "storage_damaged",
                "the data file is damaged; writes are refused until it is restored",
            ),
            StoreError::Corrupt(_) => WireError::new(
                500,
                "storage_damaged",
                "stored data does not read back: the data file is damaged",
            ),
            StoreError::Io(_) => WireError::new(500, "storage", "storage failure; retry later"),
            StoreError::Retry(_) | StoreError::Unavailable(_) => {
                let mut e = WireError::new(
                    503,
                    "overloaded",
                    "the database is unavailable; retry later",
                );
                e.retry_after = Some(1);
                e
            }
        }
    }
}

impl From<StoreError> for WireError {
    fn from(e: StoreError) -> Self {
        WireError::from(&e)
    }
}

pub use crate::store::panic_text;

#[cfg(test)]
mod tests {
    use super::*;
    // The features' errors, to check the replies their conversions (beside
    // each error type) give; only the tests import them.
    use crate::alerts::AlertError;
    use crate::blocking::Failed;
    use crate::channels::ChannelError;
    use crate::devices::TransferError;
    use crate::inbox::send::SendError;
    use crate::quotas::QuotaExceeded;
    use crate::targets::TargetError;
    use crate::users::UserError;

    #[test]
    fn one_line_with_quoting() {
        assert_eq!(
            WireError::bad_request("bad_value", "N1: x").body(),
            "error,bad_value,N1: x\n"
        );
        assert_eq!(
            WireError::bad_request("bad_csv", "line 2, column 3").body(),
            "error,bad_csv,\"line 2, column 3\"\n"
        );
        assert_eq!(WireError::bad_request("x", "a\nb").body(), "error,x,a b\n");
    }

    // Long because it is a table: one case per feature error, which
    // rustfmt spreads over several lines each.
    /// Each feature's error becomes the reply its handler used to write
    /// by hand: `(error, status, code, detail)`.
    #[test]
    fn feature_errors_keep_their_replies() {
        let quota = || QuotaExceeded {
            what: "channels",
            key: "channels_per_user",
            limit: 2,
            have: 2,
        };
        let cases: Vec<(WireError, u16, &str, &str)> =
            vec![
            (
                ChannelError::Exists("c1".into()).into(),
                409,
                "channel_exists",
                "channel 'c1' exists",
            ),
            (
                ChannelError::Unknown("c1".into()).into(),
                404,
                "unknown_channel",
                "no channel 'c1'",
            ),
            (
                ChannelError::Quota(quota()).into(),
                403,
                "quota_exceeded",
                "channels: a user may own at most 2 ([quotas] channels_per_user); this one has 2",
            ),
            (
                AlertError::Exists("a1".into()).into(),
                409,
                "alert_exists",
                "alert 'a1' exists",
            ),
            (
                TargetError::Exists("t1".into()).into(),
                409,
                "target_exists",
                "target 't1' exists",
            ),
            (
                TargetError::Full("t1".into()).into(),
                409,
                "target_full",
                "target 't1' has [notify] max_waiting notifications waiting",
            ),
            (
                SendError::InboxFull {
                    device: "d1".into(),
                    len: 5,
                    max: 5,
                }
                .into(),
                409,
                "inbox_full",
                "device 'd1' has 5 of 5 rows unacknowledged",
            ),
            (
                SendError::TargetFull("t1".into()).into(),
                409,
                "target_full",
                "target 't1' has [notify] max_waiting notifications waiting",
            ),
            (
                TransferError::Store(StoreError::DiskFull).into(),
                507,
                "disk_full",
                "the server's disk is full; retry later",
            ),
            (UserError::Exists("u1".into()).into(), 409, "user_exists", "user 'u1' exists"),
            (UserError::Unknown("u1".into()).into(), 404, "unknown_user", "no user 'u1'"),
            (
                Failed {
                    what: "list failed",
                }
                .into(),
                500,
                "internal",
                "list failed",
            ),
        ];
        for (e, status, code, detail) in cases {
            assert_eq!(
                (e.status, e.code, e.detail.as_str()),
                (status, code, detail)
            );
        }
    }
}
