//! The channel half of [`Connection`]: channel.open / close / close-ok handled here, every
//! other method passed to the engine, and basic.publish reassembled with its content header
//! and body frames. Errors follow RabbitMQ: 504 for a method on a channel that is not open,
//! 530 for a channel number above channel-max, 505 for content out of sequence, 406 (a
//! channel error) for a body over `frame_size_bytes_max`, 506 when partial bodies of all
//! channels together would exceed `connection_input_bytes_max`.

use bytes::Bytes;

use super::{ChannelState, Connection, Fault, Payload};
use crate::content::{Assembly, Body, ContentHeader};
use crate::event::Event;
use crate::generated::{
    BasicPublish, CHANNEL_ERROR, COMMAND_INVALID, ChannelOpenOk, FRAME_HEADER, Method, NOT_ALLOWED,
    PRECONDITION_FAILED, RESOURCE_ERROR, SYNTAX_ERROR, UNEXPECTED_FRAME, class_id,
};

/// Body frames shorter than this are copied out of the input buffer, so a small message does
/// not pin a whole input block while it waits in a queue; longer ones are kept zero-copy.
pub(super) const BODY_COPY_BYTES_MAX: usize = 4096;

impl Connection {
    fn check_channel_number(&mut self, channel: u16, class_id: u16, method_id: u16) -> bool {
        let max = self.tuning.channel_max;
        if max != 0 && channel > max {
            let text = format!("channel number {channel} exceeds the negotiated channel_max ({max})");
            self.fault(Fault::new(NOT_ALLOWED, text, class_id, method_id));
            return false;
        }
        true
    }

    pub(super) fn on_channel_method(&mut self, channel: u16, method: Method) {
        if !self.check_channel_number(channel, method.class_id(), method.method_id()) {
            return;
        }
        match self.channels.get_mut(&channel) {
            None => match method {
                Method::ChannelOpen(_) => {
                    self.channels.insert(channel, ChannelState::Open(Assembly::Idle));
                    self.write_method(channel, &Method::ChannelOpenOk(ChannelOpenOk::default()));
                    self.events.push_back(Event::ChannelOpened { channel });
                }
                method => {
                    let text = format!("expected 'channel.open' on channel {channel}, got '{}'", method.name());
                    self.fault(Fault::on(CHANNEL_ERROR, text, &method));
                }
            },
            Some(ChannelState::Closing) => match method {
                Method::ChannelCloseOk(_) => {
                    self.channels.remove(&channel);
                    self.events.push_back(Event::ChannelClosed { channel });
                }
                Method::ChannelClose(_) => {
                    self.write_method(channel, &Method::ChannelCloseOk(Default::default()));
                }
                _ => {}
            },
            Some(ChannelState::Open(Assembly::Idle)) => self.on_open_channel_method(channel, method),
            Some(ChannelState::Open(_)) => {
                let text = format!("expected content for basic.publish on channel {channel}, got '{}'", method.name());
                self.fault(Fault::new(UNEXPECTED_FRAME, text, BasicPublish::CLASS_ID, BasicPublish::METHOD_ID));
            }
        }
    }

    fn on_open_channel_method(&mut self, channel: u16, method: Method) {
        match method {
            Method::BasicPublish(publish) => {
                self.channels.insert(channel, ChannelState::Open(Assembly::Header { method: publish }));
            }
            Method::ChannelClose(_) => {
                self.channels.remove(&channel);
                self.write_method(channel, &Method::ChannelCloseOk(Default::default()));
                self.events.push_back(Event::ChannelClosed { channel });
            }
            Method::ChannelOpen(_) => {
                let text = format!("second 'channel.open' seen on channel {channel}");
                self.fault(Fault::on(CHANNEL_ERROR, text, &method));
            }
            method
                if method.class_id() == class_id::CONNECTION
                    || method.has_content()
                    || matches!(method, Method::ChannelCloseOk(_) | Method::ChannelOpenOk(_)) =>
            {
                let text = format!("unimplemented method '{}' on channel {channel}", method.name());
                self.fault(Fault::on(COMMAND_INVALID, text, &method));
            }
            method => self.events.push_back(Event::Method { channel, method }),
        }
    }

