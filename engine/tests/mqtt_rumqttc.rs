//! MQTT 3.1.1 and 5.0 with the Rust client `rumqttc` against a real `ferry` process: QoS 1
//! and QoS 2 both ways, a persistent session that queues QoS 1 messages while its client is
//! away, 5.0 publish properties, retained messages and a will — what an IoT service in Rust
//! does.

use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

mod common;

use common::start;

const WAIT: Duration = Duration::from_secs(10);

/// Runs a client's connection on its own thread, forwarding incoming packets until it ends.
macro_rules! pump {
    ($connection:expr, $event:path) => {{
        let mut connection = $connection;
        let (tx, rx) = channel();
        thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok($event(packet)) => {
                        if tx.send(packet).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("connection ended: {e:?}");
                        break;
                    }
                }
            }
        });
        rx
    }};
}

/// The next packet `pick` accepts, skipping others; fails after `WAIT`.
fn next<P, T>(rx: &Receiver<P>, mut pick: impl FnMut(P) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let packet = rx.recv_timeout(left).expect("packet within the deadline");
        if let Some(found) = pick(packet) {
            return found;
        }
    }
}

mod v4 {
    use super::*;
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

    pub fn client(port: u16, id: &str, clean: bool) -> (Client, Receiver<Packet>) {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_clean_session(clean).set_credentials("guest", "guest").set_keep_alive(Duration::from_secs(30));
        let (client, connection) = Client::new(options, 64);
        (client, pump!(connection, Event::Incoming))
    }

    pub fn publishes(rx: &Receiver<Packet>, n: usize) -> Vec<(String, Bytes, QoS)> {
        (0..n)
            .map(|_| {
                next(rx, |p| match p {
                    Packet::Publish(p) => Some((p.topic, p.payload, p.qos)),
                    _ => None,
                })
            })
            .collect()
    }
}

#[test]
fn rumqttc_v311_qos1_qos2_and_a_persistent_session() {
    use rumqttc::{Packet, QoS};
    let broker = start("mqtt");
    let (sub, sub_rx) = v4::client(broker.port, "rq-sub", false);
    next(&sub_rx, |p| matches!(p, Packet::ConnAck(_)).then_some(()));
    sub.subscribe("plant/+/temp", QoS::ExactlyOnce).expect("subscribe");
    next(&sub_rx, |p| match p {
        Packet::SubAck(ack) => Some(ack),
        _ => None,
    });
    let (publisher, pub_rx) = v4::client(broker.port, "rq-pub", true);
    for i in 0..20u8 {
        let qos = if i % 2 == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
        publisher.publish("plant/a/temp", qos, false, vec![i]).expect("publish");
    }
    // Every QoS 1 publish gets a PUBACK, every QoS 2 one a PUBCOMP.
    let mut acked = 0;
    while acked < 20 {
        acked += next(&pub_rx, |p| matches!(p, Packet::PubAck(_) | Packet::PubComp(_)).then_some(1));
    }
    let got = v4::publishes(&sub_rx, 20);
    let mut bodies: Vec<u8> = got.iter().map(|(_, body, _)| body[0]).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, (0..20).collect::<Vec<u8>>());
    assert!(got.iter().all(|(topic, _, _)| topic == "plant/a/temp"));
    assert!(got.iter().any(|(_, _, qos)| *qos == QoS::ExactlyOnce));

    // Away: QoS 1 messages queue in the session and arrive on reconnect. (Let the last QoS 2
    // handshake finish first: the broker re-sends an open PUBREL on resume, as MQTT requires,
    // and a fresh rumqttc client, which keeps no state, would call that unsolicited.)
    thread::sleep(Duration::from_millis(300));
    sub.disconnect().expect("disconnect");
    thread::sleep(Duration::from_millis(300));
    for i in 0..5u8 {
        publisher.publish("plant/b/temp", QoS::AtLeastOnce, false, vec![100 + i]).expect("publish");
    }
    let mut acked = 0;
    while acked < 5 {
        acked += next(&pub_rx, |p| matches!(p, Packet::PubAck(_)).then_some(1));
    }
    let (_sub, sub_rx) = v4::client(broker.port, "rq-sub", false);
    let present = next(&sub_rx, |p| match p {
        Packet::ConnAck(ack) => Some(ack.session_present),
        _ => None,
    });
    assert!(present, "the session was kept");
    let mut queued: Vec<u8> = v4::publishes(&sub_rx, 5).iter().map(|(_, body, _)| body[0]).collect();
    queued.sort_unstable();
    assert_eq!(queued, (100..105).collect::<Vec<u8>>());
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{ConnectProperties, LastWill, Packet, Publish};
    use rumqttc::v5::{Client, Event, MqttOptions};

    pub fn client(port: u16, id: &str, will: Option<LastWill>) -> (Client, Receiver<Packet>) {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_credentials("guest", "guest").set_keep_alive(Duration::from_secs(30));
        let mut props = ConnectProperties::new();
        props.session_expiry_interval = Some(0);
        options.set_connect_properties(props);
        if let Some(will) = will {
            options.set_last_will(will);
        }
        let (client, connection) = Client::new(options, 64);
        (client, pump!(connection, Event::Incoming))
    }

    pub fn publish(rx: &Receiver<Packet>) -> Publish {
        next(rx, |p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
    }
}

