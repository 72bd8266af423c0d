//! The `stdac-device` command line. The firmware binary and the host's `stdac device` (which runs the
//! same firmware locally, e.g. on a pseudo-terminal for tests and the demo) both call [`run`].

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::capture::Capture;
use crate::source::{FolderSource, FrameSource};
use crate::status::{StatusLed, SysfsLed};
use crate::store::ModelStore;
use crate::{serial, Link, Server};

/// Serve the stdac protocol on a serial port.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Serial port to serve, e.g. /dev/ttyS0, /dev/ttyGS0 or a pseudo-terminal.
    #[arg(long, env = "STDAC_DEVICE_PORT")]
    pub port: String,
    /// Line speed in baud (ignored by pseudo-terminals and USB gadgets).
    #[arg(long, default_value_t = 115_200, env = "STDAC_DEVICE_BAUD")]
    pub baud: u32,
    /// Model store directory: flashed models are kept there and the active one serves frames. Without
    /// it the device cannot be flashed and has no model.
    #[arg(long, env = "STDAC_DEVICE_STORE")]
    pub store: Option<PathBuf>,
    /// Folder of PNG/JPEG pictures streamed as the board's own frames (in file-name order) on
    /// `StartStream`: a board without a camera, a test or a demo streams real pictures this way.
    #[arg(long, env = "STDAC_DEVICE_FRAMES", conflicts_with = "camera")]
    pub frames: Option<PathBuf>,
    /// Frames per second the --frames folder plays at, like a camera's rate; 0 plays them as fast as
    /// they decode (to measure the board's own throughput).
    #[arg(long, default_value_t = 10, env = "STDAC_DEVICE_FPS")]
    pub fps: u32,
    /// Play the --frames folder again from its first picture after the last, for a stream that lasts;
    /// without it a stream ends after one pass.
    #[arg(long = "loop", env = "STDAC_DEVICE_LOOP")]
    pub looping: bool,
    /// V4L2 camera device streamed on `StartStream`, e.g. /dev/video0. Needs a firmware built with
    /// `--features camera` (left out by default so the default build needs no camera).
    #[arg(long, env = "STDAC_DEVICE_CAMERA")]
    pub camera: Option<PathBuf>,
    /// Capture size asked of the --camera, WIDTHxHEIGHT; small sizes save the sensor's bandwidth, as
    /// the model sees 28 × 28 anyway. The driver may pick the nearest size it has.
    #[arg(long, default_value = "320x240", value_parser = parse_size, env = "STDAC_DEVICE_CAMERA_SIZE")]
    pub camera_size: (u32, u32),
    /// Status LED lit while the board works (assigning a frame, writing a flash chunk): a Linux LED's
    /// directory or its brightness file, e.g. /sys/class/leds/led0.
    #[arg(long, env = "STDAC_DEVICE_LED")]
    pub led: Option<PathBuf>,
    /// Frames the capture queue holds while the model is busy; when it is full the oldest is dropped
    /// (and counted in the stats), so a slow model costs frames, never memory or latency.
    #[arg(
        long = "queue",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..),
        env = "STDAC_DEVICE_QUEUE"
    )]
    pub queue: u16,
}

/// `WIDTHxHEIGHT`, both positive.
fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let parsed = text.split_once(['x', 'X']).and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
    match parsed {
        Some((width, height)) if width > 0 && height > 0 => Ok((width, height)),
        _ => Err(format!("`{text}` is no size: write WIDTHxHEIGHT, e.g. 320x240")),
    }
}

/// The frame source the arguments name, if any.
fn frame_source(args: &DeviceArgs) -> anyhow::Result<Option<Box<dyn FrameSource>>> {
    if let Some(dir) = &args.frames {
        let source = FolderSource::open(dir, args.fps, args.looping)?;
        return Ok(Some(Box::new(source)));
    }
    let Some(device) = &args.camera else { return Ok(None) };
    camera_source(device, args.camera_size)
}

