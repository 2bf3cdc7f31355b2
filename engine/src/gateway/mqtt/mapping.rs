//! MQTT PUBLISH properties ↔ the neutral header view (ARCHITECTURE §3), as RabbitMQ's MQTT
//! plugin maps them where it does: QoS ≥ 1 is persistent; Content Type, Response Topic (as a
//! routing key, so AMQP and STOMP replies reach it), Correlation Data, Message Expiry (s ↔ ms)
//! and User Properties map to their neutral fields. Three `x-mqtt-` headers carry what only
//! MQTT needs back: the publish QoS, the retain flag (retain-as-published) and the publishing
//! client id (no-local). They are stripped again on MQTT delivery.
//!
//! Correlation Data is binary in MQTT and a string in the neutral view (AMQP 0-9-1's
//! `correlation-id`, STOMP's header): UTF-8 data maps to it as is; other bytes travel in the
//! `x-mqtt-correlation-hex` header instead, so an MQTT requester gets back exactly the bytes it
//! sent (a reply from another protocol can echo the header).

use bytes::Bytes;
use ferry_mqtt::{Properties as MqttProps, QoS};

use super::topic_map::{key_to_topic, topic_to_key};
use crate::model::message::{Extra, Properties, is_reserved_header};

pub const HEADER_QOS: &str = "x-mqtt-publish-qos";
pub const HEADER_RETAIN: &str = "x-mqtt-retain";
pub const HEADER_PUBLISHER: &str = "x-mqtt-publisher";
pub const HEADER_PAYLOAD_FORMAT: &str = "x-mqtt-payload-format";
pub const HEADER_CORRELATION_HEX: &str = "x-mqtt-correlation-hex";

/// The neutral properties of an MQTT publish.
pub fn properties_from_publish(qos: QoS, retain: bool, client_id: &str, props: MqttProps) -> Properties {
    let mut headers = props.user_properties;
    // The gateway's own `x-mqtt-` headers follow; a client's would shadow them.
    headers.retain(|(k, _)| !k.starts_with("x-mqtt-") && !is_reserved_header(k));
    headers.push((HEADER_QOS.to_owned(), (qos as u8).to_string()));
    headers.push((HEADER_PUBLISHER.to_owned(), client_id.to_owned()));
    if retain {
        headers.push((HEADER_RETAIN.to_owned(), "1".to_owned()));
    }
    if props.payload_format_indicator == Some(1) {
        headers.push((HEADER_PAYLOAD_FORMAT.to_owned(), "1".to_owned()));
    }
    let correlation_id = props.correlation_data.and_then(|data| match String::from_utf8(data.to_vec()) {
        Ok(text) => Some(text),
        Err(_) => {
            headers.push((HEADER_CORRELATION_HEX.to_owned(), to_hex(&data)));
            None
        }
    });
    Properties {
        persistent: qos != QoS::AtMostOnce,
        expiration_ms: props.message_expiry_interval.map(|s| u64::from(s) * 1000),
        ..Properties::default()
    }
    .with_extra(Extra {
        content_type: props.content_type,
        correlation_id,
        reply_to: props.response_topic.as_deref().map(topic_to_key),
        headers,
        ..Extra::default()
    })
}

/// What an MQTT delivery needs from a message's neutral properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// QoS it was published with (non-MQTT: 1 when persistent).
    pub qos: QoS,
    pub retained: bool,
    pub publisher: Option<String>,
    pub properties: MqttProps,
}

