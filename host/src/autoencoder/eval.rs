//! Evaluating a trained autoencoder run: the scores of its clusters on the samples its protocol scores,
//! and its figures, drawn into the run folder.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend as _;
use burn::tensor::Tensor;

use super::model::Autoencoder;
use super::train::{assign, encode_all, load_trained, rows_tensor, score, AeTrainConfig, Kind};
use crate::backend::{self, Backend};
use crate::data::Dataset;
use crate::figures::{self, ImageRow};
use crate::metrics::{Contingency, Scores};
use crate::pca::Pca;
use crate::run::{write_atomic, RunDir};

/// Images per row of the reconstruction and denoising figures; images per cluster in `clusters.png`.
const SAMPLES: usize = 12;

pub struct Evaluation {
    /// What was scored, e.g. `mnist/test`.
    pub dataset: String,
    /// `None` when the samples have no labels.
    pub scores: Option<Scores>,
    pub epochs: usize,
    /// Mean squared reconstruction error per feature on the scored samples.
    pub reconstruction_mse: f64,
    pub written: Vec<PathBuf>,
}

/// Scores the newest checkpoint of `run` on the samples its protocol scores (their first `limit` when
/// given), assigning each to its nearest centroid as a board does, and draws `latent.png` (the codes in
/// 2-D, coloured by cluster and by label), `curves.png`, `loss.png` and, with labels, `confusion.png`;
/// for images also `clusters.png`, `reconstructions.png` and, for a denoising model, `denoising.png`.
/// Writes the cluster of every sample to `predictions.txt`.
pub fn evaluate(run: &RunDir, data: Option<&Path>, limit: Option<usize>) -> anyhow::Result<Evaluation> {
    let (mut config, model, state) = load_trained(run)?;
    if limit.is_some() {
        config.limit = limit;
    }
    let (_, samples) = config.datasets(data)?;
    let device = backend::device()?;
    let codes = encode_all(&model, &samples, &device);
    let clusters = assign(&codes, &state.centroids(config.model.latent));
    let scores = score(&samples, &clusters);
    let records = run.epochs()?;

    let dir = run.path();
    let mut written = Vec::new();
    let mut out = |name: &str| {
        let path = dir.join(name);
        written.push(path.clone());
        path
    };
    let title = format!("{} on {}, epoch {}", config.kind.name(), samples.name, state.epochs_done);
    if let Some(labels) = &samples.labels {
        let pred: Vec<i64> = clusters.iter().map(|&c| c as i64).collect();
        let contingency = Contingency::new(labels, &pred);
        figures::confusion_matrix(&contingency, &samples.class_names, &title, &out("confusion.png"))?;
    }
    let plane = latent_plane(&codes, config.model.latent);
    let scatter_title =
        format!("{title}: codes{}", if config.model.latent > 2 { " (first 2 PCs)" } else { "" });
    figures::latent_scatter(
        &plane,
        &clusters,
        samples.labels.as_deref(),
        &samples.class_names,
        &scatter_title,
        &out("latent.png"),
    )?;
    let name = dir.display().to_string();
    if samples.labels.is_some() {
        let scores = [
            ("ACC", series(&records, "acc")),
            ("NMI", series(&records, "nmi")),
            ("ARI", series(&records, "ari")),
        ];
        figures::line_chart(&format!("{name}: scores per epoch"), "epoch", &scores, &out("curves.png"))?;
    }
    let losses = [
        ("loss", series(&records, "loss")),
        ("reconstruction", series(&records, "reconstruction")),
        ("sparsity / KL", series(&records, "regulariser")),
        ("k-means term", series(&records, "clustering")),
    ];
    figures::line_chart(&format!("{name}: loss per epoch"), "epoch", &losses, &out("loss.png"))?;
    let reconstruction_mse = reconstruction_mse(&model, &samples, &device);
    if let Some(size) = samples.image_size {
        figures::cluster_samples(
            &samples.features,
            size,
            &clusters,
            config.clusters,
            SAMPLES,
            &out("clusters.png"),
        )?;
        draw_reconstructions(&model, &samples, size, &title, &device, &out("reconstructions.png"))?;
        if config.kind == Kind::Dae {
            draw_denoising(&model, &config, &samples, size, &title, &device, &out("denoising.png"))?;
        }
    }
    let text: String = clusters.iter().map(|c| format!("{c}\n")).collect();
    write_atomic(&out("predictions.txt"), text.as_bytes())?;
    Ok(Evaluation { dataset: samples.name, scores, epochs: state.epochs_done, reconstruction_mse, written })
}