    pub(super) fn on_content(&mut self, channel: u16, frame_type: u8, payload: Payload<'_>) {
        let publish_ids = (BasicPublish::CLASS_ID, BasicPublish::METHOD_ID);
        if !self.check_channel_number(channel, 0, 0) {
            return;
        }
        let assembly = match self.channels.get_mut(&channel) {
            Some(ChannelState::Open(assembly)) => std::mem::take(assembly),
            Some(ChannelState::Closing) => return,
            None => {
                let text = format!("content frame on channel {channel}, which is not open");
                return self.fault(Fault::new(UNEXPECTED_FRAME, text, 0, 0));
            }
        };
        let next = match (frame_type, assembly) {
            (FRAME_HEADER, Assembly::Header { method }) => self.on_content_header(channel, method, payload.bytes()),
            (FRAME_HEADER, _) => Err(Fault::new(UNEXPECTED_FRAME, "unexpected content header frame", 0, 0)),
            (_, Assembly::Body { method, properties, size, mut body }) => {
                let received = body.len() as u64 + payload.bytes().len() as u64;
                if received > size {
                    let text = format!("content body exceeds the declared {size} bytes");
                    Err(Fault::new(UNEXPECTED_FRAME, text, publish_ids.0, publish_ids.1))
                } else if self.partial_body_bytes + payload.bytes().len()
                    > self.config.limits.connection_input_bytes_max
                {
                    let text = "partially received message bodies exceed the connection's buffer";
                    Err(Fault::new(RESOURCE_ERROR, text, publish_ids.0, publish_ids.1))
                } else {
                    // Small parts are copied, large ones were kept as slices of the input.
                    let part = payload.into_bytes();
                    self.partial_body_bytes += part.len();
                    body.push(part);
                    if received == size {
                        self.partial_body_bytes -= body.len();
                        self.publish(channel, method, properties, body.freeze());
                        Ok(Assembly::Idle)
                    } else {
                        Ok(Assembly::Body { method, properties, size, body })
                    }
                }
            }
            (_, assembly) => {
                let ids = if matches!(assembly, Assembly::Idle) { (0, 0) } else { publish_ids };
                Err(Fault::new(UNEXPECTED_FRAME, "unexpected content body frame", ids.0, ids.1))
            }
        };
        match next {
            Ok(next) => {
                if let Some(ChannelState::Open(slot)) = self.channels.get_mut(&channel) {
                    *slot = next;
                }
            }
            Err(fault) => self.fault(fault),
        }
    }

    /// Handles basic.publish's content header; the channel's next assembly state, or a fault.
    /// A body over `frame_size_bytes_max` closes the channel with 406, as RabbitMQ does.
    fn on_content_header(&mut self, channel: u16, method: BasicPublish, payload: &[u8]) -> Result<Assembly, Fault> {
        let ids = (BasicPublish::CLASS_ID, BasicPublish::METHOD_ID);
        match ContentHeader::peek_class_id(payload) {
            Some(class) if class == BasicPublish::CLASS_ID => {}
            class => {
                let text = format!("expected content header for class 60, got class {}", class.unwrap_or(0));
                return Err(Fault::new(UNEXPECTED_FRAME, text, ids.0, ids.1));
            }
        }
        let (body_size, properties) = ContentHeader::decode_boxed(payload)
            .map_err(|e| Fault::new(SYNTAX_ERROR, format!("malformed content header: {e}"), ids.0, ids.1))?;
        let size_max = self.config.limits.frame_size_bytes_max;
        if body_size > size_max as u64 {
            let text = format!("message size {body_size} is larger than configured max size {size_max}");
            self.begin_channel_close(channel, Fault::new(PRECONDITION_FAILED, text, ids.0, ids.1));
            return Ok(Assembly::Idle);
        }
        if body_size == 0 {
            self.publish(channel, method, properties, Bytes::new());
            return Ok(Assembly::Idle);
        }
        Ok(Assembly::Body { method, properties, size: body_size, body: Body::Empty })
    }

    fn publish(&mut self, channel: u16, method: BasicPublish, properties: Box<crate::BasicProperties>, body: Bytes) {
        self.events.push_back(Event::Publish { channel, method, properties, body });
    }
}
