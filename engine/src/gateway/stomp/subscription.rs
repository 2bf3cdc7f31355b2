//! A STOMP connection's subscriptions and the deliveries it still owes acks for. Each
//! subscription consumes exactly one queue; each delivery gets a connection-unique ack id
//! (`ferry-<instance>-<shard>-<conn>-<seq>`, used as `message-id` and, on 1.2, `ack`). `client`
//! acks are cumulative within the subscription, `client-individual` acks one delivery, `auto`
//! needs none. Bounded by `Limits::subscription_count_max` and each subscription's prefetch.
//!
//! An ack id is only valid on the connection that received it. The whole prefix is checked, not
//! just the sequence number: a client that reconnects (to this broker, or to the standby that
//! took over) and replays an ack id from its previous connection must get an ERROR, never settle
//! whichever delivery of the new connection happens to have the same sequence number.

use crate::fastmap::HashMap;

use ferry_stomp::AckMode;

use crate::ids::{ConnectionId, ConsumerKey, DeliveryTag, ShardId, instance_tag};
use crate::model::tags::TagMap;

/// One SUBSCRIBE.
#[derive(Debug)]
pub struct Subscription {
    pub id: String,
    pub queue: String,
    pub owner: ShardId,
    pub consumer: ConsumerKey,
    pub ack: AckMode,
    /// A server-named private queue (topic/exchange subscription): deleted on UNSUBSCRIBE.
    pub private_queue: bool,
    unacked: TagMap<DeliveryTag>,
    /// Auto-ack deliveries handed to the session whose credit is not yet returned.
    pub credit_due: u32,
}

impl Subscription {
    pub fn new(id: String, queue: String, owner: ShardId, consumer: ConsumerKey, ack: AckMode) -> Self {
        Subscription { id, queue, owner, consumer, ack, private_queue: false, unacked: TagMap::new(), credit_due: 0 }
    }
}

/// Settlement work an ACK/NACK resolves to.
#[derive(Debug, PartialEq, Eq)]
pub struct AckTarget<'a> {
    pub owner: ShardId,
    pub queue: &'a str,
    pub tags: Vec<DeliveryTag>,
}

/// All subscriptions of one connection.
#[derive(Debug)]
pub struct Subscriptions {
    conn: ConnectionId,
    /// `<instance>-<shard>-<conn>-`: what every ack id of this connection starts with. Short,
    /// so that a whole ack id usually fits a header's inline text (`ferry_stomp::HeaderText`).
    ack_prefix: String,
    by_id: HashMap<String, Subscription>,
    by_tag: HashMap<u64, String>,
    /// Unacked delivery sequence number → its subscription's consumer tag.
    ack_index: HashMap<u64, u64>,
    next_tag: u64,
    next_seq: u64,
}

impl Subscriptions {
    pub fn new(conn: ConnectionId) -> Self {
        Subscriptions::with_instance(conn, instance_tag())
    }

