//! A whole client session driven through `Connection` with synthetic client bytes from a
//! tiny client-side encoder over the generated types: handshake, channel, qos, queue
//! declare/bind, consume, publish (split over frames), deliver, ack, channel and connection
//! close. The engine's part is played by the test.

use std::time::Instant;

use bytes::Bytes;
use ferry_amqp091::frame::{self, Decoded, Frame};
use ferry_amqp091::*;
use ferry_wire::Limits;

/// The client side: encodes what a client sends and decodes what the server wrote.
#[derive(Default)]
struct Client {
    out: Vec<u8>,
    received: Vec<u8>,
}

impl Client {
    fn send(&mut self, channel: u16, method: impl Into<Method>) -> &mut Client {
        frame::encode_method(channel, &method.into(), &mut self.out);
        self
    }

    fn publish(&mut self, channel: u16, routing_key: &str, body: &[u8], frame_max: u32) -> &mut Client {
        let publish: Method = BasicPublish { routing_key: routing_key.into(), ..Default::default() }.into();
        let properties = BasicProperties { message_id: Some("m-1".into()), ..Default::default() };
        frame::encode_content(channel, &publish, &properties, body, frame_max, &mut self.out);
        self
    }

    /// Feeds everything queued into `conn`, in small chunks.
    fn flush(&mut self, conn: &mut Connection, now: Instant) {
        for chunk in self.out.chunks(7) {
            conn.handle_input(chunk, now);
        }
        self.out.clear();
    }

    fn receive(&mut self, conn: &mut Connection) -> Vec<Frame> {
        conn.poll_transmit(&mut self.received);
        let mut frames = Vec::new();
        let mut start = 0;
        while let Ok(Decoded::Frame { frame, consumed }) = frame::decode(&self.received[start..], 1 << 20) {
            frames.push(frame);
            start += consumed;
        }
        self.received.drain(..start);
        frames
    }

    fn methods(&mut self, conn: &mut Connection) -> Vec<Method> {
        self.receive(conn)
            .into_iter()
            .filter_map(|f| match f {
                Frame::Method { method, .. } => Some(method),
                _ => None,
            })
            .collect()
    }
}

fn next_event(conn: &mut Connection) -> Event {
    conn.poll_event().expect("an event")
}

#[test]
fn a_whole_session() {
    let now = Instant::now();
    let config = ConnectionConfig { limits: Limits::test_min(), frame_max: 4096, ..ConnectionConfig::default() };
    let mut conn = Connection::new(config, now);
    let mut client = Client::default();

    client.out.extend_from_slice(PROTOCOL_HEADER);
    client.flush(&mut conn, now);
    let [Method::ConnectionStart(start)] = &client.methods(&mut conn)[..] else { panic!("start") };
    assert_eq!(start.server_properties.get("product"), Some(&FieldValue::string("Ferry")));

    let start_ok = ConnectionStartOk {
        mechanism: "PLAIN".into(),
        response: Bytes::from_static(b"\0guest\0guest"),
        ..Default::default()
    };
    client.send(0, start_ok).flush(&mut conn, now);
    assert!(matches!(next_event(&mut conn), Event::Login { username, .. } if username == "guest"));
    conn.accept_login();
    let [Method::ConnectionTune(tune)] = &client.methods(&mut conn)[..] else { panic!("tune") };
    assert_eq!((tune.channel_max, tune.frame_max, tune.heartbeat), (2047, 4096, 60));

    let tune_ok = ConnectionTuneOk { channel_max: tune.channel_max, frame_max: tune.frame_max, heartbeat: 0 };
    client.send(0, tune_ok).send(0, ConnectionOpen::default()).flush(&mut conn, now);
    assert_eq!(next_event(&mut conn), Event::Open { vhost: "/".into() });
    conn.accept_open();
    assert_eq!(client.methods(&mut conn), [Method::ConnectionOpenOk(Default::default())]);

    client.send(1, ChannelOpen::default()).flush(&mut conn, now);
    assert_eq!(next_event(&mut conn), Event::ChannelOpened { channel: 1 });
    assert_eq!(client.methods(&mut conn), [Method::ChannelOpenOk(Default::default())]);

    // The engine answers each synchronous method.
    let requests: [(Method, Method); 4] = [
        (BasicQos { prefetch_count: 10, ..Default::default() }.into(), BasicQosOk::default().into()),
        (
            QueueDeclare { queue: "jobs".into(), durable: true, ..Default::default() }.into(),
            QueueDeclareOk { queue: "jobs".into(), message_count: 0, consumer_count: 0 }.into(),
        ),
        (
            QueueBind {
                queue: "jobs".into(),
                exchange: "amq.direct".into(),
                routing_key: "jobs".into(),
                ..Default::default()
            }
            .into(),
            QueueBindOk::default().into(),
        ),
        (
            BasicConsume { queue: "jobs".into(), consumer_tag: "c1".into(), ..Default::default() }.into(),
            BasicConsumeOk { consumer_tag: "c1".into() }.into(),
        ),
    ];
    for (request, reply) in requests {
        client.send(1, request.clone()).flush(&mut conn, now);
        assert_eq!(next_event(&mut conn), Event::Method { channel: 1, method: request });
        conn.send_method(1, &reply);
        assert_eq!(client.methods(&mut conn), [reply]);
    }

    let body = vec![b'x'; 10_000];
    client.publish(1, "jobs", &body, 4096).flush(&mut conn, now);
    let Event::Publish { channel: 1, method, properties, body: got } = next_event(&mut conn) else { panic!("publish") };
    assert_eq!((method.routing_key.as_str(), properties.message_id.as_deref()), ("jobs", Some("m-1")));
    assert_eq!(got, body);

    let deliver: Method =
        BasicDeliver { consumer_tag: "c1".into(), delivery_tag: 1, routing_key: "jobs".into(), ..Default::default() }
            .into();
    conn.send_content(1, &deliver, &properties, &got);
    let frames = client.receive(&mut conn);
    assert_eq!(frames.len(), 2 + 3, "method, header, 3 body frames of at most 4088 bytes");
    let delivered: Vec<u8> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Body { body, .. } => Some(body.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(delivered, body);

    client.send(1, BasicAck { delivery_tag: 1, multiple: false }).flush(&mut conn, now);
    let ack = BasicAck { delivery_tag: 1, multiple: false }.into();
    assert_eq!(next_event(&mut conn), Event::Method { channel: 1, method: ack });

    client.send(1, ChannelClose { reply_code: 200, ..Default::default() }).flush(&mut conn, now);
    assert_eq!(next_event(&mut conn), Event::ChannelClosed { channel: 1 });
    assert_eq!(client.methods(&mut conn), [Method::ChannelCloseOk(Default::default())]);

    client.send(0, ConnectionClose { reply_code: 200, reply_text: "Normal shutdown".into(), ..Default::default() });
    client.flush(&mut conn, now);
    assert!(matches!(next_event(&mut conn), Event::Closed { .. }));
    assert_eq!(client.methods(&mut conn), [Method::ConnectionCloseOk(Default::default())]);
    assert!(conn.is_closed());
    assert_eq!(conn.poll_event(), None);
}
