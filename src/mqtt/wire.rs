//! MQTT packets in and out, for 3.1.1 (protocol level 4) and 5, through
//! the rumqttc codecs, behind the small vocabulary the session speaks
//! ([`In`], [`Out`]). The protocol level is read from the CONNECT, and
//! every later packet is read and written in that version.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.
    V5,
}

/// A CONNECT, as much of it as the server uses.
#[derive(Debug)]
pub struct Connect {
    /// Keep-alive the client asked for, in seconds (0: none).
    pub keep_alive: u16,
    /// Username and password, if either was sent.
    pub login: Option<(String, String)>,
    /// The client identifier (may be empty).
    pub client_id: String,
}

/// A packet from the client after CONNECT.
#[derive(Debug)]
pub enum In {
    /// PUBLISH.
    Publish {
        /// Topic name.
        topic: String,
        /// 0, 1 or 2.
        qos: u8,
        /// Packet id (QoS > 0).
        pkid: u16,
        /// The application message.
        payload: Bytes,
        /// MQTT 5 content type, if given.
        content_type: Option<String>,
    },
    /// SUBSCRIBE: packet id and topic filters.
    Subscribe(u16, Vec<String>),
    /// UNSUBSCRIBE: packet id and topic filters.
    Unsubscribe(u16, Vec<String>),
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect,
    /// A PUBACK for a message the server sent (it sends QoS 0 only) or
    /// a packet the server never expects from a client here.
    Ignored,
    /// QoS 2 flow packets, AUTH, a second CONNECT: not supported.
    Unsupported(&'static str),
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not MQTT 3.1.1 or 5.
    ProtocolVersion,
    /// Wrong or unknown username or password.
    BadCredentials,
    /// No credentials.
    NotAuthorized,
    /// Too many failed attempts (throttled), or shutting down.
    Unavailable,
    /// The connection cap is reached.
    Busy,
}

/// A reason code in a MQTT 5 PUBACK, SUBACK or DISCONNECT.
pub mod reason {
    /// Unspecified error.
    pub const UNSPECIFIED: u8 = 0x80;
    /// Malformed packet.
    pub const MALFORMED: u8 = 0x81;
    /// Protocol error.
    pub const PROTOCOL: u8 = 0x82;
    /// Implementation specific error (a server-side failure).
    pub const IMPLEMENTATION: u8 = 0x83;
    /// Not authorized.
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// Server busy.
    pub const BUSY: u8 = 0x89;
    /// Server shutting down.
    pub const SHUTTING_DOWN: u8 = 0x8B;
    /// Keep alive timeout.
    pub const KEEP_ALIVE: u8 = 0x8D;
    /// Topic filter invalid.
    pub const FILTER_INVALID: u8 = 0x8F;
    /// Topic name invalid.
    pub const TOPIC_INVALID: u8 = 0x90;
    /// Packet too large.
    pub const TOO_LARGE: u8 = 0x95;
    /// Quota exceeded.
    pub const QUOTA: u8 = 0x97;
    /// Payload format invalid.
    pub const PAYLOAD_INVALID: u8 = 0x99;
    /// QoS not supported.
    pub const QOS: u8 = 0x9B;
    /// Wildcard subscriptions not supported.
    pub const WILDCARDS: u8 = 0xA2;
}

/// A packet to the client.
#[derive(Debug)]
pub enum Out {
    /// CONNACK: accepted (with the keep-alive the server holds the
    /// client to, told to MQTT 5 clients when it differs) or refused.
    ConnAck(Result<Accepted, Refusal>),
    /// A QoS 0 PUBLISH.
    Publish(String, Bytes),
    /// PUBACK: success (`None`) or a MQTT 5 reason code and string.
    PubAck(u16, Option<(u8, String)>),
    /// SUBACK: per filter, granted QoS 0 (`None`) or a MQTT 5 reason code
    /// (sent as 0x80 to a 3.1.1 client).
    SubAck(u16, Vec<Option<u8>>),
    /// UNSUBACK for this many filters.
    UnsubAck(u16, usize),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT with a reason (MQTT 5 only; a 3.1.1 connection just
    /// closes).
    Disconnect(u8, String),
}

/// What an accepted CONNACK tells the client.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// Publishes in progress the client may have (MQTT 5 Receive Maximum).
    pub receive_max: u16,
    /// Largest packet accepted (MQTT 5 Maximum Packet Size).
    pub max_packet: u32,
    /// The keep-alive the server uses, when it is not the client's.
    pub keep_alive: Option<u16>,
}

/// A framing or decoding failure: the connection is closed.
#[derive(Debug)]
pub enum Bad {
    /// The remaining length is over the limit.
    TooLarge(usize),
    /// Anything else malformed.
    Malformed(String),
    /// The first packet is a CONNECT of another protocol level.
    Version(u8),
}

/// The remaining length of the packet starting `buf`, and the length of
/// its fixed header: `Ok(None)` while incomplete.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, Bad> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((len, 2 + i)));
        }
    }
    Err(Bad::Malformed("remaining length over 4 bytes".into()))
}

