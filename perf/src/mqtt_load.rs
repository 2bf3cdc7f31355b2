//! The fan-out scenario over MQTT 3.1.1 (`mqtt://`), the same shape as the STOMP and AMQP
//! producer and consumer, on the [`crate::mqtt`] connection: the run's topic key with `.`
//! written as `/` (`perf/fanout/<pid>`), QoS from the target (0 or 1). A publisher PUBLISHes
//! stamped bodies through the shared send loop; at QoS 1 a reader thread counts PUBACKs as
//! receipts and at most `window` (≤ [`PACKET_ID_SPAN`]) wait unacknowledged. A subscriber
//! SUBSCRIBEs, waits for its SUBACK, then checks every PUBLISH against its [`SeqChecker`] and
//! PUBACKs each QoS 1 delivery (pipelined). MQTT has no queues: a run without a topic is
//! refused. Bounded by the run's deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use ferry_mqtt::{
    AckKind, Packet, Properties, PubResp, Publish, QoS, ReasonCode, ReasonPacket, SubOptions, Subscribe, Version,
    encode,
};

use crate::checker::SeqChecker;
use crate::client::{FrameWriter, Target};
use crate::consumer::{ConsumerConfig, ConsumerOutcome, Progress, announce, receive_until_done};
use crate::mqtt::{self, Conn};
use crate::producer::{ProducerConfig, ProducerOutcome, ReceiptBoard, send_all};
use crate::shared::Shared;

/// Packet ids cycle through 1..=PACKET_ID_SPAN, so at most this many publishes are in flight.
pub const PACKET_ID_SPAN: u64 = 65_535;
/// The packet id of the one SUBSCRIBE.
const SUBSCRIBE_ID: u16 = 1;
/// Longest a subscriber waits to write its DISCONNECT at the end.
const BYE_WAIT: Duration = Duration::from_secs(2);
/// The version every connection of these scenarios speaks.
const VERSION: Version = Version::V3_1_1;

/// The MQTT topic of a run's topic key: `perf.fanout.1` is `perf/fanout/1`.
pub fn topic_of(key: &str) -> String {
    key.replace('.', "/")
}

/// The packet id of publish `seq` (never 0).
fn packet_id(seq: u64) -> u16 {
    u16::try_from(seq % PACKET_ID_SPAN + 1).expect("at most PACKET_ID_SPAN")
}

fn client_id(role: &str, id: u32) -> String {
    format!("perf-{role}-{}-{id}", std::process::id())
}

/// The PUBLISH of message `seq` of `config` at `qos`.
fn publish_packet(config: &ProducerConfig, topic: &str, qos: QoS, seq: u64) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_owned(),
        packet_id: (qos != QoS::AtMostOnce).then(|| packet_id(seq)),
        properties: Properties::default(),
        payload: Bytes::from(config.body(seq)),
    })
}

/// Runs one MQTT publisher to completion (or the deadline).
pub fn produce(
    config: &ProducerConfig,
    target: &Target,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Result<ProducerOutcome> {
    let Some(key) = &config.topic else { bail!("MQTT runs publish to a topic (ferry-perf fanout)") };
    let (topic, qos) = (topic_of(key), target.mqtt_qos);
    let who = format!("producer {}", config.id);
    let conn = mqtt::connect(target, &client_id("pub", config.id), deadline)?;
    let mut writer = FrameWriter::new(conn.stream().try_clone()?);
    // At QoS 1 every publish is acknowledged: those PUBACKs are the receipts and bound the window.
    let acked = qos != QoS::AtMostOnce;
    let config = ProducerConfig { receipts: acked, window: config.window.clamp(1, PACKET_ID_SPAN), ..config.clone() };
    let board = Arc::new(ReceiptBoard::default());
    let stop = Arc::new(AtomicBool::new(false));
    let conn = Arc::new(Mutex::new(conn));
    let reader_thread = {
        let (board, shared, stop, who, conn) =
            (Arc::clone(&board), Arc::clone(shared), Arc::clone(&stop), who.clone(), Arc::clone(&conn));
        std::thread::Builder::new().name(format!("{who} pubacks")).spawn(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            read_pubacks(&mut conn, &board, &shared, &stop, &who, deadline);
        })?
    };
    let (sent, mut result) = send_all(&config, &mut writer, &board, shared, deadline, |writer, _queue, seq| {
        encode(&publish_packet(&config, &topic, qos, seq), VERSION, writer.pending_mut());
    });
    let receipted = if acked { board.wait(deadline, |s| s.count >= sent) } else { 0 };
    let finished_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    if reader_thread.join().is_err() {
        shared.error(&who, "PUBACK reader panicked");
    }
    if result.is_ok() {
        result = disconnect(&mut writer, deadline);
    }
    if let Err(e) = &result {
        shared.error(&who, format!("{e:#}"));
    }
    Ok(ProducerOutcome { id: config.id, sent, receipted, finished_at })
}

