//! `stdac hil`: hardware-in-the-loop test of a board. Flashes a bundle, streams real frames, and checks
//! every assignment the board sends against the host running the same bundle in the same engine: the
//! cluster and the novelty flag must be identical, the distance and margin equal within
//! [`HilOptions::tolerance`] (a board of another architecture sums in another order). Writes a pass/fail
//! report as JSON and as a markdown summary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use stdac_device::engine::Engine;

use crate::flash::{self, FlashOptions, FlashReport};
use crate::metrics::Scores;
use crate::stream::{self, Frame, JsonlWriter, Received, StreamOptions, Tally};
use crate::transport::DeviceClient;

#[derive(Debug, Clone)]
pub struct HilOptions {
    /// Largest difference allowed between the board's and the host's distance or margin.
    pub tolerance: f32,
    /// How long to wait for each frame's assignment before asking again.
    pub wait: Duration,
    /// Times a frame is sent again for its assignment.
    pub retries: u32,
    /// Frames in flight awaiting their assignment, at most (see [`stream::StreamOptions::window`]).
    pub window: usize,
    pub flash: FlashOptions,
}

impl Default for HilOptions {
    fn default() -> Self {
        HilOptions {
            tolerance: 1e-4,
            wait: Duration::from_secs(5),
            retries: 3,
            window: stream::StreamOptions::default().window,
            flash: FlashOptions::default(),
        }
    }
}

/// One frame the board and the host disagree on.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub frame_id: u32,
    pub device: (u16, f32, f32, bool),
    pub host: (u16, f32, f32, bool),
}

#[derive(Debug)]
pub struct HilReport {
    pub pass: bool,
    pub port: String,
    pub device: serde_json::Value,
    pub dataset: String,
    pub flash: FlashReport,
    pub frames: usize,
    /// Frames whose assignment matched the host's within the tolerance.
    pub agreed: usize,
    /// Frames whose distance and margin were also bit-identical.
    pub bit_identical: usize,
    pub max_distance_diff: f32,
    pub max_margin_diff: f32,
    pub mismatches: Vec<Mismatch>,
    pub tally: serde_json::Value,
    /// The board's clusters scored against the labels, when the frames have labels.
    pub scores: Option<Scores>,
    pub resends: u32,
    pub tolerance: f32,
    /// The board's assignments, in frame order.
    pub clusters: Vec<u16>,
}

/// Flashes `bundle`, streams `frames` and compares; `on_assignment` sees each assignment as it arrives
/// (the demo prints them). `jsonl` receives one line per assignment.
#[allow(clippy::too_many_arguments)]
pub fn run(
    client: &mut DeviceClient,
    bundle: &Path,
    frames: &[Frame],
    dataset: &str,
    options: &HilOptions,
    jsonl: Option<&mut JsonlWriter>,
    on_flash: &mut dyn FnMut(u64, u64),
    on_assignment: &mut dyn FnMut(&Received, &Tally),
) -> anyhow::Result<HilReport> {
    let flash = flash::flash(client, bundle, &options.flash, on_flash)?;
    check(client, flash, frames, dataset, options, jsonl, on_assignment)
}

/// Streams `frames` to a board just flashed (`flash` says with what) and compares each assignment with
/// the host's engine running the same bundle.
pub fn check(
    client: &mut DeviceClient,
    flash: FlashReport,
    frames: &[Frame],
    dataset: &str,
    options: &HilOptions,
    jsonl: Option<&mut JsonlWriter>,
    on_assignment: &mut dyn FnMut(&Received, &Tally),
) -> anyhow::Result<HilReport> {
    let bundle = Path::new(&flash.bundle);
    let host =
        Engine::from_file(bundle).with_context(|| format!("the host cannot load {}", bundle.display()))?;
    // The host's answers first, so that the stream's rate and latency are the board's alone.
    let expected: Vec<_> = frames
        .iter()
        .map(|frame| {
            host.assign_frame(frame.as_frame_ref())
                .with_context(|| format!("the host's engine cannot assign frame {} of {dataset}", frame.id))
        })
        .collect::<anyhow::Result<_>>()?;
    let device = crate::selftest::hello_json(&client.hello()?);
    let resends_before = client.stats().resends;

    let mut tally = Tally::default();
    let mut jsonl = jsonl;
    let mut report = HilReport {
        pass: false,
        port: client.port_name().to_string(),
        device,
        dataset: dataset.to_string(),
        flash,
        frames: frames.len(),
        agreed: 0,
        bit_identical: 0,
        max_distance_diff: 0.0,
        max_margin_diff: 0.0,
        mismatches: Vec::new(),
        tally: json!(null),
        scores: None,
        resends: 0,
        tolerance: options.tolerance,
        clusters: Vec::with_capacity(frames.len()),
    };
    let stream_options =
        StreamOptions { window: options.window, wait: options.wait, retries: options.retries };
    // Assignments come in frame order; each is compared with the host's for the same frame.
    let mut next = 0;
    stream::stream_frames(client, frames, &stream_options, &mut |frame, received| {
        tally.add(&received);
        if let Some(out) = jsonl.as_deref_mut() {
            out.write(&received)?;
        }
        on_assignment(&received, &tally);

        // Handed on in frame order, so the next one is this frame's.
        debug_assert_eq!(frame.id, frames[next].id);
        let expected = &expected[next];
        next += 1;
        let a = &received.assignment;
        let distance_diff = (a.distance - expected.distance).abs();
        let margin_diff = (a.margin - expected.margin).abs();
        report.max_distance_diff = report.max_distance_diff.max(distance_diff);
        report.max_margin_diff = report.max_margin_diff.max(margin_diff);
        let same = usize::from(a.cluster) == expected.cluster
            && a.novel == expected.novel
            && distance_diff <= options.tolerance
            && margin_diff <= options.tolerance;
        if same {
            report.agreed += 1;
            report.bit_identical += usize::from(distance_diff == 0.0 && margin_diff == 0.0);
        } else {
            report.mismatches.push(Mismatch {
                frame_id: frame.id,
                device: (a.cluster, a.distance, a.margin, a.novel),
                host: (expected.cluster as u16, expected.distance, expected.margin, expected.novel),
            });
        }
        report.clusters.push(a.cluster);
        Ok(())
    })?;
    let labels: Option<Vec<i64>> = frames.iter().map(|f| f.label).collect();
    if let Some(labels) = labels.filter(|l| !l.is_empty()) {
        let clusters: Vec<i64> = report.clusters.iter().map(|&c| c.into()).collect();
        report.scores = Some(Scores::of(&labels, &clusters));
    }
    report.tally = tally.to_json();
    report.resends = client.stats().resends - resends_before;
    report.pass = report.agreed == frames.len() && !frames.is_empty();
    Ok(report)
}

