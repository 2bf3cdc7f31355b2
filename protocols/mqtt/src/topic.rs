//! Topic names and filters (§4.7): validation (no wildcards in names; `+` and `#` only as
//! whole levels, `#` last; length and level limits), shared subscriptions
//! (`$share/GROUP/FILTER`) and MQTT matching, including the rule that a filter starting with
//! a wildcard does not match topics starting with `$` (§4.7.2). Pure.

use crate::error::DecodeError;

/// Checks a PUBLISH topic name.
pub fn validate_name(topic: &str, bytes_max: usize, levels_max: usize) -> Result<(), DecodeError> {
    if topic.is_empty() || topic.len() > bytes_max || topic.contains(['+', '#']) {
        return Err(DecodeError::BadTopicName);
    }
    if topic.split('/').count() > levels_max {
        return Err(DecodeError::BadTopicName);
    }
    Ok(())
}

/// Checks a SUBSCRIBE/UNSUBSCRIBE topic filter (shared or not).
pub fn validate_filter(filter: &str, bytes_max: usize, levels_max: usize) -> Result<(), DecodeError> {
    if filter.is_empty() || filter.len() > bytes_max {
        return Err(DecodeError::BadTopicFilter);
    }
    let plain = match SharedFilter::parse(filter)? {
        Some(shared) => shared.filter,
        None => filter,
    };
    let levels: Vec<&str> = plain.split('/').collect();
    if levels.len() > levels_max {
        return Err(DecodeError::BadTopicFilter);
    }
    for (i, level) in levels.iter().enumerate() {
        let ok = match *level {
            "#" => i == levels.len() - 1,
            "+" => true,
            other => !other.contains(['+', '#']),
        };
        if !ok {
            return Err(DecodeError::BadTopicFilter);
        }
    }
    Ok(())
}

/// `$share/GROUP/FILTER`, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    pub group: &'a str,
    pub filter: &'a str,
}

impl<'a> SharedFilter<'a> {
    /// `Ok(None)` for a filter that is not shared; an error for a malformed `$share/` one.
    pub fn parse(filter: &'a str) -> Result<Option<SharedFilter<'a>>, DecodeError> {
        let Some(rest) = filter.strip_prefix("$share/") else {
            return Ok(None);
        };
        let Some((group, filter)) = rest.split_once('/') else {
            return Err(DecodeError::BadTopicFilter);
        };
        if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
            return Err(DecodeError::BadTopicFilter);
        }
        Ok(Some(SharedFilter { group, filter }))
    }
}

/// Whether `filter` (not shared) matches topic name `topic`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters() {
        assert!(validate_name("a/b", 100, 10).is_ok());
        assert!(validate_name("a/+", 100, 10).is_err());
        assert!(validate_name("", 100, 10).is_err());
        assert!(validate_name("a/b/c", 100, 2).is_err());
        assert!(validate_name("abcdef", 3, 10).is_err());
        for ok in ["#", "+", "a/+/c", "a/#", "+/+", "/", "$share/g/a/#"] {
            assert!(validate_filter(ok, 100, 10).is_ok(), "{ok}");
        }
        for bad in ["a/#/c", "a+", "a/b#", "$share/g", "$share//a", "$share/g+/a", ""] {
            assert!(validate_filter(bad, 100, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_follows_the_spec() {
        assert!(matches("sport/tennis/#", "sport/tennis"));
        assert!(matches("sport/tennis/#", "sport/tennis/player1/score"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
        assert!(!matches("sport/+", "sport/tennis/player1"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("#", "a"));
        assert!(!matches("#", "$SYS/broker"));
        assert!(!matches("+/broker", "$SYS/broker"));
        assert!(matches("$SYS/#", "$SYS/broker"));
    }
}