#[test]
fn rumqttc_v5_properties_retained_and_will() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PublishProperties};
    let broker = start("mqtt");
    let (sub, sub_rx) = v5::client(broker.port, "r5-sub", None);
    next(&sub_rx, |p| matches!(p, Packet::ConnAck(_)).then_some(()));
    sub.subscribe("home/#", QoS::AtLeastOnce).expect("subscribe");
    next(&sub_rx, |p| matches!(p, Packet::SubAck(_)).then_some(()));

    let (publisher, pub_rx) = v5::client(broker.port, "r5-pub", None);
    next(&pub_rx, |p| matches!(p, Packet::ConnAck(_)).then_some(()));
    let props = PublishProperties {
        content_type: Some("application/json".into()),
        response_topic: Some("home/replies".into()),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        user_properties: vec![("room".into(), "kitchen".into())],
        message_expiry_interval: Some(600),
        ..PublishProperties::default()
    };
    publisher.publish_with_properties("home/kitchen/light", QoS::ExactlyOnce, true, "on", props).expect("publish");
    let got = v5::publish(&sub_rx);
    assert_eq!(&got.payload[..], b"on");
    let p = got.properties.expect("5.0 properties");
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.response_topic.as_deref(), Some("home/replies"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    assert_eq!(p.user_properties, [("room".to_owned(), "kitchen".to_owned())]);
    assert!(p.message_expiry_interval.is_some_and(|s| s > 590 && s <= 600));

    // A later subscriber gets the retained message, flagged as retained.
    let (late, late_rx) = v5::client(broker.port, "r5-late", None);
    next(&late_rx, |p| matches!(p, Packet::ConnAck(_)).then_some(()));
    late.subscribe("home/kitchen/+", QoS::AtLeastOnce).expect("subscribe");
    let retained = v5::publish(&late_rx);
    assert!(retained.retain);
    assert_eq!(&retained.payload[..], b"on");

    // A client that vanishes without DISCONNECT has its will published.
    let will = LastWill::new("home/status/r5-dying", "offline", QoS::AtLeastOnce, false, None);
    let (dying, dying_rx) = v5::client(broker.port, "r5-dying", Some(will));
    next(&dying_rx, |p| matches!(p, Packet::ConnAck(_)).then_some(()));
    // Taking the id over closes the first connection abnormally (a will, not a DISCONNECT).
    let (_taker, taker_rx) = v5::client(broker.port, "r5-dying", None);
    next(&taker_rx, |p| matches!(p, Packet::ConnAck(_)).then_some(()));
    let will = v5::publish(&sub_rx);
    assert_eq!(&will.topic[..], b"home/status/r5-dying");
    assert_eq!(&will.payload[..], b"offline");
    drop(dying);
}
