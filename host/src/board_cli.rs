//! The `stdac` subcommands that talk to a board: flash, stream, hil and demo (part of the binary, next
//! to `main.rs`; the work lives in the library's `flash`, `stream`, `hil` and `demo`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use stdac::data::{self, Source, Split};
use stdac::demo::{self, DemoOptions};
use stdac::flash::{self, FlashOptions};
use stdac::hil::{self, HilOptions};
use stdac::local_device::LocalDevice;
use stdac::stream::{self, JsonlWriter, StreamOptions, Tally};
use stdac::transport::{DeviceClient, LinkConfig};

#[derive(Args)]
pub struct FlashArgs {
    #[command(flatten)]
    board: crate::PortArgs,
    /// The bundle to write (NAME.stdac), checked here before it is sent.
    #[arg(long, required_unless_present = "rollback")]
    bundle: Option<PathBuf>,
    /// Send the bundle even when the board already runs it.
    #[arg(long)]
    force: bool,
    /// Instead of flashing, make the board's previous model active again.
    #[arg(long, conflicts_with_all = ["bundle", "force"])]
    rollback: bool,
    /// After flashing, go on to show what the board's camera sees (as `stdac stream` without frames),
    /// until it has sent nothing for --idle-s seconds.
    #[arg(long)]
    monitor: bool,
    /// With --monitor: stop after this many seconds without an assignment.
    #[arg(long, default_value_t = 10.0, requires = "monitor")]
    idle_s: f64,
}

#[derive(Args)]
pub struct StreamArgs {
    #[command(flatten)]
    board: crate::PortArgs,
    /// Send the pictures of this folder (PNG/JPEG, any size, grey or colour) as frames.
    #[arg(long, conflicts_with = "dataset")]
    frames: Option<PathBuf>,
    /// Send a dataset's images as frames: mnist or fashion-mnist.
    #[arg(long)]
    dataset: Option<Source>,
    #[arg(long, value_enum, default_value = "test")]
    split: Split,
    /// Send (or, listening to the board's camera, wait for) at most N frames.
    #[arg(long)]
    limit: Option<usize>,
    /// Folder holding mnist/ and fashion-mnist/ (default: ../shared/datasets).
    #[arg(long, env = "STDAC_DATA")]
    data: Option<PathBuf>,
    /// Write one JSON object per assignment to this file.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Print every assignment as it arrives (by default only the running status).
    #[arg(long)]
    each: bool,
    /// Frames sent ahead awaiting their assignment, at most: 1 waits for each frame's assignment before
    /// sending the next; 2 sends the next while the board assigns the previous one.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    window: u32,
    /// Listening to the board's camera: stop after this many seconds without an assignment (none at all
    /// within that time is an error).
    #[arg(long, default_value_t = 10.0)]
    idle_s: f64,
}

#[derive(Args)]
pub struct HilArgs {
    /// Serial port of the board under test; without it, the firmware runs on this machine behind a
    /// pseudo-terminal (see --firmware).
    #[arg(long, env = "STDAC_PORT")]
    port: Option<String>,
    /// Without --port: the firmware command to run locally, e.g. an aarch64 build under
    /// `qemu-aarch64 -L /usr/aarch64-linux-gnu target/aarch64-unknown-linux-gnu/release/stdac-device`
    /// (default: this stdac's built-in firmware).
    #[arg(long, conflicts_with = "port")]
    firmware: Option<String>,
    #[command(flatten)]
    link: crate::LinkArgs,
    /// The bundle to flash and check (default: the shipped default model).
    #[arg(long, default_value = stdac::DEFAULT_BUNDLE)]
    bundle: PathBuf,
    /// mnist or fashion-mnist.
    #[arg(long, default_value = "mnist")]
    dataset: Source,
    #[arg(long, value_enum, default_value = "test")]
    split: Split,
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Folder holding mnist/ and fashion-mnist/ (default: ../shared/datasets).
    #[arg(long, env = "STDAC_DATA")]
    data: Option<PathBuf>,
    /// Where hil-report.json, hil-report.md and assignments.jsonl go.
    #[arg(long, default_value = "runs/hil")]
    out: PathBuf,
    /// Largest difference allowed between the board's and the host's distance or margin (a board of
    /// another architecture rounds differently); clusters and novelty must be identical.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f32,
    /// How long the board may take to load the bundle at commit (an emulated board is slow).
    #[arg(long, default_value_t = 120)]
    commit_timeout_s: u64,
}

