//! The device's side of the protocol: answers each request, reports damaged frames so the host resends,
//! streams the assignments of its own frames (a camera, a folder) between `StartStream` and
//! `StopStream`, and sends periodic stats. Transport-agnostic: it only sees a [`Link`].

use std::time::{Duration, Instant};

use embedded_io::{Read, ReadReady, Write};
use stdac_protocol::{
    Capabilities, DeviceHello, DeviceMsg, ErrorCode, FrameError, HostMsg, LogLevel, LogLine, ModelInfo,
    Options, Request, Stats, MAX_FRAME, PROTOCOL_VERSION,
};

use crate::bundle;
use crate::capture::{Capture, CaptureEvent, CapturedFrame};
use crate::engine::{Engine, EngineError};
use crate::link::{Incoming, Link, LinkError};
use crate::preprocess::{self, FrameRef};
use crate::queue::DropOldestQueue;
use crate::status::{Indicator, NoLed, StatusLed};
use crate::store::{Activated, ModelStore};

/// The largest frame the device assembles: a 1920 × 1080 RGB picture. A larger one is refused with
/// [`ErrorCode::Oversized`] before any memory is taken for it.
pub const MAX_FRAME_BYTES: usize = 1920 * 1080 * 3;

/// The firmware's version, as reported in its hello.
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Messages waiting to be sent at most; beyond it the oldest is dropped (and a dropped assignment
/// counted as a dropped frame). [`Server::run`] empties it after every step, so it fills only when the
/// caller stops taking messages.
pub const OUTBOX_CAPACITY: usize = 32;

/// How long the streaming run loop waits for a frame before looking at the line again: the most a
/// request waits while a stream is on.
pub const STREAM_WAIT: Duration = Duration::from_millis(5);

pub struct Server {
    capabilities: Capabilities,
    model: Option<ModelInfo>,
    options: Options,
    stats: Stats,
    started: Instant,
    last_stats: Instant,
    /// The protocol of a host whose hello did not match ours; its requests are refused until a hello
    /// that matches.
    mismatched_host: Option<u16>,
    /// The last request and its reply: a resent request (its reply was lost on the line) gets the same
    /// reply again instead of being carried out twice.
    last: Option<(Request, DeviceMsg)>,
    /// The model store (`--store DIR`); `None` on a device that cannot be flashed.
    store: Option<ModelStore>,
    /// The active model's engine.
    engine: Option<Engine>,
    /// The frame being assembled from its chunks.
    frame: FrameAssembly,
    /// Messages to send after the reply (assignments, stream errors), oldest first.
    outbox: DropOldestQueue<DeviceMsg>,
    /// The last frame's assignment: sent again when that frame's chunk is resent, since the host resends
    /// when the assignment was lost on the line.
    last_assignment: Option<stdac_protocol::Assignment>,
    /// The board's own frames (`--frames`, `--camera`); `None` on a device without a source.
    capture: Option<Capture>,
    /// The status LED: lit while a frame is assigned or a flash chunk written.
    led: Box<dyn Indicator>,
}

/// A frame's chunks as they arrive; the buffer is kept from frame to frame.
#[derive(Default)]
struct FrameAssembly {
    /// `(frame_id, width, height, format)` of the frame in progress; `None` when none is.
    header: Option<(u32, u16, u16, stdac_protocol::PixelFormat)>,
    /// Bytes received from offset 0 without a gap.
    bytes: Vec<u8>,
    /// The whole frame's size.
    size: usize,
    /// The frame is complete, checked and acked, but not yet assigned: [`Server::run_pending`] runs
    /// the engine on it once the ack is on its way, so the host can send the next frame meanwhile.
    pending: bool,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A device with no model, no camera and no store: it answers hellos and pings, and refuses frames
    /// with [`ErrorCode::NoModel`].
    pub fn new() -> Self {
        let now = Instant::now();
        Server {
            capabilities: Capabilities::default(),
            model: None,
            options: Options::default(),
            stats: Stats::default(),
            started: now,
            last_stats: now,
            mismatched_host: None,
            last: None,
            store: None,
            engine: None,
            frame: FrameAssembly::default(),
            outbox: DropOldestQueue::new(OUTBOX_CAPACITY),
            last_assignment: None,
            capture: None,
            led: Box::new(StatusLed::new(NoLed)),
        }
    }

    /// The device streams frames from `capture` between `StartStream` and `StopStream`, and says so in
    /// its hello ([`Capabilities::CAMERA`]).
    pub fn with_capture(mut self, capture: Capture) -> Self {
        self.capture = Some(capture);
        self.update_capabilities();
        self
    }

    /// The device shows its activity on `led`.
    pub fn with_led(mut self, led: impl Indicator + 'static) -> Self {
        self.led = Box::new(led);
        self
    }

    /// The frame source's capture, when the device has one.
    pub fn capture(&self) -> Option<&Capture> {
        self.capture.as_ref()
    }

    /// A device that flashes into `store` and assigns frames with its active model (loaded now). A
    /// store whose active model does not load leaves the device without a model (it can be flashed).
    pub fn with_store(store: ModelStore) -> Self {
        let mut server = Server::new();
        let engine = match store.load_active_engine() {
            Ok(engine) => engine,
            Err(error) => {
                eprintln!("stdac-device: the active model does not load: {error}");
                None
            }
        };
        server.model = engine.as_ref().and(store.active()).map(|model| model.info());
        server.engine = engine;
        server.store = Some(store);
        server.update_capabilities();
        server
    }

    /// The model store, when the device has one.
    pub fn store(&self) -> Option<&ModelStore> {
        self.store.as_ref()
    }

    /// The counters so far, streamed frames included: every frame received is, once the stream has
    /// stopped and the outbox is empty, either assigned, dropped or refused.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        if let Some(capture) = &self.capture {
            let counts = capture.counts();
            stats.frames_received = stats.frames_received.saturating_add(counts.captured);
            stats.frames_dropped = stats.frames_dropped.saturating_add(counts.dropped);
        }
        stats
    }

    /// The next message to send that is no reply (an assignment, a stream's error), oldest first. An
    /// assignment is counted as sent here, when it leaves the outbox.
    pub fn take_outgoing(&mut self) -> Option<DeviceMsg> {
        // A frame acked but not yet assigned comes first: its assignment is what the host waits for.
        self.run_pending();
        let msg = self.outbox.pop()?;
        if matches!(msg, DeviceMsg::Assignment(_)) {
            self.stats.assignments_sent += 1;
        }
        Some(msg)
    }

    /// Queues a message to send after the reply; a full outbox drops its oldest.
    fn send_later(&mut self, msg: DeviceMsg) {
        if let Some(DeviceMsg::Assignment(_)) = self.outbox.push(msg) {
            self.stats.frames_dropped += 1;
        }
    }

    /// Whether a stream is on (between `StartStream` and `StopStream`).
    pub fn is_streaming(&self) -> bool {
        self.capture.as_ref().is_some_and(Capture::is_streaming)
    }

    fn update_capabilities(&mut self) {
        let mut flags = 0;
        if self.store.is_some() {
            flags |= Capabilities::FLASH | Capabilities::FRAMES | Capabilities::ROLLBACK;
        }
        if self.engine.as_ref().is_some_and(|engine| engine.manifest().outputs.iter().any(|o| o == "theta")) {
            flags |= Capabilities::STN;
        }
        if self.capture.is_some() {
            flags |= Capabilities::CAMERA;
        }
        self.capabilities = Capabilities(flags);
    }

    pub fn hello(&self) -> DeviceHello {
        DeviceHello {
            protocol: PROTOCOL_VERSION,
            firmware_version: heapless::String::try_from(FIRMWARE_VERSION).unwrap_or_default(),
            model: self.model.clone(),
            capabilities: self.capabilities,
        }
    }

    /// Serves the link until it fails (the line closed, an I/O error).
    ///
    /// While a stream produces frames, each turn answers at most one waiting request and then assigns
    /// at most one frame, so neither starves the other; the line is read only when bytes wait on it
    /// (its read timeout would otherwise pace the stream), and the turn waits for a frame at most
    /// [`STREAM_WAIT`] instead. Each assignment is sent as soon as it is made.
    pub fn run<T: Read + Write + ReadReady>(
        &mut self,
        link: &mut Link<T>,
    ) -> Result<(), LinkError<T::Error>> {
        loop {
            let stream_work = self.capture.as_ref().is_some_and(Capture::has_work);
            let request_waiting = link.input_ready()?;
            if !stream_work || request_waiting {
                if let Some(incoming) = link.poll()? {
                    self.stats.rx_errors = link.stats().errors();
                    if let Some(reply) = self.handle(incoming) {
                        link.send(&reply)?;
                    }
                    // Only now, with the ack on the line, the frame it completed is assigned: the host
                    // sends its next frame while the engine runs.
                    self.run_pending();
                }
            }
            if stream_work {
                self.stream_step(if request_waiting { Duration::ZERO } else { STREAM_WAIT });
            }
            while let Some(msg) = self.take_outgoing() {
                link.send(&msg)?;
            }
            if let Some(stats) = self.stats_due(Instant::now()) {
                self.stats.rx_errors = link.stats().errors();
                link.send(&DeviceMsg::Stats(stats))?;
            }
        }
    }

    /// One step of the stream: tells the host of a capture event (a failed read, the source's end), or
    /// else assigns the oldest queued frame, waiting up to `wait` for one. What it makes goes to the
    /// outbox ([`Server::take_outgoing`]). Returns whether it did anything.
    pub fn stream_step(&mut self, wait: Duration) -> bool {
        let Some(capture) = &self.capture else { return false };
        if let Some(event) = capture.next_event() {
            let msg = match event {
                CaptureEvent::Failed(detail) => {
                    DeviceMsg::Error { code: ErrorCode::Camera, detail: fit(&detail) }
                }
                CaptureEvent::Ended => {
                    let text = format!("{}: no more frames", capture.describe());
                    DeviceMsg::Log(LogLine { level: LogLevel::Info, text: fit(&text) })
                }
            };
            self.send_later(msg);
            return true;
        }
        match capture.next_frame(wait) {
            Some(captured) => {
                self.assign_streamed(captured);
                true
            }
            None => false,
        }
    }

    /// Assigns one frame of the stream; its assignment, or the error that stopped it, goes to the
    /// outbox.
    fn assign_streamed(&mut self, captured: CapturedFrame) {
        let Some(engine) = &self.engine else {
            // StartStream needs a model and nothing unloads one, so this is a bug: say so and go on.
            self.send_later(DeviceMsg::Error {
                code: ErrorCode::NoModel,
                detail: fit("a streamed frame without a model"),
            });
            return;
        };
        self.led.busy();
        let started = Instant::now();
        let result =
            captured.frame.as_ref().map_err(EngineError::from).and_then(|frame| engine.assign_frame(frame));
        let inference_us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        let msg = match result {
            Ok(assignment) => {
                self.led.idle();
                DeviceMsg::Assignment(wire_assignment(
                    captured.number,
                    &assignment,
                    inference_us,
                    self.options.report_stn,
                ))
            }
            Err(error) => {
                self.led.failed();
                eprintln!("stdac-device: streamed frame {} not assigned: {error}", captured.number);
                let code = match error {
                    EngineError::Frame(_) => ErrorCode::FrameInvalid,
                    _ => ErrorCode::Internal,
                };
                DeviceMsg::Error { code, detail: fit(&format!("frame {}: {error}", captured.number)) }
            }
        };
        self.send_later(msg);
    }

    /// `StartStream`: frames flow from the source and their assignments follow.
    fn start_stream(&mut self) -> Result<(), ErrorCode> {
        let capture = self.capture.as_ref().ok_or(ErrorCode::Unsupported)?;
        if self.engine.is_none() {
            return Err(ErrorCode::NoModel);
        }
        capture.start();
        eprintln!("stdac-device: streaming from {}", capture.describe());
        Ok(())
    }

    /// `StopStream`: no more frames; those still queued are discarded (counted as dropped).
    fn stop_stream(&mut self) -> Result<(), ErrorCode> {
        let capture = self.capture.as_ref().ok_or(ErrorCode::Unsupported)?;
        let discarded = capture.stop();
        eprintln!("stdac-device: stream stopped ({discarded} queued frames discarded)");
        Ok(())
    }

    /// The reply to one incoming request or framing error, if it gets one.
    pub fn handle(&mut self, incoming: Incoming) -> Option<DeviceMsg> {
        // A frame left pending by the previous request is assigned before this one is looked at: its
        // bytes are in the buffer a new chunk would overwrite, and its assignment goes out first.
        self.run_pending();
        let request = match incoming {
            Ok(request) => request,
            Err(FrameError::VersionMismatch { seq, protocol }) => return Some(self.greet(seq, protocol)),
            Err(error) => {
                let code = match error {
                    FrameError::Oversized => ErrorCode::Oversized { max: MAX_FRAME as u32 },
                    FrameError::Malformed => ErrorCode::Malformed,
                    _ => ErrorCode::CorruptFrame,
                };
                return Some(DeviceMsg::Nack { seq: None, code });
            }
        };
        if let Some((last_request, last_reply)) = &self.last {
            if *last_request == request {
                let reply = last_reply.clone();
                if let HostMsg::Frame(chunk) = &request.msg {
                    self.resend_assignment(chunk.frame_id);
                }
                return Some(reply);
            }
        }
        let reply = self.answer(&request);
        self.last = Some((request, reply.clone()));
        Some(reply)
    }

    fn answer(&mut self, request: &Request) -> DeviceMsg {
        let seq = request.seq;
        let nack = |code| DeviceMsg::Nack { seq: Some(seq), code };
        if let HostMsg::Hello(hello) = &request.msg {
            return self.greet(seq, hello.protocol);
        }
        if let Some(host) = self.mismatched_host {
            return nack(ErrorCode::ProtocolMismatch { device: PROTOCOL_VERSION, host });
        }
        match &request.msg {
            HostMsg::Hello(_) => unreachable!("answered above"),
            HostMsg::Ping => DeviceMsg::Ack { seq },
            HostMsg::SetOptions(options) => {
                self.options = *options;
                DeviceMsg::Ack { seq }
            }
            HostMsg::Frame(chunk) => match self.frame_chunk(chunk) {
                Ok(()) => DeviceMsg::Ack { seq },
                Err(code) => nack(code),
            },
            HostMsg::FlashBegin(_)
            | HostMsg::FlashChunk(_)
            | HostMsg::FlashCommit
            | HostMsg::FlashAbort
            | HostMsg::FlashRollback => match self.flash(&request.msg) {
                Ok(()) => DeviceMsg::Ack { seq },
                Err(code) => nack(code),
            },
            HostMsg::StartStream => match self.start_stream() {
                Ok(()) => DeviceMsg::Ack { seq },
                Err(code) => nack(code),
            },
            HostMsg::StopStream => match self.stop_stream() {
                Ok(()) => DeviceMsg::Ack { seq },
                Err(code) => nack(code),
            },
        }
    }

    /// Carries out one flash request on the store; the active model keeps serving whatever happens.
    fn flash(&mut self, msg: &HostMsg) -> Result<(), ErrorCode> {
        let store = self.store.as_mut().ok_or(ErrorCode::Unsupported)?;
        let result = match msg {
            HostMsg::FlashBegin(begin) => {
                if begin.bundle_version != bundle::FORMAT_VERSION {
                    eprintln!(
                        "stdac-device: FlashBegin field `bundle_version` is {}, this firmware reads bundle \
                         format {}: export the bundle again with a matching stdac",
                        begin.bundle_version,
                        bundle::FORMAT_VERSION
                    );
                    return Err(ErrorCode::FlashInvalidBundle);
                }
                store.begin(begin.size.into(), begin.sha256)
            }
            HostMsg::FlashChunk(chunk) => {
                self.led.busy();
                let written = store.write_chunk(chunk.offset.into(), &chunk.data);
                if written.is_ok() {
                    self.led.idle();
                }
                written
            }
            HostMsg::FlashCommit => store.commit().map(|activated| self.activate(activated, "flashed")),
            HostMsg::FlashAbort => store.abort(),
            HostMsg::FlashRollback => {
                store.rollback().map(|activated| self.activate(activated, "rolled back to"))
            }
            _ => unreachable!("only flash requests come here"),
        };
        result.map_err(|error| {
            // An empty chunk is the host asking where to resume: the answer is no failure to log.
            let probe = matches!(msg, HostMsg::FlashChunk(chunk) if chunk.data.is_empty());
            if !probe {
                eprintln!("stdac-device: flash refused: {error}");
                self.led.failed();
            }
            error.code()
        })
    }

    /// Adds one chunk to the frame in progress. The frame's last chunk checks it (a malformed frame is
    /// refused here, in the chunk's reply) and leaves it pending: [`Server::run_pending`] assigns it
    /// after the ack.
    fn frame_chunk(&mut self, chunk: &stdac_protocol::FrameChunk) -> Result<(), ErrorCode> {
        if self.engine.is_none() {
            self.stats.frames_received += 1;
            return Err(ErrorCode::NoModel);
        }
        let header = (chunk.frame_id, chunk.width, chunk.height, chunk.format);
        let frame = &mut self.frame;
        debug_assert!(!frame.pending, "handle assigns a pending frame before the next chunk");
        if frame.header != Some(header) {
            // A new frame (or the same id with other dimensions) starts over.
            frame.header = None;
            frame.bytes.clear();
            let size = chunk.format.frame_bytes(chunk.width, chunk.height);
            if size > MAX_FRAME_BYTES {
                self.stats.frames_dropped += 1;
                return Err(ErrorCode::Oversized { max: MAX_FRAME_BYTES as u32 });
            }
            if size == 0 {
                return Err(ErrorCode::FrameInvalid);
            }
            self.stats.frames_received += 1;
            frame.header = Some(header);
            frame.size = size;
        }
        let offset = chunk.offset as usize;
        let end = offset.checked_add(chunk.data.len()).ok_or(ErrorCode::FrameInvalid)?;
        if offset > frame.bytes.len() || end > frame.size {
            return Err(ErrorCode::FrameInvalid);
        }
        if frame.bytes.len() == frame.size {
            // The last chunk of a frame already assigned, resent (its assignment was lost): the
            // assignment again, not a second inference. Its other chunks, resent, need no answer.
            if end == frame.size {
                self.resend_assignment(chunk.frame_id);
            }
            return Ok(());
        }
        // Chunks are idempotent: a resent one overwrites what it wrote before.
        let overlap = end.min(frame.bytes.len());
        frame.bytes[offset..overlap].copy_from_slice(&chunk.data[..overlap - offset]);
        frame.bytes.extend_from_slice(&chunk.data[overlap - offset..]);
        if frame.bytes.len() < frame.size {
            return Ok(());
        }
        // The cheap checks now, so that a malformed frame is still refused in this chunk's reply;
        // the engine runs after the ack.
        if let Err(error) = assembled_frame(header, &frame.bytes).check() {
            frame.header = None;
            self.led.failed();
            eprintln!("stdac-device: frame {} refused: {error}", chunk.frame_id);
            return Err(ErrorCode::FrameInvalid);
        }
        frame.pending = true;
        Ok(())
    }

    /// Assigns the frame acked but not yet assigned, if there is one: its assignment, or an
    /// [`DeviceMsg::Error`] naming it when the engine fails, goes to the outbox. [`Server::run`] calls it
    /// right after sending a reply; [`Server::take_outgoing`] and [`Server::handle`] call it too, so a
    /// caller driving the server by hand sees the same order of messages.
    pub fn run_pending(&mut self) {
        if !std::mem::take(&mut self.frame.pending) {
            return;
        }
        let (Some(engine), Some(header)) = (&self.engine, self.frame.header) else {
            // A pending frame needs both (set together in frame_chunk, and nothing unloads a model).
            return;
        };
        let frame_id = header.0;
        self.led.busy();
        let started = Instant::now();
        let result = engine.assign_frame(assembled_frame(header, &self.frame.bytes));
        let inference_us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        let msg = match result {
            Ok(assignment) => {
                self.led.idle();
                let assignment =
                    wire_assignment(frame_id, &assignment, inference_us, self.options.report_stn);
                self.last_assignment = Some(assignment.clone());
                DeviceMsg::Assignment(assignment)
            }
            Err(error) => {
                self.led.failed();
                // Forgotten, so that the host resending it has it assembled and tried again.
                self.frame.header = None;
                eprintln!("stdac-device: frame {frame_id} not assigned: {error}");
                let code = match error {
                    EngineError::Frame(_) => ErrorCode::FrameInvalid,
                    _ => ErrorCode::Internal,
                };
                DeviceMsg::Error { code, detail: fit(&format!("frame {frame_id}: {error}")) }
            }
        };
        self.send_later(msg);
    }

    /// Serves frames with a model the store just made active (`how`: flashed, rolled back to).
    fn activate(&mut self, activated: Activated, how: &str) {
        let model = &activated.model;
        eprintln!("stdac-device: {how} model {} (SHA-256 {}), now active", model.name, hex(&model.sha256));
        self.model = Some(model.info());
        self.engine = Some(activated.engine);
        self.update_capabilities();
    }

    /// Queues the last assignment again if it is frame `frame_id`'s.
    fn resend_assignment(&mut self, frame_id: u32) {
        if let Some(assignment) = self.last_assignment.clone().filter(|a| a.frame_id == frame_id) {
            self.send_later(DeviceMsg::Assignment(assignment));
        }
    }

    /// Replies to a hello with ours, whatever the host's version, so that the host can name both
    /// versions; a mismatch is also said here, on the device's side.
    fn greet(&mut self, seq: u16, host_protocol: u16) -> DeviceMsg {
        if host_protocol == PROTOCOL_VERSION {
            self.mismatched_host = None;
        } else {
            eprintln!(
                "stdac-device: protocol mismatch: the host speaks version {host_protocol}, this firmware \
                 version {PROTOCOL_VERSION}; its requests will be refused until it says hello in version \
                 {PROTOCOL_VERSION}"
            );
            self.mismatched_host = Some(host_protocol);
        }
        DeviceMsg::Hello { seq, hello: self.hello() }
    }

    /// Stats to send now, if the host asked for them and the interval has passed.
    fn stats_due(&mut self, now: Instant) -> Option<Stats> {
        let interval = self.options.stats_interval_ms;
        if interval == 0 || now.duration_since(self.last_stats) < Duration::from_millis(interval.into()) {
            return None;
        }
        self.last_stats = now;
        self.stats.uptime_ms = now.duration_since(self.started).as_millis() as u64;
        Some(self.stats())
    }
}

