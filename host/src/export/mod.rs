//! Turning a trained model into what a board runs.
//!
//! - [`onnx`]: our networks as standard ONNX graphs, and running them with tract to check them.
//! - [`quantize`]: the int8 form of a graph (QLinearConv / QLinearMatMul) and its calibration.
//! - [`export`]: a trained run → `model.onnx`, `manifest.json` and the bundle `NAME.stdac` that gets
//!   flashed (the container is `stdac_device::bundle`), checked with tract against the trained model.
//!
//! Every graph takes `image` [N, 1, 28, 28], pixels in [0, 1], and outputs `embedding`: ST-DAC's unit
//! k-vector (its centroids are the k unit vectors, so the nearest one is the largest entry), an
//! autoencoder's code (a VAE's posterior mean), assigned to the nearest of the run's centroids. A model
//! with an input spatial transformer also outputs its `theta` [N, 2, 3].

pub mod onnx;
pub mod quantize;

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde_json::json;
use stdac_device::bundle::{Bundle, InputSpec, Manifest};
use stdac_device::centroids::{Centroids, Metric};
use tract_onnx::pb::ModelProto;

use crate::autoencoder::Autoencoder;
use crate::data::Dataset;
use crate::metrics::Scores;
use crate::run::{write_atomic, RunDir};
use crate::{autoencoder, backend, st_dac};
use onnx::{GraphBuilder, Input, Layer, TractRunner};
use quantize::Calibration;

/// The tract-onnx version the graphs are made for: the board's engine's.
pub use stdac_device::engine::TRACT_VERSION;

/// Share of the training samples whose distance to their centroid is below the novelty threshold.
const NOVELTY_QUANTILE: f64 = 0.99;
/// Training samples the novelty threshold is measured on.
const NOVELTY_SAMPLES: usize = 5_000;
/// The int8 graph must assign at least this share of the checked samples as the trained model does…
pub const MIN_INT8_AGREEMENT: f64 = 0.995;
/// …and lose at most this much ACC.
pub const MAX_INT8_ACC_DROP: f64 = 0.005;

/// The weights of a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quantization {
    /// float32 throughout.
    None,
    /// int8 weights (per channel) and activations (calibrated), in QLinearConv / QLinearMatMul.
    Int8,
}

impl Quantization {
    pub fn name(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::Int8 => "int8",
        }
    }
}

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub quantization: Quantization,
    /// Training images run to calibrate the int8 activations.
    pub calibration_images: usize,
    /// Write the bundle even when a check fails (the manifest records the figures either way).
    pub force: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { quantization: Quantization::None, calibration_images: 1000, force: false }
    }
}

/// A convolution as an export layer.
pub fn export_conv<B: Backend>(conv: &Conv2d<B>) -> Layer {
    let [out, input, kh, kw] = conv.weight.dims();
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Same => [(kh - 1) / 2, (kw - 1) / 2],
        PaddingConfig2d::Explicit(top, left, bottom, right) => {
            assert!(top == bottom && left == right, "asymmetric padding is not exported");
            [top, left]
        }
    };
    Layer::Conv {
        weight: values(conv.weight.val().flatten(0, 3)),
        bias: conv.bias.as_ref().map_or(vec![0.0; out], |b| values(b.val())),
        channels: [input, out],
        kernel: [kh, kw],
        stride: conv.stride,
        padding,
    }
}

/// A dense layer as an export layer.
pub fn export_dense<B: Backend>(linear: &Linear<B>) -> Layer {
    let [inputs, outputs] = linear.weight.dims();
    Layer::Dense {
        weight: values(linear.weight.val().flatten(0, 1)),
        bias: linear.bias.as_ref().map_or(vec![0.0; outputs], |b| values(b.val())),
        inputs,
        outputs,
    }
}

fn values<B: Backend>(t: Tensor<B, 1>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 weights")
}

/// The graph's input for a model of `input_dim` features, images when `image_size` is given.
pub fn input_of(input_dim: usize, image_size: Option<(usize, usize)>) -> Input {
    match image_size {
        Some((h, w)) => Input { name: "image".into(), dims: vec![1, h, w] },
        None => Input { name: "features".into(), dims: vec![input_dim] },
    }
}

