//! The spatial transformer's sampler: a map resampled through an affine θ per image (bilinear, zeros
//! outside, align_corners = true), with analytic gradients to the map and to θ.
//!
//! Output pixel (i, j) sits at g = (−1 + 2j/(W−1), −1 + 2i/(H−1)) and reads the input at
//! s = θ·(gₓ, g_y, 1), in pixels p = (s + 1)(size − 1)/2, bilinearly from its four neighbours. Backward:
//! each neighbour receives its weight times the output's gradient; ∂p is the output's gradient times
//! the interpolation's slope along each axis, summed over channels, and ∂θ = ∂s·(gₓ, g_y, 1)ᵀ. Images
//! are spread over the threads, each writing only its own gradients.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{autodiff_parts, from_flex, into_flex, recorded, tensor_of, values, zeros};

/// [N, C, H, W].
type Dims = [usize; 4];

/// The grid coordinate of index `i` on an axis of `size` pixels.
fn grid(i: usize, size: usize) -> f32 {
    if size > 1 {
        -1.0 + 2.0 * i as f32 / (size - 1) as f32
    } else {
        0.0
    }
}

/// Where one output pixel reads: its four neighbours (row-major index into the plane, or None outside)
/// and their weights, plus what the backward pass needs.
struct Tap {
    index: [Option<usize>; 4],
    weight: [f32; 4],
    /// The fractional parts along x and y.
    fx: f32,
    fy: f32,
    gx: f32,
    gy: f32,
}

fn tap(theta: &[f32], i: usize, j: usize, h: usize, w: usize) -> Tap {
    let (gx, gy) = (grid(j, w), grid(i, h));
    let sx = theta[0] * gx + theta[1] * gy + theta[2];
    let sy = theta[3] * gx + theta[4] * gy + theta[5];
    let px = (sx + 1.0) * (w - 1) as f32 / 2.0;
    let py = (sy + 1.0) * (h - 1) as f32 / 2.0;
    let (x0, y0) = (px.floor(), py.floor());
    let (fx, fy) = (px - x0, py - y0);
    let (x0, y0) = (x0 as isize, y0 as isize);
    let at = |y: isize, x: isize| {
        (y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w).then(|| y as usize * w + x as usize)
    };
    Tap {
        // Neighbours in the order (y0, x0), (y0, x1), (y1, x0), (y1, x1).
        index: [at(y0, x0), at(y0, x0 + 1), at(y0 + 1, x0), at(y0 + 1, x0 + 1)],
        weight: [(1.0 - fy) * (1.0 - fx), (1.0 - fy) * fx, fy * (1.0 - fx), fy * fx],
        fx,
        fy,
        gx,
        gy,
    }
}

/// `x` ([N, C, H, W]) resampled through `theta` ([N, 6], row-major 2 × 3 per image).
pub fn forward(x: &[f32], theta: &[f32], [n, c, h, w]: Dims) -> Vec<f32> {
    let plane = h * w;
    let mut out = zeros(n * c * plane);
    out.par_chunks_mut(c * plane).enumerate().for_each(|(img, out)| {
        let t = &theta[img * 6..img * 6 + 6];
        let taps: Vec<Tap> = (0..plane).map(|p| tap(t, p / w, p % w, h, w)).collect();
        for (out, x) in out.chunks_mut(plane).zip(x[img * c * plane..(img + 1) * c * plane].chunks(plane)) {
            for (o, tap) in out.iter_mut().zip(&taps) {
                *o = tap.index.iter().zip(tap.weight).map(|(i, wt)| i.map_or(0.0, |i| x[i] * wt)).sum();
            }
        }
    });
    out
}

