//! The board side end to end: the real firmware (`stdac device`) as its own process on a pseudo-terminal,
//! talked to through the `stdac` command line and through the library, over a clean line, a damaged
//! line, a firmware killed with SIGKILL mid-flash, and a host that sends garbage.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{last_json, ok, stdac};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serialport::TTYPort;
use sha2::Digest;
use stdac::data::{self, Source, Split};
use stdac::flash::{self, FlashOptions};
use stdac::hil::{self, HilOptions};
use stdac::local_device::LocalDevice;
use stdac::relay::{Faults, Relay, RelayConfig};
use stdac::stream::{self, Frame};
use stdac::transport::{DeviceClient, LinkConfig, LinkError};
use stdac_device::bundle::FORMAT_VERSION;
use stdac_device::engine::Engine;
use stdac_device::server::MAX_FRAME_BYTES;
use stdac_protocol::{
    crc32, Decoder, DeviceMsg, ErrorCode, FlashBegin, FlashChunk, FrameChunk, FrameEncoder, FrameError,
    HostHello, HostMsg, PixelFormat, Request, MAX_CHUNK, MAX_FRAME, PROTOCOL_VERSION,
};

const FLOAT: &str = "models/mnist-st-dac/mnist-st-dac.stdac";
const INT8: &str = "models/mnist-st-dac-int8/mnist-st-dac-int8.stdac";
/// The store's limit on a bundle's size (`stdac_device::store::MAX_BUNDLE_SIZE`).
const MAX_BUNDLE: u32 = 256 << 20;