/// Check the packet at the start of `buf` against `max` and say whether
/// it is complete (`Ok(None)`: read more). Refuses an oversized remaining
/// length before its bytes arrive.
fn complete(buf: &[u8], max: usize) -> Result<Option<usize>, Bad> {
    let Some((len, head)) = fixed_header(buf)? else {
        return Ok(None);
    };
    if len > max {
        return Err(Bad::TooLarge(len));
    }
    Ok((buf.len() >= head + len).then_some(head + len))
}

/// Completes once `rx` holds `true` (never if its sender is gone first).
pub async fn until(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let ok = rx.wait_for(|v| *v).await.is_ok();
    if !ok {
        std::future::pending::<()>().await;
    }
}

/// The whole length (fixed header included) of the packet starting
/// `buf`, once its fixed header is there.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    fixed_header(buf)
        .ok()
        .flatten()
        .map(|(len, head)| len + head)
}

/// Read the first packet, which must be a CONNECT of MQTT 3.1.1 or 5.
pub fn read_connect(buf: &mut BytesMut, max: usize) -> Result<Option<(Version, Connect)>, Bad> {
    // Told by the first byte: another protocol (an HTTP request on this
    // port) or a packet before CONNECT is closed at once, not held until
    // the CONNECT timeout waiting for the length its bytes seem to give.
    if buf.first().is_some_and(|&b| b != 0x10) {
        return Err(Bad::Malformed("the first packet must be CONNECT".into()));
    }
    let Some(total) = complete(buf, max)? else {
        return Ok(None);
    };
    let (_, head) = fixed_header(buf)?.unwrap_or((0, 2));
    // Protocol name (2-byte length, "MQTT" or 3.1's "MQIsdp"), then level.
    let name_len = buf
        .get(head..head + 2)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let level = *buf
        .get(head + 2 + name_len)
        .filter(|_| head + 2 + name_len < total)
        .ok_or_else(|| Bad::Malformed("CONNECT too short".into()))?;
    let malformed = |e: &dyn std::fmt::Display| Bad::Malformed(format!("CONNECT: {e}"));
    match level {
        4 => match v4::Packet::read(buf, max).map_err(|e| malformed(&e))? {
            v4::Packet::Connect(c) => Ok(Some((
                Version::V4,
                Connect {
                    keep_alive: c.keep_alive,
                    login: c.login.map(|l| (l.username, l.password)),
                    client_id: c.client_id,
                },
            ))),
            _ => Err(Bad::Malformed("the first packet must be CONNECT".into())),
        },
        5 => match v5::Packet::read(buf, Some(max_u32(max))).map_err(|e| malformed(&e))? {
            v5::Packet::Connect(c, _, login) => Ok(Some((
                Version::V5,
                Connect {
                    keep_alive: c.keep_alive,
                    login: login.map(|l| (l.username, l.password)),
                    client_id: c.client_id,
                },
            ))),
            _ => Err(Bad::Malformed("the first packet must be CONNECT".into())),
        },
        other => Err(Bad::Version(other)),
    }
}

