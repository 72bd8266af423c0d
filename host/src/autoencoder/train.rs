//! Training the autoencoders, and DCN on top of them.
//!
//! Every kind trains its autoencoder with Adam on the reconstruction error plus its own term. After
//! every epoch the training samples are encoded and clustered: k-means on their codes (10 seedings, the
//! best kept) for the plain, sparse, denoising and variational kinds; DCN's own centroids once its joint
//! phase has begun. Those centroids go into the checkpoint (they are what a board assigns with), the
//! scored samples are assigned to the nearest one (by the board's own nearest-centroid code), and the
//! epoch's record goes into `metrics.jsonl`. This is the family's part of the one training loop
//! ([`crate::training`]), which does the seeding, batches, records and checkpoints.
//!
//! DCN (Yang et al. 2017) pre-trains for `epochs`, seeds k-means on the codes, then for `dcn_epochs`
//! alternates, batch by batch: one network step on reconstruction + (λ/2)·‖z − c(s)‖² with the
//! assignments s fixed, then each sample's assignment to its nearest centroid, then each centroid moved
//! toward its new members with a step of 1/(its running count).

use std::ops::ControlFlow;
use std::path::Path;

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stdac_device::centroids::{Centroids, Metric};

use super::loss::{self, Noise, Sparsity};
use super::model::{Autoencoder, AutoencoderConfig};
use crate::backend::{self, Backend, TrainBackend};
use crate::data::{self, Dataset, Protocol, Source};
use crate::kmeans::{self, KMeansConfig};
use crate::metrics::Scores;
use crate::ops::FusedAdam;
use crate::run::{self, RunDir};
use crate::training::{self, EpochEnd, EpochMetrics, ResumeState, TrainingTask};

/// What a run's `config.json` says its family is, so `stdac eval` knows how to read it.
pub const FAMILY: &str = "autoencoder";

/// The members of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Kind {
    /// Plain autoencoder; clusters by k-means on its codes.
    Ae,
    /// Sparse autoencoder (L1 activity or KL sparsity on the code).
    Sae,
    /// Denoising autoencoder (Gaussian noise or masking; loss against the clean input).
    Dae,
    /// Variational autoencoder (reparameterisation, β-weighted KL term); clusters the means.
    Vae,
    /// Deep clustering network: autoencoder + k-means, trained jointly after pre-training.
    Dcn,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ae => "autoencoder",
            Kind::Sae => "sparse autoencoder",
            Kind::Dae => "denoising autoencoder",
            Kind::Vae => "variational autoencoder",
            Kind::Dcn => "DCN",
        }
    }
}

#[derive(Config, Debug)]
pub struct AeTrainConfig {
    /// Always [`FAMILY`].
    pub family: String,
    pub kind: Kind,
    pub model: AutoencoderConfig,
    /// A dataset name or a folder of pictures (see [`Source`]).
    pub dataset: String,
    pub protocol: Protocol,
    /// Use only the first N samples (of each split).
    pub limit: Option<usize>,
    /// Epochs of autoencoder training (DCN: of pre-training).
    pub epochs: usize,
    /// DCN: epochs of joint training after pre-training.
    #[config(default = 0)]
    pub dcn_epochs: usize,
    pub batch: usize,
    #[config(default = 1e-3)]
    pub lr: f64,
    #[config(default = 0)]
    pub seed: u64,
    pub clusters: usize,
    /// Sparse autoencoders' penalty.
    pub sparsity: Option<Sparsity>,
    /// Denoising autoencoders' corruption.
    pub noise: Option<Noise>,
    /// Weight of a VAE's KL term (β-VAE).
    #[config(default = 1.0)]
    pub beta: f64,
    /// DCN's λ, the weight of the k-means term.
    #[config(default = 1.0)]
    pub dcn_lambda: f64,
}

impl AeTrainConfig {
    pub fn source(&self) -> anyhow::Result<Source> {
        self.dataset.parse().map_err(anyhow::Error::msg)
    }

    pub fn total_epochs(&self) -> usize {
        self.epochs + if self.kind == Kind::Dcn { self.dcn_epochs } else { 0 }
    }

    /// The samples trained on and those scored (see [`data::training_and_scored`]).
    pub fn datasets(&self, data: Option<&Path>) -> anyhow::Result<(Dataset, Dataset)> {
        let (train, scored) = data::training_and_scored(&self.source()?, self.protocol, self.limit, data)?;
        anyhow::ensure!(
            train.dim == self.model.input_dim,
            "{} has {} features per sample; this model takes {}",
            train.name,
            train.dim,
            self.model.input_dim
        );
        anyhow::ensure!(
            train.len() >= self.clusters && scored.len() >= 2,
            "{} holds {} samples and {} {}: --limit must leave at least --clusters {} to train on and 2 to score",
            self.dataset,
            train.len(),
            scored.name,
            scored.len(),
            self.clusters
        );
        Ok((train, scored))
    }
}

