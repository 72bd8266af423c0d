//! Training-throughput benchmark: images per second for one DAC* step (the trainer's own `train_step`:
//! targets from the clean batch, augmentation, the pair loss's forward and backward, Adam) of ST-DAC
//! with the input and block-2 transformers, for the edge and the paper network at batch 256 and 32,
//! against the same model and step in PyTorch (`st_dac_step.py`) on the same images, in the same run.
//!
//! Each case runs in a child process (this benchmark re-run with `--case ARCH BATCH`), so its peak
//! memory (VmHWM) is its own; PyTorch's is its process's peak RSS.
//!
//! Run: `cargo bench -p stdac --bench train_step` (CPU, burn-flex), or with `--features cuda` on a GPU
//! machine (the peer then runs on CUDA too). The peer needs python3 with torch and numpy; without them
//! only our side is printed. Without `--bench` (as `cargo test --benches` runs it) it takes one step
//! of each network at batch 8 in process and skips the peer. Last, one JSON line per case:
//! `{"arch":…,"stn":2,"batch":…,"ours_img_s":…,"pytorch_img_s":…,"ratio":…,"peak_rss_mib":…,…,"cpu":…}`.

use std::process::Command;
use std::time::Instant;

use rand::SeedableRng;
use serde_json::json;
use stdac::backend::{self, Backend, TrainBackend};
use stdac::data::{self, Dataset, Source, Split};
use stdac::ops::FusedAdam;
use stdac::st_dac::augment::Augmentation;
use stdac::st_dac::loss::{Schedule, Selection, Thresholds};
use stdac::st_dac::train::{batch_tensor, train_step, Protocol, TrainConfig};
use stdac::st_dac::{Arch, StDac, StDacConfig, StnPosition};

#[path = "common/machine.rs"]
mod machine;
#[path = "common/torch_peer.rs"]
mod torch_peer;

const STN: [StnPosition; 2] = [StnPosition::Input, StnPosition::Block2];

/// Timed steps per case, after one warm-up step. Each side reports its median step, so a neighbour's
/// burst on a shared host moves one step, not the figure.
fn steps(batch: usize) -> usize {
    if batch >= 256 {
        9
    } else {
        41
    }
}

/// The median of `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// What our side of one case measured.
struct Measured {
    weights: usize,
    step_ms: f64,
    images_per_s: f64,
    peak_rss_mib: Option<f64>,
}

fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Paper => "paper",
        Arch::Edge => "edge",
    }
}

fn config(arch: Arch, batch: usize) -> TrainConfig {
    let model = StDacConfig::new()
        .with_arch(arch)
        .with_stn(STN.to_vec())
        .with_dense_width(arch.default_dense_width());
    let schedule = Schedule {
        selection: Selection::Code,
        start: Thresholds { upper: 0.99, lower: 0.8 },
        epochs: 10,
        eta: 0.0,
    };
    TrainConfig::new(model, "mnist".into(), Protocol::HeldOut, 1, batch, schedule, 10.0, Augmentation::MNIST)
}

/// `steps` DAC* steps on the first `batch` images, after one warm-up step; the median step.
fn measure(mnist: &Dataset, arch: Arch, batch: usize, steps: usize) -> Measured {
    let device = backend::device().expect("a compute device");
    let config = config(arch, batch);
    let mut model: StDac<TrainBackend> = config.model.init(&device);
    let weights = burn::module::Module::num_params(&model);
    let mut optimizer = FusedAdam::init::<TrainBackend, StDac<TrainBackend>>();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let rows: Vec<usize> = (0..batch).collect();
    let images = || batch_tensor::<Backend>(mnist, &rows, &device);
    let thresholds = config.schedule.thresholds(0, 0.0);
    // One warm-up step (allocations, kernel compilation on CUDA), then the timed ones.
    (model, _) = train_step(model, &mut optimizer, images(), &config, thresholds, &mut rng);
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let started = Instant::now();
        let step;
        (model, step) = train_step(model, &mut optimizer, images(), &config, thresholds, &mut rng);
        times.push(started.elapsed().as_secs_f64());
        assert!(step.loss.is_finite(), "the loss stays finite");
    }
    let seconds = median(times);
    Measured {
        weights,
        step_ms: 1e3 * seconds,
        images_per_s: batch as f64 / seconds,
        peak_rss_mib: machine::vm_hwm_kib().map(|k| k as f64 / 1024.0),
    }
}