impl HilReport {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "pass": self.pass,
            "port": self.port,
            "device": self.device,
            "bundle": self.flash.bundle,
            "bundle_sha256": flash::hex(&self.flash.sha256),
            "dataset": self.dataset,
            "frames": self.frames,
            "agreed": self.agreed,
            "bit_identical": self.bit_identical,
            "tolerance": self.tolerance,
            "max_distance_diff": self.max_distance_diff,
            "max_margin_diff": self.max_margin_diff,
            "mismatches": self.mismatches.iter().take(100).map(|m| json!({
                "frame_id": m.frame_id,
                "device": {"cluster": m.device.0, "distance": m.device.1, "margin": m.device.2, "novel": m.device.3},
                "host": {"cluster": m.host.0, "distance": m.host.1, "margin": m.host.2, "novel": m.host.3},
            })).collect::<Vec<_>>(),
            "scores": self.scores.as_ref().map(Scores::to_json),
            "stream": self.tally,
            "flash": self.flash.to_json(),
            "resends": self.resends,
        })
    }

    pub fn to_markdown(&self) -> String {
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        let mut md = format!(
            "# HIL report: {verdict}\n\n\
             | | |\n|---|---|\n\
             | device | {} on {} |\n\
             | bundle | `{}` (SHA-256 `{}`) |\n\
             | flash | {} |\n\
             | frames | {} of {} |\n\
             | agree with the host engine | {} of {} ({} bit-identical) |\n\
             | largest difference | distance {:.3e}, margin {:.3e} (tolerance {:.0e}) |\n\
             | rate | {:.1} frames/s, latency p50 {} ms, p95 {} ms |\n\
             | resends | {} |\n",
            self.device["firmware"].as_str().map_or("firmware ?".to_string(), |v| format!("firmware {v}")),
            self.port,
            self.flash.bundle,
            flash::hex(&self.flash.sha256),
            if self.flash.already_active {
                "already active, nothing sent".to_string()
            } else {
                format!(
                    "{} bytes in {:.1} s, resumed from byte {}",
                    self.flash.sent,
                    self.flash.elapsed.as_secs_f64(),
                    self.flash.resumed_from
                )
            },
            self.tally["frames"],
            self.dataset,
            self.agreed,
            self.frames,
            self.bit_identical,
            self.max_distance_diff,
            self.max_margin_diff,
            self.tolerance,
            self.tally["frames_per_s"].as_f64().unwrap_or(0.0),
            fmt_ms(&self.tally["latency_ms_p50"]),
            fmt_ms(&self.tally["latency_ms_p95"]),
            self.resends,
        );
        if let Some(s) = &self.scores {
            md += &format!(
                "| scores (board's clusters vs labels) | ACC {:.4}, NMI {:.4}, ARI {:.4} |\n",
                s.acc, s.nmi, s.ari
            );
        }
        if !self.mismatches.is_empty() {
            md += "\n## Mismatches (first 20)\n\n| frame | device (cluster, distance, margin, novel) | host |\n|---|---|---|\n";
            for m in self.mismatches.iter().take(20) {
                md += &format!("| {} | {:?} | {:?} |\n", m.frame_id, m.device, m.host);
            }
        }
        md
    }

    /// Writes `hil-report.json` and `hil-report.md` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (json_path, md_path) = (dir.join("hil-report.json"), dir.join("hil-report.md"));
        let json = serde_json::to_string_pretty(&self.to_json()).expect("a report always serializes");
        std::fs::write(&json_path, json + "\n")
            .with_context(|| format!("cannot write {}", json_path.display()))?;
        std::fs::write(&md_path, self.to_markdown())
            .with_context(|| format!("cannot write {}", md_path.display()))?;
        Ok((json_path, md_path))
    }
}

fn fmt_ms(value: &serde_json::Value) -> String {
    value.as_f64().map_or("-".to_string(), |v| format!("{v:.1}"))
}
