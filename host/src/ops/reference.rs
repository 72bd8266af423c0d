//! Each of [`TrainOps`](super::TrainOps)' operations composed from burn's own tensor operations: what
//! every backend but the CPU one runs, and what the CPU kernels are tested against.

use burn::tensor::backend::Backend;
use burn::tensor::grid::affine_grid_2d;
use burn::tensor::module;
use burn::tensor::ops::{ConvOptions, GridSampleOptions, GridSamplePaddingMode, InterpolateMode};
use burn::tensor::Tensor;

use super::{AdamStep, Normalized};

pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: usize,
    padding: usize,
) -> Tensor<B, 4> {
    module::conv2d(x, weight, bias, ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1))
}

pub fn max_pool2x2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    module::max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
}

pub fn tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    burn::tensor::activation::tanh(x)
}

/// The per-channel (dim 1) mean of `x` ([N, C, S]) over N and S, as [C].
fn channel_mean<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 1> {
    let [n, c, s] = x.dims();
    x.swap_dims(0, 1).reshape([c, n * s]).mean_dim(1).reshape([c])
}

pub fn batch_norm_train<B: Backend>(
    x: Tensor<B, 3>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    relu: bool,
) -> Normalized<B> {
    let c = x.dims()[1];
    let mean = channel_mean(x.clone());
    let centred = x - mean.clone().reshape([1, c, 1]);
    let variance = channel_mean(centred.clone().square());
    let std = variance.clone().add_scalar(epsilon).sqrt();
    let output = centred / std.reshape([1, c, 1]) * gamma.reshape([1, c, 1]) + beta.reshape([1, c, 1]);
    let output = if relu { burn::tensor::activation::relu(output) } else { output };
    Normalized { output, mean: mean.detach(), variance: variance.detach() }
}

pub fn channel_affine<B: Backend>(
    x: Tensor<B, 3>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
    relu: bool,
) -> Tensor<B, 3> {
    let c = x.dims()[1];
    let output = x * scale.reshape([1, c, 1]) + shift.reshape([1, c, 1]);
    if relu {
        burn::tensor::activation::relu(output)
    } else {
        output
    }
}

pub fn warp<B: Backend>(x: Tensor<B, 4>, theta: Tensor<B, 3>) -> Tensor<B, 4> {
    let grid = affine_grid_2d(theta, x.dims());
    let options = GridSampleOptions::new(InterpolateMode::Bilinear)
        .with_padding_mode(GridSamplePaddingMode::Zeros)
        .with_align_corners(true);
    x.grid_sample_2d(grid, options)
}

/// burn's Adam (`burn::optim::Adam` without weight decay), written out.
pub fn adam_step<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moments: Option<(Tensor<B, D>, Tensor<B, D>)>,
    step: AdamStep,
) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let AdamStep { lr, beta_1, beta_2, epsilon, time } = step;
    let (m, v) = match moments {
        Some((m, v)) => (
            m.mul_scalar(beta_1).add(grad.clone().mul_scalar(1.0 - beta_1)),
            v.mul_scalar(beta_2).add(grad.square().mul_scalar(1.0 - beta_2)),
        ),
        None => (grad.clone().mul_scalar(1.0 - beta_1), grad.square().mul_scalar(1.0 - beta_2)),
    };
    let (first, second) = bias_corrections(beta_1, beta_2, time);
    let update = m.clone().mul_scalar(first).div(v.clone().sqrt().add_scalar(epsilon * second));
    (param - update.mul_scalar(lr), m, v)
}

/// Adam's bias corrections for update `time`, folded as burn folds them: the moment's factor
/// √(1 − β₂ᵗ) / (1 − β₁ᵗ), and √(1 − β₂ᵗ), which scales ε.
pub fn bias_corrections(beta_1: f32, beta_2: f32, time: usize) -> (f32, f32) {
    let t = time as i32;
    let second = (1.0 - beta_2.powi(t)).sqrt();
    (second / (1.0 - beta_1.powi(t)), second)
}
