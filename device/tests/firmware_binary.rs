//! The `stdac-device` binary as a board runs it, serving a real pseudo-terminal; spoken to with the
//! protocol crate alone.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use stdac_protocol::{
    Assignment, Capabilities, Decoder, DeviceHello, DeviceMsg, ErrorCode, FlashBegin, FlashChunk, FrameChunk,
    FrameEncoder, HostHello, HostMsg, PixelFormat, Request, MAX_CHUNK, PROTOCOL_VERSION,
};

#[path = "support/onnx.rs"]
mod onnx;
#[path = "support/manifest.rs"]
mod support;

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

    /// Flashes `bundle` (seq from 1), each request acked; returns the last seq used.
    fn flash(&mut self, bundle: &[u8]) -> u16 {
        use sha2::Digest;
        let sha256: [u8; 32] = sha2::Sha256::digest(bundle).into();
        let begin = FlashBegin {
            size: bundle.len() as u32,
            sha256,
            bundle_version: stdac_device::bundle::FORMAT_VERSION,
        };
        self.send(1, HostMsg::FlashBegin(begin));
        assert_eq!(self.reply(), DeviceMsg::Ack { seq: 1 });
        let mut seq = 1;
        for (i, piece) in bundle.chunks(MAX_CHUNK).enumerate() {
            seq += 1;
            let data = heapless::Vec::from_slice(piece).unwrap();
            self.send(seq, HostMsg::FlashChunk(FlashChunk { offset: (i * MAX_CHUNK) as u32, data }));
            assert_eq!(self.reply(), DeviceMsg::Ack { seq });
        }
        seq += 1;
        self.send(seq, HostMsg::FlashCommit);
        assert_eq!(self.reply(), DeviceMsg::Ack { seq });
        seq
    }

    /// Reads messages until the reply to `seq`, returning it and the assignments streamed before it.
    fn reply_amid_stream(&mut self, seq: u16) -> (DeviceMsg, Vec<Assignment>) {
        let mut streamed = Vec::new();
        loop {
            match self.reply() {
                DeviceMsg::Assignment(assignment) => streamed.push(assignment),
                DeviceMsg::Ack { seq: s } | DeviceMsg::Nack { seq: Some(s), .. } if s != seq => {
                    panic!("a reply to {s} while waiting for {seq}")
                }
                reply @ (DeviceMsg::Ack { .. } | DeviceMsg::Nack { .. }) => return (reply, streamed),
                other => panic!("unexpected while streaming: {other:?}"),
            }
        }
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
    use stdac_device::bundle::Bundle;
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
    let manifest = support::manifest("halves", &[-1, 1, 28, 28]);
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
    let mut seq = firmware.flash(&bytes);

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

#[test]
fn the_firmware_streams_a_folder_of_pictures_and_keeps_answering_while_it_does() {
    // Six PNGs: even ones bright on the left (cluster 0), odd ones on the right (cluster 1).
    let frames = tempfile::tempdir().unwrap();
    for i in 0..6u32 {
        let picture = image::GrayImage::from_fn(28, 28, |x, _| {
            image::Luma([if (x < 14) == (i % 2 == 0) { 230 } else { 10 }])
        });
        picture.save(frames.path().join(format!("digit-{i}.png"))).unwrap();
    }
    let store = tempfile::tempdir().unwrap();
    let args = ["--store", store.path().to_str().unwrap(), "--frames", frames.path().to_str().unwrap()];
    let (mut firmware, hello) =
        Firmware::start_with(&[&args[..], &["--fps", "0", "--loop", "--queue", "3"]].concat());
    assert!(hello.capabilities.has(Capabilities::CAMERA | Capabilities::FLASH));
    firmware.send(1, HostMsg::StartStream);
    assert_eq!(firmware.reply(), DeviceMsg::Nack { seq: Some(1), code: ErrorCode::NoModel });

    let mut seq = firmware.flash(&bundle()) + 1;
    firmware.send(seq, HostMsg::StartStream);
    assert_eq!(firmware.reply(), DeviceMsg::Ack { seq });
    let mut streamed = Vec::new();
    while streamed.len() < 30 {
        let DeviceMsg::Assignment(assignment) = firmware.reply() else {
            panic!("only assignments while streaming")
        };
        streamed.push(assignment);
    }
    // A ping amid the stream is answered, the stream going on around it.
    seq += 1;
    firmware.send(seq, HostMsg::Ping);
    let (reply, more) = firmware.reply_amid_stream(seq);
    assert_eq!(reply, DeviceMsg::Ack { seq });
    streamed.extend(more);

    seq += 1;
    firmware.send(seq, HostMsg::StopStream);
    let (reply, more) = firmware.reply_amid_stream(seq);
    assert_eq!(reply, DeviceMsg::Ack { seq });
    streamed.extend(more);
    // Stopped: the next message is the ping's reply, no assignment before it.
    seq += 1;
    firmware.send(seq, HostMsg::Ping);
    assert_eq!(firmware.reply(), DeviceMsg::Ack { seq });

    assert!(streamed.windows(2).all(|pair| pair[0].frame_id < pair[1].frame_id), "in capture order");
    for assignment in &streamed {
        // Frame numbers run through the folder in name order, round and round.
        let expected_cluster = (assignment.frame_id % 2) as u16;
        assert_eq!(assignment.cluster, expected_cluster, "{assignment:?}");
        assert!(assignment.distance < 0.2, "{assignment:?}");
    }
    assert!(firmware.child.try_wait().unwrap().is_none(), "still running");
}
