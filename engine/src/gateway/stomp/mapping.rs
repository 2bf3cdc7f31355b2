//! STOMP headers <-> the neutral header view (ARCHITECTURE §3). SEND headers that steer the
//! frame (destination, receipt, transaction, content-length) are dropped; `persistent`,
//! `priority`, `content-type`, `correlation-id`, `reply-to`, `expiration` (RabbitMQ, relative
//! ms) and `expires` (ActiveMQ, absolute ms) fill properties; the rest are user headers and
//! come back unchanged on MESSAGE.

use crate::model::message::{Properties, is_reserved_header};

/// Headers the broker sets on MESSAGE; user headers with these names are not repeated.
const MESSAGE_RESERVED: [&str; 7] =
    ["destination", "message-id", "subscription", "ack", "content-length", "redelivered", "receipt"];

/// SEND headers consumed by the frame itself.
const SEND_CONTROL: [&str; 4] = ["destination", "receipt", "transaction", "content-length"];

/// Whether a SEND asks for a persistent message, read as [`properties_from_send`] reads it:
/// the first `persistent` header wins (STOMP 1.2).
pub fn is_persistent(headers: &[ferry_stomp::Header]) -> bool {
    headers.iter().find(|(name, _)| name == "persistent").is_some_and(|(_, value)| value.eq_ignore_ascii_case("true"))
}

/// Builds the properties of a SEND.
pub fn properties_from_send(headers: &[ferry_stomp::Header]) -> Properties {
    let mut props = Properties::default();
    for (i, (name, value)) in headers.iter().enumerate() {
        if headers[..i].iter().any(|(seen, _)| seen == name) {
            continue; // first occurrence wins (STOMP 1.2)
        }
        match name.as_str() {
            n if SEND_CONTROL.contains(&n) || is_reserved_header(n) => {}
            "persistent" => props.persistent = value.eq_ignore_ascii_case("true"),
            "priority" => props.priority = value.parse::<u8>().unwrap_or(0).min(9),
            "content-type" => props.extra_mut().content_type = Some(value.to_string()),
            "content-encoding" => props.extra_mut().content_encoding = Some(value.to_string()),
            "correlation-id" => props.extra_mut().correlation_id = Some(value.to_string()),
            "reply-to" => props.extra_mut().reply_to = Some(value.to_string()),
            "amqp-message-id" => props.extra_mut().message_id = Some(value.to_string()),
            "expiration" => props.expiration_ms = value.parse().ok(),
            _ => props.extra_mut().headers.push((name.to_string(), value.to_string())),
        }
    }
    props
}

/// Numbers a MESSAGE's property headers need as text (kept alive while headers borrow them).
#[derive(Debug, Default)]
pub struct NumberText {
    priority: String,
    expiration: String,
}

/// Appends the property headers of a MESSAGE (after the broker's own headers), borrowing
/// from `props`; numbers are rendered into `numbers`.
pub fn message_headers<'a>(props: &'a Properties, numbers: &'a mut NumberText, out: &mut Vec<(&'a str, &'a str)>) {
    if props.priority > 0 {
        numbers.priority = props.priority.to_string();
    }
    if let Some(ms) = props.expiration_ms {
        numbers.expiration = ms.to_string();
    }
    if props.persistent {
        out.push(("persistent", "true"));
    }
    if props.priority > 0 {
        out.push(("priority", numbers.priority.as_str()));
    }
    let optional = [
        ("content-type", &props.content_type),
        ("content-encoding", &props.content_encoding),
        ("correlation-id", &props.correlation_id),
        ("reply-to", &props.reply_to),
        ("amqp-message-id", &props.message_id),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            out.push((name, v.as_str()));
        }
    }
    if props.expiration_ms.is_some() {
        out.push(("expiration", numbers.expiration.as_str()));
    }
    for (name, value) in &props.headers {
        if !MESSAGE_RESERVED.contains(&name.as_str()) {
            out.push((name.as_str(), value.as_str()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<ferry_stomp::Header> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn persistence_is_read_from_the_first_persistent_header() {
        for headers in [h(&[("persistent", "TRUE")]), h(&[("persistent", "true"), ("persistent", "false")])] {
            assert!(is_persistent(&headers) && properties_from_send(&headers).persistent, "{headers:?}");
        }
        for headers in [h(&[]), h(&[("persistent", "false"), ("persistent", "true")]), h(&[("persistent", "yes")])] {
            assert!(!is_persistent(&headers) && !properties_from_send(&headers).persistent, "{headers:?}");
        }
    }

    #[test]
    fn a_publisher_cannot_set_the_brokers_own_headers() {
        let props = properties_from_send(&h(&[("X-Ferry-mqtt-pubrel", "5"), ("x-ferry-anything", "1"), ("k", "v")]));
        assert_eq!(props.headers, [("k".to_owned(), "v".to_owned())]);
    }

    #[test]
    fn send_headers_split_into_properties_and_user_headers() {
        let props = properties_from_send(&h(&[
            ("destination", "/queue/a"),
            ("persistent", "true"),
            ("content-type", "text/plain"),
            ("x-custom", "1"),
            ("x-custom", "2"),
            ("receipt", "r"),
        ]));
        assert!(props.persistent);
        assert_eq!(props.content_type.as_deref(), Some("text/plain"));
        assert_eq!(props.headers, [("x-custom".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn round_trip_to_message_headers() {
        let props = properties_from_send(&h(&[("reply-to", "/queue/r"), ("correlation-id", "c"), ("k", "v")]));
        let mut out = Vec::new();
        let mut numbers = NumberText::default();
        message_headers(&props, &mut numbers, &mut out);
        assert_eq!(out, [("correlation-id", "c"), ("reply-to", "/queue/r"), ("k", "v")]);
    }
}
