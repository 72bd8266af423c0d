//! The messages, in both directions. Each is a serde type encoded with postcard; every bounded buffer
//! is a heapless type, so a message has a fixed worst-case size and needs no allocator.
//!
//! Wire stability: `Hello` is variant 0 of both [`HostMsg`] and [`DeviceMsg`] and starts with the protocol
//! version, so a peer of any version can read that much of a hello (see [`peek_hello_protocol`]) and report
//! a mismatch clearly. Any other change to these types changes the bytes on the wire: bump
//! [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION) and the golden-byte tests will tell you they broke. The one
//! exception is a variant appended at the end of an enum: every existing message keeps its bytes, an older
//! peer answers the new one with `Malformed`, and a capability flag says who understands it.

use core::fmt;

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

/// Payload bytes in one flash chunk or one frame chunk.
pub const MAX_CHUNK: usize = 1024;
/// Bytes of text in a log line.
pub const MAX_LOG: usize = 120;
/// Bytes of detail in an unsolicited error.
pub const MAX_DETAIL: usize = 64;
/// Bytes of a firmware or host version string.
pub const MAX_VERSION: usize = 24;
/// Bytes of a model id.
pub const MAX_MODEL_ID: usize = 32;

/// Request sequence number; replies echo it so the host can match them and drop stale ones.
pub type Seq = u16;
/// A SHA-256 digest.
pub type Sha256 = [u8; 32];

/// Host → device: one request, numbered.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Request {
    pub seq: Seq,
    pub msg: HostMsg,
}

/// What the host asks of the device.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum HostMsg {
    /// Opens a session and negotiates the protocol version. Replied to with [`DeviceMsg::Hello`].
    /// Must stay variant 0.
    Hello(HostHello),
    /// Liveness check. Replied to with [`DeviceMsg::Ack`].
    Ping,
    /// Starts writing a new bundle to the device's store.
    FlashBegin(FlashBegin),
    /// Bundle bytes at `offset`. Idempotent: a resent chunk is written to the same place.
    FlashChunk(FlashChunk),
    /// Verifies the written bundle (size, sha256, loadable) and makes it the active model.
    FlashCommit,
    /// Drops the bundle being written; the active model is untouched.
    FlashAbort,
    /// One chunk of a frame to assign. The device replies with an ack and, once the frame's last chunk has
    /// arrived, streams a [`DeviceMsg::Assignment`] for it.
    Frame(FrameChunk),
    /// Starts assigning frames from the device's own camera.
    StartStream,
    /// Stops the camera stream.
    StopStream,
    /// Session options.
    SetOptions(Options),
    /// Makes the previous model active again (the one the last flash replaced); the model it replaces
    /// becomes the previous, so a second rollback undoes the first. Needs [`Capabilities::ROLLBACK`].
    FlashRollback,
}

/// The host's half of the hello.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HostHello {
    /// Must stay the first field.
    pub protocol: u16,
    /// The host tool's version, for the device's log.
    pub host_version: String<MAX_VERSION>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FlashBegin {
    /// Total bundle size in bytes.
    pub size: u32,
    /// SHA-256 of the whole bundle.
    pub sha256: Sha256,
    /// Version of the bundle container format.
    pub bundle_version: u16,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FlashChunk {
    pub offset: u32,
    pub data: Vec<u8, MAX_CHUNK>,
}

/// How the pixels of a frame are laid out, row-major, no padding.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// One byte per pixel.
    Gray8,
    /// Three bytes per pixel: red, green, blue.
    Rgb888,
    /// Packed YUV 4:2:2, two bytes per pixel (Y0 U Y1 V per pair of pixels); width must be even.
    Yuyv,
}

impl PixelFormat {
    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Gray8 => 1,
            PixelFormat::Rgb888 => 3,
            PixelFormat::Yuyv => 2,
        }
    }

    /// Bytes of a whole `width` × `height` frame.
    pub const fn frame_bytes(self, width: u16, height: u16) -> usize {
        width as usize * height as usize * self.bytes_per_pixel()
    }
}