fn bundle(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn sha256_of(path: &Path) -> [u8; 32] {
    sha2::Sha256::digest(std::fs::read(path).unwrap()).into()
}

fn mnist(n: usize) -> Vec<Frame> {
    let dataset = data::load(&Source::Mnist, Some(Split::Test), Some(n), None).unwrap();
    stream::dataset_frames(&dataset).unwrap()
}

/// The firmware as its own process, `stdac device --port P --store DIR`, as a board runs it. Killed
/// (SIGKILL) and reaped when dropped.
struct Firmware(Child);

impl Firmware {
    fn start(port: &str, store: &Path, log: &Path) -> Firmware {
        let child = Command::new(env!("CARGO_BIN_EXE_stdac"))
            .args(["device", "--port", port, "--store"])
            .arg(store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .unwrap();
        Firmware(child)
    }
}

impl Drop for Firmware {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client on `port` once the firmware behind it answers a hello (it may still be starting).
fn connect(port: &str, config: LinkConfig) -> DeviceClient {
    let mut client = DeviceClient::open(port, config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.hello() {
            Ok(_) => return client,
            Err(error) if Instant::now() < deadline => {
                eprintln!("waiting for the firmware on {port}: {error}");
                thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("the firmware on {port} never answered: {error}"),
        }
    }
}

/// The firmware behind a pseudo-terminal of its own (`LocalDevice`), serving `store`.
fn local_firmware(store: &Path, log: &Path) -> (LocalDevice, DeviceClient) {
    let args = ["device".to_string(), "--store".to_string(), store.display().to_string()];
    LocalDevice::start(Path::new(env!("CARGO_BIN_EXE_stdac")), &args, Some(log), LinkConfig::default())
        .unwrap()
}

/// The active model's SHA-256 as the board reports it.
fn active_sha(client: &mut DeviceClient) -> Option<[u8; 32]> {
    client.hello().unwrap().model.map(|m| m.sha256)
}

/// Streams `frames` and checks each assignment is exactly what the host's engine gives (same code on
/// the same machine: bit for bit).
fn assert_assigns_like(client: &mut DeviceClient, engine: &Engine, frames: &[Frame]) {
    for frame in frames {
        let got = stream::send_frame(client, frame, Duration::from_secs(5), 3).unwrap().assignment;
        let want = engine.assign_frame(frame.as_frame_ref()).unwrap();
        assert_eq!(
            (got.frame_id, usize::from(got.cluster), got.distance, got.margin, got.novel),
            (frame.id, want.cluster, want.distance, want.margin, want.novel),
            "frame {}",
            frame.id
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// 1. The command line over a relay

#[test]
fn cli_flashes_rolls_back_streams_and_runs_hil_over_a_relay() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(RelayConfig::default()).unwrap();
    let _firmware =
        Firmware::start(&relay.device_port, &dir.path().join("board"), &dir.path().join("device.log"));
    drop(connect(&relay.host_port, LinkConfig::default()));
    let port = relay.host_port.as_str();
    let (int8, float) = (bundle(INT8), bundle(FLOAT));
    let (int8_sha, float_sha) = (flash::hex(&sha256_of(&int8)), flash::hex(&sha256_of(&float)));
    let int8_size = std::fs::metadata(&int8).unwrap().len();

    let flashed = last_json(&ok(&stdac(&["flash", "--port", port, "--bundle", int8.to_str().unwrap()])));
    assert_eq!(flashed["already_active"], false);
    assert_eq!(flashed["sha256"], int8_sha.as_str());
    assert_eq!(flashed["model"], "mnist-st-dac-int8");
    assert_eq!((flashed["sent"].as_u64(), flashed["resumed_from"].as_u64()), (Some(int8_size), Some(0)));

    let again = last_json(&ok(&stdac(&["flash", "--port", port, "--bundle", int8.to_str().unwrap()])));
    assert_eq!((&again["already_active"], &again["sent"]), (&true.into(), &0.into()), "{again}");

    let flashed = last_json(&ok(&stdac(&["flash", "--port", port, "--bundle", float.to_str().unwrap()])));
    assert_eq!((&flashed["model"], &flashed["sha256"]), (&"mnist-st-dac".into(), &float_sha.as_str().into()));

    // Stream 20 MNIST frames to the float model; every line is the host engine's assignment.
    let jsonl = dir.path().join("stream.jsonl");
    let args = ["stream", "--port", port, "--dataset", "mnist", "--limit", "20", "--jsonl"];
    let summary = last_json(&ok(&stdac(&[&args[..], &[jsonl.to_str().unwrap()]].concat())));
    assert_eq!(summary["frames"], 20);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let ids: Vec<u64> = lines.iter().map(|l| l["frame_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (0..20).collect::<Vec<u64>>());
    let engine = Engine::from_file(&float).unwrap();
    for (line, frame) in lines.iter().zip(mnist(20)) {
        let want = engine.assign_frame(frame.as_frame_ref()).unwrap();
        assert_eq!(line["cluster"].as_u64(), Some(want.cluster as u64), "{line}");
        assert_eq!(line["label"].as_i64(), frame.label);
    }

    // HIL against the model already there: nothing is sent, 30 frames all agree.
    let out = dir.path().join("hil");
    let args = ["hil", "--port", port, "--bundle", float.to_str().unwrap(), "--limit", "30", "--out"];
    let report = last_json(&ok(&stdac(&[&args[..], &[out.to_str().unwrap()]].concat())));
    assert_eq!(
        (&report["pass"], &report["frames"], &report["agreed"]),
        (&true.into(), &30.into(), &30.into())
    );
    assert_eq!(report["flash"]["already_active"], true);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("hil-report.json")).unwrap()).unwrap();
    assert_eq!(written["pass"], true);
    assert!(std::fs::read_to_string(out.join("hil-report.md")).unwrap().starts_with("# HIL report: PASS"));

    // Rollback brings the int8 model back, as a fresh `stdac info` confirms.
    let rolled = last_json(&ok(&stdac(&["flash", "--port", port, "--rollback"])));
    assert_eq!((&rolled["rollback"], &rolled["model"]), (&true.into(), &"mnist-st-dac-int8".into()));
    let info = last_json(&ok(&stdac(&["info", "--port", port])));
    assert_eq!(info["model"]["sha256"], int8_sha.as_str(), "{info}");
    assert_eq!(info["protocol"], PROTOCOL_VERSION);
}

#[test]
fn demo_flashes_streams_and_writes_its_report_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let summary = last_json(&ok(&stdac(&["demo", "--frames", "20", "--out", dir.path().to_str().unwrap()])));
    assert_eq!(
        (&summary["ok"], &summary["frames"], &summary["identical"]),
        (&true.into(), &20.into(), &20.into())
    );
    for file in ["hil-report.json", "hil-report.md", "confusion.png", "clusters.png", "device.log"] {
        let size = std::fs::metadata(dir.path().join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "{file} is missing or empty");
    }
    for figure in ["confusion.png", "clusters.png"] {
        image::open(dir.path().join(figure)).unwrap();
    }
    let assignments = std::fs::read_to_string(dir.path().join("assignments.jsonl")).unwrap();
    assert_eq!(assignments.lines().count(), 20);
    assert!(dir.path().join("board/active.stdac").exists(), "the demo board's store holds the flashed model");
}

// ---------------------------------------------------------------------------------------------------
// 2. A damaged line

/// A short timeout (the stalls outlast it) and retries enough for a line that damages many requests.
fn noisy_link() -> LinkConfig {
    LinkConfig { timeout: Duration::from_millis(200), retries: 12, ..LinkConfig::default() }
}

fn assert_every_kind_of_fault(relay: &Relay, line: &str) {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &relay.counts;
    let kinds = [
        ("flipped", c.flipped.load(Relaxed)),
        ("dropped", c.dropped.load(Relaxed)),
        ("duplicated", c.duplicated.load(Relaxed)),
        ("stalls", c.stalls.load(Relaxed)),
    ];
    eprintln!("{line}: {kinds:?}, {} bytes", c.bytes.load(Relaxed));
    for (kind, n) in kinds {
        assert!(n > 0, "{line}: no {kind} bytes: {kinds:?}");
    }
}

#[test]
fn a_damaged_line_never_lets_a_wrong_assignment_through() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("board");
    let float = bundle(FLOAT);
    let stall = Duration::from_millis(350);

    // The flash carries 27 MB one way, so its line damages bytes rarely: still hundreds of faults.
    let flash_line = Relay::start(RelayConfig {
        baud: None,
        faults: Faults { seed: 11, flip: 1e-5, drop: 5e-6, duplicate: 5e-6, stall_every: 3_000_000, stall },
    })
    .unwrap();
    let firmware = Firmware::start(&flash_line.device_port, &store, &dir.path().join("device-1.log"));
    let mut client = connect(&flash_line.host_port, noisy_link());
    let options = FlashOptions { commit_timeout: Duration::from_secs(5), ..FlashOptions::default() };
    let report = flash::flash(&mut client, &float, &options, &mut |_, _| {}).unwrap();
    assert_eq!(report.model.sha256, sha256_of(&float), "the board verified the bundle");
    assert!(report.resends > 0, "a damaged flash needs resends");
    assert_every_kind_of_fault(&flash_line, "flash line");
    drop((client, firmware, flash_line));

    // The stream is a few hundred kB, so its line damages about every other frame.
    let stream_line = Relay::start(RelayConfig {
        baud: None,
        faults: Faults { seed: 12, flip: 4e-4, drop: 2e-4, duplicate: 2e-4, stall_every: 20_000, stall },
    })
    .unwrap();
    let _firmware = Firmware::start(&stream_line.device_port, &store, &dir.path().join("device-2.log"));
    let mut client = connect(&stream_line.host_port, noisy_link());
    assert_eq!(active_sha(&mut client), Some(sha256_of(&float)), "the model survived the restart");
    let frames = mnist(120);
    let options = HilOptions { wait: Duration::from_millis(300), retries: 10, ..HilOptions::default() };
    let hil = hil::check(&mut client, report, &frames, "mnist", &options, None, &mut |_, _| {}).unwrap();
    assert!(hil.mismatches.is_empty(), "{:?}", hil.mismatches);
    assert!(hil.pass && hil.agreed == frames.len(), "{}", hil.to_markdown());
    assert_eq!(hil.bit_identical, frames.len(), "same code, same machine: bit for bit");
    assert_eq!(hil.clusters.len(), frames.len());
    assert!(hil.resends > 0, "a damaged stream needs resends");
    assert_every_kind_of_fault(&stream_line, "stream line");
    client.ping().expect("the session still answers");
}

// ---------------------------------------------------------------------------------------------------
// 3. SIGKILL during a flash, a commit and a rollback

/// FlashBegin and then `chunks` chunks from offset 0 (all of them with `None`), each acknowledged.
fn send_part(client: &mut DeviceClient, bytes: &[u8], chunks: Option<usize>) {
    let sha256 = sha2::Sha256::digest(bytes).into();
    let begin = FlashBegin { size: bytes.len() as u32, sha256, bundle_version: FORMAT_VERSION };
    client.request(HostMsg::FlashBegin(begin)).unwrap();
    for (i, piece) in bytes.chunks(MAX_CHUNK).take(chunks.unwrap_or(usize::MAX)).enumerate() {
        let data = heapless::Vec::from_slice(piece).unwrap();
        client.request(HostMsg::FlashChunk(FlashChunk { offset: (i * MAX_CHUNK) as u32, data })).unwrap();
    }
}

/// Sends `msg` from another thread and kills the firmware `after` it went out; returns whether the
/// firmware acknowledged it before it died.
fn kill_during(device: &mut LocalDevice, mut client: DeviceClient, msg: HostMsg, after: Duration) -> bool {
    let worker = thread::spawn(move || client.request_within(msg, Duration::from_secs(30)));
    thread::sleep(after);
    device.kill().unwrap();
    match worker.join().unwrap() {
        Ok(DeviceMsg::Ack { .. }) => true,
        Ok(reply) => panic!("unexpected reply {reply:?}"),
        Err(LinkError::Closed { .. }) => false,
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn sigkill_mid_flash_commit_or_rollback_always_leaves_a_model_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("board");
    let mut starts = 0;
    let mut start = || {
        starts += 1;
        local_firmware(&store, &dir.path().join(format!("device-{starts}.log")))
    };
    let (a_path, b_path) = (bundle(FLOAT), bundle(INT8));
    let (a, b) = (std::fs::read(&a_path).unwrap(), std::fs::read(&b_path).unwrap());
    let (a_sha, b_sha) = (sha256_of(&a_path), sha256_of(&b_path));
    let frames = mnist(8);
    let a_engine = Engine::from_file(&a_path).unwrap();
    let b_engine = Engine::from_file(&b_path).unwrap();

    // A, flashed whole by hand so its commit can be timed: the window the random kills aim at.
    let (mut device, mut client) = start();
    send_part(&mut client, &a, None);
    let started = Instant::now();
    client.request_within(HostMsg::FlashCommit, Duration::from_secs(30)).unwrap();
    let commit_time = started.elapsed();
    assert_eq!(active_sha(&mut client), Some(a_sha));

    // Part of B, then SIGKILL: A still serves, and B resumes exactly where the board stopped.
    let sent = 700;
    send_part(&mut client, &b, Some(sent));
    device.kill().unwrap();
    drop(client);
    let (mut device, mut client) = start();
    assert_eq!(active_sha(&mut client), Some(a_sha));
    assert_assigns_like(&mut client, &a_engine, &frames);
    let report = flash::flash(&mut client, &b_path, &FlashOptions::default(), &mut |_, _| {}).unwrap();
    assert_eq!(report.resumed_from, (sent * MAX_CHUNK) as u64);
    assert_eq!(report.sent, b.len() as u64 - report.resumed_from);
    assert_eq!(report.model.sha256, b_sha);
    assert_assigns_like(&mut client, &b_engine, &frames[..1]);

    // SIGKILL at seeded random points of a commit, then of a rollback: the store always comes back
    // with A or B, the one acknowledged if the kill came after the reply, and that model serves.
    let mut rng = ChaCha8Rng::seed_from_u64(0x6b696c6c);
    let window = commit_time.as_millis() as u64 * 3 / 2 + 5;
    let mut active = b_sha;
    for round in 0..4 {
        let (target, bytes, path) = if active == a_sha { (b_sha, &b, &b_path) } else { (a_sha, &a, &a_path) };
        let other = if target == a_sha { b_sha } else { a_sha };
        send_part(&mut client, bytes, None);
        let after = Duration::from_millis(if round == 0 { 1 } else { rng.random_range(0..window) });
        let acked = kill_during(&mut device, client, HostMsg::FlashCommit, after);
        (device, client) = start();
        let now = active_sha(&mut client).expect("a model after a commit cut short");
        eprintln!(
            "round {round}: commit killed after {after:?} (acked: {acked}): active is target: {}",
            now == target
        );
        assert!(now == target || (now == other && !acked), "round {round}: commit acked but not kept");
        if now == other {
            // The whole bundle is still there: the flash finishes without sending a byte.
            let report = flash::flash(&mut client, path, &FlashOptions::default(), &mut |_, _| {}).unwrap();
            assert_eq!((report.resumed_from, report.sent), (bytes.len() as u64, 0));
            assert_eq!(report.model.sha256, target);
        }

        let after = Duration::from_millis(rng.random_range(0..window));
        let acked = kill_during(&mut device, client, HostMsg::FlashRollback, after);
        (device, client) = start();
        active = active_sha(&mut client).expect("a model after a rollback cut short");
        eprintln!(
            "round {round}: rollback killed after {after:?} (acked: {acked}): rolled back: {}",
            active == other
        );
        assert!(
            active == other || (active == target && !acked),
            "round {round}: rollback acked but not kept"
        );
        let engine = if active == a_sha { &a_engine } else { &b_engine };
        assert_assigns_like(&mut client, engine, &frames[round..round + 1]);
    }
}

// ---------------------------------------------------------------------------------------------------
// 4. Garbage on the line and requests that make no sense

/// The host's end of a relay read and written byte by byte, to see the device's answers to what no
/// `DeviceClient` would send.
struct RawLine {
    port: TTYPort,
    decoder: Decoder<DeviceMsg>,
    encoder: FrameEncoder,
}

impl RawLine {
    fn open(path: &str) -> RawLine {
        let port = serialport::new(path, 115_200).timeout(Duration::from_millis(20)).open_native().unwrap();
        RawLine { port, decoder: Decoder::new(), encoder: FrameEncoder::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.port.write_all(bytes).unwrap();
    }

    fn request(&mut self, seq: u16, msg: HostMsg) {
        let wire = self.encoder.encode(&Request { seq, msg }).unwrap().to_vec();
        self.send(&wire);
    }

    /// What the device sends: `count` messages (waiting up to 20 s for them, however loaded the machine),
    /// then whatever else comes within 200 ms, so that an extra reply shows.
    fn replies(&mut self, count: usize) -> Vec<DeviceMsg> {
        let mut replies = Vec::new();
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut until = give_up;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            let n = match self.port.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => 0,
                Err(e) => panic!("{e}"),
            };
            let mut input = &buf[..n];
            while let Some((message, rest)) = self.decoder.feed(input) {
                replies.push(message.unwrap_or_else(|e: FrameError| panic!("a damaged reply: {e:?}")));
                input = rest;
            }
            if replies.len() >= count && until == give_up {
                until = Instant::now() + Duration::from_millis(200);
            }
        }
        replies
    }
}

/// COBS, for hand-made frames (the protocol crate keeps its encoder private).
fn cobs(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    let mut code_at = 0;
    for &byte in body {
        if byte != 0 {
            out.push(byte);
        }
        if byte == 0 || out.len() - code_at == 0xFF {
            out[code_at] = (out.len() - code_at) as u8;
            code_at = out.len();
            out.push(0);
        }
    }
    out[code_at] = (out.len() - code_at) as u8;
    out
}

fn frame_chunk(
    frame_id: u32,
    (width, height): (u16, u16),
    format: PixelFormat,
    offset: u32,
    data: &[u8],
) -> HostMsg {
    let data = heapless::Vec::from_slice(data).unwrap();
    HostMsg::Frame(FrameChunk { frame_id, width, height, format, offset, data })
}

fn refusal(client: &mut DeviceClient, msg: HostMsg) -> ErrorCode {
    match client.request(msg) {
        Err(LinkError::Rejected { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn garbage_and_nonsense_requests_are_refused_and_the_device_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(RelayConfig::default()).unwrap();
    let _firmware =
        Firmware::start(&relay.device_port, &dir.path().join("board"), &dir.path().join("device.log"));
    let float = bundle(FLOAT);
    let mut client = connect(&relay.host_port, LinkConfig::default());
    flash::flash(&mut client, &float, &FlashOptions::default(), &mut |_, _| {}).unwrap();
    drop(client);

    // On the wire: each bad frame gets a nack that names no request, with the reason.
    let mut line = RawLine::open(&relay.host_port);
    line.replies(0); // whatever an earlier session left unread
    let mut rng = ChaCha8Rng::seed_from_u64(0x6761726261);
    let mut expected = Vec::new();
    // Random bytes cut by delimiters into pieces of random length, one nack each.
    let mut noise = vec![0u8];
    for _ in 0..12 {
        let len = rng.random_range(1..MAX_FRAME / 2);
        noise.extend((0..len).map(|_| rng.random_range(1..=255u8)));
        noise.push(0);
        expected.push(ErrorCode::CorruptFrame);
    }
    // A long run with no delimiter at all, and a well-formed frame one byte over the maximum.
    noise.extend((0..100_000).map(|_| rng.random_range(1..=255u8)));
    noise.push(0);
    let mut body: Vec<u8> = (0..MAX_FRAME - 3).map(|_| rng.random()).collect();
    body.extend(crc32(&body).to_le_bytes());
    noise.extend(cobs(&body));
    noise.push(0);
    expected.extend([ErrorCode::Oversized { max: MAX_FRAME as u32 }; 2]);
    line.send(&noise);
    // A frame with a good CRC that holds no request.
    line.send(FrameEncoder::new().encode(&(7u16, 200u32, 3u8)).unwrap());
    expected.push(ErrorCode::Malformed);
    let replies = line.replies(expected.len());
    let want: Vec<DeviceMsg> = expected.iter().map(|&code| DeviceMsg::Nack { seq: None, code }).collect();
    assert_eq!(replies, want);
    line.request(41, HostMsg::Ping);
    assert_eq!(line.replies(1), [DeviceMsg::Ack { seq: 41 }]);
    drop(line);

    // Requests that arrive intact but make no sense: each refused with its reason.
    let mut client = connect(&relay.host_port, LinkConfig::default());
    let gray = PixelFormat::Gray8;
    let pixels = [7u8; 1024];
    let cases = [
        (
            frame_chunk(9001, (60_000, 60_000), PixelFormat::Rgb888, 0, &pixels),
            ErrorCode::Oversized { max: MAX_FRAME_BYTES as u32 },
        ),
        (frame_chunk(9002, (0, 28), gray, 0, &[]), ErrorCode::FrameInvalid),
        (frame_chunk(9003, (28, 0), PixelFormat::Yuyv, 0, &[]), ErrorCode::FrameInvalid),
        (frame_chunk(9004, (28, 28), gray, 784, &pixels[..10]), ErrorCode::FrameInvalid),
        (frame_chunk(9005, (28, 28), gray, u32::MAX, &pixels[..1]), ErrorCode::FrameInvalid),
        (frame_chunk(9006, (28, 28), gray, 0, &pixels[..785]), ErrorCode::FrameInvalid),
        (frame_chunk(9007, (28, 28), gray, 100, &pixels[..10]), ErrorCode::FrameInvalid),
        (frame_chunk(9008, (3, 3), PixelFormat::Yuyv, 0, &pixels[..18]), ErrorCode::FrameInvalid),
        (HostMsg::StartStream, ErrorCode::Unsupported),
        (HostMsg::FlashRollback, ErrorCode::NoPrevious),
        (HostMsg::FlashCommit, ErrorCode::FlashNotStarted),
        (
            HostMsg::FlashChunk(FlashChunk { offset: 0, data: heapless::Vec::new() }),
            ErrorCode::FlashNotStarted,
        ),
        (
            HostMsg::FlashBegin(FlashBegin { size: 3, sha256: [1; 32], bundle_version: FORMAT_VERSION }),
            ErrorCode::FlashInvalidBundle,
        ),
        (
            HostMsg::FlashBegin(FlashBegin {
                size: u32::MAX,
                sha256: [1; 32],
                bundle_version: FORMAT_VERSION,
            }),
            ErrorCode::FlashTooLarge { max: MAX_BUNDLE },
        ),
        (
            HostMsg::FlashBegin(FlashBegin {
                size: 10_000,
                sha256: [1; 32],
                bundle_version: FORMAT_VERSION + 1,
            }),
            ErrorCode::FlashInvalidBundle,
        ),
    ];
    for (msg, code) in cases {
        let what = format!("{msg:?}");
        assert_eq!(refusal(&mut client, msg), code, "{}", &what[..what.len().min(80)]);
    }

    // A flash of nonsense: gaps and short commits refused, and an abort leaves the model alone.
    let begin = FlashBegin { size: 10_000, sha256: [1; 32], bundle_version: FORMAT_VERSION };
    client.request(HostMsg::FlashBegin(begin)).unwrap();
    let chunk = |offset: u32| {
        HostMsg::FlashChunk(FlashChunk { offset, data: heapless::Vec::from_slice(&pixels).unwrap() })
    };
    assert_eq!(refusal(&mut client, chunk(5_000)), ErrorCode::FlashOffset { expected: 0 });
    client.request(chunk(0)).unwrap();
    assert_eq!(refusal(&mut client, chunk(8_000)), ErrorCode::FlashOffset { expected: 1024 });
    assert_eq!(
        refusal(&mut client, chunk(9_500)),
        ErrorCode::FlashSize { expected: 10_000, written: 10_524 }
    );
    assert_eq!(
        refusal(&mut client, HostMsg::FlashCommit),
        ErrorCode::FlashSize { expected: 10_000, written: 1024 }
    );
    client.request(HostMsg::FlashAbort).unwrap();
    assert_eq!(refusal(&mut client, HostMsg::FlashCommit), ErrorCode::FlashNotStarted);

    // Two frames interleaved: the second cuts the first short, whose next chunk is then refused (it
    // starts mid-frame), and neither gets an assignment.
    let big = (40, 40);
    client.request(frame_chunk(9100, big, gray, 0, &pixels)).unwrap();
    client.request(frame_chunk(9101, big, gray, 0, &pixels)).unwrap();
    assert_eq!(
        refusal(&mut client, frame_chunk(9100, big, gray, 1024, &pixels[..576])),
        ErrorCode::FrameInvalid
    );
    assert_eq!(
        refusal(&mut client, frame_chunk(9101, big, gray, 1024, &pixels[..576])),
        ErrorCode::FrameInvalid
    );

    // A hello of another protocol version: refused until a hello that matches.
    let hello = HostHello { protocol: PROTOCOL_VERSION + 1, host_version: heapless::String::new() };
    assert!(matches!(client.request(HostMsg::Hello(hello)), Ok(DeviceMsg::Hello { .. })));
    assert!(matches!(client.ping(), Err(LinkError::ProtocolMismatch { device: PROTOCOL_VERSION, .. })));

    // Through all of that the device kept its model and serves real frames exactly as the host does.
    assert_eq!(active_sha(&mut client), Some(sha256_of(&float)));
    client.ping().unwrap();
    let frames = mnist(5);
    assert_assigns_like(&mut client, &Engine::from_file(&float).unwrap(), &frames);
    while let Some(event) = client.next_event(Duration::from_millis(100)).unwrap() {
        if let DeviceMsg::Assignment(a) = event {
            assert!(frames.iter().any(|f| f.id == a.frame_id), "an assignment for a refused frame: {a:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// 5. The host's window of frames in flight, against the firmware's own server (`Server::run`, in this
//    process) behind a line that loses the assignments it is told to

/// The board's end of the line, passing every message through except the assignments of the frames in
/// `lose` (as many of each as its count says): those vanish, as if damaged on the way.
struct LossyLine {
    port: stdac_device::serial::SerialStream,
    unflushed: Vec<u8>,
    decoder: Decoder<DeviceMsg>,
    lose: std::collections::HashMap<u32, u32>,
    lost: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
}

impl embedded_io::ErrorType for LossyLine {
    type Error = std::io::Error;
}

impl embedded_io::Read for LossyLine {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.port.read(buf)
    }
}

impl embedded_io::ReadReady for LossyLine {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        self.port.read_ready()
    }
}

impl embedded_io::Write for LossyLine {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.unflushed.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// The server flushes after each whole message: the place to decide its fate.
    fn flush(&mut self) -> Result<(), Self::Error> {
        let wire = std::mem::take(&mut self.unflushed);
        if let Some((Ok(DeviceMsg::Assignment(a)), _)) = self.decoder.feed(&wire) {
            if let Some(left) = self.lose.get_mut(&a.frame_id).filter(|left| **left > 0) {
                *left -= 1;
                self.lost.lock().unwrap().push(a.frame_id);
                return Ok(());
            }
        }
        self.port.write_all(&wire)?;
        self.port.flush()
    }
}

/// The float model's server, on a thread of its own, behind a [`LossyLine`] losing `lose`; a client of
/// it named `fake-board`, and the list of the assignments lost so far.
fn lossy_board(
    store: &Path,
    lose: &[(u32, u32)],
) -> (DeviceClient, std::sync::Arc<std::sync::Mutex<Vec<u32>>>) {
    let bytes = std::fs::read(bundle(FLOAT)).unwrap();
    let mut models = stdac_device::store::ModelStore::open(store).unwrap();
    models.begin(bytes.len() as u64, sha2::Sha256::digest(&bytes).into()).unwrap();
    for (i, piece) in bytes.chunks(MAX_CHUNK).enumerate() {
        models.write_chunk((i * MAX_CHUNK) as u64, piece).unwrap();
    }
    models.commit().unwrap();
    let mut server = stdac_device::Server::with_store(models);

    let (host_end, board_end) = TTYPort::pair().unwrap();
    let port =
        stdac_device::serial::open(&serialport::SerialPort::name(&board_end).unwrap(), 115_200).unwrap();
    let lost = std::sync::Arc::default();
    let line = LossyLine {
        port,
        unflushed: Vec::new(),
        decoder: Decoder::new(),
        lose: lose.iter().copied().collect(),
        lost: std::sync::Arc::clone(&lost),
    };
    // Serves until the host's end closes; the board's end is held open by the thread till then.
    thread::spawn(move || {
        let _board_end = board_end;
        let _ = server.run(&mut stdac_device::Link::new(line));
    });
    let config = LinkConfig { timeout: Duration::from_secs(2), ..LinkConfig::default() };
    let mut client = DeviceClient::new(Box::new(host_end), "fake-board", config);
    client.hello().unwrap();
    (client, lost)
}

#[test]
fn a_window_of_frames_recovers_lost_assignments_and_hands_them_on_in_frame_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut client, lost) = lossy_board(dir.path(), &[(3, 1), (7, 2), (11, 1)]);
    let frames = mnist(12);
    let engine = Engine::from_file(&bundle(FLOAT)).unwrap();
    let wait = Duration::from_millis(300);
    let options = stream::StreamOptions { window: 2, wait, retries: 3 };
    let mut received = Vec::new();
    stream::stream_frames(&mut client, &frames, &options, &mut |frame, r| {
        assert_eq!(r.assignment.frame_id, frame.id, "an assignment handed on with its own frame");
        received.push(r);
        Ok(())
    })
    .unwrap();

    // Which of 11's first assignment and 7's second goes first depends on timing: compare as a set.
    let mut lost = lost.lock().unwrap().clone();
    lost.sort_unstable();
    assert_eq!(lost, [3, 7, 7, 11], "each loss happened, and 7's resend was lost too");
    let ids: Vec<u32> = received.iter().map(|r| r.assignment.frame_id).collect();
    assert_eq!(ids, (0..12).collect::<Vec<u32>>(), "in frame order, each once");
    for (r, frame) in received.iter().zip(&frames) {
        let want = engine.assign_frame(frame.as_frame_ref()).unwrap();
        let got = &r.assignment;
        assert_eq!(
            (usize::from(got.cluster), got.distance, got.margin, got.novel),
            (want.cluster, want.distance, want.margin, want.novel),
            "frame {}: the frame sent again is assigned the same",
            frame.id
        );
        assert_eq!(r.label, frame.label);
        // A lost assignment was waited for, then its frame sent again: once for 3 and 11, twice for 7.
        // (A loaded machine may make any frame wait that long, so the others are not bounded here.)
        let latency = r.latency.unwrap();
        let waits = match frame.id {
            3 | 11 => 1,
            7 => 2,
            _ => 0,
        };
        assert!(latency >= waits * wait, "frame {}: {latency:?}", frame.id);
    }
}

#[test]
fn a_frame_whose_assignment_never_comes_fails_the_stream_naming_it_and_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let (mut client, lost) = lossy_board(dir.path(), &[(4, u32::MAX)]);
    let frames = mnist(8);
    let options = stream::StreamOptions { window: 2, wait: Duration::from_millis(200), retries: 2 };
    let mut handed_on = Vec::new();
    let error = stream::stream_frames(&mut client, &frames, &options, &mut |frame, _| {
        handed_on.push(frame.id);
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("frame 4") && error.contains("fake-board"), "{error}");
    assert_eq!(*lost.lock().unwrap(), [4, 4, 4], "sent once and again twice, then given up");
    assert_eq!(handed_on, [0, 1, 2, 3], "the frames before it were handed on, none after");
    client.ping().expect("the board still answers");
}
