//! What a session tells the engine: [`Event`], [`AckMode`], [`CloseReason`], and the
//! translation of a client frame (after CONNECT) into an event: required headers per
//! command and version, `ack` modes, ACK/NACK id normalisation. A frame that fails these
//! checks becomes a `Rejection` (ERROR + close). Pure; allocates only what the frame holds.

use bytes::Bytes;

use crate::error::Rejection;
use crate::frame::{Command, Frame, Version};

/// How a subscription acknowledges messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckMode {
    Auto,
    Client,
    ClientIndividual,
}

impl AckMode {
    /// The `ack` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }

    /// Parses an `ack` header value. `client-individual` is accepted on 1.0 too, as
    /// RabbitMQ does.
    pub fn parse(text: &str) -> Option<AckMode> {
        [AckMode::Auto, AckMode::Client, AckMode::ClientIndividual].into_iter().find(|m| m.as_str() == text)
    }
}

/// Why a session closed itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer broke the protocol; the text is the ERROR frame's `message`.
    ProtocolError(String),
    /// Nothing arrived for twice the negotiated client heart-beat period.
    HeartbeatTimeout,
    /// No CONNECT within `connect_timeout_ms`.
    ConnectTimeout,
}

/// Something the engine must act on, in the order the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connect {
        version: Version,
        host: Option<String>,
        login: Option<String>,
        passcode: Option<String>,
        headers: Vec<crate::Header>,
    },
    Send {
        destination: String,
        transaction: Option<String>,
        receipt: Option<String>,
        headers: Vec<crate::Header>,
        body: Bytes,
    },
    Subscribe {
        id: String,
        destination: String,
        ack: AckMode,
        receipt: Option<String>,
        headers: Vec<crate::Header>,
    },
    Unsubscribe {
        id: String,
        receipt: Option<String>,
    },
    Ack {
        id: String,
        transaction: Option<String>,
        receipt: Option<String>,
    },
    Nack {
        id: String,
        transaction: Option<String>,
        receipt: Option<String>,
        headers: Vec<crate::Header>,
    },
    Begin {
        transaction: String,
        receipt: Option<String>,
    },
    Commit {
        transaction: String,
        receipt: Option<String>,
    },
    Abort {
        transaction: String,
        receipt: Option<String>,
    },
    Disconnect {
        receipt: Option<String>,
    },
    /// The session closed itself (emitted once; its ERROR frame, if any, is already queued).
    Closed {
        reason: CloseReason,
    },
}

/// Translates a client frame received after CONNECT. CONNECT/STOMP are handled by `connect`.
pub(crate) fn interpret(mut frame: Frame, version: Version) -> Result<Event, Rejection> {
    let receipt = optional(&frame, "receipt");
    let event = match frame.command {
        Command::Send => Event::Send {
            // Moved out, not copied: the header stays, empty (a control header no mapping reads).
            destination: take_required(&mut frame, "destination")?,
            transaction: optional(&frame, "transaction"),
            receipt,
            headers: frame.headers,
            body: frame.body,
        },
        Command::Subscribe => subscribe(frame, version, receipt)?,
        Command::Unsubscribe => Event::Unsubscribe {
            id: match version {
                Version::V1_0 => required_either(&frame, "id", "destination")?,
                _ => required(&frame, "id")?,
            },
            receipt,
        },
        Command::Ack => {
            let transaction = optional(&frame, "transaction");
            Event::Ack { id: take_ack_id(&mut frame, version)?, transaction, receipt }
        }
        Command::Nack if version != Version::V1_0 => Event::Nack {
            id: ack_id(&frame, version)?,
            transaction: optional(&frame, "transaction"),
            receipt,
            headers: frame.headers,
        },
        Command::Begin => Event::Begin { transaction: required(&frame, "transaction")?, receipt },
        Command::Commit => Event::Commit { transaction: required(&frame, "transaction")?, receipt },
        Command::Abort => Event::Abort { transaction: required(&frame, "transaction")?, receipt },
        Command::Disconnect => Event::Disconnect { receipt },
        Command::Connect | Command::Stomp => {
            return Err(reject(&frame, "Already connected", "Received a second CONNECT"));
        }
        Command::Nack | Command::Connected | Command::Message | Command::Receipt | Command::Error => {
            let detail = format!("{} is not a client command in STOMP {}", frame.command.as_str(), version.as_str());
            return Err(reject(&frame, "Unknown STOMP command", detail));
        }
    };
    Ok(event)
}

fn subscribe(frame: Frame, version: Version, receipt: Option<String>) -> Result<Event, Rejection> {
    let destination = required(&frame, "destination")?;
    let id = match (frame.header("id"), version) {
        (Some(id), _) => id.to_owned(),
        (None, Version::V1_0) => destination.clone(),
        (None, _) => return Err(missing(&frame, "id")),
    };
    let ack = match frame.header("ack") {
        None => AckMode::Auto,
        Some(text) => AckMode::parse(text).ok_or_else(|| {
            let detail = format!("ack must be auto, client or client-individual, not {text:?}");
            reject(&frame, "Invalid ack header", detail)
        })?,
    };
    Ok(Event::Subscribe { id, destination, ack, receipt, headers: frame.headers })
}

/// ACK/NACK: `id` on 1.2, `message-id` on 1.0 and 1.1.
fn ack_id(frame: &Frame, version: Version) -> Result<String, Rejection> {
    match version {
        Version::V1_2 => required(frame, "id"),
        Version::V1_0 | Version::V1_1 => required(frame, "message-id"),
    }
}

/// [`ack_id`], moved out of the frame (an ACK's headers are dropped after).
fn take_ack_id(frame: &mut Frame, version: Version) -> Result<String, Rejection> {
    match version {
        Version::V1_2 => take_required(frame, "id"),
        Version::V1_0 | Version::V1_1 => take_required(frame, "message-id"),
    }
}

fn optional(frame: &Frame, name: &str) -> Option<String> {
    frame.header(name).map(str::to_owned)
}

/// [`required`], moving the (first) value out of the frame and leaving it empty there.
fn take_required(frame: &mut Frame, name: &str) -> Result<String, Rejection> {
    match frame.headers.iter_mut().find(|(n, _)| *n == name) {
        Some((_, value)) => Ok(std::mem::replace(value, crate::HeaderText::from("")).into_string()),
        None => Err(missing(frame, name)),
    }
}

fn required(frame: &Frame, name: &str) -> Result<String, Rejection> {
    optional(frame, name).ok_or_else(|| missing(frame, name))
}

fn required_either(frame: &Frame, first: &str, second: &str) -> Result<String, Rejection> {
    match frame.header(first).or_else(|| frame.header(second)) {
        Some(value) => Ok(value.to_owned()),
        None => Err(missing(frame, first)),
    }
}

fn missing(frame: &Frame, name: &str) -> Rejection {
    let detail = format!("{} frames must have a '{name}' header", frame.command.as_str());
    reject(frame, format!("Missing '{name}' header"), detail)
}

fn reject(frame: &Frame, message: impl Into<String>, detail: impl Into<String>) -> Rejection {
    Rejection::new(message, detail).with_receipt(frame.header("receipt"))
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
