//! The MQTT topics Overlord speaks (docs/api.md, "MQTT"):
//!
//! - publish `overlord/<device>/readings`: readings, in any HTTP body
//!   format;
//! - publish `overlord/<device>/inbox/ack`: `upto=SEQ` removes inbox rows;
//! - subscribe `overlord/<device>/inbox`: the device's inbox rows;
//! - subscribe `overlord/<device>/errors`: an `error,<code>,<detail>` line
//!   for each of this connection's publishes about that device that failed;
//! - subscribe `overlord/channels/<name>`: a channel's new items.
//!
//! Pure parsing; who may use a topic is decided by the session through
//! `auth::visible` and `Directory::authorize`.

use super::wire::reason;

/// The first level of every topic.
pub const ROOT: &str = "overlord";

/// A topic a client publishes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Publish<'a> {
    /// `overlord/<device>/readings`.
    Readings(&'a str),
    /// `overlord/<device>/inbox/ack`.
    InboxAck(&'a str),
}

/// A topic filter a client subscribes to.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Subscription {
    /// `overlord/<device>/inbox`.
    Inbox(String),
    /// `overlord/<device>/errors`.
    Errors(String),
    /// `overlord/channels/<name>`.
    Channel(String),
}

impl Subscription {
    /// The topic its messages are published on (the filter itself).
    pub fn topic(&self) -> String {
        match self {
            Subscription::Inbox(d) => format!("{ROOT}/{d}/inbox"),
            Subscription::Errors(d) => format!("{ROOT}/{d}/errors"),
            Subscription::Channel(c) => format!("{ROOT}/channels/{c}"),
        }
    }
}

/// Parse a PUBLISH topic name.
pub fn publish(topic: &str) -> Option<Publish<'_>> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let (device, what) = rest.split_once('/')?;
    if device.is_empty() {
        return None;
    }
    match what {
        "readings" => Some(Publish::Readings(device)),
        "inbox/ack" => Some(Publish::InboxAck(device)),
        _ => None,
    }
}

/// Parse a SUBSCRIBE topic filter; `Err` is the MQTT 5 reason code of the
/// refusal. `overlord/channels/...` is always a channel (a device with
/// the id `channels` cannot subscribe to its inbox by this topic).
pub fn subscription(filter: &str) -> Result<Subscription, u8> {
    if filter.contains(['+', '#']) {
        return Err(reason::WILDCARDS);
    }
    let rest = filter
        .strip_prefix(ROOT)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(reason::FILTER_INVALID)?;
    let (first, what) = rest.split_once('/').ok_or(reason::FILTER_INVALID)?;
    if first.is_empty() || what.is_empty() {
        return Err(reason::FILTER_INVALID);
    }
    match (first, what) {
        ("channels", name) if !name.contains('/') => Ok(Subscription::Channel(name.to_string())),
        (device, "inbox") => Ok(Subscription::Inbox(device.to_string())),
        (device, "errors") => Ok(Subscription::Errors(device.to_string())),
        _ => Err(reason::FILTER_INVALID),
    }
}

/// The device a publish topic is about, for its errors topic.
pub fn device_of(topic: &str) -> Option<&str> {
    match publish(topic)? {
        Publish::Readings(d) | Publish::InboxAck(d) => Some(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(
            publish("overlord/dev1/readings"),
            Some(Publish::Readings("dev1"))
        );
        assert_eq!(
            publish("overlord/dev1/inbox/ack"),
            Some(Publish::InboxAck("dev1"))
        );
        for bad in [
            "overlord//readings",
            "overlord/dev1",
            "overlord/dev1/readings/x",
            "other/dev1/readings",
            "overlordx/dev1/readings",
            "",
        ] {
            assert_eq!(publish(bad), None, "{bad}");
        }
        assert_eq!(
            subscription("overlord/dev1/inbox"),
            Ok(Subscription::Inbox("dev1".into()))
        );
        assert_eq!(
            subscription("overlord/dev1/errors"),
            Ok(Subscription::Errors("dev1".into()))
        );
        assert_eq!(
            subscription("overlord/channels/greenhouse"),
            Ok(Subscription::Channel("greenhouse".into()))
        );
        assert_eq!(subscription("overlord/+/inbox"), Err(reason::WILDCARDS));
        assert_eq!(subscription("#"), Err(reason::WILDCARDS));
        assert_eq!(
            subscription("overlord/dev1/readings"),
            Err(reason::FILTER_INVALID)
        );
        assert_eq!(
            subscription("overlord/channels/a/b"),
            Err(reason::FILTER_INVALID)
        );
        assert_eq!(
            Subscription::Channel("g".into()).topic(),
            "overlord/channels/g"
        );
    }
}
