//! Framing: how messages become bytes on a noisy serial line and back.
//!
//! A frame on the wire is `0x00, COBS(payload ‖ CRC-32(payload) as little-endian), 0x00`, where the
//! payload is the postcard encoding of one message. COBS removes every zero byte from the body, so a zero
//! only ever means "frame boundary" and a receiver that lost its place finds it again at the next zero.
//! The leading zero closes whatever line noise came before, so a good frame is never glued to garbage.
//!
//! [`Deframer`] is the streaming receiver: feed it byte chunks of any size, split anywhere. It gathers a
//! frame's bytes into a fixed buffer and, at the delimiter, undoes COBS in place, checks the CRC and either
//! hands out the payload or says why the frame was dropped. A frame that outgrows the buffer is skipped to
//! its delimiter. It never stops accepting input.

use core::marker::PhantomData;

use serde::Serialize;

use crate::crc32::crc32;
use crate::message::{Seq, MAX_CHUNK};
use crate::Incoming;

/// Largest frame body (payload + 4 CRC bytes) either side sends or accepts, before COBS.
pub const MAX_FRAME: usize = MAX_CHUNK + 64;
/// Largest frame body once COBS-encoded: one code byte per 254 bytes, plus one.
const MAX_ENCODED: usize = MAX_FRAME + MAX_FRAME / 254 + 1;
/// Largest frame on the wire: the encoded body and both delimiters.
pub const MAX_WIRE: usize = MAX_ENCODED + 2;
const CRC_LEN: usize = 4;

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Longer than [`MAX_FRAME`] bytes once decoded.
    Oversized,
    /// The delimiter came in the middle of a COBS block: bytes were lost.
    Truncated,
    /// Too short to hold a message and its CRC.
    TooShort,
    /// The CRC-32 does not match the payload.
    Crc,
    /// The CRC matched but the payload is not a message of this protocol version.
    Malformed,
    /// The CRC matched and the payload is a hello from a peer speaking another protocol version.
    VersionMismatch { seq: Seq, protocol: u16 },
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Oversized => write!(f, "frame longer than {MAX_FRAME} bytes"),
            FrameError::Truncated => write!(f, "frame cut short (bytes lost on the line)"),
            FrameError::TooShort => write!(f, "frame too short to hold a message and its CRC"),
            FrameError::Crc => write!(f, "frame CRC-32 mismatch"),
            FrameError::Malformed => write!(f, "frame passed its CRC but holds no known message"),
            FrameError::VersionMismatch { protocol, .. } => {
                write!(f, "hello from a peer speaking protocol version {protocol}")
            }
        }
    }
}

impl core::error::Error for FrameError {}

/// The message does not fit in [`MAX_FRAME`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

impl core::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "message longer than the {MAX_FRAME}-byte frame limit")
    }
}

impl core::error::Error for TooLarge {}

/// Turns messages into wire frames, in buffers it owns (no allocation).
pub struct FrameEncoder {
    body: [u8; MAX_FRAME],
    wire: [u8; MAX_WIRE],
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    pub const fn new() -> Self {
        FrameEncoder { body: [0; MAX_FRAME], wire: [0; MAX_WIRE] }
    }

    /// The complete wire frame for `msg`, delimiters included, valid until the next call.
    pub fn encode<M: Serialize>(&mut self, msg: &M) -> Result<&[u8], TooLarge> {
        let payload_len =
            postcard::to_slice(msg, &mut self.body[..MAX_FRAME - CRC_LEN]).map_err(|_| TooLarge)?.len();
        let crc = crc32(&self.body[..payload_len]);
        self.body[payload_len..payload_len + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
        let body = &self.body[..payload_len + CRC_LEN];

        self.wire[0] = 0;
        let n = cobs_encode(body, &mut self.wire[1..]);
        self.wire[1 + n] = 0;
        Ok(&self.wire[..n + 2])
    }
}

/// COBS-encodes `src` into `dst` (which must hold `src.len() + src.len() / 254 + 1` bytes) and returns
/// the encoded length. The output holds no zero byte.
fn cobs_encode(src: &[u8], dst: &mut [u8]) -> usize {
    let mut code_at = 0; // where the current block's code byte goes, once the block is closed
    let mut out = 1;
    let mut code = 1u8; // 1 + data bytes in the current block
    for &b in src {
        if code == 0xFF {
            // A full block closes only when more data follows, so a frame never ends in an empty block.
            dst[code_at] = code;
            code_at = out;
            out += 1;
            code = 1;
        }
        if b == 0 {
            dst[code_at] = code;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            dst[out] = b;
            out += 1;
            code += 1;
        }
    }
    dst[code_at] = code;
    out
}

/// Counters of what a [`Deframer`] received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames that passed their COBS and CRC checks, `malformed` ones included.
    pub frames: u32,
    pub oversized: u32,
    pub truncated: u32,
    pub too_short: u32,
    pub crc: u32,
    /// Counted by [`Decoder`]: frames with a good CRC that hold no known message.
    pub malformed: u32,
}