fn max_u32(max: usize) -> u32 {
    u32::try_from(max).unwrap_or(u32::MAX)
}

/// Read one packet after CONNECT, if a whole one is buffered.
pub fn read(buf: &mut BytesMut, version: Version, max: usize) -> Result<Option<In>, Bad> {
    let Some(total) = complete(buf, max)? else {
        return Ok(None);
    };
    // A MQTT 5 DISCONNECT may have no reason code at all (`e0 00`); the
    // codec wants one.
    if buf[0] == 0xe0 && total == 2 {
        let _ = buf.split_to(2);
        return Ok(Some(In::Disconnect));
    }
    let malformed = |e: &dyn std::fmt::Display| Bad::Malformed(e.to_string());
    Ok(Some(match version {
        Version::V4 => match v4::Packet::read(buf, max).map_err(|e| malformed(&e))? {
            v4::Packet::Publish(p) => In::Publish {
                topic: p.topic,
                qos: p.qos as u8,
                pkid: p.pkid,
                payload: p.payload,
                content_type: None,
            },
            v4::Packet::Subscribe(s) => {
                In::Subscribe(s.pkid, s.filters.into_iter().map(|f| f.path).collect())
            }
            v4::Packet::Unsubscribe(u) => In::Unsubscribe(u.pkid, u.topics),
            v4::Packet::PingReq => In::PingReq,
            v4::Packet::Disconnect => In::Disconnect,
            v4::Packet::PubAck(_) => In::Ignored,
            v4::Packet::Connect(_) => In::Unsupported("a second CONNECT"),
            _ => In::Unsupported("QoS 2 and server-to-client packets"),
        },
        Version::V5 => {
            match v5::Packet::read(buf, Some(max_u32(max))).map_err(|e| malformed(&e))? {
                v5::Packet::Publish(p) => In::Publish {
                    topic: String::from_utf8(p.topic.to_vec())
                        .map_err(|_| Bad::Malformed("topic is not UTF-8".into()))?,
                    qos: p.qos as u8,
                    pkid: p.pkid,
                    payload: p.payload,
                    content_type: p.properties.and_then(|p| p.content_type),
                },
                v5::Packet::Subscribe(s) => {
                    In::Subscribe(s.pkid, s.filters.into_iter().map(|f| f.path).collect())
                }
                v5::Packet::Unsubscribe(u) => In::Unsubscribe(u.pkid, u.filters),
                v5::Packet::PingReq(_) => In::PingReq,
                v5::Packet::Disconnect(_) => In::Disconnect,
                v5::Packet::PubAck(_) => In::Ignored,
                v5::Packet::Connect(..) => In::Unsupported("a second CONNECT"),
                v5::Packet::Auth(_) => In::Unsupported("AUTH"),
                _ => In::Unsupported("QoS 2 and server-to-client packets"),
            }
        }
    }))
}

/// Append `out`, encoded for `version`, to `buf`.
pub fn write(out: &Out, version: Version, buf: &mut BytesMut) {
    let ok = match version {
        Version::V4 => write_v4(out, buf).is_ok(),
        Version::V5 => write_v5(out, buf).is_ok(),
    };
    // Every packet the server builds is well formed and within limits.
    debug_assert!(ok, "{out:?}");
}

