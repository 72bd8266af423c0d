//! `stdac stream`: frames to a board and its assignments back, live.
//!
//! A frame is sent in chunks, each a request acked by the board. The board acks a frame's last chunk
//! first and assigns the frame after, sending its [`Assignment`] when done, so [`stream_frames`] sends
//! the next frame as soon as that ack is in: the next frame crosses the line while the board runs its
//! engine, up to a window of frames awaiting their assignment. Assignments are matched to frames by
//! id; ids not awaited (late copies) are ignored, so no assignment is ever taken for the wrong frame. An
//! assignment lost on the line is asked for again by sending its frame again, whole: the board
//! assembles it anew (or, if it is the frame it just assigned, sends the same assignment again), and
//! since inference is deterministic the assignment is the same.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use stdac_device::server::MAX_FRAME_BYTES;
use stdac_protocol::{Assignment, Capabilities, DeviceMsg, FrameChunk, HostMsg, PixelFormat, MAX_CHUNK};

use crate::data::{images, Dataset};
use crate::transport::{DeviceClient, LinkError};

/// A picture to send, as a camera would deliver it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: u32,
    pub width: u16,
    pub height: u16,
    pub format: PixelFormat,
    pub pixels: Vec<u8>,
    /// Its class, when known (for scoring).
    pub label: Option<i64>,
}

impl Frame {
    /// The frame as the requests that carry it, in order.
    pub fn chunks(&self) -> impl Iterator<Item = FrameChunk> + '_ {
        self.pixels.chunks(MAX_CHUNK).enumerate().map(|(i, piece)| FrameChunk {
            frame_id: self.id,
            width: self.width,
            height: self.height,
            format: self.format,
            offset: (i * MAX_CHUNK) as u32,
            data: heapless::Vec::from_slice(piece).expect("at most MAX_CHUNK bytes"),
        })
    }

    /// The pixels as the board's engine reads them.
    pub fn as_frame_ref(&self) -> stdac_device::preprocess::FrameRef<'_> {
        let format = match self.format {
            PixelFormat::Gray8 => stdac_device::preprocess::PixelFormat::Grey8,
            PixelFormat::Rgb888 => stdac_device::preprocess::PixelFormat::Rgb8,
            PixelFormat::Yuyv => stdac_device::preprocess::PixelFormat::Yuyv,
        };
        stdac_device::preprocess::FrameRef {
            format,
            width: self.width.into(),
            height: self.height.into(),
            bytes: &self.pixels,
        }
    }
}

/// The grey images of a dataset as 8-bit frames, numbered from 0, with their labels.
pub fn dataset_frames(dataset: &Dataset) -> anyhow::Result<Vec<Frame>> {
    let (height, width) =
        dataset.image_size.with_context(|| format!("{} holds no images to send as frames", dataset.name))?;
    (0..dataset.len())
        .map(|i| {
            Ok(Frame {
                id: i as u32,
                width: width as u16,
                height: height as u16,
                format: PixelFormat::Gray8,
                // The loaders scale bytes by 1/255, so this gives the file's bytes back.
                pixels: dataset.row(i).iter().map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect(),
                label: dataset.labels.as_ref().map(|l| l[i]),
            })
        })
        .collect()
}

/// The pictures of a folder at their own size, grey or RGB, in name order (labelled by subfolder when the
/// folder has class subfolders), at most `limit` of them.
pub fn folder_frames(dir: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Frame>> {
    let (pictures, _) = images::list_pictures(dir)?;
    let mut frames = Vec::new();
    for (i, (path, label)) in pictures.into_iter().take(limit.unwrap_or(usize::MAX)).enumerate() {
        let picture =
            image::open(&path).with_context(|| format!("{}: cannot decode image", path.display()))?;
        let (format, pixels, (width, height)) = match picture {
            image::DynamicImage::ImageLuma8(grey) => (PixelFormat::Gray8, grey.to_vec(), grey.dimensions()),
            other => {
                let rgb = other.to_rgb8();
                let size = rgb.dimensions();
                (PixelFormat::Rgb888, rgb.into_raw(), size)
            }
        };
        let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
            bail!("{}: {width} × {height} pixels is larger than a frame can be", path.display());
        };
        if pixels.len() > MAX_FRAME_BYTES || pixels.is_empty() {
            bail!(
                "{}: {width} × {height} pixels ({} bytes) is not a frame a board takes (1 to {MAX_FRAME_BYTES} bytes)",
                path.display(),
                pixels.len()
            );
        }
        frames.push(Frame { id: i as u32, width: w, height: h, format, pixels, label });
    }
    Ok(frames)
}

