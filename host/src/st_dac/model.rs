//! The ST-DAC network: a small VGG-like CNN ([`Arch`]: the dissertation's, or one sized for a board)
//! with up to three spatial transformers, a dense layer, and DAC's constraint layer.
//!
//! The printed "10 dense BN ReLU SoftMax" head is replaced, as in DAC, by a plain dense layer and the
//! constraint layer. Convolutions, BatchNorms and samplers run through [`crate::ops`] (the trainer's
//! own CPU kernels); the records are burn's modules, so the exporter reads them as they are.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::edge::EdgeFeatures;
use super::paper::PaperFeatures;
use super::stn::SpatialTransformer;
use crate::export::export_dense;
use crate::export::onnx::Layer;
use crate::ops::{self, TrainOps};

/// Where a spatial transformer sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum StnPosition {
    /// On the 1 × 28 × 28 input image.
    Input,
    /// On the 14 × 14 map of the second block (128 channels in the paper network, 64 in the edge one).
    Block2,
    /// On the 7 × 7 map of the third block (256 channels in the paper network, 64 in the edge one).
    Block3,
}

/// Which network extracts the features the dense layers cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The dissertation's network (see [`PaperFeatures`]): 12,544 features flattened into a wide dense
    /// layer; tens of millions of weights.
    Paper,
    /// A network sized for a board (see [`EdgeFeatures`]): five narrow convolutions pooled to 64 maps of
    /// 3 × 3; under 300,000 weights, none of its tensors above 1,048,576 values.
    Edge,
}

impl Arch {
    /// The width of the dense layer after the features, unless told otherwise.
    pub fn default_dense_width(self) -> usize {
        match self {
            Arch::Paper => 3096,
            Arch::Edge => 128,
        }
    }
}

#[derive(Config, Debug)]
pub struct StDacConfig {
    /// The feature network (configurations written before it existed are the paper's).
    #[config(default = "Arch::Paper")]
    pub arch: Arch,
    /// Clusters (the length of the output vector).
    #[config(default = 10)]
    pub clusters: usize,
    /// Positions of the spatial transformers, none to three.
    #[config(default = "Vec::new()")]
    pub stn: Vec<StnPosition>,
    /// tanh on the localization nets' last layer, as in the dissertation.
    #[config(default = true)]
    pub stn_tanh: bool,
    /// Width of the dense layer after the features (printed as 3096 in the dissertation).
    #[config(default = 3096)]
    pub dense_width: usize,
    /// Dropout after the paper network's dense layer (the authors' 0.5; the edge network has none).
    #[config(default = 0.5)]
    pub dropout: f64,
}

/// The network's outputs for a batch.
#[derive(Debug, Clone)]
pub struct StDacOutput<B: Backend> {
    /// [N, k]: unit-length, non-negative; the cluster is the largest entry.
    pub embedding: Tensor<B, 2>,
    /// [N, 2, 3]: θ of the input transformer, when there is one.
    pub theta: Option<Tensor<B, 3>>,
    /// [N, 1, 28, 28]: the image after the input transformer, when there is one.
    pub corrected: Option<Tensor<B, 4>>,
}

/// The feature network, one of [`Arch`]. (One per model: the variants' sizes do not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Features<B: Backend> {
    Paper(PaperFeatures<B>),
    Edge(EdgeFeatures<B>),
}

#[derive(Module, Debug)]
pub struct StDac<B: Backend> {
    stn_input: Option<SpatialTransformer<B>>,
    features: Features<B>,
    dense: Linear<B>,
    bn_dense: BatchNorm<B>,
    dropout: Option<Dropout>,
    head: Linear<B>,
}

impl StDacConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> StDac<B> {
        let stn = |at, channels, size| {
            self.stn.contains(&at).then(|| SpatialTransformer::new(channels, size, self.stn_tanh, device))
        };
        let (features, width) = match self.arch {
            Arch::Paper => {
                let f = PaperFeatures::new(
                    stn(StnPosition::Block2, 128, 14),
                    stn(StnPosition::Block3, 256, 7),
                    device,
                );
                (Features::Paper(f), PaperFeatures::<B>::WIDTH)
            }
            Arch::Edge => {
                let f = EdgeFeatures::new(
                    stn(StnPosition::Block2, 64, 14),
                    stn(StnPosition::Block3, 64, 7),
                    device,
                );
                (Features::Edge(f), EdgeFeatures::<B>::WIDTH)
            }
        };
        StDac {
            stn_input: stn(StnPosition::Input, 1, 28),
            features,
            dense: LinearConfig::new(width, self.dense_width).init(device),
            bn_dense: BatchNormConfig::new(self.dense_width).init(device),
            dropout: (self.arch == Arch::Paper && self.dropout > 0.0)
                .then(|| DropoutConfig::new(self.dropout).init()),
            head: LinearConfig::new(self.dense_width, self.clusters).init(device),
        }
    }
}

