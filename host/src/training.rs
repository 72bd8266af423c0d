//! The one training loop, which every model family plugs into through [`TrainingTask`]: the family
//! says how to build its model and optimizer, what one step on a batch does, and what an epoch's end
//! scores; the loop does the rest, the same way for all of them. In order:
//!
//! 1. seed the backend with the run's seed, build the model, the optimizer and the family's state;
//! 2. resume from the run's latest checkpoint, if it has one (model, optimizer and `state.json`);
//! 3. for each epoch not done yet:
//!    - the family's start of an epoch (which may end training early);
//!    - seed the backend and a ChaCha8 generator with [`run::epoch_seed`], shuffle the training samples
//!      with it, cut them into batches (dropping a last one smaller than the family accepts);
//!    - one family step per batch, under a progress bar, summing its metrics weighted by batch size;
//!    - the family's end of the epoch (scores and its fields of the record);
//!    - the record (`epoch`, the family's fields, throughput, training time, scores) printed and
//!      appended to `metrics.jsonl`, then a checkpoint.
//!
//! Every draw of an epoch's randomness comes from its own seed, in the same order each time, so a
//! resumed run trains exactly as an uninterrupted one would have and a seed repeats a run bit for bit.

use std::ops::ControlFlow;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::tensor::backend::Backend as _;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{self, TrainBackend};
use crate::metrics::Scores;
use crate::run::{self, RunDir};

/// A model family's part of training: the loop ([`train`]) calls these, in the order its module doc says.
pub trait TrainingTask {
    /// The network trained (with gradients).
    type Model: AutodiffModule<TrainBackend>;
    type Optimizer: Optimizer<Self::Model, TrainBackend>;
    /// What else a run needs to resume, saved as the checkpoint's `state.json`.
    type State: ResumeState;
    /// The configuration saved with every checkpoint (the run's `config.json`).
    type Config: Serialize;

    /// The names of what every step measures, in the order [`TrainingTask::step`] returns them.
    const METRICS: &'static [&'static str];
    /// The record's name for training throughput, e.g. `images_per_s`.
    const RATE_FIELD: &'static str;
    /// Batches with fewer samples than this (the last one of an epoch) are left out.
    const SMALLEST_BATCH: usize = 1;

    fn config(&self) -> &Self::Config;
    fn device(&self) -> &backend::Device;
    /// The run's seed: of the initial weights, and through [`run::epoch_seed`] of every epoch.
    fn seed(&self) -> u64;
    fn epochs(&self) -> usize;
    fn batch_size(&self) -> usize;
    /// How many samples an epoch trains on (they are indexed `0..training_samples()`).
    fn training_samples(&self) -> usize;
    /// The line printed when training starts (after any "resuming …").
    fn describe(&self) -> String;

    /// A new, untrained model (the backend is seeded just before).
    fn init_model(&self) -> Self::Model;
    fn init_optimizer(&self) -> Self::Optimizer;
    /// The state of a run with no epoch done.
    fn initial_state(&self) -> Self::State;

    /// Before epoch `epoch` (from 0) draws anything: `Break` ends training here.
    fn start_epoch(
        &mut self,
        epoch: usize,
        model: &Self::Model,
        state: &mut Self::State,
    ) -> anyhow::Result<ControlFlow<()>>;
    /// One step on the training samples `rows`, drawing any randomness from `rng`: the model after it,
    /// and the values of [`Self::METRICS`], each a mean over the batch.
    fn step(
        &mut self,
        model: Self::Model,
        optimizer: &mut Self::Optimizer,
        state: &mut Self::State,
        rows: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> (Self::Model, Vec<f64>);
    /// The progress bar's message after a step, from the epoch's metrics so far.
    fn progress_message(&self, metrics: &EpochMetrics, samples_per_s: f64) -> String;
    /// After the epoch's last step: scores and the family's fields of the epoch's record.
    fn end_epoch(
        &mut self,
        model: &Self::Model,
        state: &mut Self::State,
        metrics: &EpochMetrics,
    ) -> anyhow::Result<EpochEnd>;
}

/// A family's state as the loop needs it: it counts the epochs done (so the run resumes after them).
pub trait ResumeState: Serialize + DeserializeOwned {
    fn epochs_done(&self) -> usize;
    fn set_epochs_done(&mut self, epochs: usize);
}

