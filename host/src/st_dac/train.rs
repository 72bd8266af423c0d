//! Training ST-DAC with DAC*: per batch, label pairs from the network's predictions on the clean images,
//! then take one Adam step on the pair loss of its outputs for augmented copies. After every epoch the
//! evaluation split is scored. This is ST-DAC's part of the one training loop ([`crate::training`]),
//! which does the seeding, batches, records and checkpoints.

use std::ops::ControlFlow;
use std::path::Path;

use anyhow::Context;
use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::augment::Augmentation;
use super::loss::{pair_loss, Schedule, Thresholds};
use super::model::{StDac, StDacConfig};
use crate::backend::{self, Backend, TrainBackend};
pub use crate::data::Protocol;
use crate::data::{self, Dataset, Source, Split};
use crate::metrics::Scores;
use crate::ops::FusedAdam;
use crate::run::{self, RunDir};
use crate::training::{self, EpochEnd, EpochMetrics, ResumeState, TrainingTask};

/// What `family` a run's config.json holds (ST-DAC's configs predate the field: a run without one is
/// ST-DAC's).
pub const FAMILY: &str = "st-dac";

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

    /// The images trained on: the training split (its first `limit`), plus the test split's when
    /// transductive.
    pub fn training_images(&self, data: Option<&Path>) -> anyhow::Result<Dataset> {
        let mut images = load_images(self, Split::Train, data)?;
        if self.protocol == Protocol::Transductive {
            images.append(load_images(self, Split::Test, data)?);
        }
        Ok(images)
    }

    /// The images scored after every epoch and by `stdac eval`: the test split (its first `limit`) when
    /// held out, every image trained on when transductive.
    pub fn scored_images(&self, data: Option<&Path>) -> anyhow::Result<Dataset> {
        match self.protocol {
            Protocol::HeldOut => load_images(self, Split::Test, data),
            Protocol::Transductive => self.training_images(data),
        }
    }
}

/// Where a run resumes: the epochs done and the learned-λ state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct State {
    epochs_done: usize,
    lambda: f64,
}

fn load_images(config: &TrainConfig, split: Split, data: Option<&Path>) -> anyhow::Result<Dataset> {
    let dataset = data::load(&config.source()?, Some(split), config.limit, data)?;
    anyhow::ensure!(
        dataset.image_size == Some((28, 28)),
        "ST-DAC takes 28 × 28 grey images; {} is not made of them",
        dataset.name
    );
    // DAC* learns from pairs, and a score over fewer than two images means nothing.
    anyhow::ensure!(
        dataset.len() >= 2,
        "{} holds {} images: --limit must leave at least 2",
        dataset.name,
        dataset.len()
    );
    Ok(dataset)
}

pub fn batch_tensor<B: burn::tensor::backend::Backend>(
    d: &Dataset,
    rows: &[usize],
    device: &B::Device,
) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(d.gather(rows), [rows.len(), 1, 28, 28]), device)
}

/// What the network says about every image of a dataset.
pub struct Predictions {
    /// The largest entry of each output: the cluster.
    pub clusters: Vec<usize>,
    /// The outputs, `len × k`, row-major.
    pub embeddings: Vec<f32>,
    /// The images after the input transformer, `len × 784`, when asked for and the model has one.
    pub corrected: Option<Vec<f32>>,
}

/// Runs `model` over every image of `d` in evaluation mode (BatchNorm running statistics, no dropout),
/// in batches of 256.
pub fn predict(
    model: &StDac<Backend>,
    d: &Dataset,
    keep_corrected: bool,
    device: &backend::Device,
) -> Predictions {
    let mut p =
        Predictions { clusters: Vec::with_capacity(d.len()), embeddings: Vec::new(), corrected: None };
    let rows: Vec<usize> = (0..d.len()).collect();
    for chunk in rows.chunks(256) {
        let out = model.forward(batch_tensor(d, chunk, device));
        let k = out.embedding.dims()[1];
        let values: Vec<f32> = out.embedding.into_data().to_vec().expect("f32 embeddings");
        for row in values.chunks(k) {
            let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(j, _)| j);
            p.clusters.push(best);
        }
        p.embeddings.extend(values);
        if let (true, Some(images)) = (keep_corrected, out.corrected) {
            let pixels: Vec<f32> = images.into_data().to_vec().expect("f32 images");
            p.corrected.get_or_insert_with(Vec::new).extend(pixels);
        }
    }
    p
}

/// Scores of `model` on `d` (which must be labelled).
pub fn score(model: &StDac<Backend>, d: &Dataset, device: &backend::Device) -> anyhow::Result<Scores> {
    let labels = d.labels.as_ref().with_context(|| format!("{} has no labels to score against", d.name))?;
    let pred: Vec<i64> = predict(model, d, false, device).clusters.iter().map(|&c| c as i64).collect();
    Ok(Scores::of(labels, &pred))
}

