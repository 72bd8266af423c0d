//! The 2 × 2 max-pool with stride 2 (every pool of both networks and of the transformers' localization
//! nets), forward and backward.
//!
//! Each output is the largest of its window's four values; an odd last row or column is left out
//! (floor). Backward sends each output's gradient to that value, the first of them in row-major order
//! on a tie (burn's rule; ties are common after a ReLU), found again from the input rather than kept
//! as indices. burn-flex's own pool is a general one (any kernel, padding, dilation, three dimensions,
//! with indices under autodiff) and took a sixth of an edge-network step in a profile
//! (models/RESULTS.md); this one is a single pass over the map. Planes are spread over the threads.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{autodiff_parts, from_flex, into_flex, recorded, tensor_of, values, zeros};

/// [N, C, H, W] of the input.
type Dims = [usize; 4];

fn pooled([n, c, h, w]: Dims) -> Dims {
    assert!(h >= 2 && w >= 2, "a 2 × 2 pool over a {h} × {w} map");
    [n, c, h / 2, w / 2]
}

/// Planes per parallel task: enough work per task for the small late maps.
fn planes_per_task(plane: usize) -> usize {
    (4096 / plane.max(1)).max(1)
}

/// The rows of output row `oy` on one plane of width `w`: the window's top and bottom input rows, cut
/// to the `2 · ow` columns the pool reads.
#[inline]
fn rows(plane: &[f32], w: usize, ow: usize, oy: usize) -> (&[f32], &[f32]) {
    (&plane[2 * oy * w..][..2 * ow], &plane[(2 * oy + 1) * w..][..2 * ow])
}

/// For a window's four values (top-left, top-right, bottom-left, bottom-right): which one is the first
/// largest in that order, as a mask. Written without branches: on ReLU outputs the winner is random.
#[inline]
fn first_largest(v: [f32; 4]) -> [bool; 4] {
    let m = v[0].max(v[1]).max(v[2].max(v[3]));
    let a = v[0] == m;
    let b = !a & (v[1] == m);
    let c = !a & !b & (v[2] == m);
    [a, b, c, !a & !b & !c]
}

pub fn forward(x: &[f32], dims: Dims) -> Vec<f32> {
    let [_, _, h, w] = dims;
    let [n, c, oh, ow] = pooled(dims);
    let mut out = zeros(n * c * oh * ow);
    let per_task = planes_per_task(h * w);
    out.par_chunks_mut(per_task * oh * ow).zip(x.par_chunks(per_task * h * w)).for_each(|(out, x)| {
        for (out, plane) in out.chunks_mut(oh * ow).zip(x.chunks(h * w)) {
            for (oy, out) in out.chunks_mut(ow).enumerate() {
                let (top, bottom) = rows(plane, w, ow, oy);
                for ((o, t), b) in out.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                    *o = t[0].max(t[1]).max(b[0].max(b[1]));
                }
            }
        }
    });
    out
}

/// The input's gradient from the output's gradient `dy`.
pub fn backward(x: &[f32], dy: &[f32], dims: Dims) -> Vec<f32> {
    let [_, _, h, w] = dims;
    let [_, _, oh, ow] = pooled(dims);
    let mut dx = zeros(x.len());
    let per_task = planes_per_task(h * w);
    let tasks = dx.par_chunks_mut(per_task * h * w).zip(x.par_chunks(per_task * h * w));
    tasks.zip(dy.par_chunks(per_task * oh * ow)).for_each(|((dx, x), dy)| {
        for ((dx, plane), dy) in dx.chunks_mut(h * w).zip(x.chunks(h * w)).zip(dy.chunks(oh * ow)) {
            for (oy, dy) in dy.chunks(ow).enumerate() {
                let (top, bottom) = rows(plane, w, ow, oy);
                let (dx_top, rest) = dx[2 * oy * w..].split_at_mut(w);
                let (dx_top, dx_bottom) = (&mut dx_top[..2 * ow], &mut rest[..2 * ow]);
                let outputs = dy.iter().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2));
                let grads = dx_top.chunks_exact_mut(2).zip(dx_bottom.chunks_exact_mut(2));
                for (((g, t), b), (dt, db)) in outputs.zip(grads) {
                    let [k0, k1, k2, k3] = first_largest([t[0], t[1], b[0], b[1]]);
                    let pass = |k: bool| if k { *g } else { 0.0 };
                    (dt[0], dt[1], db[0], db[1]) = (pass(k0), pass(k1), pass(k2), pass(k3));
                }
            }
        }
    });
    dx
}