/// The gradients of the map ([N, C, H, W]) and of θ ([N, 6]) from the output's gradient `dy`.
pub fn backward(x: &[f32], theta: &[f32], dy: &[f32], [n, c, h, w]: Dims) -> (Vec<f32>, Vec<f32>) {
    let plane = h * w;
    let mut dx = zeros(n * c * plane);
    let mut dtheta = vec![0.0f32; n * 6];
    let (half_w, half_h) = ((w - 1) as f32 / 2.0, (h - 1) as f32 / 2.0);
    dx.par_chunks_mut(c * plane).zip(dtheta.par_chunks_mut(6)).enumerate().for_each(|(img, (dx, dt))| {
        let t = &theta[img * 6..img * 6 + 6];
        let (x, dy) =
            (&x[img * c * plane..(img + 1) * c * plane], &dy[img * c * plane..(img + 1) * c * plane]);
        let mut sums = [0.0f64; 6];
        for p in 0..plane {
            let tap = tap(t, p / w, p % w, h, w);
            let (mut dpx, mut dpy) = (0.0f32, 0.0f32);
            for ch in 0..c {
                let base = ch * plane;
                let g = dy[base + p];
                let v = tap.index.map(|i| i.map_or(0.0, |i| x[base + i]));
                for (i, wt) in tap.index.iter().zip(tap.weight) {
                    if let Some(i) = i {
                        dx[base + i] += g * wt;
                    }
                }
                dpx += g * ((v[1] - v[0]) * (1.0 - tap.fy) + (v[3] - v[2]) * tap.fy);
                dpy += g * ((v[2] - v[0]) * (1.0 - tap.fx) + (v[3] - v[1]) * tap.fx);
            }
            let (dsx, dsy) = ((dpx * half_w) as f64, (dpy * half_h) as f64);
            let (gx, gy) = (tap.gx as f64, tap.gy as f64);
            for (s, d) in sums.iter_mut().zip([dsx * gx, dsx * gy, dsx, dsy * gx, dsy * gy, dsy]) {
                *s += d;
            }
        }
        dt.iter_mut().zip(sums).for_each(|(d, s)| *d = s as f32);
    });
    (dx, dtheta)
}

fn dims_of(t: &FlexTensor) -> Dims {
    t.layout().shape().dims()
}

pub(super) fn flex(x: Tensor<Flex, 4>, theta: Tensor<Flex, 3>) -> Tensor<Flex, 4> {
    let (x, theta) = (into_flex(x), into_flex(theta));
    let dims = dims_of(&x);
    from_flex(tensor_of(forward(&values(&x), &values(&theta), dims), dims))
}

#[derive(Debug)]
struct SamplerBackward;

impl Backward<Flex, 2> for SamplerBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, theta) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let dims = dims_of(&x);
        let (dx, dtheta) = backward(&values(&x), &values(&theta), &values(&dy), dims);
        let [px, pt] = ops.parents;
        if let Some(node) = px {
            grads.register::<Flex>(node.id, tensor_of(dx, dims));
        }
        if let Some(node) = pt {
            grads.register::<Flex>(node.id, tensor_of(dtheta, [dims[0], 2, 3]));
        }
    }
}

