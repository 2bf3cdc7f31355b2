//! MQTT topics ↔ `amq.topic` routing keys and binding patterns, as RabbitMQ's MQTT plugin maps
//! them: `/` and `.` swap places, the single-level wildcard `+` is `*`, the multi-level `#`
//! stays `#`. So `sensors/+/temp` subscribes to what STOMP publishes to `/topic/sensors.x.temp`
//! and AMQP publishes to `amq.topic` with key `sensors.x.temp`. Pure functions.

/// An MQTT topic name as an `amq.topic` routing key.
pub fn topic_to_key(topic: &str) -> String {
    topic.chars().map(swap).collect()
}

/// An MQTT topic filter (not shared) as an `amq.topic` binding pattern.
pub fn filter_to_pattern(filter: &str) -> String {
    filter
        .split('/')
        .map(|level| if level == "+" { "*".to_owned() } else { topic_to_key(level) })
        .collect::<Vec<_>>()
        .join(".")
}

/// An `amq.topic` routing key as the MQTT topic name a subscriber sees.
pub fn key_to_topic(key: &str) -> String {
    key.chars().map(swap).collect()
}

fn swap(c: char) -> char {
    match c {
        '/' => '.',
        '.' => '/',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_filters_map_both_ways() {
        assert_eq!(topic_to_key("sensors/kitchen/temp"), "sensors.kitchen.temp");
        assert_eq!(topic_to_key("v1.0/a"), "v1/0.a");
        assert_eq!(key_to_topic("v1/0.a"), "v1.0/a");
        assert_eq!(key_to_topic("a.b.c"), "a/b/c");
        assert_eq!(filter_to_pattern("a/+/c"), "a.*.c");
        assert_eq!(filter_to_pattern("a/#"), "a.#");
        assert_eq!(filter_to_pattern("#"), "#");
        assert_eq!(filter_to_pattern("+/x.y"), "*.x/y");
        assert_eq!(topic_to_key("/a//b"), ".a..b");
    }
}