    fn with_instance(conn: ConnectionId, instance: u32) -> Self {
        Subscriptions {
            conn,
            ack_prefix: format!("{instance:08x}-{}-{}-", conn.shard.0, conn.local),
            by_id: HashMap::default(),
            by_tag: HashMap::default(),
            ack_index: HashMap::default(),
            next_tag: 1,
            next_seq: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// A consumer key for a new subscription of this connection.
    pub fn next_consumer(&mut self) -> ConsumerKey {
        let tag = self.next_tag;
        self.next_tag += 1;
        ConsumerKey { conn: self.conn, tag }
    }

    pub fn insert(&mut self, sub: Subscription) {
        self.by_tag.insert(sub.consumer.tag, sub.id.clone());
        self.by_id.insert(sub.id.clone(), sub);
    }

    pub fn remove(&mut self, id: &str) -> Option<Subscription> {
        let sub = self.by_id.remove(id)?;
        self.by_tag.remove(&sub.consumer.tag);
        for seq in sub.unacked.tags() {
            self.ack_index.remove(&seq);
        }
        Some(sub)
    }

    pub fn drain(&mut self) -> Vec<Subscription> {
        let ids: Vec<String> = self.by_id.keys().cloned().collect();
        ids.iter().filter_map(|id| self.remove(id)).collect()
    }

    pub fn by_consumer(&mut self, tag: u64) -> Option<&mut Subscription> {
        let id = self.by_tag.get(&tag)?;
        self.by_id.get_mut(id)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Subscription> {
        self.by_id.values_mut()
    }

    /// Records a delivery on subscription `consumer_tag`: writes its ack id into `ack_id`
    /// (cleared first; a buffer the caller reuses, as this runs once per message) and
    /// returns the subscription.
    pub fn record_delivery(
        &mut self,
        consumer_tag: u64,
        tag: DeliveryTag,
        ack_id: &mut String,
    ) -> Option<&Subscription> {
        use std::fmt::Write as _;
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = self.by_tag.get(&consumer_tag)?;
        let sub = self.by_id.get_mut(id)?;
        if sub.ack == AckMode::Auto {
            sub.credit_due += 1;
        } else {
            sub.unacked.insert(seq, tag);
            self.ack_index.insert(seq, consumer_tag);
        }
        ack_id.clear();
        let _ = write!(ack_id, "{}{seq}", self.ack_prefix);
        Some(sub)
    }

    /// The sequence number of an ack id this connection handed out, if it is one.
    fn own_seq(&self, ack_id: &str) -> Option<u64> {
        ack_id.strip_prefix(self.ack_prefix.as_str())?.parse().ok()
    }

    /// Whether `ack_id` names an unacked delivery of this connection.
    pub fn knows_ack(&self, ack_id: &str) -> bool {
        self.own_seq(ack_id).is_some_and(|seq| self.ack_index.contains_key(&seq))
    }

    /// Resolves an ACK/NACK id to the deliveries it settles (cumulative for `client`).
    pub fn take_acks(&mut self, ack_id: &str) -> Option<AckTarget<'_>> {
        let seq = self.own_seq(ack_id)?;
        let consumer_tag = *self.ack_index.get(&seq)?;
        let id = self.by_tag.get(&consumer_tag)?;
        let sub = self.by_id.get_mut(id)?;
        let taken: Vec<(u64, DeliveryTag)> = match sub.ack {
            AckMode::Client => sub.unacked.take_upto(seq),
            _ => sub.unacked.remove(seq).map(|tag| vec![(seq, tag)]).unwrap_or_default(),
        };
        for (s, _) in &taken {
            self.ack_index.remove(s);
        }
        let tags = taken.into_iter().map(|(_, tag)| tag).collect();
        Some(AckTarget { owner: sub.owner, queue: &sub.queue, tags })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(s: &mut Subscriptions, consumer_tag: u64, tag: u64) -> String {
        let mut id = String::from("stale text");
        s.record_delivery(consumer_tag, DeliveryTag(tag), &mut id).expect("sub");
        id
    }

    fn subs(mode: AckMode) -> (Subscriptions, u64) {
        let mut s = Subscriptions::new(ConnectionId { shard: ShardId(0), local: 7 });
        let consumer = s.next_consumer();
        s.insert(Subscription::new("s".into(), "q".into(), ShardId(1), consumer, mode));
        (s, consumer.tag)
    }

    #[test]
    fn client_ack_is_cumulative() {
        let (mut s, tag) = subs(AckMode::Client);
        let ids: Vec<String> = (1..=3).map(|t| record(&mut s, tag, t)).collect();
        let target = s.take_acks(&ids[1]).expect("known id");
        assert_eq!(target.tags, [DeliveryTag(1), DeliveryTag(2)]);
        assert_eq!(s.take_acks(&ids[2]).expect("known").tags, [DeliveryTag(3)]);
        assert!(s.take_acks(&ids[0]).is_none(), "already acked");
    }

    #[test]
    fn individual_ack_takes_one() {
        let (mut s, tag) = subs(AckMode::ClientIndividual);
        let ids: Vec<String> = (1..=3).map(|t| record(&mut s, tag, t)).collect();
        assert_eq!(s.take_acks(&ids[1]).expect("known").tags, [DeliveryTag(2)]);
        assert_eq!(s.take_acks(&ids[0]).expect("known").tags, [DeliveryTag(1)]);
    }

    #[test]
    fn auto_counts_credit_and_unknown_ids_are_ignored() {
        let (mut s, tag) = subs(AckMode::Auto);
        let id = record(&mut s, tag, 1);
        assert!(s.take_acks(&id).is_none());
        assert!(s.take_acks("garbage").is_none());
        assert_eq!(s.by_consumer(tag).expect("sub").credit_due, 1);
    }

    /// A client that reconnects and replays an ack id of its previous connection (same shard and
    /// connection number after a restart or failover, same sequence number) must not settle
    /// the new connection's delivery with that sequence number.
    #[test]
    fn ack_ids_of_another_connection_or_process_name_nothing() {
        let conn = ConnectionId { shard: ShardId(0), local: 7 };
        let ids_of = |s: &mut Subscriptions| {
            let consumer = s.next_consumer();
            s.insert(Subscription::new("s".into(), "q".into(), ShardId(0), consumer, AckMode::ClientIndividual));
            record(s, consumer.tag, 1)
        };
        let mut before = Subscriptions::with_instance(conn, 1);
        let mut after = Subscriptions::with_instance(conn, 2);
        let mut other = Subscriptions::with_instance(ConnectionId { shard: ShardId(0), local: 8 }, 2);
        let (old_id, new_id, other_id) = (ids_of(&mut before), ids_of(&mut after), ids_of(&mut other));
        assert_ne!(old_id, new_id);
        for stale in [&old_id, &other_id] {
            assert!(!after.knows_ack(stale), "{stale} accepted by {new_id}'s connection");
            assert!(after.take_acks(stale).is_none());
        }
        assert!(!after.knows_ack(&format!("{new_id}x")));
        assert_eq!(after.take_acks(&new_id).expect("own id").tags, [DeliveryTag(1)]);
    }
}
