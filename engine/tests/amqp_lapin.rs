//! AMQP 0-9-1 with the Rust client `lapin` against a real `ferry` process: declare, bind,
//! publish with publisher confirms (persistent), consume with manual acks, nack with
//! requeue (redelivered), and a 404 channel error — what a RabbitMQ application in Rust does.
//! Also RabbitMQ's extensions as lapin uses them: exchange-to-exchange bindings into an internal
//! exchange, an alternate exchange, typed header values, a 1 MiB message split across frames,
//! and the broker cancelling a consumer whose queue was deleted.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

mod common;

use common::start;

async fn connect(port: u16) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(10);
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    loop {
        match Connection::connect(&uri, ConnectionProperties::default()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("lapin could not connect: {e}"),
            Err(_) => async_io_sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn async_io_sleep(d: Duration) {
    async_global_executor::spawn_blocking(move || std::thread::sleep(d)).await;
}

#[test]
fn lapin_publishes_with_confirms_and_consumes_with_acks() {
    let broker = start("amqp");
    async_global_executor::block_on(async {
        let conn = connect(broker.port).await;
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        let queue = ch
            .queue_declare(
                "lapin-q",
                QueueDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("declare");
        assert_eq!(queue.name().as_str(), "lapin-q");
        ch.queue_bind("lapin-q", "amq.topic", "lapin.#", QueueBindOptions::default(), FieldTable::default())
            .await
            .expect("bind");
        for i in 0..50u32 {
            let confirm = ch
                .basic_publish(
                    "amq.topic",
                    "lapin.test",
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(confirm.is_ack(), "message {i} confirmed");
        }
        let mut consumer = ch
            .basic_consume("lapin-q", "lapin-c", BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume");
        let mut seen = Vec::new();
        let mut nacked = false;
        while seen.len() < 50 {
            let delivery = consumer.next().await.expect("stream open").expect("delivery");
            let body = String::from_utf8(delivery.data.clone()).expect("utf8");
            if body == "m0" && !nacked {
                nacked = true;
                delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
                continue;
            }
            if body == "m0" {
                assert!(delivery.redelivered, "requeued message comes back redelivered");
            }
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
            seen.push(body);
        }
        seen.sort();
        let mut expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        expected.sort();
        assert_eq!(seen, expected);
        let err = ch
            .queue_declare(
                "no-such-queue",
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect_err("passive declare of a missing queue");
        assert!(err.to_string().contains("404") || err.to_string().contains("NOT_FOUND"), "{err}");
        conn.close(200, "bye").await.expect("close");
    });
}

fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in entries {
        table.insert(k.into(), v);
    }
    table
}

#[test]
fn lapin_uses_rabbitmq_exchange_extensions_typed_headers_and_big_messages() {
    let broker = start("amqp");
    async_global_executor::block_on(async {
        let conn = connect(broker.port).await;
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        let internal = ExchangeDeclareOptions { internal: true, ..Default::default() };
        ch.exchange_declare("l-back", ExchangeKind::Fanout, internal, FieldTable::default()).await.expect("back");
        ch.exchange_declare("l-ae", ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default())
            .await
            .expect("ae");
        let ae = table(vec![("alternate-exchange", AMQPValue::LongString("l-ae".into()))]);
        ch.exchange_declare("l-front", ExchangeKind::Topic, ExchangeDeclareOptions::default(), ae)
            .await
            .expect("front");
        ch.exchange_bind("l-back", "l-front", "a.#", ExchangeBindOptions::default(), FieldTable::default())
            .await
            .expect("exchange.bind");
        for (queue, exchange) in [("l-routed", "l-back"), ("l-unrouted", "l-ae")] {
            ch.queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
            ch.queue_bind(queue, exchange, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
        }
        let headers = table(vec![
            ("n", AMQPValue::LongLongInt(1 << 40)),
            ("i", AMQPValue::LongInt(-5)),
            ("b", AMQPValue::Boolean(true)),
            ("t", AMQPValue::FieldTable(table(vec![("x", AMQPValue::ShortShortUInt(7))]))),
            ("a", AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString("s".into())]))),
        ]);
        let big: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
        for (key, body) in [("a.b", &big[..]), ("z", b"to the alternate".as_slice())] {
            let props = BasicProperties::default().with_headers(headers.clone()).with_delivery_mode(2);
            let confirm = ch
                .basic_publish("l-front", key, BasicPublishOptions::default(), body, props)
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(confirm.is_ack());
        }
        let got = |queue: &'static str| {
            let ch = ch.clone();
            async move {
                for _ in 0..100 {
                    if let Some(m) = ch.basic_get(queue, BasicGetOptions { no_ack: true }).await.expect("get") {
                        return m.delivery;
                    }
                    async_io_sleep(Duration::from_millis(20)).await;
                }
                panic!("nothing arrived in {queue}");
            }
        };
        let routed = got("l-routed").await;
        assert_eq!(routed.data.len(), big.len(), "1 MiB split into frames both ways");
        assert!(routed.data == big);
        assert_eq!(routed.properties.headers().as_ref(), Some(&headers), "header values keep their AMQP types");
        assert_eq!(got("l-unrouted").await.data, b"to the alternate");
        let refused =
            ch.basic_publish("l-back", "", BasicPublishOptions::default(), b"x", BasicProperties::default()).await;
        let refused = match refused {
            Ok(confirm) => confirm.await.map(|_| ()),
            Err(e) => Err(e),
        };
        let closed = ch.queue_declare("l-routed", QueueDeclareOptions::default(), FieldTable::default()).await;
        assert!(refused.is_err() || closed.is_err(), "an internal exchange refuses publishes (403)");

        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare("l-doomed", QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
        let mut consumer = ch
            .basic_consume("l-doomed", "l-c", BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume");
        let other = conn.create_channel().await.expect("channel");
        other.queue_delete("l-doomed", QueueDeleteOptions::default()).await.expect("delete");
        let ended = futures_lite::future::or(async { consumer.next().await.is_none() }, async {
            async_io_sleep(Duration::from_secs(5)).await;
            false
        })
        .await;
        assert!(ended, "the broker's basic.cancel ends lapin's consumer stream");
        conn.close(200, "bye").await.expect("close");
    });
}

/// Publishes in flight together get their confirms coalesced (`multiple` acks); lapin must
/// still resolve every one, and the one publish a reject-publish queue refuses is nacked alone.
#[test]
fn lapin_resolves_pipelined_confirms_with_one_nack_among_them() {
    let broker = start("amqp");
    async_global_executor::block_on(async {
        let conn = connect(broker.port).await;
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare("lapin-pipelined", durable, FieldTable::default()).await.expect("declare");
        let full = table(vec![
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]);
        ch.queue_declare("lapin-full", QueueDeclareOptions::default(), full).await.expect("declare full");
        let mut confirms = Vec::new();
        for i in 1..=600u32 {
            // Message 301 fills lapin-full, 302 is refused by it.
            let queue = if i == 301 || i == 302 { "lapin-full" } else { "lapin-pipelined" };
            let properties = BasicProperties::default().with_delivery_mode(if i % 3 == 0 { 1 } else { 2 });
            let confirm = ch
                .basic_publish("", queue, BasicPublishOptions::default(), format!("m{i}").as_bytes(), properties)
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for (i, confirm) in (1..=600u32).zip(confirms) {
            let confirm = confirm.await.expect("confirm");
            assert_eq!(confirm.is_nack(), i == 302, "message {i}: {confirm:?}");
        }
        let queue = ch
            .queue_declare("lapin-pipelined", QueueDeclareOptions { passive: true, ..durable }, FieldTable::default())
            .await
            .expect("passive declare");
        assert_eq!(queue.message_count(), 598);
        conn.close(200, "bye").await.expect("close");
    });
}
