//! AMQP 0-9-1 with the Rust client `lapin` against a real `ferry` process: declare, bind,
//! publish with publisher confirms (persistent), consume with manual acks, nack with
//! requeue (redelivered), and a 404 channel error — what a RabbitMQ application in Rust does.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

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
