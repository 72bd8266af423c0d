//! The feature network sized for a board (`--arch edge`): five 3 × 3 convolutions of 32-32-64-64-128
//! channels, each with BatchNorm and ReLU, 2 × 2 max-pools after the second and the fourth, and global
//! average pooling into 128 features. The transformers sit where the paper network has them: block 2 on
//! the 64 × 14 × 14 map before its pool, block 3 on the 128 × 7 × 7 map.
//!
//! About 160,000 weights with the dense layers (the paper network: 40 million), the largest tensor
//! 73,728 values (64 × 128 × 3 × 3): each stays within tract's constant-folding budget of 1,048,576
//! values, so a board keeps the int8 weights packed. Global pooling replaces the wide flatten: the
//! features no longer say where in the frame a stroke sits, which the transformers and the
//! augmentation make the network learn to ignore anyway.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::model::folded;
use super::stn::SpatialTransformer;
use crate::export::export_conv;
use crate::export::onnx::Layer;
use crate::ops::{self, TrainOps};

/// A convolution with the BatchNorm and ReLU after it.
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

impl<B: Backend> ConvBlock<B> {
    fn new(inputs: usize, outputs: usize, device: &B::Device) -> Self {
        ConvBlock {
            conv: Conv2dConfig::new([inputs, outputs], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            bn: BatchNormConfig::new(outputs).init(device),
        }
    }

    fn export_layers(&self) -> [Layer; 2] {
        [folded(export_conv(&self.conv), &self.bn), Layer::Relu]
    }
}

impl<B: TrainOps> ConvBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        ops::batch_norm(&self.bn, ops::conv2d(&self.conv, x), true)
    }
}

#[derive(Module, Debug)]
pub struct EdgeFeatures<B: Backend> {
    conv1: ConvBlock<B>,
    conv2: ConvBlock<B>,
    conv3: ConvBlock<B>,
    conv4: ConvBlock<B>,
    stn_block2: Option<SpatialTransformer<B>>,
    conv5: ConvBlock<B>,
    stn_block3: Option<SpatialTransformer<B>>,
    pool: MaxPool2d,
}

impl<B: Backend> EdgeFeatures<B> {
    /// Features per image: the last block's channels.
    pub const WIDTH: usize = 128;

    pub fn new(
        stn_block2: Option<SpatialTransformer<B>>,
        stn_block3: Option<SpatialTransformer<B>>,
        device: &B::Device,
    ) -> Self {
        EdgeFeatures {
            conv1: ConvBlock::new(1, 32, device),
            conv2: ConvBlock::new(32, 32, device),
            conv3: ConvBlock::new(32, 64, device),
            conv4: ConvBlock::new(64, 64, device),
            stn_block2,
            conv5: ConvBlock::new(64, 128, device),
            stn_block3,
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    /// The network in evaluation mode as export layers, every BatchNorm folded into its convolution.
    pub fn export_layers(&self) -> Vec<Layer> {
        let mut layers = Vec::new();
        layers.extend(self.conv1.export_layers());
        layers.extend(self.conv2.export_layers());
        layers.push(Layer::MaxPool { size: 2 });
        layers.extend(self.conv3.export_layers());
        layers.extend(self.conv4.export_layers());
        if let Some(stn) = &self.stn_block2 {
            layers.push(stn.export_layer(14, 14));
        }
        layers.push(Layer::MaxPool { size: 2 });
        layers.extend(self.conv5.export_layers());
        if let Some(stn) = &self.stn_block3 {
            layers.push(stn.export_layer(7, 7));
        }
        layers.push(Layer::GlobalAveragePool);
        layers
    }
}

impl<B: TrainOps> EdgeFeatures<B> {
    /// [N, 1, 28, 28] → [N, 128].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.conv2.forward(self.conv1.forward(x)); // [N, 32, 28, 28]
        let x = self.pool.forward(x); // [N, 32, 14, 14]
        let mut x = self.conv4.forward(self.conv3.forward(x)); // [N, 64, 14, 14]
        if let Some(stn) = &self.stn_block2 {
            x = stn.forward(x).0;
        }
        let mut x = self.conv5.forward(self.pool.forward(x)); // [N, 128, 7, 7]
        if let Some(stn) = &self.stn_block3 {
            x = stn.forward(x).0;
        }
        let [n, c, h, w] = x.dims();
        x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c]) // [N, 128]
    }
}