/// An autoencoder's encoder as export layers (a dense encoder reads the image's pixels as one row).
pub fn autoencoder_layers<B: Backend>(model: &Autoencoder<B>, image: bool) -> Vec<Layer> {
    let mut layers = model.encoder_layers();
    if image && matches!(layers.first(), Some(Layer::Dense { .. })) {
        layers.insert(0, Layer::Flatten);
    }
    layers
}

/// The graph of `layers`: output `embedding` ([N, `embedding_dim`]), and `theta` when the first layer
/// is a spatial transformer; int8 when a calibration is given.
pub fn graph(
    layers: &[Layer],
    input: &Input,
    embedding_dim: usize,
    int8: Option<&Calibration>,
) -> ModelProto {
    let mut g = GraphBuilder::default();
    let wired = match int8 {
        None => g.network(input.name.clone(), layers),
        Some(calibration) => quantize::int8_network(&mut g, input.name.clone(), layers, calibration),
    };
    let mut outputs = vec![(wired.output.as_str(), "embedding", Some(vec![embedding_dim]))];
    if matches!(layers.first(), Some(Layer::SpatialTransformer { .. })) {
        outputs.push((wired.thetas[0].as_str(), "theta", Some(vec![2, 3])));
    }
    let doc = format!("stdac: {} layers, {}", layers.len(), if int8.is_some() { "int8" } else { "float" });
    g.finish(input, &outputs, &doc)
}

/// A trained model ready to export, whatever its family.
struct Subject {
    family: String,
    layers: Vec<Layer>,
    image_size: (usize, usize),
    embedding_dim: usize,
    centroids: Vec<f32>,
    train: Dataset,
    /// The samples the graphs are checked on (the run's scored split).
    checked: Dataset,
    /// The trained model's embeddings of `checked`, computed by burn.
    reference: Vec<f32>,
    /// The run's settings, and the epochs it trained.
    training: serde_json::Value,
    epochs: usize,
}

/// How a graph run by tract compares with the trained model on the checked samples.
#[derive(Debug, Clone)]
pub struct Check {
    /// Largest |tract − burn| over every embedding value.
    pub max_abs_diff: f32,
    /// Share of the samples assigned to the same centroid.
    pub agreement: f64,
    /// The scores of the graph's assignments, when the samples are labelled.
    pub scores: Option<Scores>,
}

impl Check {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "max_abs_diff": self.max_abs_diff,
            "cluster_agreement": self.agreement,
            "scores": self.scores.as_ref().map(Scores::to_json),
        })
    }
}

/// What an export wrote and measured.
pub struct Exported {
    pub written: Vec<PathBuf>,
    pub bundle: PathBuf,
    pub bundle_bytes: usize,
    pub bundle_sha256: String,
    pub quantization: Quantization,
    /// What the checks ran on, e.g. `mnist/test`.
    pub checked_on: String,
    /// The trained model's own scores there.
    pub reference: Option<Scores>,
    /// The float graph.
    pub float: Check,
    /// The int8 graph, when asked for.
    pub int8: Option<Check>,
    pub novelty_threshold: f32,
}