/// A piece of a frame. Frames larger than [`MAX_CHUNK`] are sent as several chunks with increasing
/// `offset`; the frame is complete when `offset + data.len()` reaches its size.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FrameChunk {
    pub frame_id: u32,
    pub width: u16,
    pub height: u16,
    pub format: PixelFormat,
    pub offset: u32,
    pub data: Vec<u8, MAX_CHUNK>,
}

/// Session options set by the host. The default: no θ, no stats.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Include the input spatial transformer's 2×3 affine θ in each assignment.
    pub report_stn: bool,
    /// Send [`DeviceMsg::Stats`] this often; 0 turns them off.
    pub stats_interval_ms: u32,
}

/// Device → host.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum DeviceMsg {
    /// Reply to [`HostMsg::Hello`]. Must stay variant 0, with `seq` then the hello's protocol first.
    Hello { seq: Seq, hello: DeviceHello },
    /// The request `seq` was done.
    Ack { seq: Seq },
    /// The request `seq` was refused. `seq` is `None` when the request could not be read at all (a
    /// corrupt or oversized frame): the host then resends whatever it has outstanding.
    Nack { seq: Option<Seq>, code: ErrorCode },
    /// A frame's cluster.
    Assignment(Assignment),
    /// Counters, sent every [`Options::stats_interval_ms`].
    Stats(Stats),
    /// A line of the device's log.
    Log(LogLine),
    /// Something went wrong outside any request (a camera read failed, say).
    Error { code: ErrorCode, detail: String<MAX_DETAIL> },
}

/// The device's half of the hello.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DeviceHello {
    /// Must stay the first field.
    pub protocol: u16,
    pub firmware_version: String<MAX_VERSION>,
    /// The active model; `None` on a board that has never been flashed.
    pub model: Option<ModelInfo>,
    pub capabilities: Capabilities,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String<MAX_MODEL_ID>,
    pub sha256: Sha256,
}

/// What a device can do, as bit flags so that new ones keep old devices readable.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// Accepts `FlashBegin`/`FlashChunk`/`FlashCommit`.
    pub const FLASH: u32 = 1 << 0;
    /// Assigns frames pushed by the host.
    pub const FRAMES: u32 = 1 << 1;
    /// Has a camera and honours `StartStream`.
    pub const CAMERA: u32 = 1 << 2;
    /// Can report the spatial transformer's θ.
    pub const STN: u32 = 1 << 3;
    /// Keeps the model a flash replaced and honours `FlashRollback`.
    pub const ROLLBACK: u32 = 1 << 4;

    pub const fn has(self, flag: u32) -> bool {
        self.0 & flag == flag
    }
}

/// The cluster of one frame.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Assignment {
    pub frame_id: u32,
    pub cluster: u16,
    /// Distance from the frame's embedding to its centroid.
    pub distance: f32,
    /// Distance to the runner-up centroid minus `distance`: small means ambiguous.
    pub margin: f32,
    /// The distance is beyond the threshold calibrated at export: likely something the model never saw.
    pub novel: bool,
    /// Time spent on inference, in microseconds.
    pub inference_us: u32,
    /// The input spatial transformer's 2×3 affine θ (row-major), when asked for and the model has one.
    pub stn: Option<[f32; 6]>,
}

/// Counters since the device started.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub uptime_ms: u64,
    pub frames_received: u32,
    pub assignments_sent: u32,
    /// Frames dropped because the assignment queue was full (oldest first).
    pub frames_dropped: u32,
    /// Incoming wire frames dropped as corrupt, truncated or oversized.
    pub rx_errors: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub text: String<MAX_LOG>,
}