impl<B: TrainOps> StDac<B> {
    /// `images`: [N, 1, 28, 28], pixels in [0, 1].
    pub fn forward(&self, images: Tensor<B, 4>) -> StDacOutput<B> {
        self.forward_with(images, true)
    }

    /// As [`forward`](Self::forward), leaving out dropout when `dropout` is false (for DAC*'s targets,
    /// which take the batch's own BatchNorm statistics but no dropout).
    pub fn forward_with(&self, images: Tensor<B, 4>, dropout: bool) -> StDacOutput<B> {
        let (x, theta, corrected) = match &self.stn_input {
            Some(stn) => {
                let (x, theta) = stn.forward(images);
                (x.clone(), Some(theta), Some(x))
            }
            None => (images, None, None),
        };
        let x = match &self.features {
            Features::Paper(f) => f.forward(x),
            Features::Edge(f) => f.forward(x),
        }; // [N, features]
        let x = ops::batch_norm(&self.bn_dense, self.dense.forward(x), true); // [N, width]
        let x = match (&self.dropout, dropout) {
            (Some(d), true) => d.forward(x),
            _ => x,
        };
        let logits = self.head.forward(x); // [N, k]
        StDacOutput { embedding: constraint(logits), theta, corrected }
    }
}

impl<B: Backend> StDac<B> {
    /// The network in evaluation mode as export layers (BatchNorm folded where it can be, no dropout).
    pub fn export_layers(&self) -> Vec<Layer> {
        let mut layers = Vec::new();
        if let Some(stn) = &self.stn_input {
            layers.push(stn.export_layer(28, 28));
        }
        match &self.features {
            Features::Paper(f) => layers.extend(f.export_layers()),
            Features::Edge(f) => layers.extend(f.export_layers()),
        }
        layers.extend([
            folded(export_dense(&self.dense), &self.bn_dense),
            Layer::Relu,
            export_dense(&self.head),
            Layer::Constraint,
        ]);
        layers
    }
}

