//! AMQP 0-9-1 content properties <-> the neutral header view (ARCHITECTURE §3), the same view
//! STOMP maps to, so either protocol reads what the other published:
//! `delivery-mode` 2 <-> persistent, `priority`, `content-type`, `content-encoding`,
//! `correlation-id`, `reply-to`, `message-id`, `expiration` (ms) map one to one; `type`,
//! `user-id`, `app-id` and `timestamp` travel as headers of those names; header table values
//! become text (numbers and booleans as their decimal/`true` form; other field types are
//! carried as text too, so an AMQP-to-AMQP round trip keeps values but not their types).

use ferry_amqp091::{BasicProperties, FieldTable, FieldValue};

use crate::model::message::Properties;

fn text(value: &FieldValue) -> String {
    if let FieldValue::Bool(b) = value {
        return b.to_string();
    }
    if let Some(s) = value.as_str() {
        return s.to_owned();
    }
    if let Some(n) = value.as_i64() {
        return n.to_string();
    }
    format!("{value:?}")
}

pub fn properties_from_amqp(p: &BasicProperties) -> Properties {
    let mut props = Properties {
        persistent: p.delivery_mode == Some(2),
        priority: p.priority.unwrap_or(0),
        content_type: p.content_type.clone(),
        content_encoding: p.content_encoding.clone(),
        correlation_id: p.correlation_id.clone(),
        reply_to: p.reply_to.clone(),
        message_id: p.message_id.clone(),
        expiration_ms: p.expiration.as_deref().and_then(|e| e.parse().ok()),
        headers: Vec::new(),
    };
    if let Some(table) = &p.headers {
        props.headers.extend(table.iter().map(|(k, v)| (k.to_owned(), text(v))));
    }
    let extra = [("type", p.kind.clone()), ("user-id", p.user_id.clone()), ("app-id", p.app_id.clone())];
    for (name, value) in extra {
        if let Some(v) = value {
            props.headers.push((name.to_owned(), v));
        }
    }
    if let Some(ts) = p.timestamp {
        props.headers.push(("timestamp".to_owned(), ts.to_string()));
    }
    props
}

pub fn amqp_properties(props: &Properties) -> BasicProperties {
    let mut headers = FieldTable::new();
    let mut p = BasicProperties {
        content_type: props.content_type.clone(),
        content_encoding: props.content_encoding.clone(),
        delivery_mode: Some(if props.persistent { 2 } else { 1 }),
        priority: (props.priority > 0).then_some(props.priority),
        correlation_id: props.correlation_id.clone(),
        reply_to: props.reply_to.clone(),
        expiration: props.expiration_ms.map(|ms| ms.to_string()),
        message_id: props.message_id.clone(),
        ..BasicProperties::default()
    };
    for (name, value) in &props.headers {
        match name.as_str() {
            "type" => p.kind = Some(value.clone()),
            "user-id" => p.user_id = Some(value.clone()),
            "app-id" => p.app_id = Some(value.clone()),
            "timestamp" if value.parse::<u64>().is_ok() => p.timestamp = value.parse().ok(),
            _ => headers.insert(name.clone(), FieldValue::string(value)),
        }
    }
    if !headers.is_empty() {
        p.headers = Some(headers);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_properties_survive_the_neutral_view() {
        let mut table = FieldTable::new();
        table.insert("x-custom", FieldValue::string("v"));
        let p = BasicProperties {
            content_type: Some("text/plain".into()),
            delivery_mode: Some(2),
            priority: Some(5),
            correlation_id: Some("c".into()),
            reply_to: Some("amq.rabbitmq.reply-to".into()),
            expiration: Some("60000".into()),
            message_id: Some("m".into()),
            kind: Some("order".into()),
            app_id: Some("app".into()),
            timestamp: Some(1_700_000_000),
            headers: Some(table),
            ..BasicProperties::default()
        };
        let neutral = properties_from_amqp(&p);
        assert!(neutral.persistent);
        assert_eq!(neutral.expiration_ms, Some(60_000));
        assert_eq!(amqp_properties(&neutral), p);
    }
}
