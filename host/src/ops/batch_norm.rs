//! Batch normalisation over [N, C, S] (S = H·W for a feature map, 1 after a dense layer), fused with
//! the ReLU that usually follows, forward and backward in two passes each.
//!
//! Training: per channel, the batch's mean μ and biased variance σ² (sums in f64 over rows summed in
//! f32), then y = max(0, a·x + b) with a = γ/√(σ² + ε), b = β − μ·a. Backward, with g the output's
//! gradient where the ReLU let it through and x̂ = (x − μ)/√(σ² + ε): ∂β = Σg, ∂γ = Σg·x̂, and
//! ∂x = a·(g − ∂β/M − x̂·∂γ/M) over the M = N·S values of the channel. Only the input is kept for the
//! backward pass; the ReLU's mask is recomputed from it. Channels (for sums) and images (for the
//! element-wise passes) are spread over the threads; every sum runs in a fixed order.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{autodiff_parts, from_flex, into_flex, recorded, tensor_of, values, zeros};
use super::Normalized;

/// [N, C, S].
type Dims = [usize; 3];

/// Lanes of a sum: partial sums kept apart so the compiler can vectorise the loop (a single f32
/// accumulator must add in order), added up at the end; the order is still fixed.
const LANES: usize = 16;

/// Σ f(a, b) and Σ g(a, b) over two equally long runs, in [`LANES`] lanes.
fn sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f32, f32) {
    let (mut first, mut second) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (a, b) in ca.zip(cb) {
        for l in 0..LANES {
            let (u, v) = f(a[l], b[l]);
            first[l] += u;
            second[l] += v;
        }
    }
    let (mut u, mut v) = (first.iter().sum::<f32>(), second.iter().sum::<f32>());
    for (&a, &b) in ra.iter().zip(rb) {
        let (du, dv) = f(a, b);
        u += du;
        v += dv;
    }
    (u, v)
}

/// The per-channel mean and biased variance of `x`.
pub fn statistics(x: &[f32], [n, c, s]: Dims) -> (Vec<f32>, Vec<f32>) {
    let count = (n * s) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let rows = || (0..n).map(move |i| &x[(i * c + ch) * s..(i * c + ch + 1) * s]);
            let mean = rows().map(|r| sums(r, r, |v, _| (v, 0.0)).0 as f64).sum::<f64>() / count;
            let m = mean as f32;
            let squares = rows().map(|r| sums(r, r, |v, _| ((v - m) * (v - m), 0.0)).0 as f64);
            (m, (squares.sum::<f64>() / count) as f32)
        })
        .unzip()
}

/// x · scale + shift per channel, then ReLU when `relu`.
pub fn affine(x: &[f32], scale: &[f32], shift: &[f32], relu: bool, [_, c, s]: Dims) -> Vec<f32> {
    let mut out = zeros(x.len());
    out.par_chunks_mut(c * s).zip(x.par_chunks(c * s)).for_each(|(y, x)| {
        for ((y, x), (a, b)) in y.chunks_mut(s).zip(x.chunks(s)).zip(scale.iter().zip(shift)) {
            if relu {
                y.iter_mut().zip(x).for_each(|(y, x)| *y = (x * a + b).max(0.0));
            } else {
                y.iter_mut().zip(x).for_each(|(y, x)| *y = x * a + b);
            }
        }
    });
    out
}

/// The scale and shift that normalise with `mean` and 1/σ `inv_std`, then apply γ and β.
fn scale_shift(gamma: &[f32], beta: &[f32], mean: &[f32], inv_std: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma.iter().zip(inv_std).map(|(g, i)| g * i).collect();
    let shift = beta.iter().zip(mean).zip(&scale).map(|((b, m), a)| b - m * a).collect();
    (scale, shift)
}

fn inverse_std(variance: &[f32], epsilon: f64) -> Vec<f32> {
    variance.iter().map(|v| (1.0 / (*v as f64 + epsilon).sqrt()) as f32).collect()
}

/// What the backward pass needs besides the input.
#[derive(Debug, Clone)]
pub struct Saved {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    pub relu: bool,
    pub dims: Dims,
}

/// Training forward: the output, and what the backward pass needs; also the batch's variance.
pub fn forward_train(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    relu: bool,
    dims: Dims,
) -> (Vec<f32>, Saved, Vec<f32>) {
    let (mean, variance) = statistics(x, dims);
    let inv_std = inverse_std(&variance, epsilon);
    let (scale, shift) = scale_shift(gamma, beta, &mean, &inv_std);
    let y = affine(x, &scale, &shift, relu, dims);
    (y, Saved { gamma: gamma.to_vec(), beta: beta.to_vec(), mean, inv_std, relu, dims }, variance)
}