/// A BatchNorm in evaluation as y = x·scale + shift per channel.
fn batch_norm_affine<B: Backend>(bn: &BatchNorm<B>) -> (Vec<f32>, Vec<f32>) {
    let values = |t: Tensor<B, 1>| -> Vec<f32> { t.into_data().convert::<f32>().to_vec().expect("f32") };
    let (gamma, beta) = (values(bn.gamma.val()), values(bn.beta.val()));
    let (mean, var) = (values(bn.running_mean.value()), values(bn.running_var.value()));
    let scale: Vec<f32> = gamma.iter().zip(&var).map(|(g, v)| g / (v + bn.epsilon as f32).sqrt()).collect();
    let shift = beta.iter().zip(&mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    (scale, shift)
}

pub(super) fn affine<B: Backend>(bn: &BatchNorm<B>) -> Layer {
    let (scale, shift) = batch_norm_affine(bn);
    Layer::ChannelAffine { scale, shift }
}

/// A convolution or dense layer followed by `bn`, as one layer: each output channel's weights scaled,
/// its bias moved.
pub(super) fn folded<B: Backend>(layer: Layer, bn: &BatchNorm<B>) -> Layer {
    let (scale, shift) = batch_norm_affine(bn);
    match layer {
        Layer::Conv { weight, bias, channels, kernel, stride, padding } => {
            let per_filter = weight.len() / channels[1];
            let weight = weight.iter().enumerate().map(|(j, w)| w * scale[j / per_filter]).collect();
            let bias = bias.iter().enumerate().map(|(c, b)| b * scale[c] + shift[c]).collect();
            Layer::Conv { weight, bias, channels, kernel, stride, padding }
        }
        Layer::Dense { weight, bias, inputs, outputs } => {
            let weight = weight.iter().enumerate().map(|(j, w)| w * scale[j % outputs]).collect();
            let bias = bias.iter().enumerate().map(|(c, b)| b * scale[c] + shift[c]).collect();
            Layer::Dense { weight, bias, inputs, outputs }
        }
        other => unreachable!("BatchNorm folds only into a convolution or dense layer, not {other:?}"),
    }
}

/// DAC's constraint layer: exp(x − max x), then L2-normalised. The result is non-negative with unit
/// length, so dot products between samples lie in [0, 1] and read as "same cluster" probabilities.
pub fn constraint<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 2> {
    let max = logits.clone().max_dim(1); // [N, 1]
    let e = (logits - max).exp();
    let norm = e.clone().powf_scalar(2.0).sum_dim(1).sqrt(); // [N, 1], ≥ 1 since the max entry is 1
    e / norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend as Cpu, TrainBackend};
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn the_constraint_layer_gives_non_negative_unit_vectors() {
        let device = Default::default();
        let logits =
            Tensor::<Cpu, 2>::from_floats([[0.0, 0.0], [3.0, 3.0 - 2.0f32.ln()], [-50.0, 10.0]], &device);
        let out = constraint(logits);
        // exp(x − max): [1, 1] → [1/√2, 1/√2]; [1, 1/2] → [2/√5, 1/√5]; [e⁻⁶⁰, 1] → [≈0, 1].
        let s2 = std::f32::consts::FRAC_1_SQRT_2;
        let s5 = 5.0f32.sqrt();
        let expected = Tensor::<Cpu, 2>::from_floats([[s2, s2], [2.0 / s5, 1.0 / s5], [0.0, 1.0]], &device);
        out.into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn every_configuration_outputs_unit_non_negative_k_vectors() {
        let device = Default::default();
        let images = Tensor::<TrainBackend, 4>::random([3, 1, 28, 28], Distribution::Default, &device);
        let configurations = [
            vec![],
            vec![StnPosition::Input],
            vec![StnPosition::Input, StnPosition::Block2],
            vec![StnPosition::Input, StnPosition::Block2, StnPosition::Block3],
        ];
        for (arch, stn) in
            [Arch::Paper, Arch::Edge].into_iter().flat_map(|a| configurations.clone().map(|s| (a, s)))
        {
            let with_input = stn.contains(&StnPosition::Input);
            let model = StDacConfig::new()
                .with_arch(arch)
                .with_stn(stn)
                .with_dense_width(64)
                .with_clusters(7)
                .init::<TrainBackend>(&device);
            let out = model.forward(images.clone());
            assert_eq!(out.embedding.dims(), [3, 7]);
            let values: Vec<f32> = out.embedding.clone().into_data().to_vec().unwrap();
            assert!(values.iter().all(|&v| v >= 0.0));
            let norms: Vec<f32> =
                out.embedding.powf_scalar(2.0).sum_dim(1).sqrt().into_data().to_vec().unwrap();
            assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
            assert_eq!(out.theta.is_some(), with_input);
            assert_eq!(out.corrected.map(|c| c.dims()), with_input.then_some([3, 1, 28, 28]));
        }
    }

    #[test]
    fn the_edge_network_fits_a_board() {
        // Issue 14: at most 300,000 weights, none of its tensors above tract's folding budget.
        use burn::module::{ModuleVisitor, Param};
        struct Largest(usize);
        impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Largest {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0 = self.0.max(param.val().dims().iter().product());
            }
        }
        let device = Default::default();
        let all = vec![StnPosition::Input, StnPosition::Block2, StnPosition::Block3];
        let edge = StDacConfig::new()
            .with_arch(Arch::Edge)
            .with_stn(all)
            .with_dense_width(Arch::Edge.default_dense_width());
        let model = edge.init::<Cpu>(&device);
        let weights = model.num_params();
        assert!(weights <= 300_000, "{weights} weights");
        let mut largest = Largest(0);
        model.visit(&mut largest);
        assert!(largest.0 <= 1 << 20, "a tensor of {} values", largest.0);
        let paper =
            StDacConfig::new().with_stn(vec![StnPosition::Input, StnPosition::Block2]).init::<Cpu>(&device);
        assert!(paper.num_params() > 100 * weights, "the paper network: {}", paper.num_params());
    }
}
