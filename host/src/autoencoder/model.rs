//! The autoencoders: a dense one of configurable widths for any features, and a convolutional one for
//! 28 × 28 grey images; either can be variational (an encoder of a mean and a log-variance).
//!
//! The latent code a model clusters with is the encoder's output, or its mean when variational.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::export::onnx::Layer;
use crate::export::{export_conv, export_dense};

/// The encoder and decoder's kind of layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Architecture {
    /// Fully connected layers of the given widths, mirrored in the decoder (any features).
    Dense,
    /// Three strided convolutions, mirrored by transposed convolutions (28 × 28 grey images only), with
    /// dense layers of the given widths between them and the code.
    Conv,
}

#[derive(Config, Debug)]
pub struct AutoencoderConfig {
    /// Features per sample (784 for a 28 × 28 image).
    pub input_dim: usize,
    pub architecture: Architecture,
    /// Widths of the encoder's hidden dense layers, in order; the decoder mirrors them.
    pub hidden: Vec<usize>,
    /// Dimension of the latent code.
    pub latent: usize,
    /// Encode a mean and a log-variance and sample the code from them (a VAE).
    #[config(default = false)]
    pub variational: bool,
    /// Squash the reconstruction into (0, 1) with a sigmoid: for pixels in [0, 1]; tables, which are
    /// z-scored, are reconstructed linearly.
    #[config(default = false)]
    pub sigmoid_output: bool,
}

/// Channels of the convolutional encoder's three layers (and, reversed, the decoder's).
const CONV_CHANNELS: [usize; 3] = [32, 64, 128];
/// Kernel and padding of the encoder's convolutions (all of stride 2): 28 → 14 → 7 → 3.
const CONV_KERNELS: [(usize, usize); 3] = [(5, 2), (5, 2), (3, 0)];
/// The last convolution's map is 128 × 3 × 3.
const CONV_MAP: usize = 3;

#[derive(Module, Debug)]
pub struct Autoencoder<B: Backend> {
    enc_conv: Vec<Conv2d<B>>,
    enc_dense: Vec<Linear<B>>,
    mean: Linear<B>,
    log_var: Option<Linear<B>>,
    dec_dense: Vec<Linear<B>>,
    dec_conv: Vec<ConvTranspose2d<B>>,
    sigmoid_output: bool,
}

/// What the network does with one batch.
#[derive(Debug, Clone)]
pub struct Pass<B: Backend> {
    /// [N, latent]: the code decoded (a sample around `mean` when variational and sampling).
    pub code: Tensor<B, 2>,
    /// [N, latent]: the encoder's output, or the mean of the posterior when variational.
    pub mean: Tensor<B, 2>,
    /// [N, latent], when variational.
    pub log_var: Option<Tensor<B, 2>>,
    /// [N, input_dim].
    pub reconstruction: Tensor<B, 2>,
}

impl AutoencoderConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Autoencoder<B> {
        let conv = self.architecture == Architecture::Conv;
        assert!(!conv || self.input_dim == 28 * 28, "the convolutional autoencoder takes 28 × 28 images");
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let [c1, c2, c3] = CONV_CHANNELS;
        // 28 → 14 → 7 → 3, and back: 3 → 7 → 14 → 28.
        let (enc_conv, dec_conv, flat) = if conv {
            let down = |i, o, k, p| {
                Conv2dConfig::new([i, o], [k, k])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .init(device)
            };
            let up = |i, o, k, p, extra| {
                ConvTranspose2dConfig::new([i, o], [k, k])
                    .with_stride([2, 2])
                    .with_padding([p, p])
                    .with_padding_out([extra, extra])
                    .init(device)
            };
            let [(k1, p1), (k2, p2), (k3, p3)] = CONV_KERNELS;
            (
                vec![down(1, c1, k1, p1), down(c1, c2, k2, p2), down(c2, c3, k3, p3)],
                // The mirror image; the output padding brings 3 → 7 and 7 → 14 → 28 back exactly.
                vec![up(c3, c2, k3, p3, 0), up(c2, c1, k2, p2, 1), up(c1, 1, k1, p1, 1)],
                c3 * CONV_MAP * CONV_MAP,
            )
        } else {
            (Vec::new(), Vec::new(), self.input_dim)
        };
        let mut widths = vec![flat];
        widths.extend(&self.hidden);
        let enc_dense = widths.windows(2).map(|w| linear(w[0], w[1])).collect();
        let top = *widths.last().expect("at least the input");
        let mut dec_dense: Vec<Linear<B>> = Vec::new();
        let mut from = self.latent;
        for &w in widths.iter().rev() {
            dec_dense.push(linear(from, w));
            from = w;
        }
        Autoencoder {
            enc_conv,
            enc_dense,
            mean: linear(top, self.latent),
            log_var: self.variational.then(|| linear(top, self.latent)),
            dec_dense,
            dec_conv,
            sigmoid_output: self.sigmoid_output,
        }
    }
}