/// The MQTT view of a message; `expiry_left_s` is the remaining message expiry, if any.
pub fn delivered(props: &Properties, expiry_left_s: Option<u32>) -> Delivered {
    let header = |name: &str| props.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let qos = match header(HEADER_QOS) {
        Some("2") => QoS::ExactlyOnce,
        Some("1") => QoS::AtLeastOnce,
        Some(_) => QoS::AtMostOnce,
        None if props.persistent => QoS::AtLeastOnce,
        None => QoS::AtMostOnce,
    };
    let user_properties = props.headers.iter().filter(|(k, _)| !k.starts_with("x-mqtt-")).cloned().collect::<Vec<_>>();
    Delivered {
        qos,
        retained: header(HEADER_RETAIN) == Some("1"),
        publisher: header(HEADER_PUBLISHER).map(str::to_owned),
        properties: MqttProps {
            payload_format_indicator: header(HEADER_PAYLOAD_FORMAT).map(|_| 1),
            content_type: props.content_type.clone(),
            response_topic: props.reply_to.as_deref().map(key_to_topic),
            correlation_data: header(HEADER_CORRELATION_HEX)
                .and_then(from_hex)
                .map(Bytes::from)
                .or_else(|| props.correlation_id.as_ref().map(|c| Bytes::from(c.clone().into_bytes()))),
            message_expiry_interval: expiry_left_s,
            user_properties,
            ..MqttProps::default()
        },
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `None` for anything but an even number of hex digits (a header another client set).
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_properties_cannot_pose_as_the_gateways_or_the_brokers_headers() {
        let forged = ["x-mqtt-publisher", "x-mqtt-retain", "x-mqtt-publish-qos", "x-ferry-mqtt-pubrel"];
        let mut user_properties: Vec<(String, String)> =
            forged.iter().map(|k| ((*k).to_owned(), "1".to_owned())).collect();
        user_properties.push(("k".to_owned(), "v".to_owned()));
        let props = MqttProps { user_properties, ..MqttProps::default() };
        let p = properties_from_publish(QoS::AtMostOnce, false, "real", props);
        let header =
            |name: &str| p.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(header("x-mqtt-publisher"), ["real"]);
        assert_eq!(header("x-mqtt-publish-qos"), ["0"]);
        assert!(header("x-mqtt-retain").is_empty() && header("x-ferry-mqtt-pubrel").is_empty());
        assert_eq!(header("k"), ["v"]);
    }

    #[test]
    fn binary_correlation_data_comes_back_byte_for_byte() {
        let data = Bytes::from_static(&[0x00, 0xff, 0xfe, b'a', 0x80]);
        let props = MqttProps { correlation_data: Some(data.clone()), ..MqttProps::default() };
        let neutral = properties_from_publish(QoS::AtLeastOnce, false, "c1", props);
        assert_eq!(neutral.correlation_id, None, "not UTF-8: no lossy string for other protocols");
        assert_eq!(delivered(&neutral, None).properties.correlation_data, Some(data));
        let mut odd = Properties::default();
        odd.extra_mut().headers.push((HEADER_CORRELATION_HEX.to_owned(), "abc".to_owned()));
        odd.extra_mut().correlation_id = Some("fallback".to_owned());
        assert_eq!(delivered(&odd, None).properties.correlation_data, Some(Bytes::from_static(b"fallback")));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn publish_properties_round_trip() {
        let props = MqttProps {
            content_type: Some("application/json".into()),
            response_topic: Some("replies/c1".into()),
            correlation_data: Some(Bytes::from_static(b"req-1")),
            message_expiry_interval: Some(30),
            payload_format_indicator: Some(1),
            user_properties: vec![("k".into(), "v".into())],
            ..MqttProps::default()
        };
        let neutral = properties_from_publish(QoS::ExactlyOnce, true, "c1", props.clone());
        assert!(neutral.persistent);
        assert_eq!(neutral.reply_to.as_deref(), Some("replies.c1"));
        assert_eq!(neutral.expiration_ms, Some(30_000));
        let back = delivered(&neutral, Some(30));
        assert_eq!((back.qos, back.retained, back.publisher.as_deref()), (QoS::ExactlyOnce, true, Some("c1")));
        assert_eq!(back.properties, props);
    }

    #[test]
    fn other_protocols_map_by_persistence() {
        let p = Properties { persistent: true, ..Properties::default() };
        assert_eq!(delivered(&p, None).qos, QoS::AtLeastOnce);
        assert_eq!(delivered(&Properties::default(), None).qos, QoS::AtMostOnce);
    }
}