/// The gradients of the input, γ and β from the output's gradient `dy`.
pub fn backward(x: &[f32], dy: &[f32], saved: &Saved) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [n, c, s] = saved.dims;
    let (scale, shift) = scale_shift(&saved.gamma, &saved.beta, &saved.mean, &saved.inv_std);
    // The gradient the ReLU lets through at one value.
    // (given the channel's scale a and shift b)
    let relu = saved.relu;
    let passed = move |g: f32, x: f32, a: f32, b: f32| if !relu || x * a + b > 0.0 { g } else { 0.0 };
    let (d_beta, d_gamma): (Vec<f32>, Vec<f32>) = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (m, inv, a, b) = (saved.mean[ch], saved.inv_std[ch], scale[ch], shift[ch]);
            let (mut sum_g, mut sum_gx) = (0.0f64, 0.0f64);
            for i in 0..n {
                let range = (i * c + ch) * s..(i * c + ch + 1) * s;
                let (g_row, gx_row) = sums(&dy[range.clone()], &x[range], |g, x| {
                    let g = passed(g, x, a, b);
                    (g, g * (x - m) * inv)
                });
                sum_g += g_row as f64;
                sum_gx += gx_row as f64;
            }
            (sum_g as f32, sum_gx as f32)
        })
        .unzip();
    let count = (n * s) as f32;
    let mut dx = zeros(x.len());
    dx.par_chunks_mut(c * s).zip(x.par_chunks(c * s)).zip(dy.par_chunks(c * s)).for_each(|((dx, x), dy)| {
        for ch in 0..c {
            let (m, inv, a, b) = (saved.mean[ch], saved.inv_std[ch], scale[ch], shift[ch]);
            let (mean_g, mean_gx) = (d_beta[ch] / count, d_gamma[ch] / count);
            let range = ch * s..(ch + 1) * s;
            for ((dx, &x), &g) in dx[range.clone()].iter_mut().zip(&x[range.clone()]).zip(&dy[range]) {
                *dx = a * (passed(g, x, a, b) - mean_g - (x - m) * inv * mean_gx);
            }
        }
    });
    (dx, d_gamma, d_beta)
}

fn dims_of(t: &FlexTensor) -> Dims {
    t.layout().shape().dims()
}

pub(super) fn flex_train(
    x: Tensor<Flex, 3>,
    gamma: Tensor<Flex, 1>,
    beta: Tensor<Flex, 1>,
    epsilon: f64,
    relu: bool,
) -> Normalized<Flex> {
    let (x, gamma, beta) = (into_flex(x), into_flex(gamma), into_flex(beta));
    let dims = dims_of(&x);
    let (y, saved, variance) =
        forward_train(&values(&x), &values(&gamma), &values(&beta), epsilon, relu, dims);
    Normalized {
        output: from_flex(tensor_of(y, dims)),
        mean: from_flex(tensor_of(saved.mean, [dims[1]])),
        variance: from_flex(tensor_of(variance, [dims[1]])),
    }
}

pub(super) fn flex_affine(
    x: Tensor<Flex, 3>,
    scale: Tensor<Flex, 1>,
    shift: Tensor<Flex, 1>,
    relu: bool,
) -> Tensor<Flex, 3> {
    let (x, scale, shift) = (into_flex(x), into_flex(scale), into_flex(shift));
    let dims = dims_of(&x);
    from_flex(tensor_of(affine(&values(&x), &values(&scale), &values(&shift), relu, dims), dims))
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = (FlexTensor, Saved);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, saved) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let (dx, d_gamma, d_beta) = backward(&values(&x), &values(&dy), &saved);
        let [px, pg, pb] = ops.parents;
        let c = saved.dims[1];
        if let Some(node) = px {
            grads.register::<Flex>(node.id, tensor_of(dx, saved.dims));
        }
        if let Some(node) = pg {
            grads.register::<Flex>(node.id, tensor_of(d_gamma, [c]));
        }
        if let Some(node) = pb {
            grads.register::<Flex>(node.id, tensor_of(d_beta, [c]));
        }
    }
}

