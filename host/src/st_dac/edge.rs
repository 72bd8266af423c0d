//! The feature network sized for a board (`--arch edge`): five 3 × 3 convolutions of 32-32-64-64-64
//! channels, each with BatchNorm and ReLU, and a 2 × 2 max-pool after the second, the fourth and the
//! fifth, so 64 maps of 3 × 3 (576 features) feed the dense layer. The transformers sit where the paper
//! network has them: block 2 on the 64 × 14 × 14 map before its pool, block 3 on the 64 × 7 × 7 map.
//!
//! 223,526 weights with the input and block-2 transformers (the paper network: 39.3 million), the largest
//! tensor the dense layer's 576 × 128 = 73,728 values: each stays within tract's constant-folding budget
//! of 1,048,576 values, so a board keeps the int8 weights packed.
//!
//! Why a 3 × 3 grid and not global average pooling: with global pooling (128 channels, otherwise the
//! same) DAC* learned far slower per image than the paper network on the same short run, and the grid
//! faster (models/RESULTS.md, "The edge network"): the pairs' first labels seem to lean on where the
//! strokes are.

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
    /// Features per image: the last block's 64 channels on a 3 × 3 grid.
    pub const WIDTH: usize = 64 * 3 * 3;

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
            conv5: ConvBlock::new(64, 64, device),
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
        layers.extend([Layer::MaxPool { size: 2 }, Layer::Flatten]);
        layers
    }
}

impl<B: TrainOps> EdgeFeatures<B> {
    /// [N, 1, 28, 28] → [N, 128].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.conv2.forward(self.conv1.forward(x)); // [N, 32, 28, 28]
        let x = ops::max_pool2d(&self.pool, x); // [N, 32, 14, 14]
        let mut x = self.conv4.forward(self.conv3.forward(x)); // [N, 64, 14, 14]
        if let Some(stn) = &self.stn_block2 {
            x = stn.forward(x).0;
        }
        let mut x = self.conv5.forward(ops::max_pool2d(&self.pool, x)); // [N, 64, 7, 7]
        if let Some(stn) = &self.stn_block3 {
            x = stn.forward(x).0;
        }
        ops::max_pool2d(&self.pool, x).flatten(1, 3) // [N, 64 · 3 · 3]
    }
}
