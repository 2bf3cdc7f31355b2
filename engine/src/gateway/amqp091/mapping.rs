//! AMQP 0-9-1 content properties <-> the neutral header view (ARCHITECTURE §3), the same view
//! STOMP maps to, so either protocol reads what the other published:
//! `delivery-mode` 2 <-> persistent, `priority`, `content-type`, `content-encoding`,
//! `correlation-id`, `reply-to`, `message-id`, `expiration` (ms) map one to one; `type`,
//! `user-id`, `app-id` and `timestamp` travel as headers of those names; header table values
//! become text for the neutral view (numbers and booleans as their decimal/`true` form). When a
//! table holds anything but strings, its encoding also travels as [`NativeHeaders::Amqp091`],
//! so an AMQP consumer gets every header whose text is unchanged with its original type
//! (long-int, bool, table, array, ...); headers added on the way (dead-lettering) are strings.

use bytes::Bytes;
use ferry_amqp091::{BasicProperties, FieldTable, FieldValue};

use crate::model::message::{NativeHeaders, Properties};

/// The text view of a field value (STOMP headers, binding and queue arguments).
pub fn text(value: &FieldValue) -> String {
    match value {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::F32(f) => f.to_string(),
        FieldValue::F64(f) => f.to_string(),
        FieldValue::Timestamp(t) => t.to_string(),
        FieldValue::Void => String::new(),
        _ => match (value.as_str(), value.as_i64()) {
            (Some(s), _) => s.to_owned(),
            (None, Some(n)) => n.to_string(),
            (None, None) => format!("{value:?}"),
        },
    }
}

/// Table entries as text pairs.
pub fn pairs(table: &FieldTable) -> Vec<(String, String)> {
    table.iter().map(|(k, v)| (k.to_owned(), text(v))).collect()
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
        native_headers: None,
    };
    if let Some(table) = &p.headers {
        props.headers = pairs(table);
        if table.iter().any(|(_, v)| v.as_str().is_none()) {
            let mut encoded = Vec::new();
            table.encode(&mut encoded);
            props.native_headers = Some(NativeHeaders::Amqp091(Bytes::from(encoded)));
        }
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
    let typed = match &props.native_headers {
        Some(NativeHeaders::Amqp091(bytes)) => FieldTable::decode(bytes).ok(),
        None => None,
    };
    let original = |name: &str, value: &str| {
        let v = typed.as_ref()?.get(name)?;
        (text(v) == value).then(|| v.clone())
    };
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
            _ => headers.insert(name.clone(), original(name, value).unwrap_or_else(|| FieldValue::string(value))),
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
        assert!(neutral.native_headers.is_none(), "strings only: the text view is enough");
    }

    #[test]
    fn typed_header_values_come_back_with_their_types() {
        let nested: FieldTable = [("inner", FieldValue::I32(7))].into_iter().collect();
        let table: FieldTable = [
            ("count", FieldValue::I64(42)),
            ("flag", FieldValue::Bool(true)),
            ("nested", FieldValue::Table(nested)),
            ("list", FieldValue::Array(vec![FieldValue::I8(1), FieldValue::string("two")])),
            ("name", FieldValue::string("n")),
        ]
        .into_iter()
        .collect();
        let p = BasicProperties { headers: Some(table.clone()), delivery_mode: Some(1), ..BasicProperties::default() };
        let mut neutral = properties_from_amqp(&p);
        assert!(neutral.headers.contains(&("count".to_owned(), "42".to_owned())), "text for other protocols");
        assert_eq!(amqp_properties(&neutral).headers, Some(table));
        // A header changed on the way (here by hand) is no longer the typed original.
        neutral.headers[0].1 = "43".into();
        neutral.headers.push(("x-first-death-reason".into(), "expired".into()));
        let out = amqp_properties(&neutral).headers.expect("headers");
        assert_eq!(out.get("count"), Some(&FieldValue::string("43")));
        assert_eq!(out.get("flag"), Some(&FieldValue::Bool(true)));
        assert_eq!(out.get("x-first-death-reason"), Some(&FieldValue::string("expired")));
    }
}
