//! Queue arguments as RabbitMQ defines them, parsed once at declaration: `x-message-ttl`,
//! `x-max-length`, `x-max-length-bytes`, `x-overflow` (`drop-head`, `reject-publish`),
//! `x-dead-letter-exchange`, `x-dead-letter-routing-key`, `x-max-priority`,
//! `x-single-active-consumer`, `x-expires` and `x-queue-type` (`classic` or `quorum`, both
//! served by the one queue engine; `stream` is refused, as its consumers expect semantics we do
//! not have). Unknown arguments are accepted and kept, as RabbitMQ does; a known argument with
//! a bad value is a 406 PRECONDITION_FAILED.

use crate::error::{EngineError, ErrorKind};

/// What a queue does when it is at its length limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (and dead-letter) the oldest ready message to make room.
    #[default]
    DropHead,
    /// Refuse the new message (a publisher confirm becomes a nack).
    RejectPublish,
}

/// Parsed arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArgs {
    pub message_ttl_ms: Option<u64>,
    pub max_length: Option<usize>,
    pub max_length_bytes: Option<usize>,
    pub overflow: Overflow,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    /// `x-max-priority`: 1..=255 priority levels above 0.
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`: only the longest-attached consumer receives messages.
    pub single_active_consumer: bool,
    /// `x-expires`: the queue is deleted after being unused (no consumers, no basic.get, no
    /// redeclaration) this long. At least 1 ms.
    pub expires_ms: Option<u64>,
    /// `x-queue-type: quorum` (RabbitMQ requires such queues durable and not exclusive or
    /// auto-delete).
    pub quorum: bool,
}

fn bad(name: &str, value: &str) -> EngineError {
    EngineError::new(ErrorKind::PreconditionFailed, format!("invalid arg '{name}': '{value}'"))
}

fn number(name: &str, value: &str) -> Result<u64, EngineError> {
    value.trim().parse::<u64>().map_err(|_| bad(name, value))
}

impl QueueArgs {
    pub fn parse(arguments: &[(String, String)]) -> Result<QueueArgs, EngineError> {
        let mut args = QueueArgs::default();
        for (name, value) in arguments {
            match name.as_str() {
                "x-message-ttl" => args.message_ttl_ms = Some(number(name, value)?),
                "x-max-length" => args.max_length = Some(number(name, value)? as usize),
                "x-max-length-bytes" => args.max_length_bytes = Some(number(name, value)? as usize),
                "x-overflow" => {
                    args.overflow = match value.as_str() {
                        "drop-head" => Overflow::DropHead,
                        "reject-publish" | "reject-publish-dlx" => Overflow::RejectPublish,
                        _ => return Err(bad(name, value)),
                    }
                }
                "x-dead-letter-exchange" => args.dead_letter_exchange = Some(value.clone()),
                "x-dead-letter-routing-key" => args.dead_letter_routing_key = Some(value.clone()),
                "x-single-active-consumer" => {
                    args.single_active_consumer = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(name, value)),
                    }
                }
                "x-max-priority" => {
                    let p = number(name, value)?;
                    args.max_priority = Some(u8::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| bad(name, value))?);
                }
                "x-expires" => {
                    args.expires_ms = Some(number(name, value)?).filter(|ms| *ms > 0);
                    if args.expires_ms.is_none() {
                        return Err(bad(name, value));
                    }
                }
                "x-queue-type" => {
                    args.quorum = match value.as_str() {
                        "classic" => false,
                        "quorum" => true,
                        _ => return Err(bad(name, value)),
                    }
                }
                _ => {}
            }
        }
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn parses_rabbitmq_arguments() {
        let args = QueueArgs::parse(&[
            kv("x-message-ttl", "60000"),
            kv("x-max-length", "10"),
            kv("x-overflow", "reject-publish"),
            kv("x-dead-letter-exchange", "dlx"),
            kv("x-queue-type", "quorum"),
            kv("x-custom", "kept"),
        ])
        .expect("valid");
        assert_eq!(args.message_ttl_ms, Some(60_000));
        assert_eq!(args.max_length, Some(10));
        assert_eq!(args.overflow, Overflow::RejectPublish);
        assert_eq!(args.dead_letter_exchange.as_deref(), Some("dlx"));
        assert!(args.quorum);
        let args = QueueArgs::parse(&[kv("x-expires", "1500"), kv("x-queue-type", "classic")]).expect("valid");
        assert_eq!(args.expires_ms, Some(1500));
        assert!(!args.quorum);
    }

    #[test]
    fn bad_values_are_precondition_failed() {
        let bad_ones = [
            kv("x-message-ttl", "soon"),
            kv("x-overflow", "explode"),
            kv("x-queue-type", "lazy-ish"),
            kv("x-queue-type", "stream"),
            kv("x-expires", "0"),
            kv("x-expires", "-5"),
        ];
        for bad in bad_ones {
            let err = QueueArgs::parse(&[bad]).expect_err("invalid");
            assert_eq!(err.kind, ErrorKind::PreconditionFailed);
        }
    }
}