/// The codes as points of a plane: themselves when 2-D, their two leading principal components when
/// wider, and (z, 0) when 1-D.
fn latent_plane(codes: &[f32], latent: usize) -> Vec<f32> {
    match latent {
        1 => codes.iter().flat_map(|&z| [z, 0.0]).collect(),
        2 => codes.to_vec(),
        _ => Pca::fit(codes, latent, 2).transform(codes),
    }
}

fn reconstruction_mse(model: &Autoencoder<Backend>, d: &Dataset, device: &backend::Device) -> f64 {
    let rows: Vec<usize> = (0..d.len()).collect();
    let mut sum = 0.0f64;
    for chunk in rows.chunks(1024) {
        let x = rows_tensor::<Backend>(d, chunk, device);
        let r = model.forward(x.clone(), false).reconstruction;
        let squared: f32 = (r - x).powf_scalar(2.0).sum().into_scalar();
        sum += squared as f64;
    }
    sum / d.features.len() as f64
}

/// The first [`SAMPLES`] images above their reconstructions.
fn draw_reconstructions(
    model: &Autoencoder<Backend>,
    d: &Dataset,
    size: (usize, usize),
    title: &str,
    device: &backend::Device,
    path: &Path,
) -> anyhow::Result<()> {
    let rows: Vec<usize> = (0..d.len().min(SAMPLES)).collect();
    let x = rows_tensor::<Backend>(d, &rows, device);
    let r = model.forward(x.clone(), false).reconstruction;
    let figure = [image_row("input", x), image_row("reconstruction", r)];
    figures::image_rows(&figure, size, &format!("{title}: reconstructions"), path)
}

/// The first [`SAMPLES`] images, corrupted with the run's own noise (drawn with a fixed seed), and what
/// the model makes of them.
fn draw_denoising(
    model: &Autoencoder<Backend>,
    config: &AeTrainConfig,
    d: &Dataset,
    size: (usize, usize),
    title: &str,
    device: &backend::Device,
    path: &Path,
) -> anyhow::Result<()> {
    let Some(noise) = config.noise else { return Ok(()) };
    let rows: Vec<usize> = (0..d.len().min(SAMPLES)).collect();
    Backend::seed(device, config.seed);
    let clean = rows_tensor::<Backend>(d, &rows, device);
    let noisy = noise.apply(clean.clone()).clamp(0.0, 1.0);
    let denoised = model.forward(noisy.clone(), false).reconstruction;
    let figure = [image_row("clean", clean), image_row("noisy", noisy), image_row("denoised", denoised)];
    figures::image_rows(&figure, size, &format!("{title}: denoising"), path)
}

/// A labelled row of a batch of images, for [`figures::image_rows`].
fn image_row(label: &str, images: Tensor<Backend, 2>) -> ImageRow {
    ImageRow {
        label: label.to_string(),
        images: images.into_data().to_vec().expect("f32 pixels"),
        captions: Vec::new(),
    }
}

/// `key` of every epoch record that has it, against the epoch.
fn series(records: &[serde_json::Value], key: &str) -> Vec<(f64, f64)> {
    records.iter().filter_map(|r| Some((r["epoch"].as_f64()?, r[key].as_f64()?))).collect()
}
