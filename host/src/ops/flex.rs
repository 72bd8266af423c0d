//! The CPU backend's side of [`TrainOps`]: its tensors as slices and back, and the two implementations
//! (plain, for inference, and autodiff, for training) that hand each operation to its kernel.

use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{adam, batch_norm, conv, pool, sampler, tanh, AdamStep, Normalized, TrainOps};

/// The tensor's values, in order (borrowed when it is laid out contiguously already).
pub fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    assert_eq!(t.dtype(), DType::F32, "the trainer's kernels compute in f32");
    match t.as_slice::<f32>() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("contiguous").to_vec()),
    }
}

/// `len` zeros, written by the threads: a big output's memset (and, on fresh memory, its first-touch
/// page faults) would otherwise run on the calling thread alone while the others wait (a fifth of the
/// main thread's time in an edge-network step's profile).
pub fn zeros(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    (0..len).into_par_iter().map(|_| 0.0f32).collect_into_vec(&mut v);
    v
}

/// A tensor of `shape` holding `values`.
pub fn tensor_of<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// A tensor of `like`'s shape holding `values` (for element-wise ops of any rank).
pub fn tensor_like(like: &FlexTensor, values: Vec<f32>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, like.layout().shape().clone()))
}

pub fn into_flex<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    t.into_primitive().tensor()
}

pub fn from_flex<const D: usize>(t: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// An autodiff tensor's primitive: its values (`.primitive`) and its node in the graph (`.node`).
pub fn autodiff_parts<const D: usize>(t: Tensor<Autodiff<Flex>, D>) -> FloatTensor<Autodiff<Flex>> {
    t.into_primitive().tensor()
}

/// `output` as the result of an operation whose backward step `kind` prepared: with `state` for that
/// step when a parent needs gradients, as a constant otherwise.
pub fn recorded<BO, S, const N: usize, const D: usize>(
    kind: OpsKind<BO, Flex, S, NoCheckpointing, N>,
    state: S,
    output: FlexTensor,
) -> Tensor<Autodiff<Flex>, D>
where
    BO: Backward<Flex, N, State = S>,
    S: Clone + Send + std::fmt::Debug + 'static,
{
    let t = match kind {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

impl TrainOps for Flex {
    fn conv2d(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        bias: Option<Tensor<Self, 1>>,
        stride: usize,
        padding: usize,
    ) -> Tensor<Self, 4> {
        conv::flex(x, weight, bias, stride, padding)
    }

    fn batch_norm_train(
        x: Tensor<Self, 3>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
        relu: bool,
    ) -> Normalized<Self> {
        batch_norm::flex_train(x, gamma, beta, epsilon, relu)
    }

    fn channel_affine(
        x: Tensor<Self, 3>,
        scale: Tensor<Self, 1>,
        shift: Tensor<Self, 1>,
        relu: bool,
    ) -> Tensor<Self, 3> {
        batch_norm::flex_affine(x, scale, shift, relu)
    }

    fn max_pool2x2(x: Tensor<Self, 4>) -> Tensor<Self, 4> {
        pool::flex(x)
    }

    fn tanh<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        tanh::flex(x)
    }

    fn warp(x: Tensor<Self, 4>, theta: Tensor<Self, 3>) -> Tensor<Self, 4> {
        sampler::flex(x, theta)
    }

    fn adam_step<const D: usize>(
        param: Tensor<Self, D>,
        grad: Tensor<Self, D>,
        moments: Option<(Tensor<Self, D>, Tensor<Self, D>)>,
        step: AdamStep,
    ) -> (Tensor<Self, D>, Tensor<Self, D>, Tensor<Self, D>) {
        adam::flex(param, grad, moments, step)
    }
}

impl TrainOps for Autodiff<Flex> {
    fn conv2d(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        bias: Option<Tensor<Self, 1>>,
        stride: usize,
        padding: usize,
    ) -> Tensor<Self, 4> {
        conv::autodiff(x, weight, bias, stride, padding)
    }

    fn batch_norm_train(
        x: Tensor<Self, 3>,
        gamma: Tensor<Self, 1>,
        beta: Tensor<Self, 1>,
        epsilon: f64,
        relu: bool,
    ) -> Normalized<Self> {
        batch_norm::autodiff_train(x, gamma, beta, epsilon, relu)
    }

    fn max_pool2x2(x: Tensor<Self, 4>) -> Tensor<Self, 4> {
        pool::autodiff(x)
    }

    fn tanh<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        tanh::autodiff(x)
    }

    fn warp(x: Tensor<Self, 4>, theta: Tensor<Self, 3>) -> Tensor<Self, 4> {
        sampler::autodiff(x, theta)
    }
}
