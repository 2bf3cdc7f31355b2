//! Publisher flow control across shards (the policy is `model::flow`). The queue's owner
//! decides; the publisher's shard marks the connection held (`Mailbox::flow_held`: its
//! gateway stops reading it) until the owner releases it. A hold and its release travel on
//! the same FIFO channel (or both stay local), so a release never overtakes its hold.

use crate::ids::ConnectionId;
use crate::model::flow::{Look, Published};
use crate::shard::Shard;
use crate::shard::msg::ShardMsg;

impl Shard {
    /// On the owner, after queue `name` admitted a publish from `publisher`.
    pub(super) fn flow_after_publish(&mut self, name: &str, published: Published, publisher: ConnectionId) {
        if published.congested {
            tracing::debug!(queue = name, "backlog over its flow-control mark: holding publishers back");
            // Once per queue: a second look in the same tick would see no progress.
            if !self.flow_watch.iter().any(|q| q == name) {
                self.flow_watch.push(name.to_owned());
            }
        }
        if published.hold {
            if publisher.shard == self.id {
                self.flow_hold_local(publisher, name.to_owned());
            } else {
                self.send(publisher.shard, ShardMsg::FlowHold { conn: publisher, queue: name.to_owned() });
            }
        }
    }

    /// On the owner: `conns` may publish to `name` again.
    pub(super) fn flow_release(&mut self, name: &str, conns: Vec<ConnectionId>) {
        for conn in conns {
            if conn.shard == self.id {
                self.flow_release_local(conn, name);
            } else {
                self.send(conn.shard, ShardMsg::FlowRelease { conn, queue: name.to_owned() });
            }
        }
    }

    /// On the publisher's shard: hold `conn` for `queue`.
    pub(super) fn flow_hold_local(&mut self, conn: ConnectionId, queue: String) {
        self.with_conn(conn, |m| {
            m.flow_held.insert(queue);
        });
    }

    /// On the publisher's shard: `queue` no longer holds `conn` (woken to read again).
    pub(super) fn flow_release_local(&mut self, conn: ConnectionId, queue: &str) {
        self.with_conn(conn, |m| {
            m.flow_held.remove(queue);
        });
    }

    /// The periodic look (a few times a second) at congested or stalled queues: consumers
    /// that took nothing for `STALL_LOOKS` looks in a row release their publishers.
    pub fn flow_tick(&mut self) {
        let high = self.limits.queue_flow_message_count;
        for name in std::mem::take(&mut self.flow_watch) {
            let look = self.queues.get_mut(&name).map_or(Look::Done, |q| q.flow_on_tick(high));
            match look {
                Look::Done => continue,
                Look::Watch => {}
                Look::Release(conns) => {
                    tracing::debug!(queue = %name, "flow control: releasing publishers");
                    self.flow_release(&name, conns);
                }
            }
            self.flow_watch.push(name);
        }
    }
}
