//! One connection's task: a reader sub-task copies socket bytes into a small bounded channel
//! (TCP back-pressure when the gateway is busy); the main loop is read/handle/poll/write —
//! wait for input, a mailbox wake-up or the session's next timer, let the gateway handle it,
//! then write whatever output it produced. The connection lives its whole life on this shard.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::spawn_local;

use super::notify::Notify;
use super::reactor_turn;
use crate::auth::Users;
use crate::gateway::Gateway;
use crate::gateway::amqp091::AmqpConn;
use crate::gateway::mqtt::MqttConn;
use crate::gateway::stomp::StompConn;
use crate::shard::ShardRef;

/// Bytes read from the socket per read call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Read buffer of a connection whose peer is not sending much (an idle connection holds
/// only this; reads that fill it grow it towards `READ_CHUNK_BYTES`).
const READ_CHUNK_BYTES_MIN: usize = 512;
/// Chunks buffered between the reader and the gateway.
const READ_QUEUE_CHUNKS: usize = 2;
/// Pause while this shard's outboxes are over their bound.
const OUTBOX_BACKOFF: Duration = Duration::from_micros(200);

enum Wake {
    Input(Option<Vec<u8>>),
    Mail,
    Timer,
    Recheck,
}

/// Longest wait for the peer's FIN after ours.
const LINGER: Duration = Duration::from_secs(1);

/// How often a held-back publisher looks whether the disk alarm cleared.
const HELD_RECHECK: Duration = Duration::from_millis(50);

/// Builds a protocol's gateway for a new connection; `None` at the connection limit.
pub(super) type MakeGateway<G> = fn(ShardRef, std::net::SocketAddr, Rc<Users>, Rc<dyn Fn()>, Instant) -> Option<G>;

pub(super) async fn serve_stomp(stream: TcpStream, shard: ShardRef, users: Rc<Users>) {
    serve::<StompConn>(stream, shard, users, StompConn::new).await;
}

pub(super) async fn serve_amqp(stream: TcpStream, shard: ShardRef, users: Rc<Users>) {
    serve::<AmqpConn>(stream, shard, users, AmqpConn::new).await;
}

pub(super) async fn serve_mqtt(stream: TcpStream, shard: ShardRef, users: Rc<Users>) {
    serve::<MqttConn>(stream, shard, users, MqttConn::new).await;
}

async fn serve<G: Gateway>(stream: TcpStream, shard: ShardRef, users: Rc<Users>, make: MakeGateway<G>) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let notify = Rc::new(Notify::default());
    let wake: Rc<dyn Fn()> = {
        let notify = notify.clone();
        Rc::new(move || notify.notify())
    };
    let outbox_max = shard.borrow().limits().shard_channel_count_max * 16;
    let Some(mut conn) = make(shard.clone(), peer, users, wake, Instant::now()) else {
        let mut stream = stream;
        let _ = stream.write_all(G::refusal()).await;
        return;
    };
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<Vec<u8>>(READ_QUEUE_CHUNKS);
    let reader_task = spawn_local(async move {
        let mut buf = vec![0u8; READ_CHUNK_BYTES_MIN];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                    // A full read means more is waiting: read in bigger chunks while the peer
                    // is busy; back to the small buffer once it goes quiet.
                    let full = n == buf.len();
                    let size = if full {
                        (buf.len() * 4).min(READ_CHUNK_BYTES)
                    } else if n <= READ_CHUNK_BYTES_MIN / 2 {
                        READ_CHUNK_BYTES_MIN
                    } else {
                        buf.len()
                    };
                    if size != buf.len() {
                        buf = vec![0u8; size];
                    }
                    // A full read came without the reactor and so will the next one: let the
                    // shard's other sockets be polled first (see `reactor_turn`).
                    if full {
                        reactor_turn::now().await;
                    }
                }
            }
        }
    });
    let mut out = Vec::new();
    loop {
        conn.poll_transmit(&mut out);
        if !out.is_empty() {
            if writer.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
            conn.on_written();
        }
        if conn.is_closed() {
            break;
        }
        let timer = conn.poll_timeout();
        let held = conn.input_held();
        let wake = future::or(
            async {
                if held {
                    glommio::timer::sleep(HELD_RECHECK).await;
                    Wake::Recheck
                } else {
                    Wake::Input(rx.recv().await)
                }
            },
            future::or(
                async {
                    notify.wait().await;
                    Wake::Mail
                },
                async {
                    match timer {
                        Some(at) => glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await,
                        None => future::pending::<()>().await,
                    }
                    Wake::Timer
                },
            ),
        )
        .await;
        match wake {
            Wake::Input(Some(bytes)) => {
                while shard.borrow().outbox_len() > outbox_max {
                    glommio::timer::sleep(OUTBOX_BACKOFF).await;
                }
                conn.handle_input(&bytes, Instant::now()).await;
            }
            Wake::Input(None) => break,
            Wake::Mail => conn.drain_mailbox(),
            Wake::Timer => conn.handle_timeout(Instant::now()),
            Wake::Recheck => {}
        }
    }
    // Lingering close: read (and discard) until the peer closes too, for a bounded time, so
    // unread input cannot turn our close into a reset that destroys the final frames
    // (close-ok, ERROR). Our FIN goes first unless the protocol leaves closing to the peer.
    let peer_first = conn.peer_closes_first();
    if !peer_first {
        let _ = writer.close().await;
    }
    future::or(async { while rx.recv().await.is_some() {} }, glommio::timer::sleep(LINGER)).await;
    if peer_first {
        let _ = writer.close().await;
    }
    drop(reader_task);
    conn.close();
}
