//! The trainer's own tensor operations: the ones a training step spends its time in, written for the
//! CPU backend with their backward passes, so a step runs at the speed of its matrix products rather
//! than of burn-flex's generic strided loops (measured in models/RESULTS.md).
//!
//! [`TrainOps`] is a backend extension (the burn book's "backend extension" pattern): every backend
//! gets each operation as a composition of burn's own tensor operations (the reference, in
//! [`reference`]); the CPU backend (`Flex`) and its autodiff form override them with kernels of their
//! own ([`conv`], [`batch_norm`], [`pool`], [`tanh`], [`sampler`], [`adam`]), each with an analytic
//! backward pass. The CUDA backend keeps the reference.
//!
//! The layers call them through [`conv2d`], [`batch_norm`], [`max_pool2d`], [`tanh`] and [`warp`],
//! which take burn's modules (`Conv2d`, `BatchNorm`, `MaxPool2d`) as they are, so checkpoints and the
//! ONNX exporter see the same records.

pub mod adam;
pub mod batch_norm;
pub mod conv;
mod flex;
mod matmul;
pub mod pool;
pub mod reference;
pub mod sampler;
pub mod tanh;

use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

pub use adam::FusedAdam;

/// What a training-mode batch normalisation returns: the normalised (and maybe rectified) batch, and
/// the batch's per-channel mean and biased variance, without gradients (for the running statistics).
pub struct Normalized<B: Backend> {
    pub output: Tensor<B, 3>,
    pub mean: Tensor<B, 1>,
    pub variance: Tensor<B, 1>,
}

/// Adam's hyper-parameters and step count for one update (burn's `AdamConfig` defaults).
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub lr: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// The update's number, from 1.
    pub time: usize,
}

/// The operations a training step is made of. Each default is burn's own composition.
pub trait TrainOps: Backend {
    /// 2-D convolution (one group, no dilation) with the same stride and zero padding on both axes.
    /// `x`: [N, C, H, W], `weight`: [O, C, KH, KW].
    fn conv2d(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        bias: Option<Tensor<Self, 1>>,
        stride: usize,
        padding: usize,
    ) -> Tensor<Self, 4> {
        reference::conv2d(x, weight, bias, stride, padding)
    }

    /// Batch normalisation of `x` ([N, C, S]) over N and S with the batch's own statistics, scaled by
    /// `gamma` and shifted by `beta` per channel, then ReLU when `relu`.
    fn batch_norm_train(
        x: Tensor<Self, 3>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
        relu: bool,
    ) -> Normalized<Self> {
        reference::batch_norm_train(x, gamma, beta, epsilon, relu)
    }

    /// `x` ([N, C, S]) · scale + shift per channel, then ReLU when `relu`: batch normalisation with
    /// fixed statistics.
    fn channel_affine(
        x: Tensor<Self, 3>,
        scale: Tensor<Self, 1>,
        shift: Tensor<Self, 1>,
        relu: bool,
    ) -> Tensor<Self, 3> {
        reference::channel_affine(x, scale, shift, relu)
    }

    /// The 2 × 2 max-pool with stride 2 and no padding of `x` ([N, C, H, W]): [N, C, H/2, W/2].
    fn max_pool2x2(x: Tensor<Self, 4>) -> Tensor<Self, 4> {
        reference::max_pool2x2(x)
    }

    /// tanh of every value of `x`.
    fn tanh<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        reference::tanh(x)
    }

    /// `x` ([N, C, H, W]) resampled through the affine `theta` ([N, 2, 3]): bilinear, zeros outside,
    /// align_corners = true (the spatial transformer's convention, see `st_dac::stn`).
    fn warp(x: Tensor<Self, 4>, theta: Tensor<Self, 3>) -> Tensor<Self, 4> {
        reference::warp(x, theta)
    }

    /// One Adam update of `param` from `grad` and the moments (none before the first update): the new
    /// parameter, first moment and second moment.
    fn adam_step<const D: usize>(
        param: Tensor<Self, D>,
        grad: Tensor<Self, D>,
        moments: Option<(Tensor<Self, D>, Tensor<Self, D>)>,
        step: AdamStep,
    ) -> (Tensor<Self, D>, Tensor<Self, D>, Tensor<Self, D>) {
        reference::adam_step(param, grad, moments, step)
    }
}