/// Why a request was refused. Errors are data: each carries what the other side needs to act on it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A frame failed its COBS or CRC check, or was cut short. Resend.
    CorruptFrame,
    /// A frame was longer than the protocol allows.
    Oversized { max: u32 },
    /// A frame passed its CRC but is no message this device knows: most likely a protocol mismatch.
    Malformed,
    /// The host's hello named another protocol version.
    ProtocolMismatch { device: u16, host: u16 },
    /// The device has no model yet: flash one first.
    NoModel,
    /// The device cannot take this request now (e.g. a flash is in progress).
    Busy,
    /// This device does not implement the request (see its capabilities).
    Unsupported,
    /// `FlashChunk`/`FlashCommit` without a `FlashBegin`.
    FlashNotStarted,
    /// A chunk at an offset the device cannot accept; resume from `expected`.
    FlashOffset { expected: u32 },
    /// The bundle is larger than the device's store allows.
    FlashTooLarge { max: u32 },
    /// At commit, the written size differs from the announced one.
    FlashSize { expected: u32, written: u32 },
    /// At commit, the SHA-256 differs from the announced one.
    FlashChecksum,
    /// The bundle was written intact but the engine refused to load it.
    FlashInvalidBundle,
    /// Writing to the device's store failed.
    Storage,
    /// A frame's size, format or offset is inconsistent.
    FrameInvalid,
    /// The camera failed.
    Camera,
    /// A device-side failure not covered above; see the device log.
    Internal,
    /// `FlashRollback` on a device that keeps no previous model (never flashed twice).
    NoPrevious,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ErrorCode::CorruptFrame => write!(f, "a frame arrived corrupt (COBS or CRC-32 check failed)"),
            ErrorCode::Oversized { max } => write!(f, "a frame was longer than the {max}-byte maximum"),
            ErrorCode::Malformed => write!(f, "a frame passed its CRC but is not a known message"),
            ErrorCode::ProtocolMismatch { device, host } => {
                write!(f, "protocol mismatch: the device speaks version {device}, the host version {host}")
            }
            ErrorCode::NoModel => write!(f, "the device has no model: flash a bundle first"),
            ErrorCode::Busy => write!(f, "the device is busy"),
            ErrorCode::Unsupported => write!(f, "the device does not support this request"),
            ErrorCode::FlashNotStarted => write!(f, "no flash in progress (FlashBegin first)"),
            ErrorCode::FlashOffset { expected } => {
                write!(f, "unexpected flash offset; resume at byte {expected}")
            }
            ErrorCode::FlashTooLarge { max } => write!(f, "bundle larger than the device's {max}-byte limit"),
            ErrorCode::FlashSize { expected, written } => {
                write!(f, "bundle size mismatch: announced {expected} bytes, received {written}")
            }
            ErrorCode::FlashChecksum => write!(f, "bundle SHA-256 mismatch"),
            ErrorCode::FlashInvalidBundle => write!(f, "the bundle was received intact but does not load"),
            ErrorCode::Storage => write!(f, "the device could not write its store"),
            ErrorCode::FrameInvalid => write!(f, "inconsistent frame size, format or offset"),
            ErrorCode::Camera => write!(f, "camera failure"),
            ErrorCode::Internal => write!(f, "internal device error (see the device log)"),
            ErrorCode::NoPrevious => write!(f, "the device keeps no previous model to roll back to"),
        }
    }
}

impl core::error::Error for ErrorCode {}

/// Reads only the protocol version of a hello, whatever the version of the rest of the message.
///
/// `bytes` is a frame's payload (after the CRC check). Returns `(seq, protocol)` for a host hello
/// (`from_host`) or a device hello, or `None` when the bytes are no hello at all. This relies only on the
/// fields every version keeps: a [`Request`] is `seq, tag, protocol…` and a [`DeviceMsg::Hello`] is
/// `tag, seq, protocol…`, with `Hello` the variant of tag 0 on both sides.
pub fn peek_hello_protocol(bytes: &[u8], from_host: bool) -> Option<(Seq, u16)> {
    let (seq, tag, protocol) = if from_host {
        postcard::take_from_bytes::<(Seq, u32, u16)>(bytes).ok()?.0
    } else {
        let ((tag, seq, protocol), _) = postcard::take_from_bytes::<(u32, Seq, u16)>(bytes).ok()?;
        (seq, tag, protocol)
    };
    (tag == 0).then_some((seq, protocol))
}