/// The assembled pixels of a frame with header `(frame_id, width, height, format)`, as the engine reads
/// them.
fn assembled_frame(
    (_, width, height, format): (u32, u16, u16, stdac_protocol::PixelFormat),
    bytes: &[u8],
) -> FrameRef<'_> {
    let format = match format {
        stdac_protocol::PixelFormat::Gray8 => preprocess::PixelFormat::Grey8,
        stdac_protocol::PixelFormat::Rgb888 => preprocess::PixelFormat::Rgb8,
        stdac_protocol::PixelFormat::Yuyv => preprocess::PixelFormat::Yuyv,
    };
    FrameRef { format, width: width.into(), height: height.into(), bytes }
}

/// An engine's assignment as the protocol sends it; θ only when the host asked for it.
fn wire_assignment(
    frame_id: u32,
    assignment: &crate::engine::Assignment,
    inference_us: u32,
    report_stn: bool,
) -> stdac_protocol::Assignment {
    stdac_protocol::Assignment {
        frame_id,
        cluster: u16::try_from(assignment.cluster).unwrap_or(u16::MAX),
        distance: assignment.distance,
        margin: assignment.margin,
        novel: assignment.novel,
        inference_us,
        stn: if report_stn { assignment.theta } else { None },
    }
}

/// `text` cut to what a message's fixed-size string holds (at a character boundary); the device log
/// keeps the whole text.
fn fit<const N: usize>(text: &str) -> heapless::String<N> {
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    heapless::String::try_from(&text[..end]).unwrap_or_default()
}

