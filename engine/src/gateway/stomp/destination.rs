//! STOMP destinations, as RabbitMQ's STOMP plugin names them (ActiveMQ's `/queue/` and
//! `/topic/` forms and its `>` wildcard are accepted too):
//! `/queue/NAME`, `/amq/queue/NAME`, `/topic/PATTERN`, `/exchange/EXCHANGE[/KEY]`,
//! `/temp-queue/NAME`, `/reply-queue/NAME`.

/// A parsed destination header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A shared queue, declared durable on first use.
    Queue(String),
    /// An existing queue; never declared.
    AmqQueue(String),
    /// `amq.topic` with this routing key (SEND) or pattern (SUBSCRIBE).
    Topic(String),
    /// Any exchange with a routing key / binding key.
    Exchange { exchange: String, key: String },
    /// A connection-private reply queue, named by the client.
    TempQueue(String),
    /// Another connection's temp queue (the rewritten `reply-to`).
    ReplyQueue(String),
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadDestination(pub String);

impl Destination {
    pub fn parse(raw: &str) -> Result<Destination, BadDestination> {
        let named = |rest: &str, make: fn(String) -> Destination| {
            if rest.is_empty() {
                Err(BadDestination(format!("destination '{raw}' has an empty name")))
            } else {
                Ok(make(rest.to_owned()))
            }
        };
        if let Some(rest) = raw.strip_prefix("/queue/") {
            named(rest, Destination::Queue)
        } else if let Some(rest) = raw.strip_prefix("/amq/queue/") {
            named(rest, Destination::AmqQueue)
        } else if let Some(rest) = raw.strip_prefix("/topic/") {
            named(rest, Destination::Topic)
        } else if let Some(rest) = raw.strip_prefix("/temp-queue/") {
            named(rest, Destination::TempQueue)
        } else if let Some(rest) = raw.strip_prefix("/reply-queue/") {
            named(rest, Destination::ReplyQueue)
        } else if let Some(rest) = raw.strip_prefix("/exchange/") {
            let (exchange, key) = rest.split_once('/').unwrap_or((rest, ""));
            if exchange.is_empty() {
                return Err(BadDestination(format!("destination '{raw}' names no exchange")));
            }
            Ok(Destination::Exchange { exchange: exchange.to_owned(), key: key.to_owned() })
        } else {
            Err(BadDestination(format!(
                "unknown destination '{raw}': use /queue/, /topic/, /exchange/, /amq/queue/, /temp-queue/ or /reply-queue/"
            )))
        }
    }

    /// The destination header a MESSAGE carries, from where the message was published.
    pub fn for_message(exchange: &str, key: &str) -> String {
        let mut out = String::new();
        Destination::write_for_message(exchange, key, &mut out);
        out
    }

    /// [`Destination::for_message`] into `out` (cleared first): a buffer reused per delivery.
    pub fn write_for_message(exchange: &str, key: &str, out: &mut String) {
        out.clear();
        let prefix = match exchange {
            "" if key.starts_with("amq.gen-") => "/reply-queue/",
            "" => "/queue/",
            "amq.topic" => "/topic/",
            other => {
                out.push_str("/exchange/");
                out.push_str(other);
                "/"
            }
        };
        out.push_str(prefix);
        out.push_str(key);
    }
}

/// A subscription pattern in AMQP topic syntax: ActiveMQ's `>` becomes `#`.
pub fn binding_pattern(pattern: &str) -> String {
    pattern.split('.').map(|w| if w == ">" { "#" } else { w }).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(Destination::parse("/queue/a.b"), Ok(Destination::Queue("a.b".into())));
        assert_eq!(Destination::parse("/amq/queue/x"), Ok(Destination::AmqQueue("x".into())));
        assert_eq!(Destination::parse("/topic/a.*"), Ok(Destination::Topic("a.*".into())));
        assert_eq!(
            Destination::parse("/exchange/amq.fanout/k/x"),
            Ok(Destination::Exchange { exchange: "amq.fanout".into(), key: "k/x".into() })
        );
        assert_eq!(
            Destination::parse("/exchange/amq.fanout"),
            Ok(Destination::Exchange { exchange: "amq.fanout".into(), key: String::new() })
        );
        assert_eq!(Destination::parse("/temp-queue/r"), Ok(Destination::TempQueue("r".into())));
        assert_eq!(Destination::parse("/reply-queue/amq.gen-1"), Ok(Destination::ReplyQueue("amq.gen-1".into())));
        assert!(Destination::parse("/queue/").is_err());
        assert!(Destination::parse("queue/x").is_err());
        assert!(Destination::parse("/exchange/").is_err());
    }

    #[test]
    fn activemq_wildcards_map_to_amqp() {
        assert_eq!(binding_pattern("a.>"), "a.#");
        assert_eq!(binding_pattern("a.*.c"), "a.*.c");
        assert_eq!(binding_pattern(">"), "#");
    }

    #[test]
    fn message_destinations() {
        assert_eq!(Destination::for_message("", "q"), "/queue/q");
        assert_eq!(Destination::for_message("amq.topic", "a.b"), "/topic/a.b");
        assert_eq!(Destination::for_message("amq.fanout", "k"), "/exchange/amq.fanout/k");
    }
}