/// What one training step measured.
pub struct Step {
    pub loss: f64,
    /// Fraction of pairs that carried a label.
    pub selected: f64,
    /// Fraction of pairs labelled "same cluster" (about 1/k when the clusters are balanced; near 1 is a
    /// collapse).
    pub positive: f64,
}

/// One DAC* step on a batch of clean images: label pairs from the model's own predictions on them
/// (before the step), then one optimizer step on the pair loss of its outputs for augmented copies.
/// The benchmark times exactly this.
///
/// The targets are computed as the authors' code did, with BatchNorm on the batch's own statistics (and
/// no dropout), not on the running statistics: those start as the identity, which makes every output
/// of a new network nearly the same, labels every pair "same cluster", and collapses training into one
/// or two clusters (measured: models/RESULTS.md). This forward pass also moves the running statistics
/// toward the clean images, which are what evaluation sees.
pub fn train_step<O: Optimizer<StDac<TrainBackend>, TrainBackend>>(
    model: StDac<TrainBackend>,
    optimizer: &mut O,
    clean: Tensor<Backend, 4>,
    config: &TrainConfig,
    thresholds: Thresholds,
    rng: &mut impl Rng,
) -> (StDac<TrainBackend>, Step) {
    let targets = model.forward_with(Tensor::from_inner(clean.clone()), false).embedding.detach();
    let augmented = config.augmentation.apply(clean, rng);
    let outputs = model.forward(Tensor::from_inner(augmented)).embedding;
    let pairs = pair_loss(outputs, targets, thresholds, config.self_weight);
    let loss: f64 = pairs.loss.clone().into_scalar().elem();
    let grads = GradientsParams::from_grads(pairs.loss.backward(), &model);
    (
        optimizer.step(config.lr, model, grads),
        Step { loss, selected: pairs.selected, positive: pairs.positive },
    )
}

/// Trains (or resumes) the run in `run`, in the one training loop.
pub fn train(config: &TrainConfig, run: &RunDir, data: Option<&Path>) -> anyhow::Result<()> {
    training::train(&mut StDacTask::new(config, data)?, run)
}

/// ST-DAC's part of [`training::train`]: DAC* steps, the learned-λ schedule, scores after every epoch.
struct StDacTask<'a> {
    config: &'a TrainConfig,
    device: backend::Device,
    train_set: Dataset,
    eval_set: Dataset,
    /// The epoch in progress (the thresholds depend on it).
    epoch: usize,
    /// The thresholds of the latest step (of the epoch's start before any): the record's and the
    /// progress bar's.
    thresholds: Thresholds,
}

impl<'a> StDacTask<'a> {
    fn new(config: &'a TrainConfig, data: Option<&Path>) -> anyhow::Result<StDacTask<'a>> {
        let device = backend::device()?;
        let eval_set = config.scored_images(data)?;
        let train_set = match config.protocol {
            // A transductive run scores the very images it trains on: load them once.
            Protocol::Transductive => eval_set.clone(),
            Protocol::HeldOut => config.training_images(data)?,
        };
        let thresholds = config.schedule.thresholds(0, 0.0);
        Ok(StDacTask { config, device, train_set, eval_set, epoch: 0, thresholds })
    }
}

impl ResumeState for State {
    fn epochs_done(&self) -> usize {
        self.epochs_done
    }
    fn set_epochs_done(&mut self, epochs: usize) {
        self.epochs_done = epochs;
    }
}

impl TrainingTask for StDacTask<'_> {
    type Model = StDac<TrainBackend>;
    type Optimizer = OptimizerAdaptor<FusedAdam, StDac<TrainBackend>, TrainBackend>;
    type State = State;
    type Config = TrainConfig;

