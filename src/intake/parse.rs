//! Step 1 of the seam: a payload to a [`Batch`], by media type.
//!
//! [`parse_body`] is the pure function (no budget, no threads);
//! [`parse_charged`] is what a server door calls: the same parse, with
//! the parsed readings charged to the request-data budget as they grow
//! and large bodies parsed on a blocking thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::{Batch, PREPARE_BYTES};
use crate::app::App;
use crate::budget::Charge;
use crate::codec::{self, csvbody, form, json, lineproto, CodecError, Credentials, Limits, Micros};
use crate::error::WireError;

/// Bodies larger than this are parsed on a blocking thread, so a 30 MB
/// CSV does not stall the runtime's workers.
pub const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// The body formats readings come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `application/x-www-form-urlencoded` (`N1=21.5&L2=1`), or no body.
    Form,
    /// `text/csv` with a header row (`API.md` §3).
    Csv,
    /// `application/json`: an object or an array of objects
    /// (`codec::json`).
    Json,
    /// InfluxDB line protocol with its timestamps' unit
    /// (`codec::lineproto`); chosen by the endpoint, not a media type.
    Line(lineproto::Precision),
}

impl Media {
    /// The format of a body with this `Content-Type` (its media type,
    /// lower case, without parameters); `None` (no type) is a form.
    /// Anything else is `415 unsupported_media_type`.
    pub fn of(content_type: Option<&str>) -> Result<Media, WireError> {
        match content_type {
            Some("text/csv" | "application/csv") => Ok(Media::Csv),
            Some("application/json") => Ok(Media::Json),
            Some("application/x-www-form-urlencoded") | None => Ok(Media::Form),
            Some(other) => Err(WireError::new(
                415,
                "unsupported_media_type",
                format!(
                    "'{}' bodies are not accepted; send text/csv, JSON or a form",
                    codec::names::clip(other)
                ),
            )),
        }
    }
}

/// A parsed payload: the credentials it carried (`device=`, `token=` of a
/// form or query) and its readings.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parsed {
    /// `device` / `token` parameters, if any.
    pub credentials: Credentials,
    /// The readings.
    pub batch: Batch,
}

/// Parse a payload of format `media` received at `now` (the time of
/// readings that give none). Pure: usable by any transport.
pub fn parse_body(
    media: Media,
    body: &[u8],
    now: Micros,
    limits: &Limits,
) -> Result<Parsed, CodecError> {
    parse_with(media, body, Vec::new(), now, limits, false, &|_| true)
}

/// [`parse_body`] with the request's query parameters (parsed together
/// with a form body, so a name in both is `duplicate_field`), a second
/// thread allowed for a large CSV (`parallel`), and `grow` asked before
/// the readings take more memory (`csvbody::Grow`).
fn parse_with(
    media: Media,
    body: &[u8],
    mut pairs: Vec<(String, String)>,
    now: Micros,
    limits: &Limits,
    parallel: bool,
    grow: csvbody::Grow<'_>,
) -> Result<Parsed, CodecError> {
    if media == Media::Form {
        pairs.extend(form::parse_pairs_max(body, limits.max_fields)?);
    }
    let params = codec::parse_params(&pairs, now, limits)?;
    let mut batch = Batch {
        device: params.credentials.device.clone(),
        needs_default: !params.readings.is_empty(),
        ..Batch::default()
    };
    let rows = match media {
        Media::Form => None,
        Media::Csv => Some(csvbody::parse_csv_charged(
            body, now, limits, parallel, grow,
        )?),
        Media::Json => Some(json::parse_json(body, now, limits, grow)?),
        Media::Line(p) => Some(lineproto::parse_lines(body, p, now, limits, grow)?),
    };
    if let Some(rows) = rows {
        batch.needs_default |= rows.devices.is_empty();
        batch.devices = rows.devices;
        batch.readings = rows.readings;
    }
    batch
        .readings
        .extend(params.readings.into_iter().map(|r| (None, r)));
    Ok(Parsed {
        credentials: params.credentials,
        batch,
    })
}

/// Second threads parsing halves of large CSV bodies
/// ([`csvbody::parse_csv_split`]) right now: at most one per core, so
/// many large uploads at once never mean many extra threads.
static SPLIT_HELPERS: AtomicUsize = AtomicUsize::new(0);

/// A claim on one of [`SPLIT_HELPERS`], given back on drop.
struct SplitHelper;

impl SplitHelper {
    fn try_take() -> Option<SplitHelper> {
        static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let max = *MAX.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        SPLIT_HELPERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SplitHelper)
    }
}

impl Drop for SplitHelper {
    fn drop(&mut self) {
        SPLIT_HELPERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Parse a payload as a server door does: [`parse_body`] with the
/// request's query `pairs`, bodies over [`INLINE_PARSE_BYTES`] on a
/// blocking thread, and what a CSV or JSON body's readings hold charged
/// to the request-data budget as they grow (a CSV of tiny values has ~28
/// bytes of readings per byte of body). The returned [`Charge`] holds
/// them until it is dropped (after the reply). A body whose readings
/// would never fit the budget is `413`; one that does not fit now `503`.
pub async fn parse_charged(
    app: &App,
    media: Media,
    body: Bytes,
    pairs: Vec<(String, String)>,
    now: Micros,
) -> Result<(Parsed, Arc<Charge>), WireError> {
    let charge = Arc::new(app.body_budget.charge());
    let body_len = body.len();
    // The largest growth the budget refused, to tell "never fits" (413)
    // from "not now" (503).
    let refused = Arc::new(AtomicUsize::new(0));
    let (charge2, refused2, lim) = (charge.clone(), refused.clone(), app.limits);
    let parse = move |parallel: bool| {
        let grow = |n: usize| {
            charge2.grow(n) || {
                refused2.fetch_max(n, Ordering::Relaxed);
                false
            }
        };
        parse_with(media, &body, pairs, now, &lim, parallel, &grow)
    };
    let parsed = if body_len > INLINE_PARSE_BYTES {
        crate::blocking::value("parser failed", move || {
            let helper = SplitHelper::try_take();
            parse(helper.is_some())
        })
        .await?
    } else {
        parse(false)
    };

    let parsed = match parsed {
        Err(e) if e.code == csvbody::OVER_BUDGET => {
            let mine = body_len + charge.bytes() + refused.load(Ordering::Relaxed);
            return Err(over_budget(app, mine));
        }
        other => other?,
    };
    if media != Media::Form {
        // Now exactly what the readings hold, and what sorting their keys
        // will add (`Prepared`).
        let readings = &parsed.batch.readings;
        let held = readings.capacity() * csvbody::READING_BYTES + readings.len() * PREPARE_BYTES;
        if !charge.resize(held) {
            return Err(over_budget(app, body_len + held));
        }
    }
    Ok((parsed, charge))
}

/// The reply when a request's readings do not fit the memory budget:
/// `413` when they would not fit even alone (`mine`: what this request
/// needs, at least), else `503` with `Retry-After`.
pub fn over_budget(app: &App, mine: usize) -> WireError {
    let limit = app.body_budget.limit();
    if mine > limit {
        WireError::new(
            413,
            "too_large",
            format!(
                "the readings of this body need more than body_budget_bytes ({limit} bytes) of memory; send it in parts"
            ),
        )
    } else {
        WireError::overloaded("too much request data in flight; retry shortly")
    }
}
