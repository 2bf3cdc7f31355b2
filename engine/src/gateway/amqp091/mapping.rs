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

use crate::model::message::{Extra, NativeHeaders, Properties, is_reserved_header};

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
    let mut extra = Extra {
        content_type: p.content_type.clone(),
        content_encoding: p.content_encoding.clone(),
        correlation_id: p.correlation_id.clone(),
        reply_to: p.reply_to.clone(),
        message_id: p.message_id.clone(),
        headers: Vec::new(),
        native_headers: None,
    };
    if let Some(table) = &p.headers {
        extra.headers = pairs(table);
        extra.headers.retain(|(k, _)| !is_reserved_header(k));
        if table.iter().any(|(_, v)| v.as_str().is_none()) {
            let mut encoded = Vec::new();
            table.encode(&mut encoded);
            extra.native_headers = Some(NativeHeaders::Amqp091(Bytes::from(encoded)));
        }
    }
    let more = [("type", p.kind.clone()), ("user-id", p.user_id.clone()), ("app-id", p.app_id.clone())];
    for (name, value) in more {
        if let Some(v) = value {
            extra.headers.push((name.to_owned(), v));
        }
    }
    if let Some(ts) = p.timestamp {
        extra.headers.push(("timestamp".to_owned(), ts.to_string()));
    }
    Properties {
        persistent: p.delivery_mode == Some(2),
        priority: p.priority.unwrap_or(0),
        expiration_ms: p.expiration.as_deref().and_then(|e| e.parse().ok()),
        ..Properties::default()
    }
    .with_extra(extra)
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

/// One dead-lettering, as RabbitMQ records it in the `x-death` header: an array of tables,
/// most recent first, one per (queue, reason) with a `count` that grows each time the message
/// dies there again (a retry loop through a DLX reads it). Kept typed in the native AMQP
/// table (so an AMQP consumer gets the array of tables) and as text for other protocols.
pub struct Death<'a> {
    pub queue: &'a str,
    pub reason: &'a str,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub time_s: u64,
}

