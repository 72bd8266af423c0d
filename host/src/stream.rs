//! `stdac stream`: frames to a board and its assignments back, live.
//!
//! A frame is sent in chunks, each a request acked by the board; the board assigns the frame when its
//! last chunk arrives and sends the [`Assignment`] right after that chunk's ack. An assignment lost on
//! the line is asked for again by resending the last chunk, which the board answers with the same
//! assignment (it does not assign a frame twice). Assignments for other frames (late copies) are
//! ignored, so no assignment is ever taken for the wrong frame.

use std::collections::BTreeMap;
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

/// Sends `frame` and waits for its assignment, asking again (resending the last chunk) up to
/// `retries` times when none comes within `wait`.
pub fn send_frame(
    client: &mut DeviceClient,
    frame: &Frame,
    wait: Duration,
    retries: u32,
) -> anyhow::Result<Received> {
    let started = Instant::now();
    let mut last = None;
    for (i, piece) in frame.pixels.chunks(MAX_CHUNK).enumerate() {
        let chunk = FrameChunk {
            frame_id: frame.id,
            width: frame.width,
            height: frame.height,
            format: frame.format,
            offset: (i * MAX_CHUNK) as u32,
            data: heapless::Vec::from_slice(piece).expect("at most MAX_CHUNK bytes"),
        };
        client
            .request(HostMsg::Frame(chunk.clone()))
            .with_context(|| format!("frame {} was not taken", frame.id))?;
        last = Some(chunk);
    }
    let last = last.with_context(|| format!("frame {} has no pixels", frame.id))?;
    for attempt in 0..=retries {
        if attempt > 0 {
            client
                .request(HostMsg::Frame(last.clone()))
                .with_context(|| format!("frame {}'s assignment asked for again", frame.id))?;
        }
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match client.next_event(left)? {
                Some(DeviceMsg::Assignment(assignment)) if assignment.frame_id == frame.id => {
                    return Ok(Received { assignment, latency: Some(started.elapsed()), label: frame.label });
                }
                Some(DeviceMsg::Error { code, detail }) => {
                    eprintln!("stdac: the device on {} reports: {code}: {detail}", client.port_name());
                }
                // Stats, log lines, a late copy of an earlier assignment.
                Some(_) => {}
                None => break,
            }
        }
    }
    bail!(
        "no assignment for frame {} from the device on {} after {} requests of {wait:?} each",
        frame.id,
        client.port_name(),
        retries + 1
    )
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