/// One case in a child process of its own, for its own peak memory.
fn measure_in_child(arch: Arch, batch: usize) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .args(["--case", arch_name(arch), &batch.to_string()])
        .output()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("").to_string());
    }
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
    Ok(Measured {
        weights: v["weights"].as_u64().ok_or("no weights")? as usize,
        step_ms: v["step_ms"].as_f64().ok_or("no step_ms")?,
        images_per_s: v["images_per_s"].as_f64().ok_or("no images_per_s")?,
        peak_rss_mib: v["peak_rss_mib"].as_f64(),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let case =
        args.iter().position(|a| a == "--case").map(|i| (args[i + 1].clone(), args[i + 2].parse::<usize>()));
    let n = match &case {
        Some((_, Ok(batch))) => *batch,
        _ if full => 256,
        _ => 8,
    };
    let mnist = match data::load(&Source::Mnist, Some(Split::Train), Some(n), None) {
        Ok(d) => d,
        Err(e) => {
            println!("train_step benchmark skipped: {e:#}");
            return;
        }
    };
    if let Some((arch, Ok(batch))) = case {
        let arch = if arch == "edge" { Arch::Edge } else { Arch::Paper };
        let m = measure(&mnist, arch, batch, steps(batch));
        println!(
            "{}",
            json!({"weights": m.weights, "step_ms": m.step_ms, "images_per_s": m.images_per_s, "peak_rss_mib": m.peak_rss_mib})
        );
        return;
    }
    if !full {
        for arch in [Arch::Edge, Arch::Paper] {
            let m = measure(&mnist, arch, n, 1);
            println!(
                "ST-DAC {} 2 STN, batch {n}, {}: {:.1} ms/step",
                arch_name(arch),
                backend::NAME,
                m.step_ms
            );
        }
        return;
    }

    let cpu = machine::cpu_description();
    let load = std::fs::read_to_string("/proc/loadavg").ok();
    println!(
        "CPU: {cpu}; 1-minute load at start: {}",
        load.as_deref().and_then(|l| l.split(' ').next()).unwrap_or("?")
    );
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let mut lines = Vec::new();
    for arch in [Arch::Edge, Arch::Paper] {
        for batch in [256, 32] {
            let name = arch_name(arch);
            let ours = match measure_in_child(arch, batch) {
                Ok(m) => m,
                Err(why) => {
                    println!("{name} batch {batch}: ours not measured: {why}");
                    continue;
                }
            };
            println!(
                "ST-DAC {name} 2 STN ({} weights), batch {batch}, {}: {:.1} ms/step, {:.1} images/s, peak RSS {:.0} MiB",
                ours.weights,
                backend::NAME,
                ours.step_ms,
                ours.images_per_s,
                ours.peak_rss_mib.unwrap_or(f64::NAN)
            );
            let images = &mnist.features[..batch * 784];
            let peer = torch_peer::run(
                "st_dac_step.py",
                images,
                batch,
                steps(batch),
                threads,
                &[name, "input,block2"],
            );
            let (theirs, their_rss) = match &peer {
                Ok(p) => {
                    println!(
                        "  PyTorch {} ({}, {} threads): {:.1} ms/step, {:.1} images/s, peak RSS {:.0} MiB",
                        p["torch"].as_str().unwrap_or("?"),
                        p["device"].as_str().unwrap_or("?"),
                        p["threads"],
                        p["step_ms"].as_f64().unwrap_or(f64::NAN),
                        p["images_per_s"].as_f64().unwrap_or(f64::NAN),
                        p["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
                    );
                    (p["images_per_s"].as_f64(), p["peak_rss_mib"].as_f64())
                }
                Err(why) => {
                    println!("  PyTorch peer not measured: {why}");
                    (None, None)
                }
            };
            let ratio = theirs.map(|t| ours.images_per_s / t);
            if let Some(r) = ratio {
                println!("  ratio (ours / PyTorch, images/s): {r:.2}×");
            }
            lines.push(json!({
                "arch": name,
                "stn": 2,
                "batch": batch,
                "weights": ours.weights,
                "ours_img_s": ours.images_per_s,
                "pytorch_img_s": theirs,
                "ratio": ratio,
                "peak_rss_mib": ours.peak_rss_mib,
                "pytorch_peak_rss_mib": their_rss,
                "backend": backend::NAME,
                "cpu": cpu,
            }));
        }
    }
    for line in lines {
        println!("{line}");
    }
}
