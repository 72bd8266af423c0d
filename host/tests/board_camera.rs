//! A board that makes its own frames (`stdac device --frames DIR`, the folder standing in for a camera),
//! driven by the `stdac` commands a user runs: `flash --monitor` and `stream` without frames. The line is
//! a relay between two real pseudo-terminals; the firmware is the real binary.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{ok, stdac};
use stdac::data::{self, Source, Split};
use stdac::relay::{Relay, RelayConfig};
use stdac_device::engine::Engine;
use stdac_device::preprocess::{FrameRef, PixelFormat};

const FLOAT: &str = "models/mnist-st-dac/mnist-st-dac.stdac";
const PICTURES: usize = 12;

struct Firmware(Child);

impl Drop for Firmware {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bundle() -> String {
    stdac::locate_bundle(Path::new(FLOAT)).display().to_string()
}

/// The first MNIST test images as PNG files `000.png`…, and the host engine's cluster of each.
fn pictures(dir: &Path) -> Vec<usize> {
    let images = data::load(&Source::Mnist, Some(Split::Test), Some(PICTURES), None).unwrap();
    let engine = Engine::from_file(Path::new(&bundle())).unwrap();
    (0..PICTURES)
        .map(|i| {
            let pixels: Vec<u8> = images.row(i).iter().map(|&v| (v * 255.0).round() as u8).collect();
            image::GrayImage::from_raw(28, 28, pixels.clone())
                .unwrap()
                .save(dir.join(format!("{i:03}.png")))
                .unwrap();
            engine.assign_frame(FrameRef::new(PixelFormat::Grey8, 28, 28, &pixels).unwrap()).unwrap().cluster
        })
        .collect()
}

/// (frame_id, cluster) of each assignment line a command printed with `--each`.
fn printed_assignments(stdout: &str) -> Vec<(usize, usize)> {
    stdout
        .lines()
        .filter(|l| l.starts_with("frame "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words[1].parse().unwrap(), words[4].parse().unwrap())
        })
        .collect()
}

#[test]
fn flash_monitor_and_stream_show_what_the_boards_own_frames_are_assigned() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, store) = (dir.path().join("frames"), dir.path().join("store"));
    std::fs::create_dir_all(&frames).unwrap();
    let expected = pictures(&frames);
    let relay = Relay::start(RelayConfig::default()).unwrap();
    let _firmware = Firmware(
        Command::new(env!("CARGO_BIN_EXE_stdac"))
            .args(["device", "--port", &relay.device_port, "--fps", "50", "--store"])
            .arg(&store)
            .arg("--frames")
            .arg(&frames)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let port = relay.host_port.as_str();

    // Flash, then watch the board play its folder once: every picture, in order, assigned as the host's
    // engine assigns it, and the stream ends on its own once the folder is played.
    let out = ok(&stdac(&["flash", "--port", port, "--bundle", &bundle(), "--monitor", "--idle-s", "2"]));
    let seen = printed_assignments(&out);
    assert_eq!(seen, expected.iter().copied().enumerate().collect::<Vec<_>>(), "{out}");
    let tally: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(tally["frames"], PICTURES);

    // `stream` without frames listens: the folder plays again from its first picture, frame numbers
    // going on from where they were; --limit stops it, --jsonl records each assignment.
    let jsonl = dir.path().join("camera.jsonl");
    let out = ok(&stdac(&["stream", "--port", port, "--limit", "5", "--jsonl", jsonl.to_str().unwrap()]));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5, "{out}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["frame_id"], PICTURES + i);
        assert_eq!(line["cluster"], expected[i]);
        assert!(line["latency_ms"].is_null(), "the host cannot time a frame it did not send");
    }
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["frames"], 5);
}
