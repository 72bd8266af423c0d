//! The stdac wire protocol: what a host and a board say to each other over a serial line.
//!
//! This crate is the interface document between `stdac` (host) and `stdac-device` (board): message types
//! ([`message`]), framing ([`frame`]: COBS, CRC-32, a streaming decoder) and nothing else: no I/O, no model
//! code, no allocator. It builds for `thumbv7em-none-eabihf` as well as for the host.
//!
//! A session: the host sends [`Request`]s, each with a sequence number; the device answers each with
//! [`DeviceMsg::Ack`], [`DeviceMsg::Nack`] or, for a hello, [`DeviceMsg::Hello`], and streams
//! [`DeviceMsg::Assignment`], [`DeviceMsg::Stats`] and [`DeviceMsg::Log`] on its own. A frame that arrives
//! damaged is dropped, counted, and answered with a `Nack` whose `seq` is `None`, and the host resends.
#![no_std]

#[cfg(test)]
extern crate std;

mod crc32;
pub mod frame;
pub mod message;

pub use crc32::crc32;
pub use frame::{Decoder, Deframer, FrameEncoder, FrameError, FrameStats, TooLarge, MAX_FRAME, MAX_WIRE};
pub use message::*;

/// Version of the wire protocol. Bump it with any change to the bytes on the wire; peers refuse to talk
/// across versions, with an error naming both.
pub const PROTOCOL_VERSION: u16 = 1;

/// A message type one side reads off the wire: [`Request`] on the device, [`DeviceMsg`] on the host.
pub trait Incoming: serde::de::DeserializeOwned {
    /// `(seq, protocol)` of a hello in `payload`, read from the fields every protocol version keeps.
    fn peek_hello(payload: &[u8]) -> Option<(Seq, u16)>;
}

impl Incoming for Request {
    fn peek_hello(payload: &[u8]) -> Option<(Seq, u16)> {
        message::peek_hello_protocol(payload, true)
    }
}

impl Incoming for DeviceMsg {
    fn peek_hello(payload: &[u8]) -> Option<(Seq, u16)> {
        message::peek_hello_protocol(payload, false)
    }
}