impl<B: Backend> Autoencoder<B> {
    /// `x`: [N, input_dim]. Returns the code's mean and, when variational, its log-variance.
    pub fn encode(&self, x: Tensor<B, 2>) -> (Tensor<B, 2>, Option<Tensor<B, 2>>) {
        let mut h = x;
        if !self.enc_conv.is_empty() {
            let n = h.dims()[0];
            let mut map = h.reshape([n, 1, 28, 28]);
            for conv in &self.enc_conv {
                map = relu(conv.forward(map));
            }
            h = map.flatten(1, 3);
        }
        for layer in &self.enc_dense {
            h = relu(layer.forward(h));
        }
        let log_var = self.log_var.as_ref().map(|layer| layer.forward(h.clone()));
        (self.mean.forward(h), log_var)
    }

    /// `code`: [N, latent] → [N, input_dim].
    pub fn decode(&self, code: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut h = code;
        let last = self.dec_dense.len() - 1;
        for (i, layer) in self.dec_dense.iter().enumerate() {
            h = layer.forward(h);
            // The last dense layer is the output when there is no convolution after it.
            if i < last || !self.dec_conv.is_empty() {
                h = relu(h);
            }
        }
        if !self.dec_conv.is_empty() {
            let n = h.dims()[0];
            let mut map = h.reshape([n, CONV_CHANNELS[2], CONV_MAP, CONV_MAP]);
            let last = self.dec_conv.len() - 1;
            for (i, conv) in self.dec_conv.iter().enumerate() {
                map = conv.forward(map);
                if i < last {
                    map = relu(map);
                }
            }
            h = map.flatten(1, 3);
        }
        if self.sigmoid_output {
            sigmoid(h)
        } else {
            h
        }
    }

    /// Encodes and decodes `x`. A variational model decodes a sample z = μ + σ·ε when `sample` is true
    /// (training), and μ itself otherwise.
    pub fn forward(&self, x: Tensor<B, 2>, sample: bool) -> Pass<B> {
        let (mean, log_var) = self.encode(x);
        let code = match (&log_var, sample) {
            (Some(log_var), true) => {
                let noise = Tensor::random(mean.shape(), Distribution::Normal(0.0, 1.0), &mean.device());
                mean.clone() + (log_var.clone() * 0.5).exp() * noise
            }
            _ => mean.clone(),
        };
        let reconstruction = self.decode(code.clone());
        Pass { code, mean, log_var, reconstruction }
    }

    /// The encoder, up to the code (the posterior mean, for a VAE), as layers for the exporter. A
    /// convolutional encoder starts on the [N, 1, 28, 28] image, a dense one on [N, input_dim].
    pub fn encoder_layers(&self) -> Vec<Layer> {
        let mut layers = Vec::new();
        for conv in &self.enc_conv {
            layers.extend([export_conv(conv), Layer::Relu]);
        }
        if !self.enc_conv.is_empty() {
            layers.push(Layer::Flatten);
        }
        for linear in &self.enc_dense {
            layers.extend([export_dense(linear), Layer::Relu]);
        }
        layers.push(export_dense(&self.mean));
        layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TrainBackend;

    #[test]
    fn every_architecture_maps_back_to_its_input_shape() {
        let device = Default::default();
        for (architecture, dim, hidden) in [
            (Architecture::Dense, 13, vec![8, 6]),
            (Architecture::Conv, 784, vec![32]),
            (Architecture::Conv, 784, vec![]),
        ] {
            for variational in [false, true] {
                let model = AutoencoderConfig::new(dim, architecture, hidden.clone(), 3)
                    .with_variational(variational)
                    .with_sigmoid_output(true)
                    .init::<TrainBackend>(&device);
                let x = Tensor::<TrainBackend, 2>::random([5, dim], Distribution::Default, &device);
                let pass = model.forward(x, true);
                assert_eq!(pass.code.dims(), [5, 3]);
                assert_eq!(pass.mean.dims(), [5, 3]);
                assert_eq!(pass.log_var.map(|l| l.dims()), variational.then_some([5, 3]));
                assert_eq!(pass.reconstruction.dims(), [5, dim]);
                let values: Vec<f32> = pass.reconstruction.into_data().to_vec().unwrap();
                assert!(values.iter().all(|v| (0.0..=1.0).contains(v)), "sigmoid output in [0, 1]");
            }
        }
    }

    #[test]
    fn a_variational_model_samples_only_when_asked() {
        let device = Default::default();
        let model = AutoencoderConfig::new(6, Architecture::Dense, vec![4], 2)
            .with_variational(true)
            .init::<TrainBackend>(&device);
        let x = Tensor::<TrainBackend, 2>::random([4, 6], Distribution::Default, &device);
        let exact = model.forward(x.clone(), false);
        exact.code.clone().into_data().assert_eq(&exact.mean.into_data(), true);
        let sampled = model.forward(x, true);
        let gap: f32 = (sampled.code - sampled.mean).abs().sum().into_scalar();
        assert!(gap > 0.0, "a training pass decodes a sample, not the mean");
    }
}
