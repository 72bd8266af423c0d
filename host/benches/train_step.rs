//! Training-throughput benchmark: images per second for one DAC* step (the trainer's own `train_step`)
//! of the 2-STN ST-DAC model (input and block-2 transformers, dense width 3096) at batch 256, against the
//! same model and step in PyTorch (`st_dac_step.py`), on the same images, in the same run.
//!
//! Run: `cargo bench -p stdac --bench train_step` (CPU, burn-flex), or with `--features cuda` on a GPU
//! machine (the peer then runs on CUDA too). The peer needs python3 with torch; without it only our side
//! is printed. Without `--bench` (as `cargo test --benches` runs it) it takes one step at batch 8 and
//! skips the peer.

use std::time::Instant;

use burn::optim::AdamConfig;
use rand::SeedableRng;
use stdac::backend::{self, Backend, TrainBackend};
use stdac::data::{self, Source, Split};
use stdac::st_dac::augment::Augmentation;
use stdac::st_dac::loss::{Schedule, Selection, Thresholds};
use stdac::st_dac::train::{batch_tensor, train_step, Protocol, TrainConfig};
use stdac::st_dac::{StDac, StDacConfig, StnPosition};

#[path = "common/torch_peer.rs"]
mod torch_peer;

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
    match torch_peer::run("st_dac_step.py", &mnist.features, n, steps, threads) {
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