#[cfg(feature = "camera")]
fn camera_source(
    device: &std::path::Path,
    (width, height): (u32, u32),
) -> anyhow::Result<Option<Box<dyn FrameSource>>> {
    Ok(Some(Box::new(crate::camera::V4l2Camera::open(device, width, height)?)))
}

#[cfg(not(feature = "camera"))]
fn camera_source(
    device: &std::path::Path,
    _size: (u32, u32),
) -> anyhow::Result<Option<Box<dyn FrameSource>>> {
    anyhow::bail!(
        "--camera {}: this firmware was built without camera support; rebuild it with \
         `cargo build --release -p stdac-device --features camera`",
        device.display()
    )
}

/// Serves until the line fails; the error names the port.
pub fn run(args: &DeviceArgs) -> anyhow::Result<()> {
    // Sources and LED first: a wrong path is reported before the port is taken.
    let source = frame_source(args)?;
    let led = match &args.led {
        Some(path) => Some(SysfsLed::open(path)?),
        None => None,
    };
    let stream = serial::open(&args.port, args.baud)?;
    let mut link = Link::new(stream);
    let mut server = match &args.store {
        Some(dir) => {
            let store = ModelStore::open(dir)
                .with_context(|| format!("cannot open the model store {}", dir.display()))?;
            for repair in store.repairs() {
                eprintln!("stdac-device: store: {repair}");
            }
            match store.active() {
                Some(model) => eprintln!(
                    "stdac-device: active model {} ({} bytes) from {}",
                    model.name,
                    model.size,
                    model.path.display()
                ),
                None => eprintln!("stdac-device: no model in {} yet: flash one", dir.display()),
            }
            Server::with_store(store)
        }
        None => Server::new(),
    };
    if let Some(source) = source {
        let description = source.describe();
        let capture = Capture::spawn(source, args.queue.into()).context("cannot start the capture thread")?;
        eprintln!("stdac-device: frames from {description}, queue of {}", args.queue);
        server = server.with_capture(capture);
    }
    if let Some(led) = led {
        eprintln!("stdac-device: status LED {}", led.path().display());
        server = server.with_led(StatusLed::new(led));
    }
    eprintln!(
        "stdac-device {}: serving protocol v{} on {} at {} baud",
        crate::server::FIRMWARE_VERSION,
        stdac_protocol::PROTOCOL_VERSION,
        args.port,
        args.baud
    );
    server.run(&mut link).with_context(|| format!("serial port {} failed", args.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        device: DeviceArgs,
    }

    #[test]
    fn the_stream_flags_have_their_defaults_and_sizes_are_checked() {
        // clap checks its own definitions only in debug builds; these tests run in release.
        <Cli as clap::CommandFactory>::command().debug_assert();
        let cli = Cli::try_parse_from(["stdac-device", "--port", "/dev/null"]).unwrap();
        let args = cli.device;
        assert_eq!((args.fps, args.looping, args.camera_size, args.queue), (10, false, (320, 240), 4));
        assert_eq!(parse_size("640X480"), Ok((640, 480)));
        for bad in ["640", "0x480", "ax2", "640x"] {
            assert!(parse_size(bad).unwrap_err().contains("WIDTHxHEIGHT"), "{bad}");
        }
        assert!(Cli::try_parse_from(["stdac-device", "--port", "p", "--queue", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["stdac-device", "--port", "p", "--frames", "d", "--camera", "c"]).is_err(),
            "one source at a time"
        );
    }

    #[cfg(not(feature = "camera"))]
    #[test]
    fn a_camera_without_the_feature_says_to_rebuild() {
        let cli = Cli::try_parse_from(["stdac-device", "--port", "p", "--camera", "/dev/video7"]).unwrap();
        let error = frame_source(&cli.device).err().unwrap().to_string();
        assert!(error.contains("/dev/video7") && error.contains("--features camera"), "{error}");
    }
}