/// What a family adds to an epoch's record.
pub struct EpochEnd {
    /// A JSON object: the family's fields, placed right after `epoch`.
    pub fields: serde_json::Value,
    /// The name of the samples scored.
    pub eval_split: String,
    /// `None` when the scored samples have no labels.
    pub scores: Option<Scores>,
}

/// The metrics of an epoch's steps so far: their means weighted by batch size, and each batch's values.
pub struct EpochMetrics {
    names: &'static [&'static str],
    sums: Vec<f64>,
    samples: usize,
    batches: Vec<Vec<f64>>,
}

impl EpochMetrics {
    fn new(names: &'static [&'static str]) -> EpochMetrics {
        EpochMetrics { names, sums: vec![0.0; names.len()], samples: 0, batches: Vec::new() }
    }

    fn add(&mut self, batch_size: usize, values: Vec<f64>) {
        assert_eq!(values.len(), self.names.len(), "a step returns one value per metric: {:?}", self.names);
        for (sum, value) in self.sums.iter_mut().zip(&values) {
            *sum += value * batch_size as f64;
        }
        self.samples += batch_size;
        self.batches.push(values);
    }

    fn index(&self, name: &str) -> usize {
        self.names.iter().position(|&n| n == name).unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// The mean of `name` over the samples stepped on (0 before any step).
    pub fn mean(&self, name: &str) -> f64 {
        self.sums[self.index(name)] / self.samples.max(1) as f64
    }

    /// The value of `name` for each batch, in order.
    pub fn per_batch(&self, name: &str) -> Vec<f64> {
        let i = self.index(name);
        self.batches.iter().map(|values| values[i]).collect()
    }

    /// The samples stepped on so far.
    pub fn samples(&self) -> usize {
        self.samples
    }
}

/// Trains (or resumes) the run in `run` with `task`.
pub fn train<T: TrainingTask>(task: &mut T, run: &RunDir) -> anyhow::Result<()> {
    // A copy, so that the task can be borrowed mutably while the loop seeds and loads on it (CUDA's
    // device is not `Copy`, the CPU's is).
    #[allow(clippy::clone_on_copy)]
    let device = task.device().clone();
    // burn draws initial weights and dropout masks from the backend's own generator: seed it too.
    TrainBackend::seed(&device, task.seed());
    let mut model = task.init_model();
    let mut optimizer = task.init_optimizer();
    let mut state = task.initial_state();
    if let Some(dir) = run.latest_checkpoint()? {
        (model, optimizer, state) = run::load_training(&dir, model, optimizer, &device)?;
        eprintln!("resuming {} after epoch {}", run.path().display(), state.epochs_done());
    }
    eprintln!("{}", task.describe());

    let epochs = task.epochs();
    for epoch in state.epochs_done()..epochs {
        if task.start_epoch(epoch, &model, &mut state)?.is_break() {
            break;
        }
        let started = Instant::now();
        let seed = run::epoch_seed(task.seed(), epoch);
        TrainBackend::seed(&device, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..task.training_samples()).collect();
        order.shuffle(&mut rng);
        let batches: Vec<&[usize]> =
            order.chunks(task.batch_size()).filter(|rows| rows.len() >= T::SMALLEST_BATCH).collect();

        let progress = run::epoch_progress(epoch, epochs, batches.len());
        let mut metrics = EpochMetrics::new(T::METRICS);
        for (b, rows) in batches.iter().enumerate() {
            let values;
            (model, values) = task.step(model, &mut optimizer, &mut state, rows, &mut rng);
            metrics.add(rows.len(), values);
            progress.set_position(b as u64 + 1);
            let samples_per_s = metrics.samples() as f64 / started.elapsed().as_secs_f64();
            progress.set_message(task.progress_message(&metrics, samples_per_s));
        }
        progress.finish_and_clear();
        let train_seconds = started.elapsed().as_secs_f64();

        let end = task.end_epoch(&model, &mut state, &metrics)?;
        let record = epoch_record(epoch, end, T::RATE_FIELD, metrics.samples(), train_seconds);
        eprintln!("{record}");
        run.record_epoch(&record)?;
        state.set_epochs_done(epoch + 1);
        run.checkpoint(epoch + 1, |dir| run::save_training(dir, &model, &optimizer, task.config(), &state))?;
    }
    Ok(())
}