fn write_v4(out: &Out, buf: &mut BytesMut) -> Result<usize, rumqttc::mqttbytes::Error> {
    use v4::ConnectReturnCode as C;
    match out {
        Out::ConnAck(r) => {
            let code = match r {
                Ok(_) => C::Success,
                Err(Refusal::ProtocolVersion) => C::RefusedProtocolVersion,
                Err(Refusal::BadCredentials) => C::BadUserNamePassword,
                Err(Refusal::NotAuthorized) => C::NotAuthorized,
                Err(Refusal::Unavailable | Refusal::Busy) => C::ServiceUnavailable,
            };
            v4::ConnAck::new(code, false).write(buf)
        }
        Out::Publish(topic, payload) => v4::Publish::from_bytes(
            topic.as_str(),
            rumqttc::mqttbytes::QoS::AtMostOnce,
            payload.clone(),
        )
        .write(buf),
        Out::PubAck(pkid, _) => v4::PubAck::new(*pkid).write(buf),
        Out::SubAck(pkid, codes) => v4::SubAck::new(
            *pkid,
            codes
                .iter()
                .map(|c| match c {
                    None => v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::AtMostOnce),
                    Some(_) => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )
        .write(buf),
        Out::UnsubAck(pkid, _) => v4::UnsubAck::new(*pkid).write(buf),
        Out::PingResp => v4::PingResp.write(buf),
        Out::Disconnect(..) => Ok(0),
    }
}

fn write_v5(out: &Out, buf: &mut BytesMut) -> Result<usize, rumqttc::v5::mqttbytes::Error> {
    match out {
        Out::ConnAck(r) => connack_v5(r).write(buf),
        Out::Publish(topic, payload) => {
            let mut p = v5::Publish::new(
                topic.as_str(),
                rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                payload.clone(),
                None,
            );
            p.properties = None;
            p.write(buf)
        }
        Out::PubAck(pkid, r) => {
            let mut ack = v5::PubAck::new(*pkid, None);
            if let Some((code, text)) = r {
                ack.reason = puback_reason(*code);
                ack.properties = Some(v5::PubAckProperties {
                    reason_string: Some(text.clone()),
                    user_properties: Vec::new(),
                });
            }
            ack.write(buf)
        }
        Out::SubAck(pkid, codes) => v5::SubAck {
            pkid: *pkid,
            return_codes: codes.iter().map(|c| suback_reason(*c)).collect(),
            properties: None,
        }
        .write(buf),
        Out::UnsubAck(pkid, n) => v5::UnsubAck {
            pkid: *pkid,
            reasons: vec![v5::UnsubAckReason::Success; *n],
            properties: None,
        }
        .write(buf),
        Out::PingResp => v5::PingResp::write(buf),
        Out::Disconnect(code, text) => {
            let mut d = v5::Disconnect::new(disconnect_reason(*code));
            d.properties = Some(v5::DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some(text.clone()),
                user_properties: Vec::new(),
                server_reference: None,
            });
            d.write(buf)
        }
    }
}

fn connack_v5(r: &Result<Accepted, Refusal>) -> v5::ConnAck {
    use v5::ConnectReturnCode as C;
    let code = match r {
        Ok(_) => C::Success,
        Err(Refusal::ProtocolVersion) => C::UnsupportedProtocolVersion,
        Err(Refusal::BadCredentials) => C::BadUserNamePassword,
        Err(Refusal::NotAuthorized) => C::NotAuthorized,
        Err(Refusal::Unavailable) => C::ServerUnavailable,
        Err(Refusal::Busy) => C::ServerBusy,
    };
    let properties = r.as_ref().ok().map(|a| v5::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: Some(a.receive_max.max(1)),
        max_qos: Some(1),
        retain_available: Some(0),
        max_packet_size: Some(a.max_packet),
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: Some(0),
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(0),
        server_keep_alive: a.keep_alive,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    });
    v5::ConnAck {
        session_present: false,
        code,
        properties,
    }
}

fn puback_reason(code: u8) -> v5::PubAckReason {
    use v5::PubAckReason as R;
    match code {
        reason::NOT_AUTHORIZED => R::NotAuthorized,
        reason::TOPIC_INVALID => R::TopicNameInvalid,
        reason::QUOTA => R::QuotaExceeded,
        reason::PAYLOAD_INVALID => R::PayloadFormatInvalid,
        reason::IMPLEMENTATION => R::ImplementationSpecificError,
        _ => R::UnspecifiedError,
    }
}

