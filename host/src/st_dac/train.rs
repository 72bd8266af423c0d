//! Training ST-DAC with DAC*: per batch, label pairs from the network's predictions on the clean images,
//! then take one Adam step on the pair loss of its outputs for augmented copies. After every epoch:
//! score the evaluation split, append the record to `metrics.jsonl`, checkpoint.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use burn::config::Config;
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::augment::Augmentation;
use super::loss::{pair_loss, Schedule};
use super::model::{StDac, StDacConfig};
use crate::backend::{self, Backend, TrainBackend};
use crate::data::{self, Dataset, Source, Split};
use crate::metrics::Scores;
use crate::run::{write_atomic, RunDir};

/// Which images are trained on and which are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Protocol {
    /// Train on the training split, score on the test split.
    HeldOut,
    /// Train on train + test together and score on all of it, as the DAC and ST-DAC authors did.
    Transductive,
}

#[derive(Config, Debug)]
pub struct TrainConfig {
    pub model: StDacConfig,
    /// `mnist` or `fashion-mnist` (or another 28 × 28 grey source).
    pub dataset: String,
    pub protocol: Protocol,
    /// Use only the first N training (and evaluation) images.
    pub limit: Option<usize>,
    pub epochs: usize,
    pub batch: usize,
    #[config(default = 1e-4)]
    pub lr: f64,
    #[config(default = 0)]
    pub seed: u64,
    pub schedule: Schedule,
    /// Weight of each output's cross-entropy toward its own clean prediction (10 in the authors' code).
    pub self_weight: f64,
    pub augmentation: Augmentation,
}

impl TrainConfig {
    fn source(&self) -> anyhow::Result<Source> {
        self.dataset.parse().map_err(anyhow::Error::msg)
    }

    fn splits(&self) -> (Split, Split) {
        match self.protocol {
            Protocol::HeldOut => (Split::Train, Split::Test),
            Protocol::Transductive => (Split::All, Split::Test),
        }
    }

    /// The images scored by `stdac eval`: the test split when held out, everything when transductive.
    pub fn final_split(&self) -> Split {
        match self.protocol {
            Protocol::HeldOut => Split::Test,
            Protocol::Transductive => Split::All,
        }
    }
}

/// Where a run resumes: the epochs done and the learned-λ state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct State {
    epochs_done: usize,
    lambda: f64,
}

type Recorded = NamedMpkFileRecorder<FullPrecisionSettings>;

fn load_images(config: &TrainConfig, split: Split, data: Option<&Path>) -> anyhow::Result<Dataset> {
    let dataset = data::load(&config.source()?, Some(split), config.limit, data)?;
    anyhow::ensure!(
        dataset.image_size == Some((28, 28)),
        "ST-DAC takes 28 × 28 grey images; {} is not made of them",
        dataset.name
    );
    Ok(dataset)
}

fn batch_tensor<B: burn::tensor::backend::Backend>(
    d: &Dataset,
    rows: &[usize],
    device: &B::Device,
) -> Tensor<B, 4> {
    let mut pixels = Vec::with_capacity(rows.len() * d.dim);
    for &i in rows {
        pixels.extend_from_slice(d.row(i));
    }
    Tensor::from_data(TensorData::new(pixels, [rows.len(), 1, 28, 28]), device)
}

/// Cluster (argmax) and embedding of every image, in evaluation mode (BatchNorm running statistics,
/// no dropout), in batches of 256.
pub fn predict(model: &StDac<Backend>, d: &Dataset, device: &backend::Device) -> (Vec<usize>, Vec<f32>) {
    let (mut clusters, mut embeddings) = (Vec::with_capacity(d.len()), Vec::new());
    let rows: Vec<usize> = (0..d.len()).collect();
    for chunk in rows.chunks(256) {
        let out = model.forward(batch_tensor(d, chunk, device)).embedding;
        let k = out.dims()[1];
        let values: Vec<f32> = out.into_data().to_vec().expect("f32 embeddings");
        for row in values.chunks(k) {
            let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(j, _)| j);
            clusters.push(best);
        }
        embeddings.extend(values);
    }
    (clusters, embeddings)
}

/// Scores of `model` on `d` (which must be labelled).
pub fn score(model: &StDac<Backend>, d: &Dataset, device: &backend::Device) -> anyhow::Result<Scores> {
    let labels = d.labels.as_ref().with_context(|| format!("{} has no labels to score against", d.name))?;
    let (clusters, _) = predict(model, d, device);
    let pred: Vec<i64> = clusters.iter().map(|&c| c as i64).collect();
    Ok(Scores::of(labels, &pred))
}

