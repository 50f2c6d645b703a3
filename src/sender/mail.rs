//! One e-mail attempt through the `[smtp]` relay (lettre over rustls).
//!
//! The outbox row's body is the message text whose first line is the
//! subject ([`crate::outbox::Notification::render_mail`]). Every try of
//! one event carries the same `Message-ID` (`<evt-N.T@overlord>`), so a
//! mail client can drop the duplicate of a retry. The caller bounds the
//! attempt in time; lettre's own timeout is set to the same.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::codec::names::log_safe;
use crate::config::SmtpConfig;
use crate::outbox::Pending;
use crate::targets::TargetRecord;

use super::webhook::Failed;

/// The relay, built once from `[smtp]`; `None` when `host` is empty.
pub struct Relay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// Check `[smtp]` and build the relay (`Ok(None)`: e-mail is off). The
/// error is a start-up error.
pub fn relay(c: &SmtpConfig, timeout: Duration) -> Result<Option<Relay>, String> {
    if c.host.is_empty() {
        return Ok(None);
    }
    let builder = match c.security.as_str() {
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host),
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host),
        "none" => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &c.host,
        )),
        other => {
            return Err(format!(
                "[smtp] security = '{}': use starttls, tls or none",
                log_safe(other)
            ))
        }
    }
    .map_err(|e| format!("[smtp] host: {e}"))?;
    let mut builder = builder.port(c.port).timeout(Some(timeout));
    if !c.username.is_empty() {
        builder = builder.credentials(Credentials::new(c.username.clone(), c.password.clone()));
    }
    let from: Mailbox = c
        .from
        .parse()
        .map_err(|e| format!("[smtp] from = '{}': {e}", log_safe(&c.from)))?;
    Ok(Some(Relay {
        transport: builder.build(),
        from,
    }))
}

/// Is `address` an e-mail address lettre can send to? The error is the
/// text of a `400`.
pub fn check_address(address: &str) -> Result<(), String> {
    address
        .parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|_| "address is not an e-mail address".to_string())
}

/// Send `p` to `target` once.
pub async fn send(relay: Option<&Relay>, target: &TargetRecord, p: &Pending) -> Result<(), Failed> {
    let relay = relay.ok_or((0, "e-mail is off ([smtp] host is empty)".to_string()))?;
    let text = String::from_utf8_lossy(&p.body);
    let (subject, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let to: Mailbox = target
        .to
        .parse()
        .map_err(|_| (0, "address is not an e-mail address".to_string()))?;
    let msg = Message::builder()
        .from(relay.from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(format!("<{}.{}@overlord>", p.id(), target.id)))
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .map_err(|e| (0, format!("message: {e}")))?;
    match relay.transport.send(msg).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let code = e.status().map_or(0, |c| {
                let s = c.to_string();
                s.parse::<u16>().unwrap_or(0)
            });
            Err((code, format!("SMTP: {}", log_safe(&e.to_string()))))
        }
    }
}