fn suback_reason(code: Option<u8>) -> v5::SubscribeReasonCode {
    use v5::SubscribeReasonCode as R;
    match code {
        None => R::Success(rumqttc::v5::mqttbytes::QoS::AtMostOnce),
        Some(reason::NOT_AUTHORIZED) => R::NotAuthorized,
        Some(reason::FILTER_INVALID) => R::TopicFilterInvalid,
        Some(reason::WILDCARDS) => R::WildcardSubscriptionsNotSupported,
        Some(reason::QUOTA) => R::QuotaExceeded,
        Some(_) => R::Unspecified,
    }
}

fn disconnect_reason(code: u8) -> v5::DisconnectReasonCode {
    use v5::DisconnectReasonCode as R;
    match code {
        reason::MALFORMED => R::MalformedPacket,
        reason::PROTOCOL => R::ProtocolError,
        reason::NOT_AUTHORIZED => R::NotAuthorized,
        reason::BUSY => R::ServerBusy,
        reason::SHUTTING_DOWN => R::ServerShuttingDown,
        reason::KEEP_ALIVE => R::KeepAliveTimeout,
        reason::TOPIC_INVALID => R::TopicNameInvalid,
        reason::TOO_LARGE => R::PacketTooLarge,
        reason::QUOTA => R::QuotaExceeded,
        reason::PAYLOAD_INVALID => R::PayloadFormatInvalid,
        reason::QOS => R::QoSNotSupported,
        reason::IMPLEMENTATION => R::ImplementationSpecificError,
        _ => R::UnspecifiedError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(level: u8, user: &str, pass: &str) -> BytesMut {
        let mut c = v4::Connect::new("c1");
        c.set_login(user, pass);
        let mut b = BytesMut::new();
        if level == 5 {
            let c5 = v5::Connect {
                keep_alive: 30,
                client_id: "c1".into(),
                clean_start: true,
                properties: None,
            };
            c5.write(&None, &Some(v5::Login::new(user, pass)), &mut b)
                .unwrap();
        } else {
            c.write(&mut b).unwrap();
        }
        b
    }

    #[test]
    fn connects_of_both_versions_and_partial_input() {
        for level in [4, 5] {
            let full = connect(level, "dev1", "tok");
            for cut in 0..full.len() {
                let mut part = BytesMut::from(&full[..cut]);
                assert!(read_connect(&mut part, 1024).unwrap().is_none(), "{cut}");
            }
            let mut b = full.clone();
            let (v, c) = read_connect(&mut b, 1024).unwrap().unwrap();
            assert_eq!(v, if level == 5 { Version::V5 } else { Version::V4 });
            assert_eq!(c.login, Some(("dev1".into(), "tok".into())));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn oversized_and_malformed_lengths_are_refused_before_the_bytes() {
        // PUBLISH claiming 268,435,455 bytes, nothing after the header.
        let mut b = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(
            read(&mut b, Version::V4, 1 << 20),
            Err(Bad::TooLarge(268_435_455))
        ));
        let mut b = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(matches!(
            read(&mut b, Version::V4, 1 << 20),
            Err(Bad::Malformed(_))
        ));
        // MQTT 3.1 ("MQIsdp", level 3) is another version.
        let mut b = BytesMut::from(&b"\x10\x0c\x00\x06MQIsdp\x03\x02\x00\x3c"[..]);
        assert!(matches!(read_connect(&mut b, 1024), Err(Bad::Version(3))));
        let mut b = BytesMut::from(&b"\x30\x02\x00\x00"[..]);
        assert!(read_connect(&mut b, 1024).is_err(), "not a CONNECT");
        // Told from the first byte, before the length its bytes seem to
        // give has come ("GE": a type-4 packet of 69 bytes).
        let mut b = BytesMut::from(&b"GE"[..]);
        assert!(read_connect(&mut b, 1024).is_err(), "HTTP on the MQTT port");
    }

    #[test]
    fn a_bare_v5_disconnect_is_read() {
        let mut b = BytesMut::from(&[0xe0, 0x00][..]);
        assert!(matches!(
            read(&mut b, Version::V5, 1024),
            Ok(Some(In::Disconnect))
        ));
    }
}
