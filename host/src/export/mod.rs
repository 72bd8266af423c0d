//! Turning a trained model into what a board runs.
//!
//! - [`onnx`]: our networks as standard ONNX graphs, and running them with tract to check them.
//! - [`export_autoencoder`]: a trained autoencoder run → `model.onnx`, `manifest.json` and the bundle
//!   `NAME.stdac` that gets flashed (the container is `stdac_device::bundle`).
//!
//! An autoencoder exports its encoder: input `image` [N, 1, 28, 28] (pixels in [0, 1]) for image models,
//! `features` [N, dim] (z-scored) for tables; output `embedding`, the code (a VAE's posterior mean), which
//! the board assigns to the nearest of the run's centroids.

pub mod onnx;

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::Backend;
use serde_json::json;
use stdac_device::bundle::{Bundle, InputSpec, Manifest};
use tract_onnx::pb::ModelProto;

use crate::autoencoder::train::{assign, encode_all, load_trained, score};
use crate::autoencoder::Autoencoder;
use crate::backend;
use crate::metrics::Scores;
use crate::run::{write_atomic, RunDir};
use onnx::{GraphBuilder, Input, Layer};

/// The tract-onnx version the graphs are made for: the board's engine's.
pub use stdac_device::engine::TRACT_VERSION;

/// Share of the training samples whose distance to their centroid is below the novelty threshold.
const NOVELTY_QUANTILE: f64 = 0.99;

/// The graph's input for a model of `input_dim` features, images when `image_size` is given.
pub fn input_of(input_dim: usize, image_size: Option<(usize, usize)>) -> Input {
    match image_size {
        Some((h, w)) => Input { name: "image".into(), dims: vec![1, h, w] },
        None => Input { name: "features".into(), dims: vec![input_dim] },
    }
}

/// An autoencoder's encoder as an ONNX model.
pub fn autoencoder_encoder<B: Backend>(
    model: &Autoencoder<B>,
    input_dim: usize,
    image_size: Option<(usize, usize)>,
    latent: usize,
) -> ModelProto {
    let input = input_of(input_dim, image_size);
    let mut layers = model.encoder_layers();
    // A dense encoder reads the image's pixels as one row.
    if image_size.is_some() && matches!(layers.first(), Some(Layer::Dense { .. })) {
        layers.insert(0, Layer::Flatten);
    }
    let mut g = GraphBuilder::default();
    let code = g.layers(input.name.clone(), &layers);
    g.finish(&input, &[(&code, "embedding", vec![latent])], "stdac autoencoder encoder")
}

/// What an export wrote and measured.
pub struct Exported {
    pub written: Vec<PathBuf>,
    pub bundle: PathBuf,
    pub bundle_bytes: usize,
    pub bundle_sha256: String,
    /// What the check ran on, e.g. `mnist/test`.
    pub checked_on: String,
    /// Largest |tract − burn| over every code of the checked samples.
    pub max_abs_diff: f32,
    /// Share of the checked samples that tract's codes assign to the same centroid as burn's.
    pub agreement: f64,
    /// The scores of tract's assignments, when the samples are labelled.
    pub scores: Option<Scores>,
    pub novelty_threshold: f32,
}