/// Trains (or resumes) the run in `run`.
pub fn train(config: &TrainConfig, run: &RunDir, data: Option<&Path>) -> anyhow::Result<()> {
    let device = backend::device()?;
    let (train_split, eval_split) = config.splits();
    let train_set = load_images(config, train_split, data)?;
    let eval_set = load_images(config, eval_split, data)?;

    let mut model: StDac<TrainBackend> = config.model.init(&device);
    let mut optimizer = AdamConfig::new().init::<TrainBackend, StDac<TrainBackend>>();
    let mut state = State { epochs_done: 0, lambda: 0.0 };
    if let Some(dir) = run.latest_checkpoint()? {
        let recorder = Recorded::new();
        model = model
            .load_file(dir.join("model"), &recorder, &device)
            .with_context(|| format!("cannot load {}", dir.join("model.mpk").display()))?;
        let record = recorder
            .load(dir.join("optimizer"), &device)
            .with_context(|| format!("cannot load {}", dir.join("optimizer.mpk").display()))?;
        optimizer = optimizer.load_record(record);
        let text = std::fs::read_to_string(dir.join("state.json"))?;
        state = serde_json::from_str(&text).with_context(|| format!("{}: bad state.json", dir.display()))?;
        eprintln!("resuming {} after epoch {}", run.path().display(), state.epochs_done);
    }

    eprintln!(
        "training ST-DAC ({} STN) on {} ({} images), scoring on {} ({} images), backend {}",
        config.model.stn.len(),
        train_set.name,
        train_set.len(),
        eval_set.name,
        eval_set.len(),
        backend::NAME
    );
    for epoch in state.epochs_done..config.epochs {
        if config.schedule.finished(state.lambda) {
            eprintln!("the learned thresholds have met: training is complete");
            break;
        }
        let started = Instant::now();
        let mut rng =
            ChaCha8Rng::seed_from_u64(config.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut order: Vec<usize> = (0..train_set.len()).collect();
        order.shuffle(&mut rng);
        let batches: Vec<&[usize]> = order.chunks(config.batch).filter(|b| b.len() >= 2).collect();

        let progress = ProgressBar::new(batches.len() as u64).with_prefix(format!(
            "epoch {}/{}",
            epoch + 1,
            config.epochs
        ));
        progress.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}").expect("valid template"),
        );
        let (mut loss_sum, mut selected_sum, mut seen) = (0.0, 0.0, 0usize);
        let mut thresholds = config.schedule.thresholds(epoch, state.lambda);
        for (b, rows) in batches.iter().enumerate() {
            thresholds = config.schedule.thresholds(epoch, state.lambda);
            let clean = batch_tensor::<Backend>(&train_set, rows, &device);
            // Labels from the predictions on the clean images, before the step, in evaluation mode.
            let targets = model.valid().forward(clean.clone()).embedding;
            let augmented = config.augmentation.apply(clean, &mut rng);
            let outputs = model.forward(Tensor::from_inner(augmented)).embedding;
            let step = pair_loss(outputs, Tensor::from_inner(targets), thresholds, config.self_weight);
            let loss_value: f64 = step.loss.clone().into_scalar().elem();
            let grads = GradientsParams::from_grads(step.loss.backward(), &model);
            model = optimizer.step(config.lr, model, grads);
            state.lambda = config.schedule.step_lambda(state.lambda);

            loss_sum += loss_value * rows.len() as f64;
            selected_sum += step.selected * rows.len() as f64;
            seen += rows.len();
            progress.set_position(b as u64 + 1);
            progress.set_message(format!(
                "loss {:.4} selected {:.1}% u/l {:.3}/{:.3} {:.0} img/s",
                loss_sum / seen as f64,
                100.0 * selected_sum / seen as f64,
                thresholds.upper,
                thresholds.lower,
                seen as f64 / started.elapsed().as_secs_f64()
            ));
        }
        progress.finish_and_clear();
        let train_seconds = started.elapsed().as_secs_f64();
        let scores = score(&model.valid(), &eval_set, &device)?;
        let record = json!({
            "epoch": epoch + 1,
            "loss": loss_sum / seen.max(1) as f64,
            "selected": selected_sum / seen.max(1) as f64,
            "upper": thresholds.upper,
            "lower": thresholds.lower,
            "images_per_s": seen as f64 / train_seconds,
            "train_seconds": train_seconds,
            "eval_split": eval_set.name,
            "acc": scores.acc,
            "nmi": scores.nmi,
            "ari": scores.ari,
        });
        eprintln!("{record}");
        run.record_epoch(&record)?;
        state.epochs_done = epoch + 1;
        run.checkpoint(state.epochs_done, |dir| {
            let recorder = Recorded::new();
            model.clone().save_file(dir.join("model"), &recorder)?;
            recorder.record(optimizer.to_record(), dir.join("optimizer"))?;
            write_atomic(&dir.join("state.json"), serde_json::to_string(&state)?.as_bytes())
        })?;
    }
    Ok(())
}

/// The model of a run's latest checkpoint, ready for evaluation.
pub fn load_trained(run: &RunDir) -> anyhow::Result<(TrainConfig, StDac<Backend>)> {
    let config = TrainConfig::load(run.config_path()).map_err(|e| {
        anyhow::anyhow!("{}: not a valid ST-DAC configuration: {e}", run.config_path().display())
    })?;
    let dir = run
        .latest_checkpoint()?
        .with_context(|| format!("{} has no finished epoch yet: train it first", run.path().display()))?;
    let device = backend::device()?;
    let model: StDac<Backend> = config.model.init(&device);
    let model = model
        .load_file(dir.join("model"), &Recorded::new(), &device)
        .with_context(|| format!("cannot load {}", dir.join("model.mpk").display()))?;
    Ok((config, model))
}