/// One assignment as it came back.
#[derive(Debug, Clone)]
pub struct Received {
    pub assignment: Assignment,
    /// From the frame's first byte sent to its assignment read; `None` for a board's own camera frames.
    pub latency: Option<Duration>,
    pub label: Option<i64>,
}

/// How [`stream_frames`] keeps frames in flight and recovers lost assignments.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Frames sent whose assignment has not come yet, at most. 1 is stop-and-wait; 2 lets the next
    /// frame cross the line while the board assigns the previous one, which is all one board (one
    /// frame assembled at a time) can overlap.
    pub window: usize,
    /// How long the oldest awaited frame's assignment may take, from its last chunk's ack, before the
    /// frame is sent again.
    pub wait: Duration,
    /// Times a frame is sent again before the stream fails.
    pub retries: u32,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { window: 2, wait: Duration::from_secs(5), retries: 3 }
    }
}

/// A frame sent and not yet handed on.
struct InFlight<'a> {
    frame: &'a Frame,
    /// When its first byte went out: its latency counts from here, resends included.
    first_sent: Instant,
    /// When its last chunk was last acked: its wait counts from here.
    last_sent: Instant,
    resends: u32,
    /// Its assignment, once come; it is handed on when every earlier frame's has been.
    received: Option<Received>,
}

/// Streams `frames` to a board, at most `options.window` of them awaiting their assignment at a time,
/// and hands each frame's assignment to `on_received` in frame order (an assignment that overtakes an
/// earlier frame's is held until that one comes). A frame whose assignment does not come within
/// `options.wait` is sent again, whole, up to `options.retries` times; then the stream fails naming the
/// frame and the port, as it does when the board refuses a frame or reports that its engine failed on
/// one. Frames with the same id are never in flight together: an assignment names only its frame's id.
pub fn stream_frames(
    client: &mut DeviceClient,
    frames: &[Frame],
    options: &StreamOptions,
    on_received: &mut dyn FnMut(&Frame, Received) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let window = options.window.max(1);
    let mut unsent = frames.iter().peekable();
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(window);
    loop {
        // What came while chunks were being acked, without waiting for more.
        while let Some((msg, read_at)) = client.next_event_read_at(Duration::ZERO)? {
            take_event(client.port_name(), &mut in_flight, msg, read_at)?;
        }
        while let Some(done) = in_flight.pop_front_if(|f| f.received.is_some()) {
            on_received(done.frame, done.received.expect("popped because it has one"))?;
        }
        let awaiting = || in_flight.iter().filter(|f| f.received.is_none());
        match unsent.peek() {
            Some(&frame) if awaiting().count() < window && !awaiting().any(|f| f.frame.id == frame.id) => {
                let first_sent = Instant::now();
                send_chunks(client, frame)?;
                in_flight.push_back(InFlight {
                    frame,
                    first_sent,
                    last_sent: Instant::now(),
                    resends: 0,
                    received: None,
                });
                unsent.next();
                continue;
            }
            None if in_flight.is_empty() => return Ok(()),
            // The window is full (or the next frame's id still awaited): wait for the oldest.
            _ => {}
        }
        let oldest = in_flight
            .iter_mut()
            .find(|f| f.received.is_none())
            .expect("frames are in flight, and the first of them awaits its assignment");
        let deadline = oldest.last_sent + options.wait;
        if let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some((msg, read_at)) = client.next_event_read_at(left)? {
                take_event(client.port_name(), &mut in_flight, msg, read_at)?;
            }
            continue;
        }
        if oldest.resends == options.retries {
            bail!(
                "no assignment for frame {} from the device on {} after sending it {} times and waiting \
                 {:?} each time",
                oldest.frame.id,
                client.port_name(),
                options.retries + 1,
                options.wait
            );
        }
        oldest.resends += 1;
        send_chunks(client, oldest.frame)?;
        oldest.last_sent = Instant::now();
    }
}