impl FrameStats {
    /// Frames dropped for any reason.
    pub fn errors(&self) -> u32 {
        self.oversized + self.truncated + self.too_short + self.crc + self.malformed
    }
}

/// What a delimiter brought: the checked payload or why the frame was dropped, then the input after it.
pub type Deframed<'frame, 'input> = (Result<&'frame [u8], FrameError>, &'input [u8]);

/// Streaming frame receiver.
pub struct Deframer {
    /// The COBS-encoded bytes of the frame in progress.
    buf: [u8; MAX_ENCODED],
    len: usize,
    /// The frame in progress outgrew `buf`: it is skipped up to its delimiter.
    overflow: bool,
    stats: FrameStats,
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new()
    }
}

impl Deframer {
    pub const fn new() -> Self {
        Deframer {
            buf: [0; MAX_ENCODED],
            len: 0,
            overflow: false,
            stats: FrameStats { frames: 0, oversized: 0, truncated: 0, too_short: 0, crc: 0, malformed: 0 },
        }
    }

    pub fn stats(&self) -> FrameStats {
        self.stats
    }

    /// Consumes `input` up to and including the first frame delimiter that ends a frame, and returns
    /// that frame's payload (CRC checked and removed) or why it was dropped, with the rest of `input`.
    /// Returns `None` once all of `input` is consumed without finishing a frame; the partial frame is
    /// kept for the next call.
    pub fn push<'a>(&mut self, input: &'a [u8]) -> Option<Deframed<'_, 'a>> {
        let mut input = input;
        loop {
            let Some(end) = input.iter().position(|&b| b == 0) else {
                self.append(input);
                return None;
            };
            self.append(&input[..end]);
            input = &input[end + 1..];
            if self.len > 0 || self.overflow {
                return Some((self.finish(), input));
            }
            // Back-to-back delimiters: nothing in between, nothing to report.
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(MAX_ENCODED - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self.overflow |= n < bytes.len();
    }

    /// Called at a delimiter: checks the frame, resets for the next one.
    fn finish(&mut self) -> Result<&[u8], FrameError> {
        let encoded_len = core::mem::take(&mut self.len);
        let result = if core::mem::take(&mut self.overflow) {
            Err(FrameError::Oversized)
        } else {
            cobs_decode_in_place(&mut self.buf[..encoded_len]).and_then(|len| match len {
                len if len > MAX_FRAME => Err(FrameError::Oversized),
                len if len <= CRC_LEN => Err(FrameError::TooShort),
                len => {
                    let (payload, crc) = self.buf[..len].split_at(len - CRC_LEN);
                    if crc32(payload).to_le_bytes() == crc {
                        Ok(payload.len())
                    } else {
                        Err(FrameError::Crc)
                    }
                }
            })
        };
        let counter = match result {
            Ok(_) => &mut self.stats.frames,
            Err(FrameError::Oversized) => &mut self.stats.oversized,
            Err(FrameError::Truncated) => &mut self.stats.truncated,
            Err(FrameError::TooShort) => &mut self.stats.too_short,
            Err(_) => &mut self.stats.crc,
        };
        *counter += 1;
        result.map(|n| &self.buf[..n])
    }
}

/// Undoes COBS in place (the output is never longer than the input) and returns the decoded length, or
/// [`FrameError::Truncated`] when a block promises more bytes than the frame has.
fn cobs_decode_in_place(buf: &mut [u8]) -> Result<usize, FrameError> {
    let (mut read, mut write) = (0, 0);
    while read < buf.len() {
        let code = buf[read] as usize;
        let data = read + 1..read + code;
        if data.end > buf.len() {
            return Err(FrameError::Truncated);
        }
        read = data.end;
        // Blocks are short in zero-heavy data (image background): a plain loop beats a memmove call.
        for i in data {
            buf[write] = buf[i];
            write += 1;
        }
        // Every block but a full one ends in a zero, except the last block of the frame.
        if code != 0xFF && read < buf.len() {
            buf[write] = 0;
            write += 1;
        }
    }
    Ok(write)
}

/// A [`Deframer`] that also decodes each payload into a message of type `M`.
pub struct Decoder<M> {
    deframer: Deframer,
    malformed: u32,
    _message: PhantomData<fn() -> M>,
}

impl<M: Incoming> Default for Decoder<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Incoming> Decoder<M> {
    pub const fn new() -> Self {
        Decoder { deframer: Deframer::new(), malformed: 0, _message: PhantomData }
    }

    pub fn stats(&self) -> FrameStats {
        FrameStats { malformed: self.malformed, ..self.deframer.stats() }
    }

    /// Like [`Deframer::push`], but yields decoded messages. A payload that is not a whole message of
    /// this protocol is reported as [`FrameError::Malformed`], or [`FrameError::VersionMismatch`] when it
    /// is a hello from another protocol version.
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Option<(Result<M, FrameError>, &'a [u8])> {
        let (frame, rest) = self.deframer.push(input)?;
        let message = frame.and_then(|payload| match postcard::take_from_bytes::<M>(payload) {
            Ok((message, [])) => Ok(message),
            _ => {
                // Frames that passed their CRC but hold no message count as malformed, mismatch or not.
                self.malformed += 1;
                match M::peek_hello(payload) {
                    Some((seq, protocol)) => Err(FrameError::VersionMismatch { seq, protocol }),
                    None => Err(FrameError::Malformed),
                }
            }
        });
        Some((message, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        deframer: &mut Deframer,
        mut input: &[u8],
    ) -> std::vec::Vec<Result<std::vec::Vec<u8>, FrameError>> {
        let mut out = std::vec::Vec::new();
        while let Some((frame, rest)) = deframer.push(input) {
            out.push(frame.map(|p| p.to_vec()));
            input = rest;
        }
        out
    }

    fn cobs(src: &[u8]) -> std::vec::Vec<u8> {
        let mut dst = std::vec![0u8; src.len() + src.len() / 254 + 1];
        let n = cobs_encode(src, &mut dst);
        dst.truncate(n);
        dst
    }

    #[test]
    fn cobs_matches_the_standard_worked_examples() {
        // The examples that illustrate COBS (Cheshire & Baker 1999) in its usual references.
        assert_eq!(cobs(&[0x00]), [0x01, 0x01]);
        assert_eq!(cobs(&[0x00, 0x00]), [0x01, 0x01, 0x01]);
        assert_eq!(cobs(&[0x00, 0x11, 0x00]), [0x01, 0x02, 0x11, 0x01]);
        assert_eq!(cobs(&[0x11, 0x22, 0x00, 0x33]), [0x03, 0x11, 0x22, 0x02, 0x33]);
        assert_eq!(cobs(&[0x11, 0x22, 0x33, 0x44]), [0x05, 0x11, 0x22, 0x33, 0x44]);
        assert_eq!(cobs(&[0x11, 0x00, 0x00, 0x00]), [0x02, 0x11, 0x01, 0x01, 0x01]);
        let run: std::vec::Vec<u8> = (0x01..=0xFE).collect();
        let expected: std::vec::Vec<u8> = [0xFF].iter().chain(&run).copied().collect();
        assert_eq!(cobs(&run), expected, "254 non-zero bytes fill exactly one block");
        let with_zero: std::vec::Vec<u8> = [0x00].iter().chain(&run).copied().collect();
        let expected: std::vec::Vec<u8> = [0x01, 0xFF].iter().chain(&run).copied().collect();
        assert_eq!(cobs(&with_zero), expected);
        let with_ff: std::vec::Vec<u8> = run.iter().chain(&[0xFF]).copied().collect();
        let expected: std::vec::Vec<u8> = [0xFF].iter().chain(&run).chain(&[0x02, 0xFF]).copied().collect();
        assert_eq!(cobs(&with_ff), expected, "a 255th byte opens a second block");
    }

    #[test]
    fn a_frame_round_trips_through_the_deframer() {
        let mut encoder = FrameEncoder::new();
        let wire = encoder.encode(&(1u8, 0u32, 300u16)).unwrap().to_vec();
        assert_eq!((wire[0], *wire.last().unwrap()), (0, 0), "frames start and end with a delimiter");
        assert!(!wire[1..wire.len() - 1].contains(&0), "no zero inside a frame");
        let mut deframer = Deframer::new();
        let frames = decode_all(&mut deframer, &wire);
        assert_eq!(frames, [Ok(postcard::to_allocvec(&(1u8, 0u32, 300u16)).unwrap())]);
    }

    #[test]
    fn corrupt_frame_is_dropped_and_next_frame_decodes() {
        let mut encoder = FrameEncoder::new();
        let mut wire = encoder.encode(&[7u8; 32]).unwrap().to_vec();
        wire[10] ^= 0x20;
        let good = encoder.encode(&[9u8; 32]).unwrap().to_vec();
        wire.extend(&good);
        let mut deframer = Deframer::new();
        let frames = decode_all(&mut deframer, &wire);
        assert_eq!(frames.len(), 2);
        assert!(frames[0].is_err(), "the flipped bit must be caught");
        assert_eq!(frames[1], Ok(postcard::to_allocvec(&[9u8; 32]).unwrap()));
        assert_eq!(deframer.stats().frames, 1);
        assert_eq!(deframer.stats().errors(), 1);
    }

    #[test]
    fn oversized_frame_is_dropped_and_counted() {
        let mut wire = std::vec![0u8];
        wire.extend(std::iter::repeat_n(0x7Fu8, MAX_WIRE * 3));
        wire.push(0);
        let mut deframer = Deframer::new();
        assert_eq!(decode_all(&mut deframer, &wire), [Err(FrameError::Oversized)]);
        assert_eq!(deframer.stats().oversized, 1);
    }

    #[test]
    fn a_frame_of_exactly_max_frame_bytes_is_accepted() {
        let mut body = std::vec![0xA5u8; MAX_FRAME - CRC_LEN];
        body.extend(crc32(&body).to_le_bytes());
        let mut wire = std::vec![0u8];
        wire.extend(cobs(&body));
        wire.push(0);
        assert!(wire.len() <= MAX_WIRE, "MAX_WIRE bounds the largest frame");
        let mut deframer = Deframer::new();
        assert_eq!(decode_all(&mut deframer, &wire), [Ok(std::vec![0xA5u8; MAX_FRAME - CRC_LEN])]);
    }

    #[test]
    fn short_and_truncated_frames_are_reported() {
        let mut deframer = Deframer::new();
        // 0x01 decodes to nothing at all; 0x05 0x11 promises four data bytes and gets one.
        assert_eq!(decode_all(&mut deframer, &[0x01, 0x00]), [Err(FrameError::TooShort)]);
        assert_eq!(decode_all(&mut deframer, &[0x05, 0x11, 0x00]), [Err(FrameError::Truncated)]);
        assert_eq!(decode_all(&mut deframer, &[0x00, 0x00, 0x00]), [], "idle delimiters are no frames");
    }

    #[test]
    fn a_frame_split_into_single_bytes_decodes() {
        let mut encoder = FrameEncoder::new();
        let wire = encoder.encode(&"split me anywhere").unwrap().to_vec();
        let mut deframer = Deframer::new();
        let mut frames = std::vec::Vec::new();
        for byte in &wire {
            frames.extend(decode_all(&mut deframer, core::slice::from_ref(byte)));
        }
        assert_eq!(frames, [Ok(postcard::to_allocvec(&"split me anywhere").unwrap())]);
    }
}