/// Where a run resumes, and the centroids its latest checkpoint assigns with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub epochs_done: usize,
    /// `clusters` × latent, row-major.
    pub centroids: Vec<f32>,
    /// DCN: how many samples each centroid has absorbed (its step is 1 / count); empty before the joint
    /// phase.
    pub counts: Vec<f64>,
}

impl State {
    pub fn centroids(&self, latent: usize) -> Centroids {
        Centroids::new(self.centroids.clone(), latent, Metric::Euclidean)
    }
}

/// DCN's centroids start with this many samples' worth of inertia (their first steps are 1/101, 1/102, …),
/// so the first batches of the joint phase do not throw the k-means solution about.
const DCN_INITIAL_COUNT: f64 = 100.0;

/// Samples encoded at once outside training.
const ENCODE_BATCH: usize = 1024;

/// A batch of `d`'s rows as a [rows, dim] tensor.
pub fn rows_tensor<B: burn::tensor::backend::Backend>(
    d: &Dataset,
    rows: &[usize],
    device: &B::Device,
) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(d.gather(rows), [rows.len(), d.dim]), device)
}

/// The codes (the posterior means, for a VAE) of every sample of `d`, `len × latent` row-major.
pub fn encode_all(model: &Autoencoder<Backend>, d: &Dataset, device: &backend::Device) -> Vec<f32> {
    let rows: Vec<usize> = (0..d.len()).collect();
    let mut codes = Vec::new();
    for chunk in rows.chunks(ENCODE_BATCH) {
        let (mean, _) = model.encode(rows_tensor(d, chunk, device));
        codes.extend(mean.into_data().to_vec::<f32>().expect("f32 codes"));
    }
    codes
}

/// The nearest centroid of every code.
pub fn assign(codes: &[f32], centroids: &Centroids) -> Vec<usize> {
    codes.chunks(centroids.dim()).map(|z| centroids.nearest(z).index).collect()
}

/// k-means on the codes, seeded from the run's seed.
fn kmeans_centroids(codes: &[f32], config: &AeTrainConfig) -> Vec<f32> {
    let kmeans_config = KMeansConfig { seed: config.seed, ..KMeansConfig::new(config.clusters) };
    kmeans::fit(codes, config.model.latent, &kmeans_config).centroids
}

/// What one step measured (each a mean over the batch).
pub struct Step {
    pub loss: f64,
    pub reconstruction: f64,
    /// The sparsity penalty, or the β-weighted KL term.
    pub regulariser: f64,
    /// DCN's k-means term.
    pub clustering: f64,
}

/// One optimizer step on a batch `clean` ([N, dim]). With `dcn`, the k-means term is added toward each
/// sample's nearest centroid, after which the assignments and centroids are updated from the codes.
pub fn train_step<O: Optimizer<Autoencoder<TrainBackend>, TrainBackend>>(
    model: Autoencoder<TrainBackend>,
    optimizer: &mut O,
    clean: Tensor<TrainBackend, 2>,
    config: &AeTrainConfig,
    dcn: Option<&mut State>,
) -> (Autoencoder<TrainBackend>, Step) {
    let input = match config.noise {
        Some(noise) => noise.apply(clean.clone()),
        None => clean.clone(),
    };
    let pass = model.forward(input, true);
    let reconstruction = loss::reconstruction_error(pass.reconstruction, clean.clone());
    let mut total = reconstruction.clone();
    let mut regulariser = 0.0;
    if let Some(sparsity) = config.sparsity {
        let penalty = loss::sparsity_penalty(pass.mean.clone(), sparsity);
        regulariser += loss::value(&penalty);
        total = total + penalty;
    }
    if let Some(log_var) = pass.log_var.clone() {
        let kl = loss::kl_divergence(pass.mean.clone(), log_var) * config.beta;
        regulariser += loss::value(&kl);
        total = total + kl;
    }
    let mut clustering = 0.0;
    if let Some(state) = &dcn {
        let latent = config.model.latent;
        let z: Vec<f32> = pass.mean.clone().detach().into_data().to_vec().expect("f32 codes");
        let targets = nearest_centroids(&z, state, latent);
        let shape = [z.len() / latent, latent];
        let targets = Tensor::from_data(TensorData::new(targets, shape), &pass.mean.device());
        let term = loss::kmeans_term(pass.mean.clone(), targets, config.dcn_lambda);
        clustering = loss::value(&term);
        total = total + term;
    }
    let step = Step {
        loss: loss::value(&total),
        reconstruction: loss::value(&reconstruction),
        regulariser,
        clustering,
    };
    let grads = GradientsParams::from_grads(total.backward(), &model);
    let model = optimizer.step(config.lr, model, grads);
    if let Some(state) = dcn {
        // Assignments and centroids follow the codes of the network as the step left it.
        let (mean, _) = model.encode(clean);
        let z: Vec<f32> = mean.detach().into_data().to_vec().expect("f32 codes");
        update_centroids(state, &z, config.model.latent);
    }
    (model, step)
}