/// Exports the newest checkpoint of `run` (ST-DAC or an image autoencoder) into the folder `out`:
/// `model.onnx`, `manifest.json`, and `NAME.stdac` (NAME: the folder's name), each written whole or not
/// at all. Before writing, the float graph (and the int8 one, when asked for) runs with tract on the
/// run's scored samples and is compared with burn; the figures go into the manifest's card, and an
/// int8 graph that assigns under 99.5 % of them alike or loses over 0.5 points of ACC is refused unless
/// `force`.
pub fn export(
    run: &RunDir,
    out: &Path,
    data: Option<&Path>,
    options: &ExportOptions,
) -> anyhow::Result<Exported> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: the output folder needs a name (it names the bundle)", out.display()))?
        .to_string();
    // The checks run thousands of images through tract: on every core.
    stdac_device::engine::use_threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
    eprintln!("running the trained model {} on its scored images", run.path().display());
    let subject = if run.family()? == autoencoder::train::FAMILY {
        autoencoder_subject(run, data)?
    } else {
        st_dac_subject(run, data)?
    };
    let Subject { image_size: (h, w), embedding_dim: dim, .. } = subject;
    let input = input_of(h * w, Some((h, w)));
    let centroids = Centroids::new(subject.centroids.clone(), dim, Metric::Euclidean);
    let assign = |embeddings: &[f32]| -> Vec<usize> {
        embeddings.chunks(dim).map(|e| centroids.nearest(e).index).collect()
    };
    let reference_clusters = assign(&subject.reference);
    let reference = autoencoder::train::score(&subject.checked, &reference_clusters);
    let check = |graph: &[u8]| -> anyhow::Result<(Check, Vec<f32>)> {
        let n = subject.checked.len();
        let embeddings = TractRunner::new(graph, &input.dims)
            .and_then(|mut runner| runner.run(&subject.checked.features, n))
            .context("tract cannot run the exported graph")?
            .remove(0);
        let max_abs_diff =
            embeddings.iter().zip(&subject.reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        let clusters = assign(&embeddings);
        let same = clusters.iter().zip(&reference_clusters).filter(|(a, b)| a == b).count();
        let scores = autoencoder::train::score(&subject.checked, &clusters);
        Ok((Check { max_abs_diff, agreement: same as f64 / n as f64, scores }, embeddings))
    };

    let started = std::time::Instant::now();
    let progress = |what: &str| eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
    progress(&format!("checking the float graph with tract on {}", subject.checked.name));
    let float_graph = onnx::encode(&graph(&subject.layers, &input, dim, None));
    let (float, _) = check(&float_graph)?;
    let (shipped, int8, calibration_images) = match options.quantization {
        Quantization::None => (float_graph, None, None),
        Quantization::Int8 => {
            let n = options.calibration_images.min(subject.train.len());
            anyhow::ensure!(n > 0, "--calib must be at least 1");
            let sample = &subject.train.features[..n * h * w];
            progress(&format!("calibrating int8 activations on {n} training images"));
            let calibration = quantize::calibrate(&subject.layers, &input, sample, n)?;
            progress(&format!("checking the int8 graph with tract on {}", subject.checked.name));
            let int8_graph = onnx::encode(&graph(&subject.layers, &input, dim, Some(&calibration)));
            let (int8, _) = check(&int8_graph)?;
            let drop = acc_drop(&reference, &int8).unwrap_or(0.0);
            if (int8.agreement < MIN_INT8_AGREEMENT || drop > MAX_INT8_ACC_DROP) && !options.force {
                anyhow::bail!(
                    "the int8 graph assigns {:.2} % of {} as the trained model does (at least {:.1} % wanted) \
                     and loses {:.2} points of ACC (at most {:.1} wanted): try more --calib images, or --force \
                     to write it anyway",
                    100.0 * int8.agreement,
                    subject.checked.name,
                    100.0 * MIN_INT8_AGREEMENT,
                    100.0 * drop,
                    100.0 * MAX_INT8_ACC_DROP
                );
            }
            (int8_graph, Some(int8), Some(n))
        }
    };

    // Novelty: farther from its centroid than all but 1 % of the training samples, as the shipped
    // graph embeds them.
    let n = subject.train.len().min(NOVELTY_SAMPLES);
    progress(&format!("measuring the novelty threshold on {n} training images"));
    let train_embeddings =
        TractRunner::new(&shipped, &input.dims)?.run(&subject.train.features[..n * h * w], n)?.remove(0);
    let mut distances: Vec<f32> =
        train_embeddings.chunks(dim).map(|e| centroids.nearest(e).distance).collect();
    distances.sort_by(f32::total_cmp);
    let novelty_threshold = distances[((n - 1) as f64 * NOVELTY_QUANTILE).round() as usize];

    let mut outputs = vec!["embedding".to_string()];
    if matches!(subject.layers.first(), Some(Layer::SpatialTransformer { .. })) {
        outputs.push("theta".into());
    }
    let card = json!({
        "training": subject.training,
        "epochs": subject.epochs,
        "run": run.path().display().to_string(),
        "check": {
            "samples": subject.checked.name,
            "trained_model": reference.as_ref().map(Scores::to_json),
            "float": float.to_json(),
            "int8": int8.as_ref().map(Check::to_json),
            "int8_acc_drop": int8.as_ref().and_then(|int8| acc_drop(&reference, int8)),
        },
        "calibration_images": calibration_images,
        "novelty_quantile": NOVELTY_QUANTILE,
        "novelty_samples": n,
    });
    let manifest = Manifest {
        name: name.clone(),
        family: subject.family.clone(),
        input: InputSpec {
            name: input.name.clone(),
            shape: vec![-1, 1, h as i64, w as i64],
            dtype: "f32".into(),
            range: [0.0, 1.0],
        },
        outputs,
        embedding_dim: dim,
        clusters: subject.centroids.len() / dim,
        centroids: subject.centroids.clone(),
        metric: "euclidean".into(),
        class_names: subject.train.class_names.clone(),
        novelty_threshold: Some(novelty_threshold),
        quantization: options.quantization.name().into(),
        tract_version: TRACT_VERSION.into(),
        graph_sha256: String::new(),
        card,
    };
    let bundle = Bundle::new(manifest, shipped);

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
        quantization: options.quantization,
        checked_on: subject.checked.name,
        reference,
        float,
        int8,
        novelty_threshold,
    })
}