/// An epoch's line of `metrics.jsonl`: `epoch` (from 1), the family's fields, the training throughput and
/// time, then what was scored and how well.
fn epoch_record(
    epoch: usize,
    end: EpochEnd,
    rate_field: &str,
    samples: usize,
    train_seconds: f64,
) -> serde_json::Value {
    let mut record = serde_json::Map::new();
    record.insert("epoch".into(), (epoch + 1).into());
    match end.fields {
        serde_json::Value::Object(fields) => record.extend(fields),
        other => panic!("a family's epoch fields are a JSON object, not {other}"),
    }
    let scores = end.scores.as_ref();
    record.insert(rate_field.into(), serde_json::json!(samples as f64 / train_seconds));
    record.insert("train_seconds".into(), serde_json::json!(train_seconds));
    record.insert("eval_split".into(), end.eval_split.into());
    record.insert("acc".into(), serde_json::json!(scores.map(|s| s.acc)));
    record.insert("nmi".into(), serde_json::json!(scores.map(|s| s.nmi)));
    record.insert("ari".into(), serde_json::json!(scores.map(|s| s.ari)));
    serde_json::Value::Object(record)
}

#[cfg(test)]
mod tests {
    use burn::nn::{Initializer, Linear, LinearConfig};
    use burn::optim::adaptor::OptimizerAdaptor;
    use burn::optim::{Adam, AdamConfig, GradientsParams};
    use burn::tensor::{ElementConversion, Tensor, TensorData};
    use rand::Rng;
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    /// Fits y = 2x + 1 on 15 points with Adam, in batches of 4 (the last of 3), recording what it saw.
    struct LineFit {
        epochs: usize,
        device: backend::Device,
        /// The epochs this task was stepped in, in order.
        stepped: Vec<usize>,
        epoch: usize,
    }

    #[derive(Serialize, Deserialize)]
    struct LineState {
        epochs_done: usize,
        steps: usize,
    }

    impl ResumeState for LineState {
        fn epochs_done(&self) -> usize {
            self.epochs_done
        }
        fn set_epochs_done(&mut self, epochs: usize) {
            self.epochs_done = epochs;
        }
    }

    const POINTS: usize = 15;

    impl TrainingTask for LineFit {
        type Model = Linear<TrainBackend>;
        type Optimizer = OptimizerAdaptor<Adam, Linear<TrainBackend>, TrainBackend>;
        type State = LineState;
        type Config = ();

        const METRICS: &'static [&'static str] = &["loss", "batch_size"];
        const RATE_FIELD: &'static str = "points_per_s";
        const SMALLEST_BATCH: usize = 2;

