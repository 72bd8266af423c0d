//! Training-throughput benchmark: images per second for one DAC* step (the trainer's own `train_step`)
//! of the 2-STN ST-DAC model (input and block-2 transformers, dense width 3096) at batch 256, against the
//! same model and step in PyTorch (`st_dac_step.py`), on the same images, in the same run.
//!
//! Run: `cargo bench -p stdac --bench train_step` (CPU, burn-flex), or with `--features cuda` on a GPU
//! machine (the peer then runs on CUDA too). The peer needs python3 with torch; without it only our side
//! is printed. Without `--bench` (as `cargo test --benches` runs it) it takes one step at batch 8 and
//! skips the peer.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use burn::optim::AdamConfig;
use rand::SeedableRng;
use stdac::backend::{self, Backend, TrainBackend};
use stdac::data::{self, Source, Split};
use stdac::st_dac::augment::Augmentation;
use stdac::st_dac::loss::{Schedule, Selection, Thresholds};
use stdac::st_dac::train::{batch_tensor, train_step, Protocol, TrainConfig};
use stdac::st_dac::{StDac, StDacConfig, StnPosition};

/// PyTorch's images per second, or why it could not be measured.
fn time_torch(images: &[f32], n: usize, steps: usize, threads: usize) -> Result<serde_json::Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("images.f32");
    let bytes: Vec<u8> = images.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/st_dac_step.py");
    let device = if cfg!(feature = "cuda") { "cuda" } else { "cpu" };
    let output = Command::new("python3")
        .arg(&script)
        .args([path.to_str().unwrap(), &n.to_string(), &steps.to_string(), &threads.to_string(), device])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("").to_string());
    }
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim()).map_err(|e| format!("{e}: {line}"))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, steps) = if full { (256, 5) } else { (8, 1) };
    let mnist = match data::load(&Source::Mnist, Some(Split::Train), Some(n), None) {
        Ok(d) => d,
        Err(e) => {
            println!("train_step benchmark skipped: {e:#}");
            return;
        }
    };
    let device = backend::device().expect("a compute device");
    let model_config = StDacConfig::new().with_stn(vec![StnPosition::Input, StnPosition::Block2]);
    let schedule = Schedule {
        selection: Selection::Code,
        start: Thresholds { upper: 0.99, lower: 0.8 },
        epochs: 10,
        eta: 0.0,
    };
    let config = TrainConfig::new(
        model_config.clone(),
        "mnist".into(),
        Protocol::HeldOut,
        1,
        n,
        schedule,
        10.0,
        Augmentation::MNIST,
    );
    let mut model: StDac<TrainBackend> = model_config.init(&device);
    let mut optimizer = AdamConfig::new().init::<TrainBackend, StDac<TrainBackend>>();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let rows: Vec<usize> = (0..n).collect();
    let batch = || batch_tensor::<Backend>(&mnist, &rows, &device);
    let thresholds = schedule.thresholds(0, 0.0);

    // One warm-up step (allocations, kernel compilation on CUDA), then the timed ones.
    (model, _) = train_step(model, &mut optimizer, batch(), &config, thresholds, &mut rng);
    let started = Instant::now();
    for _ in 0..steps {
        let step;
        (model, step) = train_step(model, &mut optimizer, batch(), &config, thresholds, &mut rng);
        assert!(step.loss.is_finite(), "the loss stays finite");
    }
    let seconds = started.elapsed().as_secs_f64() / steps as f64;
    let ours = n as f64 / seconds;
    println!(
        "ST-DAC 2 STN training step, batch {n}, {}: {:.1} ms/step, {ours:.1} images/s",
        backend::NAME,
        1e3 * seconds
    );
    if !full {
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    match time_torch(&mnist.features, n, steps, threads) {
        Ok(peer) => {
            let theirs = peer["images_per_s"].as_f64().unwrap();
            println!(
                "PyTorch {} ({}, {} threads): {:.1} ms/step, {theirs:.1} images/s",
                peer["torch"].as_str().unwrap_or("?"),
                peer["device"].as_str().unwrap_or("?"),
                peer["threads"],
                peer["step_ms"].as_f64().unwrap()
            );
            println!("ratio (ours / PyTorch, images/s): {:.2}×", ours / theirs);
        }
        Err(why) => println!("PyTorch peer not measured: {why}"),
    }
}