/// The nearest centroid of each code, the centroids' values laid out like the codes.
fn nearest_centroids(codes: &[f32], state: &State, latent: usize) -> Vec<f32> {
    let centroids = state.centroids(latent);
    let mut targets = Vec::with_capacity(codes.len());
    for code in codes.chunks(latent) {
        let c = centroids.nearest(code).index;
        targets.extend_from_slice(&state.centroids[c * latent..(c + 1) * latent]);
    }
    targets
}

/// DCN's centroid update: each code joins its nearest centroid, which moves toward it by 1/(its count).
pub fn update_centroids(state: &mut State, codes: &[f32], latent: usize) {
    let centroids = state.centroids(latent);
    for code in codes.chunks(latent) {
        let c = centroids.nearest(code).index;
        state.counts[c] += 1.0;
        let step = (1.0 / state.counts[c]) as f32;
        for (m, &z) in state.centroids[c * latent..(c + 1) * latent].iter_mut().zip(code) {
            *m -= step * (*m - z);
        }
    }
}

/// Trains (or resumes) the run in `run`, in the one training loop.
pub fn train(config: &AeTrainConfig, run: &RunDir, data: Option<&Path>) -> anyhow::Result<()> {
    training::train(&mut AutoencoderTask::new(config, data)?, run)
}

/// The autoencoders' part of [`training::train`]: their steps, DCN's joint phase, the centroids and
/// scores after every epoch.
struct AutoencoderTask<'a> {
    config: &'a AeTrainConfig,
    device: backend::Device,
    train_set: Dataset,
    eval_set: Dataset,
    /// Whether the epoch in progress is in DCN's joint phase.
    joint: bool,
}

