//! MQTT PUBLISH properties ↔ the neutral header view (ARCHITECTURE §3), as RabbitMQ's MQTT
//! plugin maps them where it does: QoS ≥ 1 is persistent; Content Type, Response Topic (as a
//! routing key, so AMQP and STOMP replies reach it), Correlation Data, Message Expiry (s ↔ ms)
//! and User Properties map to their neutral fields. Three `x-mqtt-` headers carry what only
//! MQTT needs back: the publish QoS, the retain flag (retain-as-published) and the publishing
//! client id (no-local). They are stripped again on MQTT delivery.

use bytes::Bytes;
use ferry_mqtt::{Properties as MqttProps, QoS};

use super::topic_map::{key_to_topic, topic_to_key};
use crate::model::message::Properties;

pub const HEADER_QOS: &str = "x-mqtt-publish-qos";
pub const HEADER_RETAIN: &str = "x-mqtt-retain";
pub const HEADER_PUBLISHER: &str = "x-mqtt-publisher";
pub const HEADER_PAYLOAD_FORMAT: &str = "x-mqtt-payload-format";

/// The neutral properties of an MQTT publish.
pub fn properties_from_publish(qos: QoS, retain: bool, client_id: &str, props: MqttProps) -> Properties {
    let mut headers = props.user_properties;
    headers.push((HEADER_QOS.to_owned(), (qos as u8).to_string()));
    headers.push((HEADER_PUBLISHER.to_owned(), client_id.to_owned()));
    if retain {
        headers.push((HEADER_RETAIN.to_owned(), "1".to_owned()));
    }
    if props.payload_format_indicator == Some(1) {
        headers.push((HEADER_PAYLOAD_FORMAT.to_owned(), "1".to_owned()));
    }
    Properties {
        persistent: qos != QoS::AtMostOnce,
        content_type: props.content_type,
        correlation_id: props.correlation_data.map(|d| String::from_utf8_lossy(&d).into_owned()),
        reply_to: props.response_topic.as_deref().map(topic_to_key),
        expiration_ms: props.message_expiry_interval.map(|s| u64::from(s) * 1000),
        headers,
        ..Properties::default()
    }
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
            correlation_data: props.correlation_id.as_ref().map(|c| Bytes::from(c.clone().into_bytes())),
            message_expiry_interval: expiry_left_s,
            user_properties,
            ..MqttProps::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