    const METRICS: &'static [&'static str] = &["loss", "selected", "positive"];
    const RATE_FIELD: &'static str = "images_per_s";
    // DAC* learns from pairs: a batch of one image has none.
    const SMALLEST_BATCH: usize = 2;

    fn config(&self) -> &TrainConfig {
        self.config
    }
    fn device(&self) -> &backend::Device {
        &self.device
    }
    fn seed(&self) -> u64 {
        self.config.seed
    }
    fn epochs(&self) -> usize {
        self.config.epochs
    }
    fn batch_size(&self) -> usize {
        self.config.batch
    }
    fn training_samples(&self) -> usize {
        self.train_set.len()
    }
    fn describe(&self) -> String {
        format!(
            "training ST-DAC ({} STN) on {} ({} images), scoring on {} ({} images), backend {}",
            self.config.model.stn.len(),
            self.train_set.name,
            self.train_set.len(),
            self.eval_set.name,
            self.eval_set.len(),
            backend::NAME
        )
    }

    fn init_model(&self) -> StDac<TrainBackend> {
        self.config.model.init(&self.device)
    }
    fn init_optimizer(&self) -> Self::Optimizer {
        FusedAdam::init()
    }
    fn initial_state(&self) -> State {
        State { epochs_done: 0, lambda: 0.0 }
    }

    fn start_epoch(
        &mut self,
        epoch: usize,
        _: &StDac<TrainBackend>,
        state: &mut State,
    ) -> anyhow::Result<ControlFlow<()>> {
        if self.config.schedule.finished(state.lambda) {
            eprintln!("the learned thresholds have met: training is complete");
            return Ok(ControlFlow::Break(()));
        }
        self.epoch = epoch;
        self.thresholds = self.config.schedule.thresholds(epoch, state.lambda);
        Ok(ControlFlow::Continue(()))
    }

    fn step(
        &mut self,
        model: StDac<TrainBackend>,
        optimizer: &mut Self::Optimizer,
        state: &mut State,
        rows: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> (StDac<TrainBackend>, Vec<f64>) {
        self.thresholds = self.config.schedule.thresholds(self.epoch, state.lambda);
        let clean = batch_tensor::<Backend>(&self.train_set, rows, &self.device);
        let (model, step) = train_step(model, optimizer, clean, self.config, self.thresholds, rng);
        state.lambda = self.config.schedule.step_lambda(state.lambda);
        (model, vec![step.loss, step.selected, step.positive])
    }

    fn progress_message(&self, metrics: &EpochMetrics, images_per_s: f64) -> String {
        format!(
            "loss {:.4} selected {:.1}% positive {:.1}% u/l {:.3}/{:.3} {:.0} img/s",
            metrics.mean("loss"),
            100.0 * metrics.mean("selected"),
            100.0 * metrics.mean("positive"),
            self.thresholds.upper,
            self.thresholds.lower,
            images_per_s
        )
    }

    fn end_epoch(
        &mut self,
        model: &StDac<TrainBackend>,
        _: &mut State,
        metrics: &EpochMetrics,
    ) -> anyhow::Result<EpochEnd> {
        let scores = score(&model.valid(), &self.eval_set, &self.device)?;
        let batch_losses = metrics.per_batch("loss");
        Ok(EpochEnd {
            fields: json!({
                "loss": metrics.mean("loss"),
                // Whether the loss falls within the epoch, for runs too short to compare epochs.
                "loss_first_quarter": quarter_mean(&batch_losses, false),
                "loss_last_quarter": quarter_mean(&batch_losses, true),
                "selected": metrics.mean("selected"),
                "positive": metrics.mean("positive"),
                "upper": self.thresholds.upper,
                "lower": self.thresholds.lower,
            }),
            eval_split: self.eval_set.name.clone(),
            scores: Some(scores),
        })
    }
}

/// Mean of the first (or last) quarter of `values`, at least one of them; NaN when there are none.
fn quarter_mean(values: &[f64], last: bool) -> f64 {
    let n = values.len().div_ceil(4);
    let part = if last { &values[values.len() - n..] } else { &values[..n] };
    part.iter().sum::<f64>() / n as f64
}

/// The model of a run's latest checkpoint, ready for evaluation.
pub fn load_trained(run: &RunDir) -> anyhow::Result<(TrainConfig, StDac<Backend>)> {
    let config: TrainConfig = run.load_config("ST-DAC")?;
    let dir = run.finished_checkpoint()?;
    let device = backend::device()?;
    let model = run::load_model(&dir, config.model.init(&device), &device)?;
    Ok((config, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::st_dac::StDacConfig;

    /// Share of the off-diagonal pairs of unit rows whose dot product exceeds `threshold`.
    fn share_above(embedding: Tensor<TrainBackend, 2>, threshold: f32) -> f64 {
        let n = embedding.dims()[0];
        let similarity: Vec<f32> =
            embedding.clone().matmul(embedding.transpose()).into_data().to_vec().unwrap();
        let above = (0..n * n).filter(|&i| i / n != i % n && similarity[i] > threshold).count();
        above as f64 / (n * (n - 1)) as f64
    }

    #[test]
    fn a_new_network_tells_images_apart_only_with_batch_statistics() {
        let device = Default::default();
        let images = data::load(&Source::Mnist, Some(Split::Test), Some(64), None).unwrap();
        let rows: Vec<usize> = (0..64).collect();
        let clean = batch_tensor::<Backend>(&images, &rows, &device);
        let model: StDac<TrainBackend> = StDacConfig::new().with_dense_width(512).init(&device);
        // Running statistics start as the identity: every output is nearly the same, every pair
        // would be labelled "same cluster" at the authors' starting threshold of 0.99.
        let running = model.valid().forward(clean.clone()).embedding;
        assert!(share_above(Tensor::from_inner(running), 0.99) > 0.99);
        // The batch's own statistics, as the trainer's targets use them, spread the outputs apart.
        let batch = model.forward_with(Tensor::from_inner(clean), false).embedding;
        let share = share_above(batch, 0.99);
        assert!(share < 0.1, "{share} of the pairs are still above 0.99");
    }
}