/// Sends `frame` whole, chunk by chunk, each acked.
fn send_chunks(client: &mut DeviceClient, frame: &Frame) -> anyhow::Result<()> {
    if frame.pixels.is_empty() {
        bail!("frame {} has no pixels", frame.id);
    }
    for chunk in frame.chunks() {
        client.request(HostMsg::Frame(chunk)).with_context(|| format!("frame {} was not taken", frame.id))?;
    }
    Ok(())
}

/// Files a message the device sent on its own: an assignment goes to the awaited frame of its id (any
/// other is a late copy, dropped); an error naming an awaited frame fails the stream.
fn take_event(
    port: &str,
    in_flight: &mut VecDeque<InFlight>,
    msg: DeviceMsg,
    read_at: Instant,
) -> anyhow::Result<()> {
    match msg {
        DeviceMsg::Assignment(assignment) => {
            let awaited =
                in_flight.iter_mut().find(|f| f.received.is_none() && f.frame.id == assignment.frame_id);
            if let Some(f) = awaited {
                f.received = Some(Received {
                    latency: Some(read_at.saturating_duration_since(f.first_sent)),
                    label: f.frame.label,
                    assignment,
                });
            }
        }
        DeviceMsg::Error { code, detail } => {
            // The board names the frame its engine failed on ("frame ID: why"): that frame will never
            // be assigned, and sending it again would fail the same way.
            let failed = in_flight
                .iter()
                .find(|f| f.received.is_none() && detail.starts_with(&format!("frame {}: ", f.frame.id)));
            if let Some(f) = failed {
                bail!("the device on {port} could not assign frame {}: {code}: {detail}", f.frame.id);
            }
            eprintln!("stdac: the device on {port} reports: {code}: {detail}");
        }
        // Stats and log lines.
        _ => {}
    }
    Ok(())
}

/// Sends `frame` and waits for its assignment (stop-and-wait: [`stream_frames`] with a window of one),
/// sending the frame again up to `retries` times when none comes within `wait`.
pub fn send_frame(
    client: &mut DeviceClient,
    frame: &Frame,
    wait: Duration,
    retries: u32,
) -> anyhow::Result<Received> {
    let mut received = None;
    let options = StreamOptions { window: 1, wait, retries };
    stream_frames(client, std::slice::from_ref(frame), &options, &mut |_, r| {
        received = Some(r);
        Ok(())
    })?;
    Ok(received.expect("a stream that ends well hands on every frame's assignment"))
}

/// Listens to a board assigning its own camera's frames: starts its stream, hands each assignment to
/// `on_assignment` until it returns false or `idle` passes without one (the camera stopped, a folder
/// played to its end), then stops the stream. No assignment at all within `idle` is an error.
pub fn listen(
    client: &mut DeviceClient,
    idle: Duration,
    on_assignment: &mut dyn FnMut(Received) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let port = client.port_name().to_string();
    let hello = client.hello()?;
    if !hello.capabilities.has(Capabilities::CAMERA) {
        bail!(
            "the device on {port} has no camera or frame source: send it frames with --frames or --dataset"
        );
    }
    client.request(HostMsg::StartStream).context("start-stream")?;
    let mut received = 0u64;
    let result = (|| {
        while let Some(event) = client.next_event(idle)? {
            match event {
                DeviceMsg::Assignment(assignment) => {
                    received += 1;
                    if !on_assignment(Received { assignment, latency: None, label: None })? {
                        return Ok(());
                    }
                }
                DeviceMsg::Error { code, detail } => {
                    eprintln!("stdac: the device on {port} reports: {code}: {detail}")
                }
                _ => {}
            }
        }
        if received == 0 {
            bail!("no assignment from the device on {port} within {idle:?} of starting its stream");
        }
        Ok(())
    })();
    // Stop the camera whatever happened, unless the line itself is gone.
    match client.request(HostMsg::StopStream) {
        Ok(_) | Err(LinkError::Closed { .. }) => {}
        Err(error) if result.is_ok() => return Err(error.into()),
        Err(_) => {}
    }
    result
}

