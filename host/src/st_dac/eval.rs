//! Evaluating a trained run: the scores on its evaluation images and the dissertation's figures (its
//! figures 13–17), drawn into the run folder.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::train::{load_trained, predict};
use crate::backend;
use crate::data::Dataset;
use crate::figures;
use crate::metrics::{Contingency, Scores};
use crate::run::{write_atomic, RunDir};

/// Images per cluster in `clusters.png`, and image pairs at the top of `stn.png`.
const SAMPLES: usize = 12;

pub struct Evaluation {
    /// What was scored, e.g. `mnist/test`.
    pub dataset: String,
    pub scores: Scores,
    /// The epochs the checkpoint had finished.
    pub epochs: usize,
    /// The largest distance of an output's length from 1 (the constraint layer makes them unit vectors).
    pub max_norm_error: f32,
    /// The files written, figures and predictions.
    pub written: Vec<PathBuf>,
}

/// Scores the newest checkpoint of `run` on the images its protocol scores (the test split when held out,
/// train + test when transductive; the first `limit` of each when given, else the run's own limit), then
/// draws `confusion.png`, `curves.png`, `loss.png`, `clusters.png` and, when the model has an input
/// transformer, `stn.png`, and writes the cluster of every image to `predictions.txt`.
pub fn evaluate(run: &RunDir, data: Option<&Path>, limit: Option<usize>) -> anyhow::Result<Evaluation> {
    let (mut config, model) = load_trained(run)?;
    let records = run.epochs()?;
    if limit.is_some() {
        config.limit = limit;
    }
    let images: Dataset = config.scored_images(data)?;
    let labels =
        images.labels.as_ref().with_context(|| format!("{} has no labels to score against", images.name))?;
    let device = backend::device()?;
    let p = predict(&model, &images, true, &device);
    let k = config.model.clusters;
    let max_norm_error = p
        .embeddings
        .chunks(k)
        .map(|row| (row.iter().map(|v| v * v).sum::<f32>().sqrt() - 1.0).abs())
        .fold(0f32, f32::max);

    let pred: Vec<i64> = p.clusters.iter().map(|&c| c as i64).collect();
    let contingency = Contingency::new(labels, &pred);
    let scores = Scores::from_contingency(&contingency);
    let dir = run.path();
    let mut written = Vec::new();
    let mut out = |name: &str| {
        let path = dir.join(name);
        written.push(path.clone());
        path
    };

    let epochs = records.len();
    let title = format!("ST-DAC ({} STN) on {}, epoch {epochs}", config.model.stn.len(), images.name);
    figures::confusion_matrix(&contingency, &images.class_names, &title, &out("confusion.png"))?;
    let name = run.path().display().to_string();
    draw_curves(&name, &records, &out("curves.png"), &out("loss.png"))?;
    figures::cluster_samples(&images.features, (28, 28), &p.clusters, k, SAMPLES, &out("clusters.png"))?;
    if let Some(corrected) = &p.corrected {
        let path = out("stn.png");
        figures::stn_view(&images.features, corrected, (28, 28), &p.clusters, k, SAMPLES, &path)?;
    }
    let text: String = p.clusters.iter().map(|c| format!("{c}\n")).collect();
    write_atomic(&out("predictions.txt"), text.as_bytes())?;
    Ok(Evaluation { dataset: images.name, scores, epochs, max_norm_error, written })
}

/// Scores and the fraction of pairs selected per epoch in one chart, the loss in another (its scale
/// differs).
fn draw_curves(
    name: &str,
    records: &[serde_json::Value],
    scores_png: &Path,
    loss_png: &Path,
) -> anyhow::Result<()> {
    let series = |key: &str| -> Vec<(f64, f64)> {
        records.iter().filter_map(|r| Some((r["epoch"].as_f64()?, r[key].as_f64()?))).collect()
    };
    let scores = [
        ("ACC", series("acc")),
        ("NMI", series("nmi")),
        ("ARI", series("ari")),
        ("pairs selected", series("selected")),
    ];
    figures::line_chart(&format!("{name}: scores per epoch"), "epoch", &scores, scores_png)?;
    figures::line_chart(&format!("{name}: loss per epoch"), "epoch", &[("loss", series("loss"))], loss_png)
}