/// Lowercase hex of a digest, for the log.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stdac_protocol::{FrameChunk, HostHello, PixelFormat};

    fn request(seq: u16, msg: HostMsg) -> Incoming {
        Ok(Request { seq, msg })
    }

    fn host_hello(protocol: u16) -> HostMsg {
        HostMsg::Hello(HostHello { protocol, host_version: heapless::String::try_from("test").unwrap() })
    }

    #[test]
    fn hello_reports_versions_and_no_model() {
        let mut server = Server::new();
        let Some(DeviceMsg::Hello { seq: 3, hello }) =
            server.handle(request(3, host_hello(PROTOCOL_VERSION)))
        else {
            panic!("a hello is answered with a hello echoing its seq")
        };
        assert_eq!(hello.protocol, PROTOCOL_VERSION);
        assert_eq!(hello.firmware_version.as_str(), FIRMWARE_VERSION);
        assert_eq!(hello.model, None, "a board never flashed says so");
    }

    #[test]
    fn ping_is_acked_with_its_seq() {
        assert_eq!(Server::new().handle(request(41, HostMsg::Ping)), Some(DeviceMsg::Ack { seq: 41 }));
    }

    #[test]
    fn frames_without_a_model_are_refused_clearly() {
        let frame = FrameChunk {
            frame_id: 1,
            width: 28,
            height: 28,
            format: PixelFormat::Gray8,
            offset: 0,
            data: heapless::Vec::new(),
        };
        let reply = Server::new().handle(request(2, HostMsg::Frame(frame)));
        assert_eq!(reply, Some(DeviceMsg::Nack { seq: Some(2), code: ErrorCode::NoModel }));
    }

    #[test]
    fn damaged_frames_get_a_nack_without_seq_so_the_host_resends() {
        let mut server = Server::new();
        for (error, code) in [
            (FrameError::Crc, ErrorCode::CorruptFrame),
            (FrameError::Truncated, ErrorCode::CorruptFrame),
            (FrameError::TooShort, ErrorCode::CorruptFrame),
            (FrameError::Oversized, ErrorCode::Oversized { max: MAX_FRAME as u32 }),
            (FrameError::Malformed, ErrorCode::Malformed),
        ] {
            assert_eq!(server.handle(Err(error)), Some(DeviceMsg::Nack { seq: None, code }));
        }
    }

    #[test]
    fn a_mismatched_hello_is_answered_and_later_requests_refused_until_a_matching_hello() {
        let mut server = Server::new();
        let other = PROTOCOL_VERSION + 1;
        let Some(DeviceMsg::Hello { hello, .. }) = server.handle(request(1, host_hello(other))) else {
            panic!("the device still says which version it speaks")
        };
        assert_eq!(hello.protocol, PROTOCOL_VERSION);
        let refused = DeviceMsg::Nack {
            seq: Some(2),
            code: ErrorCode::ProtocolMismatch { device: PROTOCOL_VERSION, host: other },
        };
        assert_eq!(server.handle(request(2, HostMsg::Ping)), Some(refused));
        server.handle(request(3, host_hello(PROTOCOL_VERSION)));
        assert_eq!(server.handle(request(4, HostMsg::Ping)), Some(DeviceMsg::Ack { seq: 4 }));
    }

    #[test]
    fn an_undecodable_hello_from_another_version_is_answered_with_ours() {
        let mut server = Server::new();
        let reply = server.handle(Err(FrameError::VersionMismatch { seq: 8, protocol: 9 }));
        assert!(matches!(reply, Some(DeviceMsg::Hello { seq: 8, .. })));
        assert!(matches!(
            server.handle(request(9, HostMsg::Ping)),
            Some(DeviceMsg::Nack {
                code: ErrorCode::ProtocolMismatch { device: PROTOCOL_VERSION, host: 9 },
                ..
            })
        ));
    }

    #[test]
    fn a_resent_request_gets_the_same_reply_without_being_done_twice() {
        let mut server = Server::new();
        let frame = HostMsg::Frame(FrameChunk {
            frame_id: 5,
            width: 1,
            height: 1,
            format: PixelFormat::Gray8,
            offset: 0,
            data: heapless::Vec::from_slice(&[7]).unwrap(),
        });
        let first = server.handle(request(6, frame.clone()));
        let again = server.handle(request(6, frame));
        assert_eq!(first, again);
        assert_eq!(server.stats.frames_received, 1, "the resent frame is not counted twice");
    }

    #[test]
    fn stats_are_sent_only_when_asked_for_and_due() {
        let mut server = Server::new();
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(server.stats_due(later), None, "off by default");
        let options = Options { report_stn: false, stats_interval_ms: 1000 };
        server.handle(request(1, HostMsg::SetOptions(options)));
        let stats = server.stats_due(later).expect("five seconds is past a one-second interval");
        assert!(stats.uptime_ms >= 5000);
        assert_eq!(server.stats_due(later), None, "not again until another interval has passed");
    }

    mod with_store {
        use super::*;
        use crate::bundle::{Bundle, Manifest};
        use crate::onnx_support as onnx;
        use crate::status::StatusLed;
        use sha2::{Digest, Sha256};
        use std::sync::{Arc, Mutex};
        use stdac_protocol::{FlashBegin, FlashChunk, FrameChunk, PixelFormat, MAX_CHUNK};

        /// A real bundle: a 28 × 28 grey image → Flatten → Gemm to a 2-d embedding (the sum of the
        /// left half's pixels, the sum of the right half's, scaled), with `theta` when asked.
        fn bundle(name: &str, scale: f32, theta: bool) -> Vec<u8> {
            bundle_taking(name, scale, theta, &[-1, 1, 28, 28])
        }

        /// [`bundle`] whose input has the shape `input` (784 values in all).
        fn bundle_taking(name: &str, scale: f32, theta: bool, input: &[i64]) -> Vec<u8> {
            let mut w = vec![0.0f32; 784 * 2];
            for row in 0..28 {
                for col in 0..28 {
                    let side = usize::from(col >= 14);
                    w[(row * 28 + col) * 2 + side] = scale / 392.0;
                }
            }
            let mut nodes = vec![
                onnx::node("Flatten", &["image"], "flat", vec![]),
                onnx::node("Gemm", &["flat", "w"], "embedding", vec![]),
            ];
            let mut initializers = vec![onnx::floats("w", &[784, 2], &w)];
            let mut outputs = vec![onnx::value("embedding", &[-1, 2])];
            let mut names = vec!["embedding".to_string()];
            if theta {
                nodes.push(onnx::node("Gemm", &["flat", "w_theta", "identity"], "flat_theta", vec![]));
                nodes.push(onnx::node("Reshape", &["flat_theta", "theta_shape"], "theta", vec![]));
                initializers.push(onnx::floats("w_theta", &[784, 6], &vec![0.001; 784 * 6]));
                initializers.push(onnx::floats("identity", &[6], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]));
                initializers.push(onnx::int64s("theta_shape", &[-1, 2, 3]));
                outputs.push(onnx::value("theta", &[-1, 2, 3]));
                names.push("theta".into());
            }
            let graph = onnx::model(nodes, initializers, vec![onnx::value("image", input)], outputs);
            let manifest = Manifest {
                family: if theta { "st-dac" } else { "autoencoder" }.into(),
                outputs: names,
                novelty_threshold: Some(0.5),
                ..crate::manifest_support::manifest(name, input)
            };
            Bundle::new(manifest, graph).to_bytes()
        }

        fn sha256(bytes: &[u8]) -> [u8; 32] {
            Sha256::digest(bytes).into()
        }

        /// Flashes `bytes` in chunks of `chunk` bytes (seq from `seq`), `damage` applied to each
        /// chunk's data before sending; returns the commit's reply.
        fn flash(server: &mut Server, seq: &mut u16, bytes: &[u8], chunk: usize) -> DeviceMsg {
            let mut send = |server: &mut Server, msg| {
                *seq += 1;
                server.handle(request(*seq, msg)).unwrap()
            };
            let begin = FlashBegin {
                size: bytes.len() as u32,
                sha256: sha256(bytes),
                bundle_version: crate::bundle::FORMAT_VERSION,
            };
            assert!(matches!(send(server, HostMsg::FlashBegin(begin)), DeviceMsg::Ack { .. }));
            for (i, piece) in bytes.chunks(chunk).enumerate() {
                let msg = HostMsg::FlashChunk(FlashChunk {
                    offset: (i * chunk) as u32,
                    data: heapless::Vec::from_slice(piece).unwrap(),
                });
                assert!(matches!(send(server, msg), DeviceMsg::Ack { .. }), "chunk {i}");
            }
            send(server, HostMsg::FlashCommit)
        }

        /// Flashes the halves model (`bundle("m", 1.0, false)`); returns the last `seq` used.
        fn flash_test_model(server: &mut Server) -> u16 {
            let mut seq = 0;
            assert_eq!(flash(server, &mut seq, &bundle("m", 1.0, false), MAX_CHUNK), DeviceMsg::Ack { seq });
            seq
        }

        /// A 28 × 28 grey picture: the left half `left`, the right half `right`.
        fn picture(left: u8, right: u8) -> Vec<u8> {
            (0..784).map(|i| if i % 28 < 14 { left } else { right }).collect()
        }

        /// Sends `pixels` as frame `id` in chunks; returns the replies and what was sent after them.
        fn send_frame(
            server: &mut Server,
            seq: &mut u16,
            id: u32,
            pixels: &[u8],
            chunk: usize,
        ) -> (Vec<DeviceMsg>, Vec<DeviceMsg>) {
            let mut replies = Vec::new();
            for (i, piece) in pixels.chunks(chunk).enumerate() {
                *seq += 1;
                let msg = HostMsg::Frame(FrameChunk {
                    frame_id: id,
                    width: 28,
                    height: 28,
                    format: PixelFormat::Gray8,
                    offset: (i * chunk) as u32,
                    data: heapless::Vec::from_slice(piece).unwrap(),
                });
                replies.push(server.handle(request(*seq, msg)).unwrap());
            }
            let mut sent = Vec::new();
            while let Some(msg) = server.take_outgoing() {
                sent.push(msg);
            }
            (replies, sent)
        }

        fn expected(engine: &Engine, id: u32, pixels: &[u8], stn: bool) -> stdac_protocol::Assignment {
            let frame = FrameRef::new(crate::preprocess::PixelFormat::Grey8, 28, 28, pixels).unwrap();
            let a = engine.assign_frame(frame).unwrap();
            stdac_protocol::Assignment {
                frame_id: id,
                cluster: a.cluster as u16,
                distance: a.distance,
                margin: a.margin,
                novel: a.novel,
                inference_us: 0,
                stn: if stn { a.theta } else { None },
            }
        }

        fn assignment(msg: &DeviceMsg) -> stdac_protocol::Assignment {
            let DeviceMsg::Assignment(a) = msg else { panic!("not an assignment: {msg:?}") };
            stdac_protocol::Assignment { inference_us: 0, ..a.clone() }
        }

        #[test]
        fn a_flashed_bundle_is_reported_and_assigns_frames_like_the_engine() {
            let dir = tempfile::tempdir().unwrap();
            let mut server = Server::with_store(ModelStore::open(dir.path()).unwrap());
            let hello = server.hello();
            assert_eq!(hello.model, None);
            assert!(hello.capabilities.has(Capabilities::FLASH | Capabilities::FRAMES));
            assert!(!hello.capabilities.has(Capabilities::STN));
            let mut seq = 0;
            let (replies, sent) = send_frame(&mut server, &mut seq, 1, &picture(255, 0), 300);
            assert!(sent.is_empty());
            assert_eq!(replies[0], DeviceMsg::Nack { seq: Some(1), code: ErrorCode::NoModel });

            let bytes = bundle("halves", 1.0, false);
            assert!(bytes.len() > 3 * MAX_CHUNK, "several chunks");
            assert_eq!(flash(&mut server, &mut seq, &bytes, MAX_CHUNK), DeviceMsg::Ack { seq });
            let model = server.hello().model.expect("the flashed model is active");
            assert_eq!((model.id.as_str(), model.sha256), ("halves", sha256(&bytes)));

            let engine = Engine::load(Bundle::from_bytes(&bytes, "test").unwrap(), "test").unwrap();
            for (id, pixels) in [(10, picture(255, 0)), (11, picture(0, 255)), (12, picture(128, 40))] {
                let (replies, sent) = send_frame(&mut server, &mut seq, id, &pixels, 300);
                assert!(replies.iter().all(|r| matches!(r, DeviceMsg::Ack { .. })), "{replies:?}");
                assert_eq!(sent.len(), 1);
                assert_eq!(assignment(&sent[0]), expected(&engine, id, &pixels, false));
            }
            assert_eq!(
                assignment(&send_frame(&mut server, &mut seq, 13, &picture(255, 0), 784).1[0]).cluster,
                0
            );
            assert_eq!(
                assignment(&send_frame(&mut server, &mut seq, 14, &picture(0, 255), 784).1[0]).cluster,
                1
            );
            assert_eq!(server.stats().assignments_sent, 5);

            // A restart with the same store keeps the model.
            drop(server);
            let server = Server::with_store(ModelStore::open(dir.path()).unwrap());
            assert_eq!(server.hello().model, Some(model));
        }

        #[test]
        fn theta_is_reported_when_asked_and_the_model_has_one() {
            let dir = tempfile::tempdir().unwrap();
            let mut server = Server::with_store(ModelStore::open(dir.path()).unwrap());
            let mut seq = 0;
            let bytes = bundle("stn", 1.0, true);
            assert_eq!(flash(&mut server, &mut seq, &bytes, 700), DeviceMsg::Ack { seq });
            assert!(server.hello().capabilities.has(Capabilities::STN));
            let engine = Engine::load(Bundle::from_bytes(&bytes, "test").unwrap(), "test").unwrap();
            let pixels = picture(200, 10);
            let sent = send_frame(&mut server, &mut seq, 1, &pixels, 784).1;
            assert_eq!(assignment(&sent[0]), expected(&engine, 1, &pixels, false));
            seq += 1;
            let options = Options { report_stn: true, stats_interval_ms: 0 };
            server.handle(request(seq, HostMsg::SetOptions(options)));
            let sent = send_frame(&mut server, &mut seq, 2, &pixels, 784).1;
            assert_eq!(assignment(&sent[0]), expected(&engine, 2, &pixels, true));
            assert!(assignment(&sent[0]).stn.is_some());
        }

        #[test]
        fn a_corrupt_chunk_fails_the_commit_and_the_old_model_keeps_serving() {
            let dir = tempfile::tempdir().unwrap();
            let mut server = Server::with_store(ModelStore::open(dir.path()).unwrap());
            let mut seq = 0;
            let old = bundle("old", 1.0, false);
            assert_eq!(flash(&mut server, &mut seq, &old, MAX_CHUNK), DeviceMsg::Ack { seq });
            let old_model = server.hello().model;

            let new = bundle("new", 2.0, false);
            let begin = FlashBegin {
                size: new.len() as u32,
                sha256: sha256(&new),
                bundle_version: crate::bundle::FORMAT_VERSION,
            };
            seq += 1;
            assert_eq!(server.handle(request(seq, HostMsg::FlashBegin(begin))), Some(DeviceMsg::Ack { seq }));
            for (i, piece) in new.chunks(MAX_CHUNK).enumerate() {
                let mut data = heapless::Vec::from_slice(piece).unwrap();
                if i == 1 {
                    data[5] ^= 0x40; // damaged on the way
                }
                seq += 1;
                let msg = HostMsg::FlashChunk(FlashChunk { offset: (i * MAX_CHUNK) as u32, data });
                let reply = server.handle(request(seq, msg.clone()));
                assert_eq!(reply, Some(DeviceMsg::Ack { seq }));
                // Its ack lost, the host resends it: the same reply.
                assert_eq!(server.handle(request(seq, msg)), reply);
            }
            seq += 1;
            assert_eq!(
                server.handle(request(seq, HostMsg::FlashCommit)),
                Some(DeviceMsg::Nack { seq: Some(seq), code: ErrorCode::FlashChecksum })
            );
            assert_eq!(server.hello().model, old_model, "the old model stays active");
            let engine = Engine::load(Bundle::from_bytes(&old, "test").unwrap(), "test").unwrap();
            let pixels = picture(90, 250);
            let sent = send_frame(&mut server, &mut seq, 7, &pixels, 784).1;
            assert_eq!(assignment(&sent[0]), expected(&engine, 7, &pixels, false));

            // A chunk without a flash in progress, a wrong bundle version, and an abort.
            seq += 1;
            let chunk = HostMsg::FlashChunk(FlashChunk { offset: 0, data: heapless::Vec::new() });
            assert_eq!(
                server.handle(request(seq, chunk)),
                Some(DeviceMsg::Nack { seq: Some(seq), code: ErrorCode::FlashNotStarted })
            );
            seq += 1;
            let begin = FlashBegin {
                size: new.len() as u32,
                sha256: sha256(&new),
                bundle_version: crate::bundle::FORMAT_VERSION + 1,
            };
            assert_eq!(
                server.handle(request(seq, HostMsg::FlashBegin(begin))),
                Some(DeviceMsg::Nack { seq: Some(seq), code: ErrorCode::FlashInvalidBundle })
            );
            seq += 1;
            assert_eq!(server.handle(request(seq, HostMsg::FlashAbort)), Some(DeviceMsg::Ack { seq }));
            assert_eq!(server.hello().model, old_model);
        }

        #[test]
        fn a_resent_last_chunk_sends_the_same_assignment_again_without_a_second_frame() {
            let dir = tempfile::tempdir().unwrap();
            let mut server = Server::with_store(ModelStore::open(dir.path()).unwrap());
            let mut seq = flash_test_model(&mut server);
            let pixels = picture(250, 5);
            let (_, sent) = send_frame(&mut server, &mut seq, 21, &pixels, 400);
            let first = assignment(&sent[0]);
            let last_chunk = |seq| {
                request(
                    seq,
                    HostMsg::Frame(FrameChunk {
                        frame_id: 21,
                        width: 28,
                        height: 28,
                        format: PixelFormat::Gray8,
                        offset: 400,
                        data: heapless::Vec::from_slice(&pixels[400..]).unwrap(),
                    }),
                )
            };
            // The same request again (its ack lost), then a fresh copy (the assignment lost).
            for seq in [seq, seq + 1] {
                assert_eq!(server.handle(last_chunk(seq)), Some(DeviceMsg::Ack { seq }));
                let again = server.take_outgoing().expect("the assignment again");
                assert_eq!(assignment(&again), first);
                assert_eq!(server.take_outgoing(), None);
            }
            assert_eq!(server.stats().frames_received, 1, "one frame, assigned once");
            assert_eq!(server.stats().assignments_sent, 3, "its assignment sent three times");
        }

        #[test]
        fn rollback_brings_back_the_replaced_model_and_a_second_undoes_it() {
            let dir = tempfile::tempdir().unwrap();
            let mut server = Server::with_store(ModelStore::open(dir.path()).unwrap());
            assert!(server.hello().capabilities.has(Capabilities::ROLLBACK));
            let mut seq = 1;
            assert_eq!(
                server.handle(request(seq, HostMsg::FlashRollback)),
                Some(DeviceMsg::Nack { seq: Some(seq), code: ErrorCode::NoPrevious })
            );
            let (old, new) = (bundle("old", 1.0, false), bundle("new", 2.0, false));
            assert_eq!(flash(&mut server, &mut seq, &old, MAX_CHUNK), DeviceMsg::Ack { seq });
            let old_model = server.hello().model.unwrap();
            seq += 1;
            assert_eq!(
                server.handle(request(seq, HostMsg::FlashRollback)),
                Some(DeviceMsg::Nack { seq: Some(seq), code: ErrorCode::NoPrevious }),
                "one flash keeps no previous model"
            );
            assert_eq!(flash(&mut server, &mut seq, &new, MAX_CHUNK), DeviceMsg::Ack { seq });
            let new_model = server.hello().model.unwrap();

            seq += 1;
            assert_eq!(server.handle(request(seq, HostMsg::FlashRollback)), Some(DeviceMsg::Ack { seq }));
            assert_eq!(server.hello().model.as_ref(), Some(&old_model));
            let engine = Engine::load(Bundle::from_bytes(&old, "test").unwrap(), "test").unwrap();
            let pixels = picture(30, 220);
            let sent = send_frame(&mut server, &mut seq, 3, &pixels, 784).1;
            assert_eq!(assignment(&sent[0]), expected(&engine, 3, &pixels, false), "the old model serves");

            seq += 1;
            assert_eq!(server.handle(request(seq, HostMsg::FlashRollback)), Some(DeviceMsg::Ack { seq }));
            assert_eq!(server.hello().model.as_ref(), Some(&new_model), "a second rollback undoes the first");
            drop(server);
            let server = Server::with_store(ModelStore::open(dir.path()).unwrap());
            assert_eq!(server.hello().model, Some(new_model), "and it survives a restart");
        }

        #[test]
        fn oversized_and_inconsistent_frames_are_refused_and_the_server_keeps_serving() {
            let dir = tempfile::tempdir().unwrap();
            let mut server = Server::with_store(ModelStore::open(dir.path()).unwrap());
            let mut seq = flash_test_model(&mut server);
            let chunk = |frame_id, width, height, format, offset: u32, len: usize| {
                HostMsg::Frame(FrameChunk {
                    frame_id,
                    width,
                    height,
                    format,
                    offset,
                    data: heapless::Vec::from_slice(&vec![9; len]).unwrap(),
                })
            };
            let max = MAX_FRAME_BYTES as u32;
            for (msg, code) in [
                (chunk(1, 4000, 4000, PixelFormat::Rgb888, 0, 10), ErrorCode::Oversized { max }),
                (chunk(2, 0, 28, PixelFormat::Gray8, 0, 0), ErrorCode::FrameInvalid),
                (chunk(3, 28, 28, PixelFormat::Gray8, 500, 10), ErrorCode::FrameInvalid),
                (chunk(4, 28, 28, PixelFormat::Gray8, 780, 10), ErrorCode::FrameInvalid),
                (chunk(5, 3, 3, PixelFormat::Yuyv, 0, 18), ErrorCode::FrameInvalid),
            ] {
                seq += 1;
                assert_eq!(server.handle(request(seq, msg)), Some(DeviceMsg::Nack { seq: Some(seq), code }));
                assert_eq!(server.take_outgoing(), None);
            }
            // A frame cut short by a new one: the new one is assembled from scratch.
            seq += 1;
            server.handle(request(seq, chunk(6, 28, 28, PixelFormat::Gray8, 0, 100)));
            let pixels = picture(10, 240);
            let sent = send_frame(&mut server, &mut seq, 8, &pixels, 200).1;
            assert_eq!(sent.len(), 1);
            assert_eq!(assignment(&sent[0]).cluster, 1);
        }

        /// An output pin that records every level it is set to.
        #[derive(Clone, Default)]
        struct RecordingPin(Arc<Mutex<Vec<bool>>>);

        impl embedded_hal::digital::ErrorType for RecordingPin {
            type Error = core::convert::Infallible;
        }

        impl embedded_hal::digital::OutputPin for RecordingPin {
            fn set_low(&mut self) -> Result<(), Self::Error> {
                self.0.lock().unwrap().push(false);
                Ok(())
            }

            fn set_high(&mut self) -> Result<(), Self::Error> {
                self.0.lock().unwrap().push(true);
                Ok(())
            }
        }

        impl RecordingPin {
            fn take(&self) -> Vec<bool> {
                std::mem::take(&mut self.0.lock().unwrap())
            }
        }

        /// One chunk holding all of `pixels` as 28 × 28 grey frame `id`.
        fn whole_frame(id: u32, pixels: &[u8]) -> HostMsg {
            HostMsg::Frame(FrameChunk {
                frame_id: id,
                width: 28,
                height: 28,
                format: PixelFormat::Gray8,
                offset: 0,
                data: heapless::Vec::from_slice(pixels).unwrap(),
            })
        }

        #[test]
        fn a_frame_is_acked_before_the_engine_runs_and_assigned_after() {
            let dir = tempfile::tempdir().unwrap();
            let pin = RecordingPin::default();
            let mut server = Server::with_store(ModelStore::open(dir.path()).unwrap())
                .with_led(StatusLed::new(pin.clone()));
            let mut seq = 0;
            let bytes = bundle("m", 1.0, false);
            assert_eq!(flash(&mut server, &mut seq, &bytes, MAX_CHUNK), DeviceMsg::Ack { seq });
            let engine = Engine::load(Bundle::from_bytes(&bytes, "test").unwrap(), "test").unwrap();
            pin.take();

            // The last chunk is acked with the engine not yet run (the LED lights only while it runs)…
            let pixels = picture(240, 20);
            seq += 1;
            assert_eq!(server.handle(request(seq, whole_frame(40, &pixels))), Some(DeviceMsg::Ack { seq }));
            assert_eq!(pin.take(), [] as [bool; 0], "no inference before the ack is sent");
            // …and assigned when the caller takes what follows the reply.
            let sent: Vec<_> = std::iter::from_fn(|| server.take_outgoing()).collect();
            assert_eq!(pin.take(), [true, false], "one inference, after the ack");
            assert_eq!(sent.len(), 1, "{sent:?}");
            assert_eq!(assignment(&sent[0]), expected(&engine, 40, &pixels, false));

            // A frame pending when the next request comes is assigned first, its assignment queued first.
            seq += 1;
            server.handle(request(seq, whole_frame(41, &pixels)));
            seq += 1;
            assert_eq!(server.handle(request(seq, HostMsg::Ping)), Some(DeviceMsg::Ack { seq }));
            assert_eq!(pin.take(), [true, false], "assigned before the ping was answered");
            assert_eq!(server.take_outgoing().map(|msg| assignment(&msg).frame_id), Some(41));

            // A malformed frame is still refused in its chunk's reply, and the engine never sees it.
            seq += 1;
            let yuyv_odd_width = HostMsg::Frame(FrameChunk {
                frame_id: 42,
                width: 3,
                height: 3,
                format: PixelFormat::Yuyv,
                offset: 0,
                data: heapless::Vec::from_slice(&[9; 18]).unwrap(),
            });
            assert_eq!(
                server.handle(request(seq, yuyv_odd_width)),
                Some(DeviceMsg::Nack { seq: Some(seq), code: ErrorCode::FrameInvalid })
            );
            assert_eq!(server.take_outgoing(), None);
            assert!(!pin.take().contains(&true), "not run on a refused frame");
        }

        #[test]
        fn an_engine_failure_after_the_ack_is_reported_as_an_error_naming_the_frame() {
            let dir = tempfile::tempdir().unwrap();
            let mut server = Server::with_store(ModelStore::open(dir.path()).unwrap());
            let mut seq = 0;
            // A model of 784 values, not of a picture: a frame passes the checks, then the engine
            // cannot prepare it.
            let flat = bundle_taking("flat", 1.0, false, &[-1, 784]);
            assert_eq!(flash(&mut server, &mut seq, &flat, MAX_CHUNK), DeviceMsg::Ack { seq });
            seq += 1;
            let pixels = picture(1, 2);
            assert_eq!(server.handle(request(seq, whole_frame(77, &pixels))), Some(DeviceMsg::Ack { seq }));
            let sent: Vec<_> = std::iter::from_fn(|| server.take_outgoing()).collect();
            let [DeviceMsg::Error { code: ErrorCode::Internal, detail }] = &sent[..] else {
                panic!("one error for the frame, no assignment: {sent:?}")
            };
            assert!(detail.starts_with("frame 77: "), "{detail}");
            assert_eq!(server.stats().assignments_sent, 0);

            // The host resending it gets it tried again (and the same error), not a stale assignment.
            seq += 1;
            assert_eq!(server.handle(request(seq, whole_frame(77, &pixels))), Some(DeviceMsg::Ack { seq }));
            let again: Vec<_> = std::iter::from_fn(|| server.take_outgoing()).collect();
            assert_eq!(again, sent);
        }

        /// An in-memory line for [`Server::run`]: reads the requests it was given, then reports the line
        /// closed; records each message written with the time it was flushed.
        struct ScriptedLine {
            input: Vec<u8>,
            read_at: usize,
            unflushed: Vec<u8>,
            written: Vec<(Instant, Vec<u8>)>,
        }

        impl embedded_io::ErrorType for ScriptedLine {
            type Error = embedded_io::ErrorKind;
        }

        impl Read for ScriptedLine {
            fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
                let n = buf.len().min(self.input.len() - self.read_at);
                buf[..n].copy_from_slice(&self.input[self.read_at..self.read_at + n]);
                self.read_at += n;
                Ok(n)
            }
        }

        impl ReadReady for ScriptedLine {
            fn read_ready(&mut self) -> Result<bool, Self::Error> {
                Ok(self.read_at < self.input.len())
            }
        }

        impl Write for ScriptedLine {
            fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
                self.unflushed.extend_from_slice(buf);
                Ok(buf.len())
            }

            fn flush(&mut self) -> Result<(), Self::Error> {
                self.written.push((Instant::now(), std::mem::take(&mut self.unflushed)));
                Ok(())
            }
        }

        #[test]
        fn the_run_loop_sends_the_ack_before_the_engine_starts() {
            let dir = tempfile::tempdir().unwrap();
            let mut server = Server::with_store(ModelStore::open(dir.path()).unwrap());
            flash_test_model(&mut server);
            let mut encoder = stdac_protocol::FrameEncoder::new();
            let mut input = Vec::new();
            for id in [1, 2, 3] {
                let request = Request { seq: 100 + id as u16, msg: whole_frame(id, &picture(200, id as u8)) };
                input.extend_from_slice(encoder.encode(&request).unwrap());
            }
            let line = ScriptedLine { input, read_at: 0, unflushed: Vec::new(), written: Vec::new() };
            let mut link = Link::new(line);
            assert!(matches!(server.run(&mut link), Err(LinkError::Closed)));

            let mut decoder = stdac_protocol::Decoder::<DeviceMsg>::new();
            let sent: Vec<(Instant, DeviceMsg)> = link
                .io_mut()
                .written
                .iter()
                .map(|(at, bytes)| {
                    let (msg, rest) = decoder.feed(bytes).expect("one whole message per flush");
                    assert!(rest.is_empty());
                    (*at, msg.unwrap())
                })
                .collect();
            assert_eq!(sent.len(), 6, "an ack and an assignment per frame: {sent:?}");
            for (pair, id) in sent.chunks(2).zip([1, 2, 3]) {
                let [(acked, DeviceMsg::Ack { seq }), (assigned, DeviceMsg::Assignment(a))] = pair else {
                    panic!("the ack, then the assignment: {pair:?}")
                };
                assert_eq!((*seq, a.frame_id), (100 + id as u16, id));
                // The engine ran between the two writes: the ack was on the line before it started.
                let between = assigned.duration_since(*acked);
                assert!(
                    between >= Duration::from_micros(a.inference_us.into()),
                    "frame {id}: ack {between:?} before the assignment, inference took {} µs",
                    a.inference_us
                );
            }
        }

        /// Streaming the board's own frames: a folder of real PNG pictures through the capture thread.
        mod streaming {
            use super::*;
            use crate::capture::Capture;
            use crate::source::FolderSource;
            use std::path::Path;

            /// A 28 × 28 MNIST-like picture: white strokes with soft edges on black, shape `kind`
            /// (a bar, a ring, a seven-like corner, a bar to the right, a blob on the left).
            fn digit_like(kind: usize) -> Vec<u8> {
                let stroke = |distance: f32| (255.0 * (1.5 - distance).clamp(0.0, 1.0)) as u8;
                let mut pixels = vec![0u8; 784];
                for (i, pixel) in pixels.iter_mut().enumerate() {
                    let (y, x) = ((i / 28) as f32, (i % 28) as f32);
                    let distance = match kind % 5 {
                        0 => (x - 13.5).abs().max(if (5.0..23.0).contains(&y) { 0.0 } else { 9.0 }),
                        1 => (((x - 14.0).powi(2) + (y - 14.0).powi(2)).sqrt() - 7.0).abs(),
                        2 => (y - 6.0).abs().min((x - (24.0 - 0.6 * y)).abs()).max((x - 14.0).abs() - 8.0),
                        3 => (x - 20.0).abs().max((y - 14.0).abs() - 9.0),
                        _ => ((x - 7.0).powi(2) + (y - 14.0).powi(2)).sqrt() - 3.0,
                    };
                    *pixel = stroke(distance.max(0.0));
                }
                pixels
            }

            /// Writes `count` MNIST-like PNGs (00.png, 01.png, …) into a new folder; returns it and the
            /// pictures, in file-name order.
            fn picture_folder(count: usize) -> (tempfile::TempDir, Vec<Vec<u8>>) {
                let dir = tempfile::tempdir().unwrap();
                let pictures: Vec<Vec<u8>> = (0..count).map(digit_like).collect();
                for (i, pixels) in pictures.iter().enumerate() {
                    image::GrayImage::from_raw(28, 28, pixels.clone())
                        .unwrap()
                        .save(dir.path().join(format!("{i:02}.png")))
                        .unwrap();
                }
                (dir, pictures)
            }

            fn streaming_server(
                store: &tempfile::TempDir,
                frames: &Path,
                looping: bool,
                queue: usize,
            ) -> Server {
                let source = FolderSource::open(frames, 0, looping).unwrap();
                let capture = Capture::spawn(Box::new(source), queue).unwrap();
                Server::with_store(ModelStore::open(store.path()).unwrap()).with_capture(capture)
            }

            /// Serves the stream until `done` says so of what was sent (10 s at most); returns it.
            fn stream_until(server: &mut Server, done: impl Fn(&[DeviceMsg]) -> bool) -> Vec<DeviceMsg> {
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut sent = Vec::new();
                while !done(&sent) {
                    assert!(Instant::now() < deadline, "the stream stalled after {sent:?}");
                    server.stream_step(Duration::from_millis(50));
                    sent.extend(std::iter::from_fn(|| server.take_outgoing()));
                }
                sent
            }

            fn ended(sent: &[DeviceMsg]) -> bool {
                sent.iter()
                    .any(|msg| matches!(msg, DeviceMsg::Log(line) if line.text.contains("no more frames")))
            }

            #[test]
            fn a_folder_streams_assignments_equal_to_the_engines_own() {
                let (frames, pictures) = picture_folder(10);
                let store = tempfile::tempdir().unwrap();
                let mut server = streaming_server(&store, frames.path(), false, 16);
                assert!(server.hello().capabilities.has(Capabilities::CAMERA));
                let bytes = bundle("stn", 1.0, true);
                let mut seq = 0;
                assert_eq!(flash(&mut server, &mut seq, &bytes, MAX_CHUNK), DeviceMsg::Ack { seq });
                let options = Options { report_stn: true, stats_interval_ms: 0 };
                assert_eq!(
                    server.handle(request(90, HostMsg::SetOptions(options))),
                    Some(DeviceMsg::Ack { seq: 90 })
                );
                assert!(!server.stream_step(Duration::from_millis(50)), "nothing flows before StartStream");

                assert_eq!(
                    server.handle(request(91, HostMsg::StartStream)),
                    Some(DeviceMsg::Ack { seq: 91 })
                );
                assert!(server.is_streaming());
                let sent = stream_until(&mut server, ended);
                let engine = Engine::load(Bundle::from_bytes(&bytes, "test").unwrap(), "test").unwrap();
                let assignments: Vec<_> =
                    sent.iter().filter(|m| matches!(m, DeviceMsg::Assignment(_))).collect();
                assert_eq!(assignments.len(), pictures.len(), "{sent:?}");
                for (number, (msg, pixels)) in assignments.iter().zip(&pictures).enumerate() {
                    let got = assignment(msg);
                    assert_eq!(
                        got,
                        expected(&engine, number as u32, pixels, true),
                        "picture {number:02}.png"
                    );
                    assert!(got.stn.is_some());
                }
                let clusters: std::collections::BTreeSet<u16> =
                    assignments.iter().map(|msg| assignment(msg).cluster).collect();
                assert_eq!(clusters.len(), 2, "the pictures fall in both clusters");

                assert_eq!(server.handle(request(92, HostMsg::StopStream)), Some(DeviceMsg::Ack { seq: 92 }));
                assert!(!server.is_streaming());
                let stats = server.stats();
                assert_eq!(
                    (stats.frames_received, stats.assignments_sent, stats.frames_dropped),
                    (10, 10, 0)
                );

                // A new stream plays the folder again, its frame numbers going on from where they were.
                assert_eq!(
                    server.handle(request(93, HostMsg::StartStream)),
                    Some(DeviceMsg::Ack { seq: 93 })
                );
                let sent = stream_until(&mut server, ended);
                let first = sent.iter().find_map(|m| match m {
                    DeviceMsg::Assignment(a) => Some(a.clone()),
                    _ => None,
                });
                let first = first.expect("the second stream assigns frames");
                assert_eq!(first.frame_id, 10);
                assert_eq!(first.cluster, expected(&engine, 10, &pictures[0], true).cluster);
            }

            #[test]
            fn streaming_needs_a_source_and_a_model() {
                let mut plain = Server::new();
                assert!(!plain.hello().capabilities.has(Capabilities::CAMERA));
                for (seq, msg) in [(1, HostMsg::StartStream), (2, HostMsg::StopStream)] {
                    assert_eq!(
                        plain.handle(request(seq, msg)),
                        Some(DeviceMsg::Nack { seq: Some(seq), code: ErrorCode::Unsupported })
                    );
                }

                let (frames, _) = picture_folder(2);
                let store = tempfile::tempdir().unwrap();
                let mut server = streaming_server(&store, frames.path(), true, 4);
                assert!(server.hello().capabilities.has(Capabilities::CAMERA | Capabilities::FLASH));
                assert_eq!(
                    server.handle(request(3, HostMsg::StartStream)),
                    Some(DeviceMsg::Nack { seq: Some(3), code: ErrorCode::NoModel })
                );
                assert!(!server.is_streaming());
                assert_eq!(server.handle(request(4, HostMsg::StopStream)), Some(DeviceMsg::Ack { seq: 4 }));
                assert!(!server.stream_step(Duration::from_millis(50)));
                assert_eq!(server.stats().frames_received, 0);
            }

            #[test]
            fn a_source_faster_than_the_server_loses_its_oldest_frames_never_memory() {
                let (frames, pictures) = picture_folder(5);
                let store = tempfile::tempdir().unwrap();
                let mut server = streaming_server(&store, frames.path(), true, 2);
                flash_test_model(&mut server);
                assert_eq!(
                    server.handle(request(50, HostMsg::StartStream)),
                    Some(DeviceMsg::Ack { seq: 50 })
                );
                // A slow consumer: one frame every 20 ms while the folder decodes far faster.
                let mut sent = Vec::new();
                for _ in 0..15 {
                    std::thread::sleep(Duration::from_millis(20));
                    assert!(server.capture().unwrap().queued() <= 2);
                    server.stream_step(Duration::from_millis(50));
                    sent.extend(std::iter::from_fn(|| server.take_outgoing()));
                }
                assert_eq!(server.handle(request(51, HostMsg::StopStream)), Some(DeviceMsg::Ack { seq: 51 }));
                sent.extend(std::iter::from_fn(|| server.take_outgoing()));

                let ids: Vec<u32> = sent.iter().map(|msg| assignment(msg).frame_id).collect();
                assert_eq!(ids.len(), 15, "{sent:?}");
                assert!(
                    ids.windows(2).all(|pair| pair[0] < pair[1]),
                    "oldest first, never repeated: {ids:?}"
                );
                assert!(
                    ids.windows(2).any(|pair| pair[1] - pair[0] > 1),
                    "frames were dropped between: {ids:?}"
                );
                let engine =
                    Engine::load(Bundle::from_bytes(&bundle("m", 1.0, false), "test").unwrap(), "test")
                        .unwrap();
                for msg in &sent {
                    let got = assignment(msg);
                    let pixels = &pictures[got.frame_id as usize % pictures.len()];
                    assert_eq!(got, expected(&engine, got.frame_id, pixels, false));
                }
                let (capacity, high_water) = server.capture().unwrap().queue_capacity_and_high_water();
                assert_eq!(
                    (capacity, high_water),
                    (2, 2),
                    "the queue filled and never went past its capacity"
                );
                let stats = server.stats();
                assert!(stats.frames_dropped > 0, "{stats:?}");
                assert_eq!(stats.assignments_sent, 15);
                assert_eq!(
                    stats.frames_received,
                    stats.assignments_sent + stats.frames_dropped,
                    "after a stop every frame received was assigned or dropped: {stats:?}"
                );
            }

            #[test]
            fn a_picture_that_does_not_decode_is_reported_and_the_stream_goes_on() {
                let (frames, pictures) = picture_folder(2);
                std::fs::write(frames.path().join("01b.png"), b"\x89PNG cut short").unwrap();
                let store = tempfile::tempdir().unwrap();
                let mut server = streaming_server(&store, frames.path(), false, 8);
                flash_test_model(&mut server);
                server.handle(request(60, HostMsg::StartStream));
                let sent = stream_until(&mut server, ended);
                let errors: Vec<_> = sent
                    .iter()
                    .filter_map(|msg| match msg {
                        DeviceMsg::Error { code: ErrorCode::Camera, detail } => Some(detail.as_str()),
                        _ => None,
                    })
                    .collect();
                assert_eq!(errors.len(), 1, "{sent:?}");
                assert!(errors[0].contains("01b.png"), "the error names the picture: {}", errors[0]);
                let assigned = sent.iter().filter(|m| matches!(m, DeviceMsg::Assignment(_))).count();
                assert_eq!(assigned, pictures.len(), "both good pictures are assigned");
            }

            #[test]
            fn the_outbox_keeps_the_newest_messages_and_counts_the_assignments_it_drops() {
                let store = tempfile::tempdir().unwrap();
                let mut server = Server::with_store(ModelStore::open(store.path()).unwrap());
                let mut seq = flash_test_model(&mut server);
                let pixels = picture(0, 255);
                let extra = 5;
                for id in 0..(OUTBOX_CAPACITY + extra) as u32 {
                    seq += 1;
                    let msg = HostMsg::Frame(FrameChunk {
                        frame_id: id,
                        width: 28,
                        height: 28,
                        format: PixelFormat::Gray8,
                        offset: 0,
                        data: heapless::Vec::from_slice(&pixels).unwrap(),
                    });
                    assert_eq!(server.handle(request(seq, msg)), Some(DeviceMsg::Ack { seq }));
                }
                let sent: Vec<u32> = std::iter::from_fn(|| server.take_outgoing())
                    .map(|msg| assignment(&msg).frame_id)
                    .collect();
                let newest: Vec<u32> = (extra as u32..(OUTBOX_CAPACITY + extra) as u32).collect();
                assert_eq!(sent, newest);
                let stats = server.stats();
                assert_eq!(
                    (stats.assignments_sent, stats.frames_dropped),
                    (OUTBOX_CAPACITY as u32, extra as u32)
                );
            }

            #[test]
            fn the_status_led_lights_while_a_frame_is_assigned_or_a_chunk_written() {
                let (frames, _) = picture_folder(1);
                let store = tempfile::tempdir().unwrap();
                let pin = RecordingPin::default();
                let mut server =
                    streaming_server(&store, frames.path(), false, 4).with_led(StatusLed::new(pin.clone()));
                assert_eq!(pin.take(), [false], "off to begin with");

                let mut seq = 0;
                let bytes = bundle("m", 1.0, false);
                assert_eq!(flash(&mut server, &mut seq, &bytes, MAX_CHUNK), DeviceMsg::Ack { seq });
                let chunks = bytes.len().div_ceil(MAX_CHUNK);
                assert_eq!(pin.take(), [true, false].repeat(chunks), "lit during each chunk's write");

                // A host's frame in two chunks: lit only while its last chunk's frame is assigned.
                let sent = send_frame(&mut server, &mut seq, 4, &picture(255, 0), 400).1;
                assert_eq!(sent.len(), 1);
                assert_eq!(pin.take(), [true, false]);

                // A streamed frame: the same.
                server.handle(request(70, HostMsg::StartStream));
                let sent = stream_until(&mut server, |sent| !sent.is_empty());
                assert!(matches!(sent[0], DeviceMsg::Assignment(_)), "{sent:?}");
                assert_eq!(pin.take(), [true, false]);

                // A failed flash commit leaves the LED dark.
                let begin =
                    FlashBegin { size: 10, sha256: [0; 32], bundle_version: crate::bundle::FORMAT_VERSION };
                server.handle(request(71, HostMsg::FlashBegin(begin)));
                server.handle(request(72, HostMsg::FlashCommit));
                let levels = pin.take();
                assert!(
                    !levels.is_empty() && levels.iter().all(|&lit| !lit),
                    "a failure turns it off: {levels:?}"
                );
            }
        }
    }
}
