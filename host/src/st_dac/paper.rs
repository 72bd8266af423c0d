//! The dissertation's feature network, following the authors' code where it differs from the printed
//! table 3 (as the project decided): no third max-pool (the third block ends at 256 × 7 × 7), and the
//! second transformer on the 128 × 14 × 14 map before its pool. Its 12,544 features feed the wide
//! dense layer (printed as 3096 wide), whose weight alone is 38.8 M values.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::model::{affine, folded};
use super::stn::SpatialTransformer;
use crate::export::export_conv;
use crate::export::onnx::Layer;
use crate::ops::{self, TrainOps};

#[derive(Module, Debug)]
pub struct PaperFeatures<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    bn1_pool: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
    stn_block2: Option<SpatialTransformer<B>>,
    bn2_pool: BatchNorm<B>,
    conv3: Conv2d<B>,
    bn3: BatchNorm<B>,
    stn_block3: Option<SpatialTransformer<B>>,
    pool: MaxPool2d,
}

impl<B: Backend> PaperFeatures<B> {
    /// Features per image: 256 × 7 × 7.
    pub const WIDTH: usize = 256 * 7 * 7;

    pub fn new(
        stn_block2: Option<SpatialTransformer<B>>,
        stn_block3: Option<SpatialTransformer<B>>,
        device: &B::Device,
    ) -> Self {
        let conv = |i, o| Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Same).init(device);
        let bn = |c| BatchNormConfig::new(c).init(device);
        PaperFeatures {
            conv1: conv(1, 64),
            bn1: bn(64),
            bn1_pool: bn(64),
            conv2: conv(64, 128),
            bn2: bn(128),
            stn_block2,
            bn2_pool: bn(128),
            conv3: conv(128, 256),
            bn3: bn(256),
            stn_block3,
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    /// The network in evaluation mode as export layers: each BatchNorm folded into the convolution
    /// before it, except the two after the pools, which precede a zero-padded convolution (folding them
    /// there would change the padded border) and stay per-channel affines.
    pub fn export_layers(&self) -> Vec<Layer> {
        let mut layers = vec![
            folded(export_conv(&self.conv1), &self.bn1),
            Layer::Relu,
            Layer::MaxPool { size: 2 },
            affine(&self.bn1_pool),
            folded(export_conv(&self.conv2), &self.bn2),
            Layer::Relu,
        ];
        if let Some(stn) = &self.stn_block2 {
            layers.push(stn.export_layer(14, 14));
        }
        layers.extend([
            Layer::MaxPool { size: 2 },
            affine(&self.bn2_pool),
            folded(export_conv(&self.conv3), &self.bn3),
            Layer::Relu,
        ]);
        if let Some(stn) = &self.stn_block3 {
            layers.push(stn.export_layer(7, 7));
        }
        layers.push(Layer::Flatten);
        layers
    }
}

impl<B: TrainOps> PaperFeatures<B> {
    /// [N, 1, 28, 28] → [N, 12544].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = ops::batch_norm(&self.bn1, ops::conv2d(&self.conv1, x), true); // [N, 64, 28, 28]
        let x = ops::batch_norm(&self.bn1_pool, ops::max_pool2d(&self.pool, x), false); // [N, 64, 14, 14]
        let mut x = ops::batch_norm(&self.bn2, ops::conv2d(&self.conv2, x), true); // [N, 128, 14, 14]
        if let Some(stn) = &self.stn_block2 {
            x = stn.forward(x).0;
        }
        let x = ops::batch_norm(&self.bn2_pool, ops::max_pool2d(&self.pool, x), false); // [N, 128, 7, 7]
        let mut x = ops::batch_norm(&self.bn3, ops::conv2d(&self.conv3, x), true); // [N, 256, 7, 7]
        if let Some(stn) = &self.stn_block3 {
            x = stn.forward(x).0;
        }
        x.flatten(1, 3)
    }
}
