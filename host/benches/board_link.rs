//! The board link end to end (issue #7): the real firmware (`stdac device --store DIR`, a separate
//! process) behind a pseudo-terminal [`Relay`], streamed real MNIST test frames by the host's own
//! `stream::stream_frames`, on an unpaced line and on lines paced to 921600 and 115200 baud. On each
//! line the same firmware process is streamed twice: pipelined (a window of 2 frames awaiting their
//! assignment: the next frame crosses the line while the board assigns the previous one) and
//! stop-and-wait (a window of 1: each frame waits for the previous one's assignment), the latter the
//! peer of the former. For each: frames/s, per-frame latency p50/p95 (first byte sent to assignment
//! read) and the board's own inference time (median of the assignments' `inference_us`).
//!
//! Each figure is also set against a peer measured or computed in the same run:
//!
//! - paced lines: the line-rate bound for the bytes each frame needs, computed by encoding the very
//!   messages of the run (`FrameEncoder`: postcard, CRC-32, COBS, delimiters): the host's frame-chunk
//!   requests, the board's ack and its assignment, at 10 bits a byte (8N1). The bound is
//!   `baud / 10 / (bytes up + bytes down)` frames/s, and its inverse the minimum latency, as a frame's
//!   chunk, ack and assignment follow one another; with inference added it is `1 / (wire + inference)`
//!   for stop-and-wait and `1 / max(wire, inference)` for the pipelined stream, which overlaps them.
//!   The pipelined stream also overlaps one frame's assignment going down with the next frame going
//!   up, so it may pass this bound a little: `full_duplex_bound_frames_per_s` in the JSON (the busier
//!   direction alone) is its ceiling;
//! - the unpaced relay: a direct pseudo-terminal (`LocalDevice`, no relay in between) and the engine
//!   alone (`Engine::from_file` + `assign_frame` on the same frames in this process: the compute bound);
//! - flashing the int8 bundle (6.9 MB), unpaced and at 921600 baud: the line-rate bound of its chunk
//!   requests and acks, and per chunk how long the line idles waiting for each ack. At 115200 a full
//!   flash would take over ten minutes, so only its first chunks are timed and the whole extrapolated
//!   (labelled as such).
//!
//! Each stream starts with one untimed warm-up frame (the first run of a freshly loaded model pays for
//! set-up). The float bundle is flashed once, unpaced, into a store that every later firmware process
//! (one per line: a relay's speed is fixed when it starts) opens again.
//!
//! Run: `cargo bench -p stdac --bench board_link` (needs the MNIST folder). Without `--bench` (as
//! `cargo test --release --benches` runs it) it is a quick run: 10 frames unpaced, 5 at 921600, 3 at
//! 115200, no int8 flash at 921600. The last line printed is one JSON object holding every figure.

use std::fs::File;
use std::hint::black_box;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use stdac::data::{self, Source, Split};
use stdac::flash::{self, FlashOptions};
use stdac::local_device::LocalDevice;
use stdac::relay::{Faults, Relay, RelayConfig};
use stdac::stream::{self, Frame, StreamOptions};
use stdac::transport::{DeviceClient, LinkConfig};
use stdac_device::engine::Engine;
use stdac_protocol::{
    Assignment, DeviceMsg, FlashBegin, FlashChunk, FrameEncoder, HostMsg, Request, Seq, MAX_CHUNK,
};

const FAST: u32 = 921_600;
const SLOW: u32 = 115_200;
/// UART 8N1: a start bit, 8 data bits, a stop bit.
const BITS_PER_BYTE: f64 = 10.0;
/// The sequence number the wire sizes are computed with. The client starts from a random one, and 3/4
/// of all u16 values take 3 bytes as a postcard varint: the common (and largest) case.
const SIZING_SEQ: Seq = 0x8000;

/// How much of each measurement is run.
struct Plan {
    full: bool,
    unpaced_frames: usize,
    fast_frames: usize,
    slow_frames: usize,
    /// Flash the int8 bundle whole at 921600 baud.
    fast_flash: bool,
    /// Chunks of the int8 bundle timed at 115200 baud (then extrapolated).
    slow_flash_chunks: usize,
}