impl<'a> AutoencoderTask<'a> {
    fn new(config: &'a AeTrainConfig, data: Option<&Path>) -> anyhow::Result<AutoencoderTask<'a>> {
        let device = backend::device()?;
        let (train_set, eval_set) = config.datasets(data)?;
        Ok(AutoencoderTask { config, device, train_set, eval_set, joint: false })
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

impl TrainingTask for AutoencoderTask<'_> {
    type Model = Autoencoder<TrainBackend>;
    type Optimizer = OptimizerAdaptor<FusedAdam, Autoencoder<TrainBackend>, TrainBackend>;
    type State = State;
    type Config = AeTrainConfig;

    const METRICS: &'static [&'static str] = &["loss", "reconstruction", "regulariser", "clustering"];
    const RATE_FIELD: &'static str = "samples_per_s";

    fn config(&self) -> &AeTrainConfig {
        self.config
    }
    fn device(&self) -> &backend::Device {
        &self.device
    }
    fn seed(&self) -> u64 {
        self.config.seed
    }
    fn epochs(&self) -> usize {
        self.config.total_epochs()
    }
    fn batch_size(&self) -> usize {
        self.config.batch
    }
    fn training_samples(&self) -> usize {
        self.train_set.len()
    }
    fn describe(&self) -> String {
        format!(
            "training a {} on {} ({} × {}), scoring on {} ({} samples), backend {}",
            self.config.kind.name(),
            self.train_set.name,
            self.train_set.len(),
            self.train_set.dim,
            self.eval_set.name,
            self.eval_set.len(),
            backend::NAME
        )
    }

    fn init_model(&self) -> Autoencoder<TrainBackend> {
        self.config.model.init(&self.device)
    }
    fn init_optimizer(&self) -> Self::Optimizer {
        FusedAdam::init()
    }
    fn initial_state(&self) -> State {
        State { epochs_done: 0, centroids: Vec::new(), counts: Vec::new() }
    }

    fn start_epoch(
        &mut self,
        epoch: usize,
        model: &Autoencoder<TrainBackend>,
        state: &mut State,
    ) -> anyhow::Result<ControlFlow<()>> {
        self.joint = self.config.kind == Kind::Dcn && epoch >= self.config.epochs;
        if self.joint && state.counts.is_empty() {
            // DCN's joint phase begins: seed its centroids with k-means on the pre-trained codes.
            let codes = encode_all(&model.valid(), &self.train_set, &self.device);
            state.centroids = kmeans_centroids(&codes, self.config);
            state.counts = vec![DCN_INITIAL_COUNT; self.config.clusters];
        }
        Ok(ControlFlow::Continue(()))
    }

    fn step(
        &mut self,
        model: Autoencoder<TrainBackend>,
        optimizer: &mut Self::Optimizer,
        state: &mut State,
        rows: &[usize],
        _: &mut ChaCha8Rng,
    ) -> (Autoencoder<TrainBackend>, Vec<f64>) {
        // Its randomness (the corruption, a VAE's sampling) comes from the backend's generator, which the
        // loop seeds every epoch.
        let clean = rows_tensor::<TrainBackend>(&self.train_set, rows, &self.device);
        let (model, step) = train_step(model, optimizer, clean, self.config, self.joint.then_some(state));
        (model, vec![step.loss, step.reconstruction, step.regulariser, step.clustering])
    }

    fn progress_message(&self, metrics: &EpochMetrics, samples_per_s: f64) -> String {
        format!("loss {:.4} {:.0} samples/s", metrics.mean("loss"), samples_per_s)
    }

    fn end_epoch(
        &mut self,
        model: &Autoencoder<TrainBackend>,
        state: &mut State,
        metrics: &EpochMetrics,
    ) -> anyhow::Result<EpochEnd> {
        let inference = model.valid();
        if !self.joint {
            let codes = encode_all(&inference, &self.train_set, &self.device);
            state.centroids = kmeans_centroids(&codes, self.config);
        }
        let codes = encode_all(&inference, &self.eval_set, &self.device);
        let clusters = assign(&codes, &state.centroids(self.config.model.latent));
        let phase = match (self.joint, self.config.kind) {
            (true, _) => "joint",
            (false, Kind::Dcn) => "pretrain",
            (false, _) => "train",
        };
        Ok(EpochEnd {
            fields: json!({
                "phase": phase,
                "loss": metrics.mean("loss"),
                "reconstruction": metrics.mean("reconstruction"),
                "regulariser": metrics.mean("regulariser"),
                "clustering": metrics.mean("clustering"),
            }),
            eval_split: self.eval_set.name.clone(),
            scores: score(&self.eval_set, &clusters),
        })
    }
}

/// The scores of `clusters` against `d`'s labels, when it has them.
pub fn score(d: &Dataset, clusters: &[usize]) -> Option<Scores> {
    let labels = d.labels.as_ref()?;
    let pred: Vec<i64> = clusters.iter().map(|&c| c as i64).collect();
    Some(Scores::of(labels, &pred))
}

/// A trained run: its configuration, the model of its latest checkpoint and that checkpoint's state
/// (with the centroids).
pub fn load_trained(run: &RunDir) -> anyhow::Result<(AeTrainConfig, Autoencoder<Backend>, State)> {
    let config: AeTrainConfig = run.load_config("autoencoder")?;
    let dir = run.finished_checkpoint()?;
    let device = backend::device()?;
    let model = run::load_model(&dir, config.model.init(&device), &device)?;
    let state: State = run::load_state(&dir)?;
    anyhow::ensure!(
        state.centroids.len() == config.clusters * config.model.latent,
        "{}: {} centroid values, expected {} clusters × {} latent dimensions",
        dir.join("state.json").display(),
        state.centroids.len(),
        config.clusters,
        config.model.latent
    );
    Ok((config, model, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcn_centroids_move_toward_their_members_by_one_over_their_count() {
        let mut state =
            State { epochs_done: 0, centroids: vec![0.0, 0.0, 10.0, 10.0], counts: vec![1.0, 3.0] };
        update_centroids(&mut state, &[2.0, 0.0, 9.0, 10.0, 6.0, 10.0], 2);
        // Centroid 0 takes (2, 0) with step 1/2; centroid 1 takes (9, 10) with step 1/4, then (6, 10)
        // with step 1/5.
        assert_eq!(&state.centroids[..2], &[1.0, 0.0]);
        let after_first = 10.0 - 0.25 * (10.0 - 9.0);
        let after_second = after_first - 0.2 * (after_first - 6.0);
        assert!((state.centroids[2] - after_second).abs() < 1e-6, "{:?}", state.centroids);
        assert_eq!(state.centroids[3], 10.0);
        assert_eq!(state.counts, vec![2.0, 5.0]);
    }
}