#[cfg(feature = "cuda")]
impl TrainOps for burn::backend::Cuda {}
#[cfg(feature = "cuda")]
impl TrainOps for burn::backend::Autodiff<burn::backend::Cuda> {}

/// `conv` applied to `x` through [`TrainOps::conv2d`]; burn's own forward for what that does not
/// cover (groups, dilation, uneven padding).
pub fn conv2d<B: TrainOps>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [kh, kw] = conv.kernel_size;
    let padding = match &conv.padding {
        PaddingConfig2d::Valid => Some(0),
        PaddingConfig2d::Same if kh == kw && kh % 2 == 1 && conv.stride == [1, 1] => Some(kh / 2),
        PaddingConfig2d::Explicit(t, l, b, r) if t == l && t == b && t == r => Some(*t),
        _ => None,
    };
    match padding {
        Some(p) if conv.groups == 1 && conv.dilation == [1, 1] && conv.stride[0] == conv.stride[1] => {
            <B as TrainOps>::conv2d(
                x,
                conv.weight.val(),
                conv.bias.as_ref().map(|b| b.val()),
                conv.stride[0],
                p,
            )
        }
        _ => conv.forward(x),
    }
}

/// `bn` applied to `x` ([N, C, ...]), then ReLU when `relu`: with the batch's statistics when the
/// backend records gradients (training), moving the running statistics toward them as burn's
/// `BatchNorm` does; with the running statistics otherwise.
pub fn batch_norm<B: TrainOps, const D: usize>(
    bn: &BatchNorm<B>,
    x: Tensor<B, D>,
    relu: bool,
) -> Tensor<B, D> {
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let flat = x.reshape([n, c, dims[2..].iter().product()]);
    let device = flat.device();
    let output = if B::ad_enabled(&device) {
        let out = B::batch_norm_train(flat, bn.gamma.val(), bn.beta.val(), bn.epsilon, relu);
        let momentum = bn.momentum;
        let moved = |running: Tensor<B, 1>, batch: Tensor<B, 1>| {
            running.mul_scalar(1.0 - momentum).add(batch.mul_scalar(momentum)).detach()
        };
        bn.running_mean.update(moved(bn.running_mean.value_sync().to_device(&device), out.mean));
        bn.running_var.update(moved(bn.running_var.value_sync().to_device(&device), out.variance));
        out.output
    } else {
        let std = bn.running_var.value().add_scalar(bn.epsilon).sqrt();
        let scale = bn.gamma.val().div(std);
        let shift = bn.beta.val().sub(bn.running_mean.value().mul(scale.clone()));
        B::channel_affine(flat, scale, shift, relu)
    };
    output.reshape(dims)
}

/// `pool` applied to `x`: through [`TrainOps::max_pool2x2`] when it is that pool, burn's own forward
/// otherwise.
pub fn max_pool2d<B: TrainOps>(pool: &MaxPool2d, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let two_by_two = pool.kernel_size == [2, 2]
        && pool.stride == [2, 2]
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && matches!(pool.padding, PaddingConfig2d::Valid);
    if two_by_two {
        B::max_pool2x2(x)
    } else {
        pool.forward(x)
    }
}

/// tanh of `x` (see [`TrainOps::tanh`]).
pub fn tanh<B: TrainOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    B::tanh(x)
}

/// `x` resampled through `theta` (see [`TrainOps::warp`]).
pub fn warp<B: TrainOps>(x: Tensor<B, 4>, theta: Tensor<B, 3>) -> Tensor<B, 4> {
    B::warp(x, theta)
}
