//! Heart-beating: parsing the client's `heart-beat:cx,cy`, the server's reply `sx,sy`
//! (sx = cy, sy = cx, nonzero values raised to `heartbeat_ms_min`) and the two timers
//! that follow from it: send an EOL after `sx` ms of silence, give up after `2 * sy` ms
//! without any received byte. Time is passed in; this module never reads a clock.

use std::time::{Duration, Instant};

/// The server's side of a negotiated heart-beat, in milliseconds (0 = off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeartBeat {
    /// `sx`: the server sends something at least this often.
    pub send_ms: u32,
    /// `sy`: the server expects something from the client at least this often.
    pub receive_ms: u32,
}

impl HeartBeat {
    /// The server's reply to a client's `cx,cy`.
    pub fn negotiate(client_send_ms: u32, client_receive_ms: u32, min_ms: u32) -> HeartBeat {
        let raise = |ms: u32| if ms == 0 { 0 } else { ms.max(min_ms) };
        HeartBeat { send_ms: raise(client_receive_ms), receive_ms: raise(client_send_ms) }
    }

    /// The `heart-beat` header value of CONNECTED.
    pub fn header_value(self) -> String {
        format!("{},{}", self.send_ms, self.receive_ms)
    }
}

/// Parses a client's `cx,cy`; `None` when malformed.
pub(crate) fn parse(value: &str) -> Option<(u32, u32)> {
    let (cx, cy) = value.split_once(',')?;
    let number = |text: &str| {
        let text = text.trim();
        if text.bytes().all(|b| b.is_ascii_digit()) { text.parse::<u32>().ok() } else { None }
    };
    Some((number(cx)?, number(cy)?))
}

/// The heart-beat deadlines of one connected session.
#[derive(Debug, Clone)]
pub(crate) struct Timers {
    beat: HeartBeat,
    last_sent: Instant,
    last_received: Instant,
}

impl Timers {
    pub fn new(beat: HeartBeat, now: Instant) -> Timers {
        Timers { beat, last_sent: now, last_received: now }
    }

    /// When an EOL must be sent if nothing else has been.
    pub fn send_due(&self) -> Option<Instant> {
        after(self.last_sent, u64::from(self.beat.send_ms))
    }

    /// When the client is declared dead if nothing arrives.
    pub fn receive_deadline(&self) -> Option<Instant> {
        after(self.last_received, 2 * u64::from(self.beat.receive_ms))
    }

    pub fn on_sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    pub fn on_received(&mut self, now: Instant) {
        self.last_received = self.last_received.max(now);
    }
}

fn after(start: Instant, ms: u64) -> Option<Instant> {
    if ms == 0 {
        return None;
    }
    start.checked_add(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_values() {
        assert_eq!(parse("0,0"), Some((0, 0)));
        assert_eq!(parse("10000, 5000"), Some((10_000, 5_000)));
        for bad in ["", "1", "a,b", "1,2,3", "-1,0", "+1,0", "99999999999,0"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn negotiation_swaps_and_raises() {
        let beat = HeartBeat::negotiate(4_000, 6_000, 100);
        assert_eq!(beat, HeartBeat { send_ms: 6_000, receive_ms: 4_000 });
        assert_eq!(beat.header_value(), "6000,4000");
        let raised = HeartBeat::negotiate(5, 0, 100);
        assert_eq!(raised, HeartBeat { send_ms: 0, receive_ms: 100 });
    }

    #[test]
    fn timers_follow_last_activity() {
        let t0 = Instant::now();
        let mut timers = Timers::new(HeartBeat { send_ms: 100, receive_ms: 50 }, t0);
        assert_eq!(timers.send_due(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(timers.receive_deadline(), Some(t0 + Duration::from_millis(100)));
        timers.on_sent(t0 + Duration::from_millis(30));
        timers.on_received(t0 + Duration::from_millis(70));
        assert_eq!(timers.send_due(), Some(t0 + Duration::from_millis(130)));
        assert_eq!(timers.receive_deadline(), Some(t0 + Duration::from_millis(170)));
        timers.on_received(t0);
        assert_eq!(timers.receive_deadline(), Some(t0 + Duration::from_millis(170)));
    }

    #[test]
    fn zero_means_off() {
        let timers = Timers::new(HeartBeat::default(), Instant::now());
        assert_eq!(timers.send_due(), None);
        assert_eq!(timers.receive_deadline(), None);
    }
}