pub(super) fn autodiff_train(
    x: Tensor<Autodiff<Flex>, 3>,
    gamma: Tensor<Autodiff<Flex>, 1>,
    beta: Tensor<Autodiff<Flex>, 1>,
    epsilon: f64,
    relu: bool,
) -> Normalized<Autodiff<Flex>> {
    let (x, gamma, beta) = (autodiff_parts(x), autodiff_parts(gamma), autodiff_parts(beta));
    let dims = dims_of(&x.primitive);
    let (y, saved, variance) = forward_train(
        &values(&x.primitive),
        &values(&gamma.primitive),
        &values(&beta.primitive),
        epsilon,
        relu,
        dims,
    );
    let (mean, y) = (saved.mean.clone(), tensor_of(y, dims));
    let nodes = [x.node, gamma.node, beta.node];
    let output = recorded(
        BatchNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful(),
        (x.primitive, saved),
        y,
    );
    let constant = |v: Vec<f32>| Tensor::from_inner(from_flex(tensor_of(v, [dims[1]])));
    Normalized { output, mean: constant(mean), variance: constant(variance) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{reference, TrainOps};
    use burn::tensor::{Distribution, Tolerance};

    type Ad = Autodiff<Flex>;

    fn random<const D: usize>(dims: [usize; D], low: f64, high: f64) -> Tensor<Ad, D> {
        Tensor::random(dims, Distribution::Uniform(low, high), &Default::default())
    }

    #[test]
    fn forward_statistics_and_gradients_match_burns_composition() {
        for (dims, relu) in [([4, 3, 10], true), ([6, 5, 1], true), ([3, 2, 49], false)] {
            let x = random(dims, -2.0, 3.0).require_grad();
            let gamma = random([dims[1]], 0.5, 1.5).require_grad();
            let beta = random([dims[1]], -0.5, 0.5).require_grad();
            let ours = <Ad as TrainOps>::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5, relu);
            let theirs = reference::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5, relu);
            let tol = Tolerance::absolute(1e-4);
            ours.output.clone().into_data().assert_approx_eq::<f32>(&theirs.output.clone().into_data(), tol);
            ours.mean.into_data().assert_approx_eq::<f32>(&theirs.mean.into_data(), tol);
            ours.variance.into_data().assert_approx_eq::<f32>(&theirs.variance.into_data(), tol);
            let probe = random(dims, -1.0, 1.0);
            let g_ours = (ours.output * probe.clone()).sum().backward();
            let g_theirs = (theirs.output * probe).sum().backward();
            for (a, b) in [
                (x.grad(&g_ours).unwrap().flatten::<1>(0, 2), x.grad(&g_theirs).unwrap().flatten::<1>(0, 2)),
                (gamma.grad(&g_ours).unwrap(), gamma.grad(&g_theirs).unwrap()),
                (beta.grad(&g_ours).unwrap(), beta.grad(&g_theirs).unwrap()),
            ] {
                a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-3));
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dims = [3, 2, 4];
        let x: Vec<f32> = (0..24).map(|i| ((i * 17 % 23) as f32 - 11.0) / 5.0).collect();
        let gamma = vec![1.3f32, 0.7];
        let beta = vec![0.2f32, -0.1];
        let probe: Vec<f32> = (0..24).map(|i| ((i * 5 % 13) as f32 - 6.0) / 6.0).collect();
        let objective = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
            let (y, _, _) = forward_train(x, gamma, beta, 1e-5, true, dims);
            y.iter().zip(&probe).map(|(y, p)| (y * p) as f64).sum()
        };
        let (_, saved, _) = forward_train(&x, &gamma, &beta, 1e-5, true, dims);
        let (dx, dg, db) = backward(&x, &probe, &saved);
        let eps = 1e-3f32;
        let check = |name: &str, analytic: &[f32], base: &[f32], f: &dyn Fn(&[f32]) -> f64| {
            for i in 0..base.len() {
                let (mut plus, mut minus) = (base.to_vec(), base.to_vec());
                plus[i] += eps;
                minus[i] -= eps;
                let numeric = (f(&plus) - f(&minus)) / (2.0 * eps as f64);
                let a = analytic[i] as f64;
                assert!(
                    (numeric - a).abs() < 2e-2 * numeric.abs().max(1.0),
                    "d{name}[{i}]: {a} against {numeric}"
                );
            }
        };
        check("x", &dx, &x, &|v| objective(v, &gamma, &beta));
        check("γ", &dg, &gamma, &|v| objective(&x, v, &beta));
        check("β", &db, &beta, &|v| objective(&x, &gamma, v));
    }
}