#[derive(Args)]
pub struct DemoArgs {
    /// The bundle to flash (default: the shipped default model).
    #[arg(long, default_value = stdac::DEFAULT_BUNDLE)]
    bundle: PathBuf,
    /// MNIST test frames to stream.
    #[arg(long, default_value_t = 200)]
    frames: usize,
    /// Where the report, figures and the board's store go.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Folder holding mnist/ (default: ../shared/datasets).
    #[arg(long, env = "STDAC_DATA")]
    data: Option<PathBuf>,
}

pub fn flash_cmd(args: &FlashArgs) -> anyhow::Result<()> {
    // A bundle that would not load is refused before any board is touched.
    let bundle = args.bundle.as_deref().map(stdac::locate_bundle);
    if let Some(path) = &bundle {
        stdac_device::bundle::Bundle::read(path)?;
    }
    let mut client = DeviceClient::open(&args.board.port, args.board.link.config())?;
    if args.rollback {
        let model = flash::rollback(&mut client)?;
        println!(
            "rolled back: the board on {} now runs {} (SHA-256 {})",
            args.board.port,
            model.id,
            flash::hex(&model.sha256)
        );
        println!(
            "{}",
            serde_json::json!({"ok": true, "rollback": true, "model": model.id.as_str(), "sha256": flash::hex(&model.sha256)})
        );
        return Ok(());
    }
    let bundle = bundle.expect("clap requires --bundle without --rollback");
    let options = FlashOptions { force: args.force, ..FlashOptions::default() };
    let bar = stdac::progress::bytes_bar();
    let report = flash::flash(&mut client, &bundle, &options, &mut |done, total| {
        stdac::progress::update(&bar, done, total)
    })?;
    bar.finish_and_clear();
    if report.already_active {
        println!(
            "the board on {} already runs {} ({}): nothing sent (--force to send it anyway)",
            args.board.port,
            report.model.id,
            bundle.display()
        );
    } else {
        println!(
            "flashed {} ({} bytes) in {:.2} s, {:.0} KiB/s, {} resends, resumed from byte {}; the board reports SHA-256 {}",
            bundle.display(),
            report.size,
            report.elapsed.as_secs_f64(),
            report.sent as f64 / 1024.0 / report.elapsed.as_secs_f64().max(1e-9),
            report.resends,
            report.resumed_from,
            flash::hex(&report.model.sha256)
        );
    }
    println!("{}", report.to_json());
    if args.monitor {
        let tally = listen(&mut client, None, None, true, Duration::from_secs_f64(args.idle_s))?;
        println!("{}", tally.to_json());
    }
    Ok(())
}

pub fn stream_cmd(args: &StreamArgs) -> anyhow::Result<()> {
    let mut client = DeviceClient::open(&args.board.port, args.board.link.config())?;
    let mut jsonl = args.jsonl.as_deref().map(JsonlWriter::create).transpose()?;
    let frames = match (&args.frames, &args.dataset) {
        (Some(dir), _) => Some(stream::folder_frames(dir, args.limit)?),
        (None, Some(source)) => {
            let dataset = data::load(source, Some(args.split), args.limit, args.data.as_deref())?;
            Some(stream::dataset_frames(&dataset)?)
        }
        (None, None) => None,
    };
    let Some(frames) = frames else {
        let tally =
            listen(&mut client, args.limit, jsonl.as_mut(), args.each, Duration::from_secs_f64(args.idle_s))?;
        if let Some(out) = jsonl {
            out.finish()?;
        }
        println!("{}", tally.to_json());
        return Ok(());
    };
    let hello = client.hello()?;
    if hello.model.is_none() {
        bail!("the board on {} has no model: flash one first (stdac flash --bundle FILE)", args.board.port);
    }
    let status = stdac::progress::status_line();
    let mut tally = Tally::default();
    let config = client.config().clone();
    let options =
        StreamOptions { window: args.window as usize, wait: config.timeout * 2, retries: config.retries };
    stream::stream_frames(&mut client, &frames, &options, &mut |_, received| {
        tally.add(&received);
        if let Some(out) = jsonl.as_mut() {
            out.write(&received)?;
        }
        if args.each {
            status.suspend(|| println!("{}", demo::assignment_line(&received)));
        }
        status.set_message(tally.line());
        status.tick();
        Ok(())
    })?;
    status.finish_and_clear();
    if let Some(out) = jsonl {
        out.finish()?;
    }
    eprintln!("{}", tally.line());
    println!("{}", tally.to_json());
    Ok(())
}