/// How much ACC a graph loses against the trained model, when the samples are labelled.
fn acc_drop(reference: &Option<Scores>, check: &Check) -> Option<f64> {
    Some(reference.as_ref()?.acc - check.scores.as_ref()?.acc)
}

fn autoencoder_subject(run: &RunDir, data: Option<&Path>) -> anyhow::Result<Subject> {
    let (config, model, state) = autoencoder::train::load_trained(run)?;
    let (train, checked) = config.datasets(data)?;
    let image_size = train.image_size.with_context(|| {
        format!(
            "{} was trained on {}, a table: a board takes camera frames, so only image models are exported",
            run.path().display(),
            train.name
        )
    })?;
    let device = backend::device()?;
    Ok(Subject {
        family: autoencoder::train::FAMILY.into(),
        layers: autoencoder_layers(&model, true),
        image_size,
        embedding_dim: config.model.latent,
        centroids: state.centroids.clone(),
        reference: autoencoder::train::encode_all(&model, &checked, &device),
        train,
        checked,
        training: serde_json::to_value(&config)?,
        epochs: state.epochs_done,
    })
}

fn st_dac_subject(run: &RunDir, data: Option<&Path>) -> anyhow::Result<Subject> {
    let (config, model) = st_dac::train::load_trained(run)?;
    let state: serde_json::Value = crate::run::load_state(&run.finished_checkpoint()?)?;
    let epochs = state["epochs_done"].as_u64().unwrap_or(0) as usize;
    let train = config.training_images(data)?;
    let checked = config.scored_images(data)?;
    let device = backend::device()?;
    let k = config.model.clusters;
    // DAC's clusters are the largest entry of the unit output: the nearest of the k unit vectors.
    let centroids = (0..k * k).map(|i| if i / k == i % k { 1.0 } else { 0.0 }).collect();
    Ok(Subject {
        family: st_dac::train::FAMILY.into(),
        layers: model.export_layers(),
        image_size: (28, 28),
        embedding_dim: k,
        centroids,
        reference: st_dac::train::predict(&model, &checked, false, &device).embeddings,
        train,
        checked,
        training: serde_json::to_value(&config)?,
        epochs,
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
        let input = input_of(config.input_dim, image_size);
        let layers = autoencoder_layers(&model, image_size.is_some());
        let graph = onnx::encode(&graph(&layers, &input, config.latent, None));
        let dims = input.dims;
        let got = onnx::run_with_tract(&graph, &dims, n, x.into_data().to_vec().unwrap()).unwrap();
        assert_eq!(got[0].len(), expected.len());
        got[0].iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn tract_on_two_threads_computes_what_it_computes_on_one() {
        let (model, images) = st_dac(st_dac::Arch::Paper, vec![st_dac::StnPosition::Input]);
        let input = input_of(784, Some((28, 28)));
        let graph = onnx::encode(&graph(&model.export_layers(), &input, 10, None));
        let one = onnx::run_with_tract(&graph, &input.dims, 64, images.clone()).unwrap();
        stdac_device::engine::use_threads(2);
        let two = onnx::run_with_tract(&graph, &input.dims, 64, images);
        stdac_device::engine::use_threads(1);
        assert_eq!(one, two.unwrap());
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

    /// Moves every weight by a little noise, so that transformers leave the identity and BatchNorm's
    /// γ and β leave 1 and 0.
    struct Jitter;

    impl<B: Backend> burn::module::ModuleMapper<B> for Jitter {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<B, D>>,
        ) -> burn::module::Param<Tensor<B, D>> {
            param.map(|t| t.clone() + t.random_like(Distribution::Normal(0.0, 0.05)))
        }
    }

    /// An ST-DAC network with `stn` whose BatchNorm statistics come from a few batches of real images.
    fn st_dac(arch: st_dac::Arch, stn: Vec<st_dac::StnPosition>) -> (st_dac::StDac<Cpu>, Vec<f32>) {
        use crate::backend::TrainBackend;
        use burn::module::{AutodiffModule, Module};
        let device = Default::default();
        <TrainBackend as Backend>::seed(&device, 5);
        let model = st_dac::StDacConfig::new()
            .with_arch(arch)
            .with_stn(stn)
            .with_dense_width(32)
            .init::<TrainBackend>(&device);
        let model = model.map(&mut Jitter);
        let images =
            crate::data::load(&crate::data::Source::Mnist, Some(crate::data::Split::Test), Some(64), None)
                .unwrap();
        let batch = Tensor::<TrainBackend, 4>::from_data(
            burn::tensor::TensorData::new(images.features.clone(), [64, 1, 28, 28]),
            &device,
        );
        for _ in 0..3 {
            model.forward(batch.clone()); // training mode: updates the running statistics
        }
        (model.valid(), images.features)
    }

    #[test]
    fn st_dac_graphs_compute_what_burn_computes_with_every_transformer() {
        use st_dac::StnPosition::*;
        let device = Default::default();
        use st_dac::Arch::{Edge, Paper};
        let cases = [
            (Paper, vec![]),
            (Paper, vec![Input]),
            (Paper, vec![Input, Block2, Block3]),
            (Edge, vec![]),
            (Edge, vec![Input, Block2, Block3]),
        ];
        for (arch, stn) in cases {
            let with_input = stn.contains(&Input);
            let (model, images) = st_dac(arch, stn.clone());
            let n = 16;
            let x = Tensor::<Cpu, 4>::from_data(
                burn::tensor::TensorData::new(images[..n * 784].to_vec(), [n, 1, 28, 28]),
                &device,
            );
            let out = model.forward(x);
            let input = input_of(784, Some((28, 28)));
            let graph = onnx::encode(&graph(&model.export_layers(), &input, 10, None));
            let got = onnx::run_with_tract(&graph, &input.dims, n, images[..n * 784].to_vec()).unwrap();
            let gap =
                |a: &[f32], b: Vec<f32>| a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            let embedding_gap = gap(&got[0], out.embedding.into_data().to_vec().unwrap());
            assert!(embedding_gap < 1e-4, "{stn:?}: embeddings differ by {embedding_gap}");
            assert_eq!(got.len(), 1 + with_input as usize, "{stn:?}: outputs");
            if let Some(theta) = out.theta {
                let theta: Vec<f32> = theta.into_data().to_vec().unwrap();
                assert!(
                    theta
                        .iter()
                        .zip([1.0, 0.0, 0.0, 0.0, 1.0, 0.0].iter().cycle())
                        .any(|(a, b)| (a - b).abs() > 1e-3),
                    "the jittered transformer should leave the identity"
                );
                assert!(gap(&got[1], theta) < 1e-5, "{stn:?}: θ differs");
            }
        }
    }

    #[test]
    fn the_int8_graph_runs_its_weighted_layers_as_integer_operators_and_stays_close() {
        use st_dac::StnPosition::*;
        let (model, images) = st_dac(st_dac::Arch::Paper, vec![Input, Block2]);
        let layers = model.export_layers();
        let input = input_of(784, Some((28, 28)));
        let calibration = quantize::calibrate(&layers, &input, &images[..32 * 784], 32).unwrap();
        let proto = graph(&layers, &input, 10, Some(&calibration));
        let ops: Vec<&str> = proto.graph.as_ref().unwrap().node.iter().map(|n| n.op_type.as_str()).collect();
        let count = |op: &str| ops.iter().filter(|&&o| o == op).count();
        // conv1–3 and the wide dense layer are integer; the head, the transformers' nets and the
        // constraint stay float.
        assert_eq!((count("QLinearConv"), count("QLinearMatMul")), (3, 1), "{ops:?}");
        assert_eq!(count("GridSample"), 2);
        assert_eq!(count("Conv"), 4, "two float convolutions in each localization net");
        let float = onnx::run_with_tract(
            &onnx::encode(&graph(&layers, &input, 10, None)),
            &input.dims,
            64,
            images.clone(),
        )
        .unwrap();
        let int8 = onnx::run_with_tract(&onnx::encode(&proto), &input.dims, 64, images).unwrap();
        let gap = float[0].iter().zip(&int8[0]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(gap < 0.05, "int8 embeddings differ from float by {gap}");
        assert!(gap > 0.0, "int8 rounding must show somewhere");
    }
}