/// Exports the newest checkpoint of an autoencoder `run` into the folder `out`: the encoder as
/// `model.onnx`, `manifest.json`, and `NAME.stdac` (NAME: the folder's name), each written whole or not at
/// all. Before writing, the graph is run with tract on the run's scored samples and compared with burn:
/// the largest difference of the codes, the share of samples assigned to the same centroid, and the
/// scores of tract's assignments go into the manifest's card.
pub fn export_autoencoder(run: &RunDir, out: &Path, data: Option<&Path>) -> anyhow::Result<Exported> {
    let (config, model, state) = load_trained(run)?;
    let (train, checked) = config.datasets(data)?;
    let image_size = train.image_size.with_context(|| {
        format!(
            "{} was trained on {}, a table: a board takes camera frames, so only image models are exported",
            run.path().display(),
            train.name
        )
    })?;
    let latent = config.model.latent;
    let graph = onnx::encode(&autoencoder_encoder(&model, config.model.input_dim, Some(image_size), latent));

    let device = backend::device()?;
    let ours = encode_all(&model, &checked, &device);
    let input = input_of(config.model.input_dim, Some(image_size));
    let theirs = onnx::run_with_tract(&graph, &input.dims, checked.len(), checked.features.clone())
        .context("tract cannot run the exported graph")?
        .remove(0);
    let max_abs_diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    let centroids = state.centroids(latent);
    let (ours_assigned, theirs_assigned) = (assign(&ours, &centroids), assign(&theirs, &centroids));
    let same = ours_assigned.iter().zip(&theirs_assigned).filter(|(a, b)| a == b).count();
    let agreement = same as f64 / checked.len() as f64;
    let scores = score(&checked, &theirs_assigned);

    // Novelty: farther from its centroid than all but 1 % of the training samples.
    let train_codes = encode_all(&model, &train, &device);
    let mut distances: Vec<f32> = train_codes.chunks(latent).map(|z| centroids.nearest(z).distance).collect();
    distances.sort_by(f32::total_cmp);
    let at = ((distances.len() - 1) as f64 * NOVELTY_QUANTILE).round() as usize;
    let novelty_threshold = distances[at];

    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: the output folder needs a name (it names the bundle)", out.display()))?
        .to_string();
    let training = serde_json::to_value(&config)?;
    let card = json!({
        "training": training,
        "epochs": state.epochs_done,
        "run": run.path().display().to_string(),
        "check": {
            "samples": checked.name,
            "max_abs_diff": max_abs_diff,
            "cluster_agreement": agreement,
            "scores": scores.as_ref().map(Scores::to_json),
        },
        "novelty_quantile": NOVELTY_QUANTILE,
    });
    let manifest = Manifest {
        name: name.clone(),
        family: crate::autoencoder::train::FAMILY.into(),
        input: InputSpec {
            name: input.name.clone(),
            shape: [-1, 1, image_size.0 as i64, image_size.1 as i64].to_vec(),
            dtype: "f32".into(),
            range: [0.0, 1.0],
        },
        outputs: vec!["embedding".into()],
        embedding_dim: latent,
        clusters: config.clusters,
        centroids: state.centroids.clone(),
        metric: "euclidean".into(),
        class_names: train.class_names.clone(),
        novelty_threshold: Some(novelty_threshold),
        quantization: "none".into(),
        tract_version: TRACT_VERSION.into(),
        graph_sha256: String::new(),
        card,
    };
    let bundle = Bundle::new(manifest, graph);

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let onnx_path = out.join("model.onnx");
    write_atomic(&onnx_path, &bundle.graph)?;
    let manifest_path = out.join("manifest.json");
    write_atomic(&manifest_path, serde_json::to_string_pretty(&bundle.manifest)?.as_bytes())?;
    let bundle_path = out.join(format!("{name}.stdac"));
    bundle.write_atomic(&bundle_path)?;
    let bytes = bundle.to_bytes();
    Ok(Exported {
        written: vec![onnx_path, manifest_path, bundle_path.clone()],
        bundle: bundle_path,
        bundle_bytes: bytes.len(),
        bundle_sha256: stdac_device::bundle::sha256_hex(&bytes),
        checked_on: checked.name,
        max_abs_diff,
        agreement,
        scores,
        novelty_threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoencoder::{Architecture, AutoencoderConfig};
    use crate::backend::Backend as Cpu;
    use burn::tensor::{Distribution, Tensor};

    /// The largest difference between what burn and tract make of the same inputs.
    fn gap(config: AutoencoderConfig, image_size: Option<(usize, usize)>) -> f32 {
        let device = Default::default();
        <Cpu as Backend>::seed(&device, 3);
        let model = config.init::<Cpu>(&device);
        let n = 5;
        let x = Tensor::<Cpu, 2>::random([n, config.input_dim], Distribution::Default, &device);
        let expected: Vec<f32> = model.encode(x.clone()).0.into_data().to_vec().unwrap();
        let graph = onnx::encode(&autoencoder_encoder(&model, config.input_dim, image_size, config.latent));
        let dims = input_of(config.input_dim, image_size).dims;
        let got = onnx::run_with_tract(&graph, &dims, n, x.into_data().to_vec().unwrap()).unwrap();
        assert_eq!(got[0].len(), expected.len());
        got[0].iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn exported_encoders_compute_what_burn_computes() {
        let dense = AutoencoderConfig::new(784, Architecture::Dense, vec![64, 32], 10);
        assert!(gap(dense, Some((28, 28))) < 1e-4);
        let conv = AutoencoderConfig::new(784, Architecture::Conv, vec![16], 4);
        assert!(gap(conv, Some((28, 28))) < 1e-4);
        let table = AutoencoderConfig::new(13, Architecture::Dense, vec![], 3).with_variational(true);
        assert!(gap(table, None) < 1e-5);
    }
}
