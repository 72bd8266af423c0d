//! Training-throughput benchmark of the autoencoder family: images per second for one step of the dense
//! MNIST autoencoder (784-500-500-2000-10, the DEC/DCN shape, batch 256), as a plain autoencoder step and
//! as a DCN joint step (the k-means term toward the nearest centroids, then the centroid update), both the
//! trainer's own `train_step`, against the same model and steps in PyTorch (`dcn_step.py`) on the same
//! images in the same run.
//!
//! Run: `cargo bench -p stdac --bench dcn_step` (CPU, burn-flex), or with `--features cuda` on a GPU
//! machine (the peer then runs on CUDA too). The peer needs python3 with torch; without it only our side
//! is printed. Without `--bench` (as `cargo test --benches` runs it) it takes one step of each at batch 8
//! and skips the peer.

use std::time::Instant;

use stdac::autoencoder::train::{rows_tensor, train_step, State, FAMILY};
use stdac::autoencoder::{AeTrainConfig, Architecture, Autoencoder, AutoencoderConfig, Kind};
use stdac::backend::{self, TrainBackend};
use stdac::data::{self, Protocol, Source, Split};
use stdac::ops::FusedAdam;

#[path = "common/torch_peer.rs"]
mod torch_peer;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, steps) = if full { (256, 20) } else { (8, 1) };
    let mnist = match data::load(&Source::Mnist, Some(Split::Train), Some(n), None) {
        Ok(d) => d,
        Err(e) => {
            println!("dcn_step benchmark skipped: {e:#}");
            return;
        }
    };
    let device = backend::device().expect("a compute device");
    let model_config =
        AutoencoderConfig::new(784, Architecture::Dense, vec![500, 500, 2000], 10).with_sigmoid_output(true);
    let config = AeTrainConfig::new(
        FAMILY.into(),
        Kind::Dcn,
        model_config.clone(),
        "mnist".into(),
        Protocol::HeldOut,
        1,
        n,
        10,
    );
    <TrainBackend as burn::tensor::backend::Backend>::seed(&device, 0);
    let mut model: Autoencoder<TrainBackend> = model_config.init(&device);
    let mut optimizer = FusedAdam::init::<TrainBackend, Autoencoder<TrainBackend>>();
    let rows: Vec<usize> = (0..n).collect();
    // Centroids as a trained run would start its joint phase: ten of the batch's own codes.
    let mut state = State { epochs_done: 0, centroids: vec![0.0; 100], counts: vec![100.0; 10] };
    let mut ours = Vec::new();
    for joint in [false, true] {
        let mut step = |model: Autoencoder<TrainBackend>| {
            let batch = rows_tensor::<TrainBackend>(&mnist, &rows, &device);
            let (model, step) =
                train_step(model, &mut optimizer, batch, &config, joint.then_some(&mut state));
            assert!(step.loss.is_finite(), "the loss stays finite");
            model
        };
        model = step(model); // warm-up (allocations; kernel compilation on CUDA)
        let started = Instant::now();
        for _ in 0..steps {
            model = step(model);
        }
        let seconds = started.elapsed().as_secs_f64() / steps as f64;
        let name = if joint { "DCN joint" } else { "autoencoder" };
        println!(
            "{name} step, dense 784-500-500-2000-10, batch {n}, {}: {:.1} ms/step, {:.1} images/s",
            backend::NAME,
            1e3 * seconds,
            n as f64 / seconds
        );
        ours.push(n as f64 / seconds);
    }
    if !full {
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    match torch_peer::run("dcn_step.py", &mnist.features, n, steps, threads, &[]) {
        Ok(peer) => {
            for (i, key) in ["ae", "dcn"].iter().enumerate() {
                let theirs = peer[format!("{key}_images_per_s")].as_f64().unwrap();
                println!(
                    "PyTorch {} ({}, {} threads) {key} step: {:.1} ms/step, {theirs:.1} images/s; ours / PyTorch {:.2}×",
                    peer["torch"].as_str().unwrap_or("?"),
                    peer["device"].as_str().unwrap_or("?"),
                    peer["threads"],
                    peer[format!("{key}_step_ms")].as_f64().unwrap(),
                    ours[i] / theirs
                );
            }
        }
        Err(why) => println!("PyTorch peer not measured: {why}"),
    }
}