/// Shows a camera-driven board's assignments until `limit` of them, or `idle` without one.
fn listen(
    client: &mut DeviceClient,
    limit: Option<usize>,
    mut jsonl: Option<&mut JsonlWriter>,
    each: bool,
    idle: Duration,
) -> anyhow::Result<Tally> {
    let status = stdac::progress::status_line();
    let mut tally = Tally::default();
    stream::listen(client, idle, &mut |received| {
        tally.add(&received);
        if let Some(out) = jsonl.as_deref_mut() {
            out.write(&received)?;
        }
        if each {
            status.suspend(|| println!("{}", demo::assignment_line(&received)));
        }
        status.set_message(tally.line());
        status.tick();
        Ok(limit.is_none_or(|n| (tally.frames() as usize) < n))
    })?;
    status.finish_and_clear();
    eprintln!("{}", tally.line());
    Ok(tally)
}

pub fn hil_cmd(args: &HilArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let (_local, mut client) = match (&args.port, &args.firmware) {
        (Some(port), _) => (None, DeviceClient::open(port, args.link.config())?),
        (None, firmware) => {
            let (local, client) = start_local_board(&args.out, firmware.as_deref(), args.link.config())?;
            (Some(local), client)
        }
    };
    let bundle = stdac::locate_bundle(&args.bundle);
    let dataset = data::load(&args.dataset, Some(args.split), Some(args.limit), args.data.as_deref())?;
    let frames = stream::dataset_frames(&dataset)?;
    let jsonl_path = args.out.join("assignments.jsonl");
    let mut jsonl = JsonlWriter::create(&jsonl_path)?;
    let options = HilOptions {
        tolerance: args.tolerance,
        flash: FlashOptions {
            commit_timeout: Duration::from_secs(args.commit_timeout_s),
            ..FlashOptions::default()
        },
        ..HilOptions::default()
    };
    let bar = stdac::progress::bytes_bar();
    let status = stdac::progress::status_line();
    let report = hil::run(
        &mut client,
        &bundle,
        &frames,
        &dataset.name,
        &options,
        Some(&mut jsonl),
        &mut |done, total| stdac::progress::update(&bar, done, total),
        &mut |_, tally| {
            bar.finish_and_clear();
            status.set_message(tally.line());
            status.tick();
        },
    )?;
    status.finish_and_clear();
    jsonl.finish()?;
    let (json_path, md_path) = report.write(&args.out)?;
    print!("{}", report.to_markdown());
    println!("written: {}, {}, {}", json_path.display(), md_path.display(), jsonl_path.display());
    println!("{}", report.to_json());
    if !report.pass {
        bail!(
            "HIL failed: {} of {} assignments differ from the host engine's",
            report.frames - report.agreed,
            report.frames
        );
    }
    Ok(())
}

/// A board firmware on this machine behind a pseudo-terminal, its store and log in `out`.
fn start_local_board(
    out: &Path,
    firmware: Option<&str>,
    config: LinkConfig,
) -> anyhow::Result<(LocalDevice, DeviceClient)> {
    let store = out.join("board");
    std::fs::create_dir_all(&store).with_context(|| format!("cannot create {}", store.display()))?;
    let args = vec!["--store".to_string(), store.display().to_string()];
    let log = out.join("device.log");
    let started = match firmware {
        Some(command) => LocalDevice::start_command(command, &args, Some(&log), config),
        None => LocalDevice::start_builtin(&args, Some(&log), config),
    };
    let (local, client) =
        started.with_context(|| format!("cannot start the local board (its log: {})", log.display()))?;
    println!("board: {} (store {}, log {})", client.port_name(), store.display(), log.display());
    Ok((local, client))
}

pub fn demo_cmd(args: &DemoArgs) -> anyhow::Result<()> {
    let options = DemoOptions {
        bundle: stdac::locate_bundle(&args.bundle),
        out: args.out.clone(),
        frames: args.frames,
        data: args.data.clone(),
    };
    let summary = demo::run(&options)?;
    println!("{summary}");
    Ok(())
}