/// Queues and writes a normal DISCONNECT.
fn disconnect(writer: &mut FrameWriter, deadline: Instant) -> Result<()> {
    let bye = ReasonPacket { reason: ReasonCode::SUCCESS, properties: Properties::default() };
    encode(&Packet::Disconnect(bye), VERSION, writer.pending_mut());
    writer.flush(deadline)
}

/// Counts PUBACKs on `board` until `stop`, the deadline, or an error (which stops the run).
fn read_pubacks(
    conn: &mut Conn,
    board: &ReceiptBoard,
    shared: &Shared,
    stop: &AtomicBool,
    who: &str,
    deadline: Instant,
) {
    let outcome = loop {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break Ok(());
        }
        let packet = match conn.try_decode() {
            Ok(Some(packet)) => packet,
            Ok(None) => match conn.read_some() {
                Ok(_) => continue,
                Err(e) => break Err(e),
            },
            Err(e) => break Err(e),
        };
        match packet {
            Packet::PubResp(r) if r.kind == AckKind::PubAck => {
                board.update(|s| s.count += 1);
                Shared::add(&shared.receipted, 1);
            }
            other => break Err(anyhow!("unexpected {other:?} from broker")),
        }
    };
    if let Err(e) = outcome
        && !stop.load(Ordering::Relaxed)
    {
        shared.error(who, format!("{e:#}"));
        shared.request_stop();
    }
    board.update(|s| s.closed = true);
}

/// Connects, subscribes, reports readiness on `ready`, then checks deliveries until done.
pub fn consume(
    config: &ConsumerConfig,
    target: &Target,
    checker: &SeqChecker,
    shared: &Arc<Shared>,
    ready: &Sender<Result<(), String>>,
    deadline: Instant,
) -> Result<ConsumerOutcome> {
    let who = format!("consumer {}", config.id);
    let (mut conn, mut writer) = announce(ready, &who, subscribe(config, target, deadline))?;
    let mut progress = Progress::new(config);
    let connection = (&mut conn, &mut writer);
    let clean = receive_until_done(config, checker, (shared, &who), connection, deadline, |packet, writer| {
        if let Some(reply) = on_packet(packet, checker, &mut progress, shared)? {
            encode(&reply, VERSION, writer.pending_mut());
        }
        Ok(true)
    });
    if clean {
        // Best effort: every delivery was already checked.
        let _ = disconnect(&mut writer, deadline.min(Instant::now() + BYE_WAIT));
    }
    Ok(progress.outcome())
}

/// Connects as subscriber `config.id` and subscribes to the run's topic at the target's QoS.
fn subscribe(config: &ConsumerConfig, target: &Target, deadline: Instant) -> Result<(Conn, FrameWriter)> {
    let Some(key) = &config.topic else { bail!("MQTT runs subscribe to a topic (ferry-perf fanout)") };
    let mut conn = mqtt::connect(target, &client_id("sub", config.id), deadline)?;
    let mut writer = FrameWriter::new(conn.stream().try_clone()?);
    let options = SubOptions { qos: target.mqtt_qos, no_local: false, retain_as_published: false, retain_handling: 0 };
    let subscribe = Subscribe {
        packet_id: SUBSCRIBE_ID,
        properties: Properties::default(),
        filters: vec![(topic_of(key), options)],
    };
    encode(&Packet::Subscribe(subscribe), conn.version(), writer.pending_mut());
    writer.flush(deadline)?;
    match conn.next(deadline)? {
        Packet::SubAck(ack) if ack.packet_id == SUBSCRIBE_ID => match ack.codes.first() {
            Some(code) if code.0 == target.mqtt_qos as u8 => Ok((conn, writer)),
            code => bail!("SUBSCRIBE at QoS {} answered with {code:?}", target.mqtt_qos as u8),
        },
        other => bail!("expected SUBACK, got {other:?}"),
    }
}