impl Plan {
    fn new(full: bool) -> Plan {
        if full {
            Plan {
                full,
                unpaced_frames: 2000,
                fast_frames: 500,
                slow_frames: 100,
                fast_flash: true,
                slow_flash_chunks: 128,
            }
        } else {
            Plan {
                full,
                unpaced_frames: 10,
                fast_frames: 5,
                slow_frames: 3,
                fast_flash: false,
                slow_flash_chunks: 3,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let plan = Plan::new(std::env::args().any(|a| a == "--bench"));
    let mnist = match data::load(&Source::Mnist, Some(Split::Test), Some(plan.unpaced_frames), None) {
        Ok(d) => d,
        Err(e) => {
            println!("board link benchmark skipped: {e:#}");
            return Ok(());
        }
    };
    let frames = stream::dataset_frames(&mnist)?;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let float_bundle = models.join("mnist-st-dac/mnist-st-dac.stdac");
    let int8_bundle = models.join("mnist-st-dac-int8/mnist-st-dac-int8.stdac");
    let dir = tempfile::tempdir()?;
    let load =
        std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split(' ').next().map(str::to_string));
    println!(
        "board link benchmark ({}): firmware `stdac device` on a pseudo-terminal, {} {} frames of {} bytes; \
         1-minute load average at start: {} (other processes compete with every figure below)",
        if plan.full { "full" } else { "quick run; `cargo bench` for the figures" },
        frames.len(),
        mnist.name,
        frames[0].pixels.len(),
        load.as_deref().unwrap_or("unknown")
    );

    // The compute bound: the board's engine in this process, on one thread as the firmware runs it.
    let local_engine = Engine::from_file(&float_bundle)?;
    let engine = engine_alone(&local_engine, &frames, Duration::ZERO)?;

    // The float bundle, flashed once on an unpaced line; every later firmware serves it from the store.
    let store = dir.path().join("float-store");
    let (float_flash, unpaced) = {
        let mut board = Board::start(None, &store, &dir.path().join("firmware-unpaced.log"))?;
        let flashed = timed_flash(board.client(), &float_bundle, None)?;
        let runs = compared_runs(board.client(), &frames)?;
        (flashed, runs)
    };
    let direct = {
        let args = ["device".to_string(), "--store".to_string(), store.display().to_string()];
        let log = dir.path().join("firmware-direct.log");
        let (_device, mut client) = LocalDevice::start(
            Path::new(env!("CARGO_BIN_EXE_stdac")),
            &args,
            Some(log.as_path()),
            link_config(),
        )?;
        stream_run(&mut client, &frames, PIPELINED)?
    };
    let mut paced = Vec::new();
    for (baud, n) in [(FAST, plan.fast_frames), (SLOW, plan.slow_frames)] {
        let mut board = Board::start(Some(baud), &store, &dir.path().join(format!("firmware-{baud}.log")))?;
        paced.push((baud, compared_runs(board.client(), &frames[..n])?));
    }
    // The board's inference on a paced line, idle while each frame crosses it, is slower than back to
    // back; the engine alone with the same idle gaps tells whether the link or the idling is to blame.
    let gap = Duration::from_secs_f64(paced[0].1.stop_and_wait.wire_seconds(FAST));
    let engine_gapped = engine_alone(&local_engine, &frames[..plan.fast_frames], gap)?;
    drop(local_engine);

    // The int8 bundle, each flash into a fresh store.
    let int8_bytes = std::fs::read(&int8_bundle)?;
    let mut int8_flashes = Vec::new();
    let mut lines = vec![None];
    if plan.fast_flash {
        lines.push(Some(FAST));
    }
    for baud in lines {
        let name = baud.map_or("unpaced".to_string(), |b| b.to_string());
        let store = dir.path().join(format!("int8-store-{name}"));
        let mut board = Board::start(baud, &store, &dir.path().join(format!("firmware-int8-{name}.log")))?;
        int8_flashes.push(timed_flash(board.client(), &int8_bundle, baud)?);
    }
    let slow_flash = {
        let store = dir.path().join("int8-store-115200");
        let mut board = Board::start(Some(SLOW), &store, &dir.path().join("firmware-int8-115200.log"))?;
        partial_flash(board.client(), &int8_bytes, plan.slow_flash_chunks, SLOW)?
    };

    report(
        &plan,
        &engine,
        &engine_gapped,
        &direct,
        &unpaced,
        &paced,
        &float_flash,
        &int8_flashes,
        &slow_flash,
    );
    Ok(())
}

/// The host's link settings for every client here: a reply timeout long enough for a firmware still
/// loading its model (a clean line never times out otherwise).
fn link_config() -> LinkConfig {
    LinkConfig { timeout: Duration::from_secs(5), ..LinkConfig::default() }
}

/// The firmware, as a separate process, behind a relay; killed (and the relay stopped) on drop.
struct Board {
    client: Option<DeviceClient>,
    child: Child,
    _relay: Relay,
}

impl Board {
    fn start(baud: Option<u32>, store: &Path, log: &Path) -> anyhow::Result<Board> {
        let relay = Relay::start(RelayConfig { baud, faults: Faults::default() })?;
        let child = Command::new(env!("CARGO_BIN_EXE_stdac"))
            .args(["device", "--port", &relay.device_port, "--store"])
            .arg(store)
            .stdin(Stdio::null())
            .stderr(File::create(log)?)
            .spawn()
            .context("cannot start the firmware")?;
        let client = DeviceClient::open(&relay.host_port, link_config())?;
        let mut board = Board { client: Some(client), child, _relay: relay };
        // The firmware loads the store's model before it reads the line: give it a few hellos.
        let mut attempts = 0;
        while let Err(error) = board.client().hello() {
            attempts += 1;
            if attempts == 5 || board.child.try_wait()?.is_some() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                bail!("the firmware did not answer: {error}\n{log}");
            }
        }
        Ok(board)
    }

    fn client(&mut self) -> &mut DeviceClient {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.client = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The engine alone: seconds per frame, each frame timed.
struct EngineRun {
    per_frame: Vec<Duration>,
    seconds: f64,
    gap: Duration,
}

/// Each frame timed, with the thread asleep for `gap` before each.
fn engine_alone(engine: &Engine, frames: &[Frame], gap: Duration) -> anyhow::Result<EngineRun> {
    engine.assign_frame(frames[0].as_frame_ref())?;
    let mut per_frame = Vec::with_capacity(frames.len());
    let started = Instant::now();
    for frame in frames {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        black_box(engine.assign_frame(frame.as_frame_ref())?);
        per_frame.push(t.elapsed());
    }
    Ok(EngineRun { per_frame, seconds: started.elapsed().as_secs_f64(), gap })
}

/// The pipelined window the host streams with by default, and the stop-and-wait one it is compared with.
const PIPELINED: usize = 2;
const STOP_AND_WAIT: usize = 1;

/// One stream of frames over a link.
struct StreamRun {
    /// Frames awaiting their assignment at most.
    window: usize,
    frames: usize,
    seconds: f64,
    latencies: Vec<Duration>,
    assignments: Vec<Assignment>,
    /// Mean bytes per frame on the wire: host → board (chunk requests), board → host (acks and the
    /// assignment), encoded from this run's messages.
    up: f64,
    down: f64,
}

impl StreamRun {
    fn fps(&self) -> f64 {
        self.frames as f64 / self.seconds
    }

    /// Median of each frame's latency less its board inference time, in ms: what the link itself (pty,
    /// relay, both processes' I/O) adds to a frame, free of the engine's own jitter.
    fn link_ms(&self) -> f64 {
        let link: Vec<Duration> = self
            .latencies
            .iter()
            .zip(&self.assignments)
            .map(|(l, a)| l.saturating_sub(Duration::from_micros(a.inference_us.into())))
            .collect();
        quantile(&link, 0.5)
    }

    fn inference_us(&self) -> f64 {
        let us: Vec<Duration> =
            self.assignments.iter().map(|a| Duration::from_micros(a.inference_us.into())).collect();
        quantile(&us, 0.5) * 1e3
    }

    /// The least time a frame can take on a line at `baud`: request, then ack and assignment.
    fn wire_seconds(&self, baud: u32) -> f64 {
        (self.up + self.down) * BITS_PER_BYTE / f64::from(baud)
    }

    /// The most frames/s this stream's scheme allows on a line at `baud` with the board's inference
    /// time: stop-and-wait adds inference to the wire time, the pipelined stream overlaps the two.
    fn bound_with_inference(&self, baud: u32) -> f64 {
        let (wire, inference) = (self.wire_seconds(baud), self.inference_us() / 1e6);
        if self.window > 1 {
            1.0 / wire.max(inference)
        } else {
            1.0 / (wire + inference)
        }
    }
}

/// The same frames over the same link, pipelined and then stop-and-wait.
struct Compared {
    pipelined: StreamRun,
    stop_and_wait: StreamRun,
}

fn compared_runs(client: &mut DeviceClient, frames: &[Frame]) -> anyhow::Result<Compared> {
    let pipelined = stream_run(client, frames, PIPELINED)?;
    let stop_and_wait = stream_run(client, frames, STOP_AND_WAIT)?;
    Ok(Compared { pipelined, stop_and_wait })
}

fn stream_run(client: &mut DeviceClient, frames: &[Frame], window: usize) -> anyhow::Result<StreamRun> {
    let options = StreamOptions { window, wait: Duration::from_secs(5), retries: 2 };
    // Warm-up, under an id no timed frame has, so the board treats every timed frame as new.
    let warm_up = Frame { id: frames.len() as u32, ..frames[0].clone() };
    stream::send_frame(client, &warm_up, options.wait, options.retries)?;
    let resends_before = client.stats().resends;
    let mut latencies = Vec::with_capacity(frames.len());
    let mut assignments = Vec::with_capacity(frames.len());
    let started = Instant::now();
    stream::stream_frames(client, frames, &options, &mut |_, received| {
        latencies.push(received.latency.context("a streamed frame has a latency")?);
        assignments.push(received.assignment);
        Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let resends = client.stats().resends - resends_before;
    if resends > 0 {
        eprintln!(
            "note: {resends} requests resent on {} (a clean line should need none)",
            client.port_name()
        );
    }
    let mut encoder = FrameEncoder::new();
    let (mut up, mut down) = (0, 0);
    for (frame, assignment) in frames.iter().zip(&assignments) {
        let (u, d) = frame_wire_bytes(&mut encoder, frame, assignment);
        up += u;
        down += d;
    }
    let n = frames.len() as f64;
    Ok(StreamRun {
        window,
        frames: frames.len(),
        seconds,
        latencies,
        assignments,
        up: up as f64 / n,
        down: down as f64 / n,
    })
}

/// Bytes a frame takes on the wire, each way: its chunk requests as `stream_frames` builds them, an ack
/// for each, and its assignment.
fn frame_wire_bytes(encoder: &mut FrameEncoder, frame: &Frame, assignment: &Assignment) -> (usize, usize) {
    let (mut up, mut down) = (0, 0);
    for chunk in frame.chunks() {
        up += encoded_len(encoder, &Request { seq: SIZING_SEQ, msg: HostMsg::Frame(chunk) });
        down += encoded_len(encoder, &DeviceMsg::Ack { seq: SIZING_SEQ });
    }
    down += encoded_len(encoder, &DeviceMsg::Assignment(assignment.clone()));
    (up, down)
}

fn encoded_len<M: serde::Serialize>(encoder: &mut FrameEncoder, msg: &M) -> usize {
    encoder.encode(msg).expect("protocol messages fit a frame").len()
}

/// A flash and where its time went.
struct FlashRun {
    bundle: String,
    baud: Option<u32>,
    size: u64,
    /// Chunks timed; fewer than the bundle has when `extrapolated`.
    chunks: usize,
    total_chunks: usize,
    /// From the first chunk sent to the last chunk's ack.
    chunk_seconds: f64,
    /// Everything else: hello, begin, commit (the board hashes, checks and loads the bundle), hello.
    other_seconds: Option<f64>,
    extrapolated: bool,
    /// Bytes of the chunks timed on the wire, each way: requests up, acks down.
    up: u64,
    down: u64,
}

impl FlashRun {
    /// Mean seconds per chunk.
    fn per_chunk(&self) -> f64 {
        self.chunk_seconds / self.chunks as f64
    }

    /// Seconds the whole bundle's chunks take at this pace.
    fn all_chunks_seconds(&self) -> f64 {
        self.per_chunk() * self.total_chunks as f64
    }

    /// Stop-and-wait line-rate bound for the chunks timed: every request and its ack, one after the other.
    fn wire_seconds(&self) -> Option<f64> {
        self.baud.map(|b| (self.up + self.down) as f64 * BITS_PER_BYTE / f64::from(b))
    }
}

/// Wire bytes of the chunk requests for `bytes[..]` from chunk `0` to `chunks`, and of their acks.
fn flash_wire_bytes(bytes: &[u8], chunks: usize) -> (u64, u64) {
    let mut encoder = FrameEncoder::new();
    let (mut up, mut down) = (0, 0);
    for (i, piece) in bytes.chunks(MAX_CHUNK).take(chunks).enumerate() {
        let chunk = FlashChunk {
            offset: (i * MAX_CHUNK) as u32,
            data: heapless::Vec::from_slice(piece).expect("at most MAX_CHUNK bytes"),
        };
        up += encoded_len(&mut encoder, &Request { seq: SIZING_SEQ, msg: HostMsg::FlashChunk(chunk) }) as u64;
        down += encoded_len(&mut encoder, &DeviceMsg::Ack { seq: SIZING_SEQ }) as u64;
    }
    (up, down)
}

/// `stdac::flash::flash` whole, its chunk phase timed from its progress calls (one after each ack).
fn timed_flash(client: &mut DeviceClient, path: &Path, baud: Option<u32>) -> anyhow::Result<FlashRun> {
    let bytes = std::fs::read(path)?;
    let mut acked: Vec<(u64, Instant)> = Vec::new();
    let report = flash::flash(client, path, &FlashOptions::default(), &mut |done, _| {
        acked.push((done, Instant::now()))
    })?;
    if report.resumed_from != 0 || report.already_active {
        bail!("{}: the store was not empty", path.display());
    }
    // The first progress call comes after begin, the last after the last chunk's ack.
    let (first, last) = (acked.first().context("no progress")?.1, acked.last().context("no progress")?.1);
    let total_chunks = bytes.len().div_ceil(MAX_CHUNK);
    let (up, down) = flash_wire_bytes(&bytes, total_chunks);
    let chunk_seconds = (last - first).as_secs_f64();
    Ok(FlashRun {
        bundle: file_name(path),
        baud,
        size: report.size,
        chunks: total_chunks,
        total_chunks,
        chunk_seconds,
        other_seconds: Some(report.elapsed.as_secs_f64() - chunk_seconds),
        extrapolated: false,
        up,
        down,
    })
}

/// The first `chunks` chunks of a flash, as `stdac::flash` sends them, timed; then the flash is aborted.
fn partial_flash(
    client: &mut DeviceClient,
    bytes: &[u8],
    chunks: usize,
    baud: u32,
) -> anyhow::Result<FlashRun> {
    use sha2::Digest;
    let size = bytes.len() as u32;
    let sha256: [u8; 32] = sha2::Sha256::digest(bytes).into();
    let bundle_version = stdac_device::bundle::FORMAT_VERSION;
    client.request(HostMsg::FlashBegin(FlashBegin { size, sha256, bundle_version }))?;
    let started = Instant::now();
    for (i, piece) in bytes.chunks(MAX_CHUNK).take(chunks).enumerate() {
        let chunk = FlashChunk {
            offset: (i * MAX_CHUNK) as u32,
            data: heapless::Vec::from_slice(piece).expect("at most MAX_CHUNK bytes"),
        };
        client.request(HostMsg::FlashChunk(chunk))?;
    }
    let chunk_seconds = started.elapsed().as_secs_f64();
    client.request(HostMsg::FlashAbort)?;
    let (up, down) = flash_wire_bytes(bytes, chunks);
    Ok(FlashRun {
        bundle: "mnist-st-dac-int8.stdac".into(),
        baud: Some(baud),
        size: bytes.len() as u64,
        chunks,
        total_chunks: bytes.len().div_ceil(MAX_CHUNK),
        chunk_seconds,
        other_seconds: None,
        extrapolated: true,
        up,
        down,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The `q` quantile, in milliseconds.
fn quantile(values: &[Duration], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

fn line_name(baud: Option<u32>) -> String {
    baud.map_or("unpaced".to_string(), |b| format!("{b} baud"))
}

#[allow(clippy::too_many_arguments)]
fn report(
    plan: &Plan,
    engine: &EngineRun,
    engine_gapped: &EngineRun,
    direct: &StreamRun,
    unpaced: &Compared,
    paced: &[(u32, Compared)],
    float_flash: &FlashRun,
    int8_flashes: &[FlashRun],
    slow_flash: &FlashRun,
) {
    let engine_fps = engine.per_frame.len() as f64 / engine.seconds;
    let engine_p50 = quantile(&engine.per_frame, 0.5);
    let engine_p95 = quantile(&engine.per_frame, 0.95);

    println!(
        "\n## Frames end to end (one frame = one request of {:.0} B up, ack + assignment {:.0} B down)\n",
        unpaced.pipelined.up, unpaced.pipelined.down
    );
    println!("| link | window | frames | frames/s | latency p50 ms | p95 ms | board inference µs (median) | link ms p50 (latency − inference) | peer | frames/s ÷ peer | p50 ÷ peer p50 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| engine alone, in process, 1 thread | — | {} | {engine_fps:.1} | {engine_p50:.2} | {engine_p95:.2} | — | — | — | — | — |",
        engine.per_frame.len()
    );
    let row = |name: &str, run: &StreamRun, peer: &str, peer_fps: f64, peer_p50: f64| {
        let p50 = quantile(&run.latencies, 0.5);
        println!(
            "| {name} | {} | {} | {:.1} | {p50:.2} | {:.2} | {:.0} | {:.3} | {peer} | {:.3} | {:.2} |",
            run.window,
            run.frames,
            run.fps(),
            quantile(&run.latencies, 0.95),
            run.inference_us(),
            run.link_ms(),
            run.fps() / peer_fps,
            p50 / peer_p50
        );
    };
    let p50 = |run: &StreamRun| quantile(&run.latencies, 0.5);
    row("direct pty", direct, "engine alone (compute bound)", engine_fps, engine_p50);
    for run in [&unpaced.pipelined, &unpaced.stop_and_wait] {
        row("relay, unpaced", run, "engine alone (compute bound)", engine_fps, engine_p50);
    }
    row("relay, unpaced", &unpaced.pipelined, "direct pty (window 2)", direct.fps(), p50(direct));
    let stop_and_wait_peer = |run: &StreamRun| {
        (format!("window 1, same line: {:.1} frames/s, {:.2} ms", run.fps(), p50(run)), run.fps(), p50(run))
    };
    let (peer, fps, peer_p50) = stop_and_wait_peer(&unpaced.stop_and_wait);
    row("relay, unpaced", &unpaced.pipelined, &peer, fps, peer_p50);
    for (baud, runs) in paced {
        for run in [&runs.pipelined, &runs.stop_and_wait] {
            let wire = run.wire_seconds(*baud);
            let peer = format!("line bound {baud} baud: {:.1} frames/s, {:.2} ms", 1.0 / wire, wire * 1e3);
            row(&format!("relay, {baud} baud"), run, &peer, 1.0 / wire, wire * 1e3);
        }
        let (peer, fps, peer_p50) = stop_and_wait_peer(&runs.stop_and_wait);
        row(&format!("relay, {baud} baud"), &runs.pipelined, &peer, fps, peer_p50);
    }

    println!("\n## Pipelined (window 2) against stop-and-wait (window 1): the same firmware process, the same line\n");
    println!("| line | frames/s window 2 | frames/s window 1 | window 2 ÷ window 1 | p50 ms window 2 | p50 ms window 1 | line bound frames/s | window 2 ÷ bound | window 1 ÷ bound |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut compared_json = Vec::new();
    for (baud, runs) in std::iter::once((None, unpaced)).chain(paced.iter().map(|(b, r)| (Some(*b), r))) {
        let (two, one) = (&runs.pipelined, &runs.stop_and_wait);
        let bound = baud.map(|b| 1.0 / two.wire_seconds(b));
        let over_bound =
            |run: &StreamRun| bound.map_or("—".to_string(), |b| format!("{:.3}", run.fps() / b));
        println!(
            "| {} | {:.1} | {:.1} | {:.3} | {:.2} | {:.2} | {} | {} | {} |",
            line_name(baud),
            two.fps(),
            one.fps(),
            two.fps() / one.fps(),
            p50(two),
            p50(one),
            bound.map_or("—".to_string(), |b| format!("{b:.1}")),
            over_bound(two),
            over_bound(one)
        );
        compared_json.push(json!({"baud": baud, "window2_frames_per_s": two.fps(),
            "window1_frames_per_s": one.fps(), "window2_over_window1_fps": two.fps() / one.fps(),
            "window2_latency_ms_p50": p50(two), "window1_latency_ms_p50": p50(one),
            "line_bound_frames_per_s": bound}));
    }

    let gapped_p50 = quantile(&engine_gapped.per_frame, 0.5);
    println!(
        "\nEngine alone, asleep {:.2} ms (the 921600-baud wire time) before each of {} frames: {gapped_p50:.2} ms \
         per frame p50, {:.2}× its back-to-back p50 ({engine_p50:.2} ms)",
        engine_gapped.gap.as_secs_f64() * 1e3,
        engine_gapped.per_frame.len(),
        gapped_p50 / engine_p50
    );
    println!("\n## Where a paced frame's time goes (p50 latency = wire + board inference + the rest)\n");
    println!("| line | window | wire ms (up + down) | board inference ms | rest ms | p50 ms | frames/s bound with inference (window 1: wire + inference, window 2: the larger) | frames/s ÷ that |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut turnaround = Vec::new();
    for (baud, runs) in paced {
        for run in [&runs.pipelined, &runs.stop_and_wait] {
            let wire = run.wire_seconds(*baud) * 1e3;
            let inference = run.inference_us() / 1e3;
            let p50 = p50(run);
            let rest = p50 - wire - inference;
            let bound = run.bound_with_inference(*baud);
            println!(
                "| {baud} baud | {} | {wire:.2} | {inference:.2} | {rest:.2} | {p50:.2} | {bound:.1} | {:.3} |",
                run.window,
                run.fps() / bound
            );
            turnaround.push(json!({"baud": baud, "window": run.window, "wire_ms": wire,
                "inference_ms": inference, "rest_ms": rest, "fps_bound_with_inference": bound,
                "fps_over_that": run.fps() / bound}));
        }
    }

    println!("\n## Flashing (chunks of {MAX_CHUNK} B, stop-and-wait: each waits for its ack)\n");
    println!("| bundle | line | chunks timed | chunk phase s | commit etc. s | bytes/s | line bound s (requests + acks) | speed ÷ bound | ms per chunk | wire ms per chunk | idle ms per chunk | idle s, whole bundle |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut flash_json = Vec::new();
    for run in std::iter::once(float_flash).chain(int8_flashes).chain(std::iter::once(slow_flash)) {
        let timed_bytes = (run.chunks * MAX_CHUNK).min(run.size as usize) as f64;
        let bytes_per_s = timed_bytes / run.chunk_seconds;
        let per_chunk = run.per_chunk() * 1e3;
        let (bound, ratio, wire_per_chunk, idle, idle_total) = match run.wire_seconds() {
            Some(wire) => {
                let wire_per_chunk = wire / run.chunks as f64 * 1e3;
                let idle = per_chunk - wire_per_chunk;
                let scale = run.total_chunks as f64 / run.chunks as f64;
                (
                    format!("{:.1}", wire * scale),
                    format!("{:.3}", wire / run.chunk_seconds),
                    format!("{wire_per_chunk:.3}"),
                    format!("{idle:.3}"),
                    format!("{:.1}", idle * run.total_chunks as f64 / 1e3),
                )
            }
            None => ("—".into(), "—".into(), "—".into(), "—".into(), "—".into()),
        };
        let chunk_phase = if run.extrapolated {
            format!("{:.2} (whole bundle, extrapolated: {:.0})", run.chunk_seconds, run.all_chunks_seconds())
        } else {
            format!("{:.2}", run.chunk_seconds)
        };
        println!(
            "| {} | {} | {} of {} | {chunk_phase} | {} | {bytes_per_s:.0} (≈ {:.0} baud) | {bound} | {ratio} | {per_chunk:.3} | {wire_per_chunk} | {idle} | {idle_total} |",
            run.bundle,
            line_name(run.baud),
            run.chunks,
            run.total_chunks,
            run.other_seconds.map_or("—".into(), |s| format!("{s:.2}")),
            bytes_per_s * BITS_PER_BYTE,
        );
        flash_json.push(json!({
            "bundle": run.bundle,
            "baud": run.baud,
            "size": run.size,
            "chunks_timed": run.chunks,
            "chunks": run.total_chunks,
            "extrapolated": run.extrapolated,
            "chunk_seconds": run.chunk_seconds,
            "all_chunks_seconds": run.all_chunks_seconds(),
            "other_seconds": run.other_seconds,
            "bytes_per_s": bytes_per_s,
            "wire_bytes_up": run.up,
            "wire_bytes_down": run.down,
            "line_bound_seconds": run.wire_seconds(),
            "speed_over_bound": run.wire_seconds().map(|w| w / run.chunk_seconds),
            "ms_per_chunk": per_chunk,
        }));
    }

    let stream_json = |run: &StreamRun, baud: Option<u32>| -> Value {
        let mut v = json!({
            "window": run.window,
            "frames": run.frames,
            "seconds": run.seconds,
            "frames_per_s": run.fps(),
            "latency_ms_p50": quantile(&run.latencies, 0.5),
            "latency_ms_p95": quantile(&run.latencies, 0.95),
            "inference_us_median": run.inference_us(),
            "link_ms_p50": run.link_ms(),
            "wire_bytes_up_per_frame": run.up,
            "wire_bytes_down_per_frame": run.down,
        });
        if let Some(baud) = baud {
            let wire = run.wire_seconds(baud);
            v["line_bound_frames_per_s"] = json!(1.0 / wire);
            v["line_bound_latency_ms"] = json!(wire * 1e3);
            v["frames_per_s_over_bound"] = json!(run.fps() * wire);
            v["min_latency_over_p50"] = json!(wire * 1e3 / quantile(&run.latencies, 0.5));
            // Were requests and replies pipelined, the busier direction alone would bound the rate.
            v["full_duplex_bound_frames_per_s"] =
                json!(f64::from(baud) / BITS_PER_BYTE / run.up.max(run.down));
        }
        v
    };
    let compared = |runs: &Compared, baud: Option<u32>| json!({"window2": stream_json(&runs.pipelined, baud), "window1": stream_json(&runs.stop_and_wait, baud)});
    let mut paced_json = serde_json::Map::new();
    for (baud, runs) in paced {
        paced_json.insert(baud.to_string(), compared(runs, Some(*baud)));
    }
    let summary = json!({
        "bench": "board_link",
        "full": plan.full,
        "engine_alone": {"frames": engine.per_frame.len(), "frames_per_s": engine_fps,
            "ms_p50": engine_p50, "ms_p95": engine_p95},
        "engine_alone_with_gaps": {"frames": engine_gapped.per_frame.len(),
            "gap_ms": engine_gapped.gap.as_secs_f64() * 1e3, "ms_p50": gapped_p50,
            "ms_p95": quantile(&engine_gapped.per_frame, 0.95), "p50_over_back_to_back": gapped_p50 / engine_p50},
        "direct_pty": stream_json(direct, None),
        "relay_unpaced": compared(unpaced, None),
        "relay_over_direct_fps": unpaced.pipelined.fps() / direct.fps(),
        "relay_overhead_ms_p50": p50(&unpaced.pipelined) - p50(direct),
        // The same, net of the board's inference time, which varies between the two firmware processes.
        "relay_link_overhead_ms_p50": unpaced.pipelined.link_ms() - direct.link_ms(),
        "direct_over_engine_fps": direct.fps() / engine_fps,
        "relay_unpaced_over_engine_fps": unpaced.pipelined.fps() / engine_fps,
        "paced": paced_json,
        "window2_against_window1": compared_json,
        "paced_turnaround": turnaround,
        "flash": flash_json,
    });
    println!("\n{summary}");
}
