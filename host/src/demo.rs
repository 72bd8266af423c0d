//! `stdac demo`: the whole product on one machine with no board. Starts the board firmware behind a
//! pseudo-terminal with an empty model store, flashes the shipped default bundle onto it, streams real
//! MNIST test frames, prints each assignment as it arrives, checks each against the host's own engine
//! (a HIL run), then prints the scores and writes the report and figures.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::data::{self, Source, Split};
use crate::figures;
use crate::flash::{self, FlashOptions};
use crate::hil::{self, HilOptions};
use crate::local_device::LocalDevice;
use crate::metrics::Contingency;
use crate::stream::{self, JsonlWriter};
use crate::transport::LinkConfig;

pub struct DemoOptions {
    pub bundle: PathBuf,
    /// Where the report, figures, the board's store and its log go.
    pub out: PathBuf,
    /// MNIST test frames to stream.
    pub frames: usize,
    pub data: Option<PathBuf>,
}

/// Runs the demo; returns its summary (also printed last, as one JSON line, by the command).
pub fn run(options: &DemoOptions) -> anyhow::Result<serde_json::Value> {
    let out = &options.out;
    let store = out.join("board");
    // A fresh board every time, so that the demo always shows a flash.
    if store.exists() {
        std::fs::remove_dir_all(&store).with_context(|| format!("cannot clear {}", store.display()))?;
    }
    std::fs::create_dir_all(&store).with_context(|| format!("cannot create {}", store.display()))?;

    let dataset =
        data::load(&Source::Mnist, Some(Split::Test), Some(options.frames), options.data.as_deref())?;
    let frames = stream::dataset_frames(&dataset)?;

    let log = out.join("device.log");
    let args = vec!["--store".to_string(), store.display().to_string()];
    let (_board, mut client) = LocalDevice::start_builtin(&args, Some(&log), LinkConfig::default())
        .context("cannot start the local board")?;
    println!(
        "board: stdac-device serving {} with an empty model store in {} (log: {})",
        client.port_name(),
        store.display(),
        log.display()
    );
    println!("flashing {} …", options.bundle.display());

    let bar = crate::progress::bytes_bar();
    let flash = flash::flash(&mut client, &options.bundle, &FlashOptions::default(), &mut |done, total| {
        crate::progress::update(&bar, done, total)
    })?;
    bar.finish_and_clear();
    println!(
        "flashed {} ({} bytes, SHA-256 {}…) in {:.2} s; the board now reports it as its model",
        flash.model.id,
        flash.size,
        &flash::hex(&flash.sha256)[..16],
        flash.elapsed.as_secs_f64()
    );
    println!("streaming {} frames of {} …", frames.len(), dataset.name);

    let jsonl_path = out.join("assignments.jsonl");
    let mut jsonl = JsonlWriter::create(&jsonl_path)?;
    let report = hil::check(
        &mut client,
        flash,
        &frames,
        &dataset.name,
        &HilOptions::default(),
        Some(&mut jsonl),
        &mut |received, _| println!("{}", assignment_line(received)),
    )?;
    jsonl.finish()?;
    let flash = &report.flash;

    let (json_path, md_path) = report.write(out)?;
    let confusion = out.join("confusion.png");
    let clusters_png = out.join("clusters.png");
    let clusters: Vec<i64> = report.clusters.iter().map(|&c| c.into()).collect();
    let labels = dataset.labels.as_ref().context("MNIST has labels")?;
    let contingency = Contingency::new(labels, &clusters);
    figures::confusion_matrix(&contingency, &dataset.class_names, "demo: the board's clusters", &confusion)?;
    let k = report.clusters.iter().map(|&c| usize::from(c) + 1).max().unwrap_or(1);
    let as_usize: Vec<usize> = report.clusters.iter().map(|&c| c.into()).collect();
    figures::cluster_samples(&dataset.features, (28, 28), &as_usize, k, 12, &clusters_png)?;

    let scores = report.scores.as_ref().context("MNIST has labels")?;
    println!(
        "{} frames: {:.1} frames/s, latency p50 {} ms; the board's clusters score ACC {:.4}, NMI {:.4}, ARI {:.4}",
        report.frames,
        report.tally["frames_per_s"].as_f64().unwrap_or(0.0),
        report.tally["latency_ms_p50"].as_f64().map_or("-".into(), |v| format!("{v:.1}")),
        scores.acc,
        scores.nmi,
        scores.ari
    );
    println!(
        "HIL {}: {} of {} assignments identical to the host engine's ({} bit for bit)",
        if report.pass { "PASS" } else { "FAIL" },
        report.agreed,
        report.frames,
        report.bit_identical
    );
    println!(
        "written: {}, {}, {}, {}, {}",
        json_path.display(),
        md_path.display(),
        jsonl_path.display(),
        confusion.display(),
        clusters_png.display()
    );
    anyhow::ensure!(report.pass, "the board's assignments differ from the host's: see {}", md_path.display());
    Ok(json!({
        "ok": true,
        "port": report.port,
        "bundle": flash.bundle,
        "frames": report.frames,
        "flash_seconds": flash.elapsed.as_secs_f64(),
        "frames_per_s": report.tally["frames_per_s"],
        "latency_ms_p50": report.tally["latency_ms_p50"],
        "identical": report.agreed,
        "scores": scores.to_json(),
        "report": json_path.display().to_string(),
        "figures": [confusion.display().to_string(), clusters_png.display().to_string()],
    }))
}

/// How the demo and `stdac stream` print one assignment.
pub fn assignment_line(received: &stream::Received) -> String {
    let a = &received.assignment;
    let label = received.label.map_or(String::new(), |l| format!("  (label {l})"));
    let latency = received.latency.map_or(String::new(), |l| format!("  {:.1} ms", l.as_secs_f64() * 1e3));
    format!(
        "frame {:>5} → cluster {:>2}  distance {:.3}  margin {:.3}{}{latency}{label}",
        a.frame_id,
        a.cluster,
        a.distance,
        a.margin,
        if a.novel { "  NOVEL" } else { "" },
    )
}