pub fn record_death(props: &mut Properties, death: &Death<'_>) {
    let mut table = match &props.native_headers {
        Some(NativeHeaders::Amqp091(bytes)) => FieldTable::decode(bytes).unwrap_or_default(),
        None => FieldTable::new(),
    };
    let current = props.headers.iter().find(|(k, _)| k == "x-death").map(|(_, v)| v.clone());
    // The typed array counts only while its text is what the message carries.
    let mut deaths = match table.get("x-death") {
        Some(v @ FieldValue::Array(items)) if current.as_deref() == Some(text(v).as_str()) => items.clone(),
        _ => Vec::new(),
    };
    let same = |entry: &FieldValue| {
        let FieldValue::Table(t) = entry else { return false };
        t.get("queue").and_then(FieldValue::as_str) == Some(death.queue)
            && t.get("reason").and_then(FieldValue::as_str) == Some(death.reason)
    };
    let earlier = deaths.iter().position(same).map(|at| deaths.remove(at));
    let count = match earlier {
        Some(FieldValue::Table(t)) => t.get("count").and_then(FieldValue::as_i64).unwrap_or(0).saturating_add(1),
        _ => 1,
    };
    let mut entry = FieldTable::new();
    entry.insert("count", FieldValue::I64(count));
    entry.insert("reason", FieldValue::string(death.reason));
    entry.insert("queue", FieldValue::string(death.queue));
    entry.insert("time", FieldValue::Timestamp(death.time_s));
    entry.insert("exchange", FieldValue::string(death.exchange));
    entry.insert("routing-keys", FieldValue::Array(vec![FieldValue::string(death.routing_key)]));
    deaths.insert(0, FieldValue::Table(entry));
    let value = FieldValue::Array(deaths);
    let rendered = text(&value);
    table.insert("x-death", value);
    match props.extra_mut().headers.iter_mut().find(|(k, _)| k == "x-death") {
        Some(header) => header.1 = rendered,
        None => props.extra_mut().headers.push(("x-death".to_owned(), rendered)),
    }
    let mut encoded = Vec::new();
    table.encode(&mut encoded);
    props.extra_mut().native_headers = Some(NativeHeaders::Amqp091(Bytes::from(encoded)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_cannot_set_the_brokers_own_headers() {
        let mut table = FieldTable::new();
        table.insert("x-ferry-mqtt-pubrel", FieldValue::string("5"));
        table.insert("k", FieldValue::I64(7));
        let props = properties_from_amqp(&BasicProperties { headers: Some(table), ..BasicProperties::default() });
        assert_eq!(props.headers, [("k".to_owned(), "7".to_owned())]);
        let back = amqp_properties(&props).headers.expect("headers");
        assert!(back.get("x-ferry-mqtt-pubrel").is_none(), "nor through the typed table: {back:?}");
        assert_eq!(back.get("k"), Some(&FieldValue::I64(7)));
    }

    #[test]
    fn x_death_counts_each_queue_and_reason_most_recent_first() {
        let mut props = Properties::default();
        let death = |queue, reason| Death { queue, reason, exchange: "", routing_key: "work", time_s: 1_700_000_000 };
        record_death(&mut props, &death("work", "rejected"));
        record_death(&mut props, &death("wait", "expired"));
        record_death(&mut props, &death("work", "rejected"));
        let headers = amqp_properties(&props).headers.expect("headers");
        let Some(FieldValue::Array(deaths)) = headers.get("x-death") else { panic!("x-death: {headers:?}") };
        let summary: Vec<(String, String, i64)> = deaths
            .iter()
            .map(|d| {
                let FieldValue::Table(t) = d else { panic!("entry {d:?}") };
                let s = |k| t.get(k).and_then(FieldValue::as_str).expect(k).to_owned();
                (s("queue"), s("reason"), t.get("count").and_then(FieldValue::as_i64).expect("count"))
            })
            .collect();
        assert_eq!(summary, [("work".into(), "rejected".into(), 2), ("wait".into(), "expired".into(), 1)]);
        let FieldValue::Table(first) = &deaths[0] else { unreachable!() };
        assert_eq!(first.get("time"), Some(&FieldValue::Timestamp(1_700_000_000)));
        assert_eq!(first.get("routing-keys"), Some(&FieldValue::Array(vec![FieldValue::string("work")])));
        assert!(props.headers.iter().any(|(k, _)| k == "x-death"), "a text view for other protocols");

        // A publisher's own x-death with the largest count: saturates, never overflows.
        let mut entry = FieldTable::new();
        entry.insert("count", FieldValue::I64(i64::MAX));
        entry.insert("reason", FieldValue::string("rejected"));
        entry.insert("queue", FieldValue::string("work"));
        let mut table = FieldTable::new();
        table.insert("x-death", FieldValue::Array(vec![FieldValue::Table(entry)]));
        let mut peer = properties_from_amqp(&BasicProperties { headers: Some(table), ..BasicProperties::default() });
        record_death(&mut peer, &death("work", "rejected"));
        let headers = amqp_properties(&peer).headers.expect("headers");
        let Some(FieldValue::Array(deaths)) = headers.get("x-death") else { panic!("x-death: {headers:?}") };
        let FieldValue::Table(t) = &deaths[0] else { panic!("entry") };
        assert_eq!(t.get("count").and_then(FieldValue::as_i64), Some(i64::MAX));
    }

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
        neutral.extra_mut().headers[0].1 = "43".into();
        neutral.extra_mut().headers.push(("x-first-death-reason".into(), "expired".into()));
        let out = amqp_properties(&neutral).headers.expect("headers");
        assert_eq!(out.get("count"), Some(&FieldValue::string("43")));
        assert_eq!(out.get("flag"), Some(&FieldValue::Bool(true)));
        assert_eq!(out.get("x-first-death-reason"), Some(&FieldValue::string("expired")));
    }
}