/// Running totals of a stream: per-cluster counts, rate and latency.
#[derive(Debug)]
pub struct Tally {
    started: Instant,
    pub counts: BTreeMap<u16, u64>,
    pub latencies: Vec<Duration>,
    pub inference_us: Vec<u32>,
    pub novel: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            started: Instant::now(),
            counts: BTreeMap::new(),
            latencies: Vec::new(),
            inference_us: Vec::new(),
            novel: 0,
        }
    }
}

impl Tally {
    pub fn add(&mut self, received: &Received) {
        *self.counts.entry(received.assignment.cluster).or_default() += 1;
        self.latencies.extend(received.latency);
        self.inference_us.push(received.assignment.inference_us);
        self.novel += u64::from(received.assignment.novel);
    }

    pub fn frames(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn rate(&self) -> f64 {
        self.frames() as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// The `q` quantile of the latencies, in milliseconds.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        quantile_ms(&self.latencies, q)
    }

    /// One status line: frames, rate, latency and the count of each cluster.
    pub fn line(&self) -> String {
        let latency = match (self.latency_ms(0.5), self.latency_ms(0.95)) {
            (Some(p50), Some(p95)) => format!(", latency p50 {p50:.1} ms p95 {p95:.1} ms"),
            _ => String::new(),
        };
        let counts: Vec<String> = self.counts.iter().map(|(c, n)| format!("{c}:{n}")).collect();
        format!("{} frames, {:.1}/s{latency} | clusters {}", self.frames(), self.rate(), counts.join(" "))
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "frames": self.frames(),
            "seconds": self.started.elapsed().as_secs_f64(),
            "frames_per_s": self.rate(),
            "latency_ms_p50": self.latency_ms(0.5),
            "latency_ms_p95": self.latency_ms(0.95),
            "latency_ms_max": self.latency_ms(1.0),
            "inference_us_median": median(&self.inference_us),
            "novel": self.novel,
            "clusters": self.counts.iter().map(|(c, n)| (c.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

fn quantile_ms(values: &[Duration], q: f64) -> Option<f64> {
    let mut sorted: Vec<Duration> = values.to_vec();
    sorted.sort_unstable();
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * q).round() as usize].as_secs_f64() * 1e3)
}

fn median(values: &[u32]) -> Option<u32> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// `--jsonl FILE`: one JSON object per assignment, for other tools.
pub struct JsonlWriter {
    path: String,
    out: BufWriter<File>,
}

impl JsonlWriter {
    pub fn create(path: &Path) -> anyhow::Result<JsonlWriter> {
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(JsonlWriter { path: path.display().to_string(), out: BufWriter::new(file) })
    }

    pub fn write(&mut self, received: &Received) -> anyhow::Result<()> {
        let a = &received.assignment;
        let mut line = json!({
            "frame_id": a.frame_id,
            "cluster": a.cluster,
            "distance": a.distance,
            "margin": a.margin,
            "novel": a.novel,
            "inference_us": a.inference_us,
            "latency_ms": received.latency.map(|l| l.as_secs_f64() * 1e3),
        });
        if let Some(label) = received.label {
            line["label"] = label.into();
        }
        if let Some(theta) = a.stn {
            line["stn"] = json!(theta);
        }
        writeln!(self.out, "{line}").with_context(|| format!("cannot write {}", self.path))
    }

    pub fn finish(mut self) -> anyhow::Result<()> {
        self.out.flush().with_context(|| format!("cannot write {}", self.path))
    }
}