/// Checks one packet a subscriber received; returns the PUBACK it owes (QoS 1), if any.
fn on_packet(packet: Packet, checker: &SeqChecker, progress: &mut Progress, shared: &Shared) -> Result<Option<Packet>> {
    let Packet::Publish(publish) = packet else { bail!("unexpected {packet:?} from broker") };
    Shared::add(&shared.received, 1);
    // Every message of a fan-out run comes from publisher 0 through "queue" 0: the topic.
    progress.record(checker, Some(0), &publish.payload);
    match (publish.qos, publish.packet_id) {
        (QoS::AtMostOnce, _) => Ok(None),
        (QoS::AtLeastOnce, Some(packet_id)) => Ok(Some(Packet::PubResp(PubResp {
            kind: AckKind::PubAck,
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }))),
        (qos, packet_id) => bail!("delivery at {qos:?} with packet id {packet_id:?}: this run asked for QoS 0 or 1"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Verdict;
    use crate::consumer::AckMode;
    use ferry_mqtt::{Decoded, decode};

    fn publisher() -> ProducerConfig {
        ProducerConfig {
            id: 0,
            messages: 4,
            queues: 1,
            size: 16,
            persistent: false,
            receipts: false,
            window: 256,
            pace: None,
            topic: Some("perf.fanout.1".to_owned()),
        }
    }

    fn subscriber() -> ConsumerConfig {
        ConsumerConfig {
            id: 0,
            queues: vec![0],
            producers: 1,
            queue_count: 1,
            ack: AckMode::Auto,
            prefetch: None,
            drain_idle: Duration::from_secs(1),
            latency_base: None,
            topic: Some("perf.fanout.1".to_owned()),
        }
    }

    /// Delivers publishes `seqs` (encoded and decoded on the wire) to one subscriber's checker.
    fn deliver(seqs: &[u64], qos: QoS) -> (Verdict, Vec<Option<Packet>>) {
        let (config, shared) = (publisher(), Shared::default());
        let checker = SeqChecker::new(1, config.messages, 1);
        let mut progress = Progress::new(&subscriber());
        let mut replies = Vec::new();
        for &seq in seqs {
            let mut wire = Vec::new();
            encode(&publish_packet(&config, &topic_of("perf.fanout.1"), qos, seq), VERSION, &mut wire);
            let Ok(Decoded::Packet { packet, .. }) = decode(&wire, VERSION, 1 << 20) else { panic!("undecodable") };
            replies.push(on_packet(packet, &checker, &mut progress, &shared).expect("a publish"));
        }
        assert_eq!(Shared::get(&shared.received), seqs.len() as u64);
        (checker.verdict(progress.outcome().reordered, &[config.messages]), replies)
    }

    #[test]
    fn every_message_once_in_order_is_clean_and_acked() {
        let (verdict, replies) = deliver(&[0, 1, 2, 3], QoS::AtLeastOnce);
        assert_eq!(verdict, Verdict { expected: 4, received_unique: 4, ..Verdict::default() });
        let ids: Vec<u16> = replies
            .iter()
            .map(|r| match r {
                Some(Packet::PubResp(ack)) if ack.kind == AckKind::PubAck => ack.packet_id,
                other => panic!("expected a PUBACK, got {other:?}"),
            })
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 4]);
    }

    #[test]
    fn detects_missing_duplicated_and_reordered_deliveries() {
        let (verdict, replies) = deliver(&[0, 2, 2, 1], QoS::AtMostOnce);
        assert_eq!((verdict.lost, verdict.duplicated, verdict.reordered), (1, 1, 1));
        assert!(replies.iter().all(Option::is_none), "QoS 0 owes no PUBACK");
    }

    #[test]
    fn refuses_what_a_subscriber_must_not_get() {
        let (checker, shared) = (SeqChecker::new(1, 1, 1), Shared::default());
        let mut progress = Progress::new(&subscriber());
        assert!(on_packet(Packet::PingResp, &checker, &mut progress, &shared).is_err());
        let qos2 = publish_packet(&publisher(), "perf/fanout/1", QoS::ExactlyOnce, 0);
        assert!(on_packet(qos2, &checker, &mut progress, &shared).is_err());
    }

    #[test]
    fn packet_ids_cycle_without_zero() {
        assert_eq!((packet_id(0), packet_id(PACKET_ID_SPAN - 1), packet_id(PACKET_ID_SPAN)), (1, 65_535, 1));
        assert_eq!(topic_of("perf.fanout.42"), "perf/fanout/42");
    }
}