fn dims_of(t: &FlexTensor) -> Dims {
    t.layout().shape().dims()
}

pub(super) fn flex(x: Tensor<Flex, 4>) -> Tensor<Flex, 4> {
    let x = into_flex(x);
    let dims = dims_of(&x);
    from_flex(tensor_of(forward(&values(&x), dims), pooled(dims)))
}

#[derive(Debug)]
struct PoolBackward;

impl Backward<Flex, 1> for PoolBackward {
    /// The input.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let dims = dims_of(&x);
        if let [Some(node)] = ops.parents {
            grads.register::<Flex>(node.id, tensor_of(backward(&values(&x), &values(&dy), dims), dims));
        }
    }
}

pub(super) fn autodiff(x: Tensor<Autodiff<Flex>, 4>) -> Tensor<Autodiff<Flex>, 4> {
    let x = autodiff_parts(x);
    let dims = dims_of(&x.primitive);
    let y = tensor_of(forward(&values(&x.primitive), dims), pooled(dims));
    let prep = PoolBackward.prepare::<NoCheckpointing>([x.node]).compute_bound().stateful();
    recorded(prep, x.primitive, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{reference, TrainOps};
    use burn::tensor::{Distribution, TensorData, Tolerance};

    type Ad = Autodiff<Flex>;

    #[test]
    fn forward_and_gradient_match_burns_pool() {
        let device = Default::default();
        // Even and odd sizes, one plane per task and many.
        for dims in [[3, 4, 8, 6], [2, 5, 7, 7], [1, 2, 28, 28], [2, 3, 3, 2]] {
            let x = Tensor::<Ad, 4>::random(dims, Distribution::Uniform(-1.0, 1.0), &device).require_grad();
            let ours = <Ad as TrainOps>::max_pool2x2(x.clone());
            let theirs = reference::max_pool2x2(x.clone());
            ours.clone()
                .into_data()
                .assert_approx_eq::<f32>(&theirs.clone().into_data(), Tolerance::absolute(0.0));
            let probe = Tensor::<Ad, 4>::random(ours.dims(), Distribution::Uniform(-1.0, 1.0), &device);
            let g_ours = (ours * probe.clone()).sum().backward();
            let g_theirs = (theirs * probe).sum().backward();
            let (a, b) = (x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap());
            a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(0.0));
        }
    }

    #[test]
    fn a_tie_sends_the_gradient_to_the_first_value_as_burn_does() {
        let device = Default::default();
        let x =
            Tensor::<Ad, 4>::from_data(TensorData::new(vec![1.0f32, 3.0, 3.0, 3.0], [1, 1, 2, 2]), &device)
                .require_grad();
        let y = <Ad as TrainOps>::max_pool2x2(x.clone());
        let theirs = reference::max_pool2x2(x.clone());
        let (g, g_theirs) = (y.sum().backward(), theirs.sum().backward());
        let grad = x.grad(&g).unwrap().into_data();
        assert_eq!(grad.to_vec::<f32>().unwrap(), vec![0.0, 1.0, 0.0, 0.0]);
        assert_eq!(grad, x.grad(&g_theirs).unwrap().into_data());
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dims = [2, 3, 5, 6];
        let size: usize = dims.iter().product();
        // Distinct values, so no window has a tie that a small step could flip.
        let x: Vec<f32> = (0..size).map(|i| ((i * 37 % 181) as f32) / 181.0).collect();
        let outputs: usize = pooled(dims).iter().product();
        let probe: Vec<f32> = (0..outputs).map(|i| ((i * 11 % 19) as f32 - 9.0) / 9.0).collect();
        let objective =
            |x: &[f32]| -> f64 { forward(x, dims).iter().zip(&probe).map(|(y, p)| (y * p) as f64).sum() };
        let dx = backward(&x, &probe, dims);
        let eps = 1e-3f32;
        for i in 0..size {
            let (mut plus, mut minus) = (x.clone(), x.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let numeric = (objective(&plus) - objective(&minus)) / (2.0 * eps as f64);
            assert!((numeric - dx[i] as f64).abs() < 1e-3, "dx[{i}]: {} against {numeric}", dx[i]);
        }
    }
}