        fn config(&self) -> &() {
            &()
        }
        fn device(&self) -> &backend::Device {
            &self.device
        }
        fn seed(&self) -> u64 {
            7
        }
        fn epochs(&self) -> usize {
            self.epochs
        }
        fn batch_size(&self) -> usize {
            4
        }
        fn training_samples(&self) -> usize {
            POINTS
        }
        fn describe(&self) -> String {
            "fitting a line".into()
        }
        fn init_model(&self) -> Linear<TrainBackend> {
            // Constant weights: other tests running at once may draw from the backend's generator.
            LinearConfig::new(1, 1).with_initializer(Initializer::Constant { value: 0.5 }).init(&self.device)
        }
        fn init_optimizer(&self) -> Self::Optimizer {
            AdamConfig::new().init()
        }
        fn initial_state(&self) -> LineState {
            LineState { epochs_done: 0, steps: 0 }
        }
        fn start_epoch(
            &mut self,
            epoch: usize,
            _: &Self::Model,
            _: &mut LineState,
        ) -> anyhow::Result<ControlFlow<()>> {
            self.epoch = epoch;
            Ok(ControlFlow::Continue(()))
        }
        fn step(
            &mut self,
            model: Self::Model,
            optimizer: &mut Self::Optimizer,
            state: &mut LineState,
            rows: &[usize],
            rng: &mut ChaCha8Rng,
        ) -> (Self::Model, Vec<f64>) {
            self.stepped.push(self.epoch);
            state.steps += 1;
            // Noise from the epoch's generator, so that its draws show in the weights.
            let x: Vec<f32> = rows.iter().map(|&r| r as f32 / POINTS as f32).collect();
            let y: Vec<f32> = x.iter().map(|x| 2.0 * x + 1.0 + rng.random_range(-0.1..0.1)).collect();
            let x = Tensor::<TrainBackend, 2>::from_data(TensorData::new(x, [rows.len(), 1]), &self.device);
            let y = Tensor::<TrainBackend, 2>::from_data(TensorData::new(y, [rows.len(), 1]), &self.device);
            let loss = (model.forward(x) - y).square().mean();
            let value: f64 = loss.clone().into_scalar().elem();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            (optimizer.step(0.05, model, grads), vec![value, rows.len() as f64])
        }
        fn progress_message(&self, metrics: &EpochMetrics, _: f64) -> String {
            format!("loss {:.4}", metrics.mean("loss"))
        }
        fn end_epoch(
            &mut self,
            model: &Self::Model,
            state: &mut LineState,
            metrics: &EpochMetrics,
        ) -> anyhow::Result<EpochEnd> {
            let weight: Vec<f32> = model.valid().weight.val().into_data().to_vec().unwrap();
            Ok(EpochEnd {
                fields: json!({
                    "loss": metrics.mean("loss"),
                    "batch_size": metrics.mean("batch_size"),
                    "batch_sizes": metrics.per_batch("batch_size"),
                    "steps": state.steps,
                    "weight": weight[0],
                }),
                eval_split: "none".into(),
                scores: None,
            })
        }
    }

    fn line_fit(epochs: usize) -> LineFit {
        LineFit { epochs, device: Default::default(), stepped: Vec::new(), epoch: 0 }
    }

    /// The run's records without their timings.
    fn untimed(run: &RunDir) -> Vec<serde_json::Value> {
        let mut records = run.epochs().unwrap();
        for record in &mut records {
            let fields = record.as_object_mut().unwrap();
            fields.remove("points_per_s").unwrap();
            fields.remove("train_seconds").unwrap();
        }
        records
    }

    #[test]
    fn a_resumed_run_continues_after_its_last_epoch_exactly_as_an_uninterrupted_one() {
        let dir = tempfile::tempdir().unwrap();
        let whole = RunDir::open(&dir.path().join("whole"), "{}").unwrap();
        train(&mut line_fit(4), &whole).unwrap();

        let split = RunDir::open(&dir.path().join("split"), "{}").unwrap();
        train(&mut line_fit(2), &split).unwrap();
        let mut resumed = line_fit(4);
        train(&mut resumed, &split).unwrap();
        assert_eq!(resumed.stepped, [2, 2, 2, 2, 3, 3, 3, 3], "only epochs 3 and 4 are trained again");
        assert!(split.latest_checkpoint().unwrap().unwrap().ends_with("checkpoint-0004"));
        // Same weights, so the model and Adam's moments were restored, and the same steps counted, so the
        // state was; the same noise went in, so each epoch drew from its own seed.
        assert_eq!(untimed(&split), untimed(&whole));

        let mut finished = line_fit(4);
        train(&mut finished, &split).unwrap();
        assert!(finished.stepped.is_empty(), "a finished run trains no more");
    }

    #[test]
    fn an_epoch_record_holds_the_family_fields_then_throughput_time_and_scores() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path(), "{}").unwrap();
        train(&mut line_fit(1), &run).unwrap();
        let record = &run.epochs().unwrap()[0];
        let keys: Vec<&str> = record.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "epoch",
                "loss",
                "batch_size",
                "batch_sizes",
                "steps",
                "weight",
                "points_per_s",
                "train_seconds",
                "eval_split",
                "acc",
                "nmi",
                "ari"
            ]
        );
        assert_eq!(record["epoch"], 1);
        assert_eq!(record["batch_sizes"], json!([4.0, 4.0, 4.0, 3.0]));
        // Means are over samples: (3 × 4 × 4 + 3 × 3) / 15, not over batches (3.75).
        assert!((record["batch_size"].as_f64().unwrap() - 57.0 / 15.0).abs() < 1e-12, "{record}");
        assert_eq!(record["acc"], serde_json::Value::Null, "nothing to score against");
        assert!(record["points_per_s"].as_f64().unwrap() > 0.0);
    }
}