pub(super) fn autodiff(
    x: Tensor<Autodiff<Flex>, 4>,
    theta: Tensor<Autodiff<Flex>, 3>,
) -> Tensor<Autodiff<Flex>, 4> {
    let (x, theta) = (autodiff_parts(x), autodiff_parts(theta));
    let dims = dims_of(&x.primitive);
    let y = tensor_of(forward(&values(&x.primitive), &values(&theta.primitive), dims), dims);
    let prep = SamplerBackward.prepare::<NoCheckpointing>([x.node, theta.node]).compute_bound().stateful();
    recorded(prep, (x.primitive, theta.primitive), y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{reference, TrainOps};
    use burn::tensor::{Distribution, TensorData, Tolerance};

    type Ad = Autodiff<Flex>;

    /// θ near `base`, each drawn until no sample falls within `clearance` pixels of a pixel boundary
    /// (where bilinear interpolation has a kink that finite differences would straddle).
    fn kink_free_theta(base: &[f32], dims: Dims, clearance: f32, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let [n, _, h, w] = dims;
        (0..10_000)
            .map(|_| base.iter().map(|b| b + rng.random_range(-0.05..0.05f32)).collect::<Vec<f32>>())
            .find(|theta| {
                (0..n * h * w).all(|q| {
                    let t = tap(&theta[(q / (h * w)) * 6..][..6], (q % (h * w)) / w, q % w, h, w);
                    [t.fx, t.fy].iter().all(|f| f.min(1.0 - f) >= clearance)
                })
            })
            .expect("a kink-free θ near the base one")
    }

    fn objective(x: &[f32], theta: &[f32], probe: &[f32], dims: Dims) -> f64 {
        forward(x, theta, dims).iter().zip(probe).map(|(y, p)| (y * p) as f64).sum()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dims = [2, 3, 7, 9];
        let size: usize = dims.iter().product();
        let x: Vec<f32> = (0..size).map(|i| ((i * 37 % 101) as f32) / 101.0).collect();
        let probe: Vec<f32> = (0..size).map(|i| ((i * 11 % 19) as f32 - 9.0) / 9.0).collect();
        // Off the identity (samples between pixels, some outside the map).
        let base = [0.93f32, 0.11, 0.07, -0.09, 1.04, -0.05, 1.1, -0.13, -0.02, 0.08, 0.87, 0.12];
        let theta = kink_free_theta(&base, dims, 0.005, 3);
        let (dx, dtheta) = backward(&x, &theta, &probe, dims);
        // 2e-4 in θ moves a sample by at most 2e-4 · 3 · 4 pixels: inside the clearance.
        let eps = 2e-4f32;
        for i in 0..theta.len() {
            let (mut plus, mut minus) = (theta.clone(), theta.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let numeric = (objective(&x, &plus, &probe, dims) - objective(&x, &minus, &probe, dims))
                / (2.0 * eps as f64);
            let analytic = dtheta[i] as f64;
            assert!(
                (numeric - analytic).abs() <= 1e-2 * numeric.abs().max(1.0),
                "dθ[{i}]: {analytic} against {numeric}"
            );
        }
        // Linear in x: differences are exact up to rounding.
        for i in (0..size).step_by(7) {
            let (mut plus, mut minus) = (x.clone(), x.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let numeric = (objective(&plus, &theta, &probe, dims) - objective(&minus, &theta, &probe, dims))
                / (2.0 * eps as f64);
            assert!((numeric - dx[i] as f64).abs() < 2e-2, "dx[{i}]: {} against {numeric}", dx[i]);
        }
    }

    #[test]
    fn forward_and_gradients_match_burns_sampler() {
        let device = Default::default();
        let dims = [3, 4, 14, 14];
        // Rotations, zooms in and out, shifts that move part of the map outside.
        let theta: Vec<f32> = [
            [0.9f32, 0.2, 0.1, -0.15, 1.1, -0.2],
            [1.2, 0.0, 0.4, 0.0, 0.8, 0.3],
            [0.7, -0.3, -0.1, 0.3, 0.7, 0.05],
        ]
        .concat();
        let x = Tensor::<Ad, 4>::random(dims, Distribution::Uniform(0.0, 1.0), &device).require_grad();
        let t = Tensor::<Ad, 3>::from_data(TensorData::new(theta, [3, 2, 3]), &device).require_grad();
        let ours = <Ad as TrainOps>::warp(x.clone(), t.clone());
        let theirs = reference::warp(x.clone(), t.clone());
        ours.clone()
            .into_data()
            .assert_approx_eq::<f32>(&theirs.clone().into_data(), Tolerance::absolute(1e-5));
        let probe = Tensor::<Ad, 4>::random(dims, Distribution::Uniform(-1.0, 1.0), &device);
        let g_ours = (ours * probe.clone()).sum().backward();
        let g_theirs = (theirs * probe).sum().backward();
        x.grad(&g_ours)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&x.grad(&g_theirs).unwrap().into_data(), Tolerance::absolute(1e-4));
        let (a, b) = (t.grad(&g_ours).unwrap(), t.grad(&g_theirs).unwrap());
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(1e-3, 1e-3));
    }
}
