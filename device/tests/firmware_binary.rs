//! The `stdac-device` binary as a board runs it, serving a real pseudo-terminal; spoken to with the
//! protocol crate alone.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use stdac_protocol::{
    Capabilities, Decoder, DeviceHello, DeviceMsg, ErrorCode, FlashBegin, FlashChunk, FrameChunk,
    FrameEncoder, HostHello, HostMsg, PixelFormat, Request, MAX_CHUNK, PROTOCOL_VERSION,
};

#[path = "support/onnx.rs"]
mod onnx;

struct Firmware {
    child: Child,
    line: TTYPort,
    decoder: Decoder<DeviceMsg>,
    encoder: FrameEncoder,
}

impl Drop for Firmware {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Firmware {
    fn start() -> Firmware {
        Firmware::start_with(&[]).0
    }

    /// Starts the firmware with `args` besides its port; returns it and its hello.
    fn start_with(args: &[&str]) -> (Firmware, DeviceHello) {
        let (mut line, slave) = TTYPort::pair().unwrap();
        let tty = slave.name().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stdac-device"))
            .args(["--port", &tty])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        line.set_timeout(Duration::from_millis(100)).unwrap();
        let mut firmware = Firmware { child, line, decoder: Decoder::new(), encoder: FrameEncoder::new() };
        // The hello waits in the tty until the firmware opens it; then it answers.
        let hello = HostMsg::Hello(HostHello {
            protocol: PROTOCOL_VERSION,
            host_version: heapless::String::try_from("test").unwrap(),
        });
        firmware.send(0, hello);
        drop(slave);
        let DeviceMsg::Hello { seq: 0, hello } = firmware.reply() else { panic!("no hello") };
        (firmware, hello)
    }

    fn send(&mut self, seq: u16, msg: HostMsg) {
        let wire = self.encoder.encode(&Request { seq, msg }).unwrap();
        self.line.write_all(wire).unwrap();
    }

    fn reply(&mut self) -> DeviceMsg {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 1];
        while Instant::now() < deadline {
            // One byte at a time, so no byte after the reply is read and lost.
            if let Ok(1) = self.line.read(&mut buf) {
                if let Some((msg, _)) = self.decoder.feed(&buf) {
                    return msg.expect("the firmware sends valid frames");
                }
            }
        }
        panic!("the firmware did not reply within 10 s")
    }
}

#[test]
fn the_firmware_answers_pings_and_survives_garbage_and_oversized_frames() {
    let mut firmware = Firmware::start();
    firmware.send(1, HostMsg::Ping);
    assert_eq!(firmware.reply(), DeviceMsg::Ack { seq: 1 });

    let mut flood = vec![0u8];
    flood.extend(std::iter::repeat_n(0xC3u8, 20_000)); // no delimiter for ~18 frames' worth
    flood.push(0);
    firmware.line.write_all(&flood).unwrap();
    let max = stdac_protocol::MAX_FRAME as u32;
    assert_eq!(firmware.reply(), DeviceMsg::Nack { seq: None, code: ErrorCode::Oversized { max } });

    firmware.line.write_all(&[0xFF, 0x13, 0x00]).unwrap();
    assert_eq!(firmware.reply(), DeviceMsg::Nack { seq: None, code: ErrorCode::CorruptFrame });

    firmware.send(2, HostMsg::Ping);
    assert_eq!(firmware.reply(), DeviceMsg::Ack { seq: 2 }, "still serving after the garbage");
    assert!(firmware.child.try_wait().unwrap().is_none(), "and still running");
}

#[test]
fn the_firmware_refuses_what_it_cannot_do_yet() {
    let mut firmware = Firmware::start();
    firmware.send(3, HostMsg::FlashCommit);
    assert_eq!(firmware.reply(), DeviceMsg::Nack { seq: Some(3), code: ErrorCode::Unsupported });
    firmware.send(4, HostMsg::StartStream);
    assert_eq!(firmware.reply(), DeviceMsg::Nack { seq: Some(4), code: ErrorCode::Unsupported });
}

#[test]
fn a_missing_port_is_an_error_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_stdac-device"))
        .args(["--port", "/dev/stdac-no-such-tty"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open serial port /dev/stdac-no-such-tty"), "{stderr}");
}

/// A real bundle: a 28 × 28 grey image → Flatten → Gemm, the embedding the mean of the left half's
/// pixels and the mean of the right half's; centroids (1, 0) and (0, 1).
fn bundle() -> Vec<u8> {
    use stdac_device::bundle::{Bundle, InputSpec, Manifest};
    let mut w = vec![0.0f32; 784 * 2];
    for (pixel, pair) in w.chunks_mut(2).enumerate() {
        pair[usize::from(pixel % 28 >= 14)] = 1.0 / 392.0;
    }
    let graph = onnx::model(
        vec![
            onnx::node("Flatten", &["image"], "flat", vec![]),
            onnx::node("Gemm", &["flat", "w"], "embedding", vec![]),
        ],
        vec![onnx::floats("w", &[784, 2], &w)],
        vec![onnx::value("image", &[-1, 1, 28, 28])],
        vec![onnx::value("embedding", &[-1, 2])],
    );
    let manifest = Manifest {
        name: "halves".into(),
        family: "autoencoder".into(),
        input: InputSpec {
            name: "image".into(),
            shape: vec![-1, 1, 28, 28],
            dtype: "f32".into(),
            range: [0.0, 1.0],
        },
        outputs: vec!["embedding".into()],
        embedding_dim: 2,
        clusters: 2,
        centroids: vec![1.0, 0.0, 0.0, 1.0],
        metric: "euclidean".into(),
        class_names: vec![],
        novelty_threshold: None,
        quantization: "none".into(),
        tract_version: stdac_device::engine::TRACT_VERSION.into(),
        graph_sha256: String::new(),
        card: serde_json::Value::Null,
    };
    Bundle::new(manifest, graph).to_bytes()
}

#[test]
fn the_firmware_flashes_into_its_store_assigns_frames_and_keeps_the_model_across_restarts() {
    use sha2::Digest;
    let store = tempfile::tempdir().unwrap();
    let store_arg = store.path().to_str().unwrap();
    let (mut firmware, hello) = Firmware::start_with(&["--store", store_arg]);
    assert_eq!(hello.model, None);
    assert!(hello.capabilities.has(Capabilities::FLASH | Capabilities::FRAMES));

    let bytes = bundle();
    let sha256: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    let begin =
        FlashBegin { size: bytes.len() as u32, sha256, bundle_version: stdac_device::bundle::FORMAT_VERSION };
    firmware.send(1, HostMsg::FlashBegin(begin));
    assert_eq!(firmware.reply(), DeviceMsg::Ack { seq: 1 });
    let mut seq = 1;
    for (i, piece) in bytes.chunks(MAX_CHUNK).enumerate() {
        seq += 1;
        let data = heapless::Vec::from_slice(piece).unwrap();
        firmware.send(seq, HostMsg::FlashChunk(FlashChunk { offset: (i * MAX_CHUNK) as u32, data }));
        assert_eq!(firmware.reply(), DeviceMsg::Ack { seq });
    }
    seq += 1;
    firmware.send(seq, HostMsg::FlashCommit);
    assert_eq!(firmware.reply(), DeviceMsg::Ack { seq });

    // A right-bright picture in two chunks: an ack each, then its assignment.
    let pixels: Vec<u8> = (0..784).map(|i| if i % 28 < 14 { 0 } else { 255 }).collect();
    for offset in [0, 400] {
        seq += 1;
        let end = (offset + 400).min(784);
        let frame = FrameChunk {
            frame_id: 77,
            width: 28,
            height: 28,
            format: PixelFormat::Gray8,
            offset: offset as u32,
            data: heapless::Vec::from_slice(&pixels[offset..end]).unwrap(),
        };
        firmware.send(seq, HostMsg::Frame(frame));
        assert_eq!(firmware.reply(), DeviceMsg::Ack { seq });
    }
    let DeviceMsg::Assignment(assignment) = firmware.reply() else { panic!("no assignment") };
    assert_eq!((assignment.frame_id, assignment.cluster), (77, 1));
    assert!(assignment.distance < 1e-4, "{assignment:?}");
    drop(firmware);

    let (_firmware, hello) = Firmware::start_with(&["--store", store_arg]);
    let model = hello.model.expect("the store keeps the model across a restart");
    assert_eq!((model.id.as_str(), model.sha256), ("halves", sha256));
}
