//! Spatial transformer (Jaderberg et al. 2015) as the ST-DAC dissertation uses it: a localization net
//! predicts an affine θ per sample, and the feature map is resampled through it.
//!
//! Localization net (dissertation table 5, after Detlefsen et al. 2018): 2×2 maxpool, 5×5 conv 20 tanh,
//! 2×2 maxpool, 5×5 conv 20 tanh, dense 50 tanh, dense 6 (tanh optional). On maps too small for that
//! (14×14 and 7×7 inside the backbone) each convolution's kernel shrinks to the map's size and a pool
//! is skipped once the map is a single pixel, so the net always ends at 20 × 1 × 1 or more.
//!
//! θ = identity + (tanh of) the last layer, which starts at zero: every transformer starts as the
//! identity, with or without the tanh.
//!
//! Sampling convention, the same in training and in the exported graph: `affine_grid_2d` normalises
//! pixel centres so that -1 and 1 are the centres of the corner pixels (align_corners = true); bilinear
//! interpolation; zeros outside the map. The sampler is [`crate::ops::sampler`]'s, with analytic
//! gradients to the map and to θ.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::export::onnx::Layer;
use crate::export::{export_conv, export_dense};
use crate::ops::{self, TrainOps};

/// One stage of the localization net, sized for the map it receives.
#[derive(Module, Debug)]
struct Stage<B: Backend> {
    pool: Option<MaxPool2d>,
    conv: Conv2d<B>,
}

#[derive(Module, Debug)]
pub struct SpatialTransformer<B: Backend> {
    stages: Vec<Stage<B>>,
    hidden: Linear<B>,
    theta: Linear<B>,
    /// Whether θ's last layer goes through tanh (the dissertation's choice).
    #[module(skip)]
    final_tanh: bool,
}

const FILTERS: usize = 20;
const KERNEL: usize = 5;

impl<B: Backend> SpatialTransformer<B> {
    /// A transformer for maps of `channels` × `size` × `size`.
    pub fn new(channels: usize, size: usize, final_tanh: bool, device: &B::Device) -> Self {
        let mut stages = Vec::new();
        let (mut c, mut s) = (channels, size);
        for _ in 0..2 {
            let pool = (s >= 2).then(|| MaxPool2dConfig::new([2, 2]).init());
            if pool.is_some() {
                s /= 2;
            }
            let k = KERNEL.min(s);
            stages.push(Stage { pool, conv: Conv2dConfig::new([c, FILTERS], [k, k]).init(device) });
            (c, s) = (FILTERS, s - k + 1);
        }
        let hidden = LinearConfig::new(c * s * s, 50).init(device);
        let theta = LinearConfig::new(50, 6).with_initializer(Initializer::Zeros).init(device);
        SpatialTransformer { stages, hidden, theta, final_tanh }
    }

    /// The transformer on `height` × `width` maps as an export layer.
    pub fn export_layer(&self, height: usize, width: usize) -> Layer {
        let mut localization = Vec::new();
        for stage in &self.stages {
            if stage.pool.is_some() {
                localization.push(Layer::MaxPool { size: 2 });
            }
            localization.push(export_conv(&stage.conv));
            localization.push(Layer::Tanh);
        }
        localization.extend([
            Layer::Flatten,
            export_dense(&self.hidden),
            Layer::Tanh,
            export_dense(&self.theta),
        ]);
        if self.final_tanh {
            localization.push(Layer::Tanh);
        }
        Layer::SpatialTransformer { localization, height, width }
    }
}

impl<B: TrainOps> SpatialTransformer<B> {
    /// θ for each sample of `x` ([N, C, H, W]), as [N, 2, 3].
    pub fn theta(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let mut h = x;
        for stage in &self.stages {
            if let Some(pool) = &stage.pool {
                h = ops::max_pool2d(pool, h);
            }
            h = ops::tanh(ops::conv2d(&stage.conv, h));
        }
        let h = ops::tanh(self.hidden.forward(h.flatten(1, 3)));
        let mut delta = self.theta.forward(h);
        if self.final_tanh {
            delta = ops::tanh(delta);
        }
        let n = delta.dims()[0];
        let identity = Tensor::<B, 1>::from_floats([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], &delta.device());
        (delta + identity.unsqueeze::<2>()).reshape([n, 2, 3])
    }

    /// The transformed map and θ.
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 3>) {
        let theta = self.theta(x.clone());
        (warp(x, theta.clone()), theta)
    }
}

/// Resamples `x` ([N, C, H, W]) through the affine `theta` ([N, 2, 3]) with the convention above.
pub fn warp<B: TrainOps>(x: Tensor<B, 4>, theta: Tensor<B, 3>) -> Tensor<B, 4> {
    ops::warp(x, theta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend as Cpu, TrainBackend};
    use burn::tensor::{Distribution, TensorData, Tolerance};

    type B = TrainBackend;

    #[test]
    fn a_new_transformer_is_the_identity() {
        let device = Default::default();
        for (channels, size) in [(1, 28), (128, 14), (256, 7)] {
            let stn = SpatialTransformer::<Cpu>::new(channels, size, true, &device);
            let x = Tensor::<Cpu, 4>::random([2, channels, size, size], Distribution::Default, &device);
            let (y, theta) = stn.forward(x.clone());
            let identity = Tensor::<Cpu, 3>::from_floats([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]; 2], &device);
            theta.into_data().assert_approx_eq::<f32>(&identity.into_data(), Tolerance::absolute(1e-7));
            // align_corners = true puts the grid exactly on the pixel centres: the identity copies.
            y.into_data().assert_approx_eq::<f32>(&x.into_data(), Tolerance::absolute(1e-5));
        }
    }

    /// Σ w ⊙ warp(x, θ) for fixed weights w, on the plain backend.
    fn objective(x: &[f32], theta: &[f32], w: &[f32], dims: [usize; 4]) -> f64 {
        let device = Default::default();
        let x = Tensor::<Cpu, 4>::from_data(TensorData::new(x.to_vec(), dims), &device);
        let w = Tensor::<Cpu, 4>::from_data(TensorData::new(w.to_vec(), dims), &device);
        let theta = Tensor::<Cpu, 3>::from_data(TensorData::new(theta.to_vec(), [dims[0], 2, 3]), &device);
        (warp(x, theta) * w).sum().into_scalar() as f64
    }

    /// Distance (in input pixels) from the nearest sampling position to a pixel boundary, where
    /// bilinear interpolation has a kink and finite differences would straddle it.
    fn kink_clearance(theta: &[f32], dims: [usize; 4]) -> f32 {
        let [n, _, h, w] = dims;
        let mut clearance = f32::INFINITY;
        for s in 0..n {
            let t = &theta[s * 6..s * 6 + 6];
            for i in 0..h {
                for j in 0..w {
                    let (gx, gy) =
                        (-1.0 + 2.0 * j as f32 / (w - 1) as f32, -1.0 + 2.0 * i as f32 / (h - 1) as f32);
                    let px = (t[0] * gx + t[1] * gy + t[2] + 1.0) * (w - 1) as f32 / 2.0;
                    let py = (t[3] * gx + t[4] * gy + t[5] + 1.0) * (h - 1) as f32 / 2.0;
                    for p in [px, py] {
                        clearance = clearance.min((p - p.round()).abs());
                    }
                }
            }
        }
        clearance
    }

    #[test]
    fn gradients_reach_theta_and_the_input_as_finite_differences_say() {
        // burn's sampler backward is untested upstream: check it against central differences.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let dims = [2, 2, 7, 9];
        let size: usize = dims.iter().product();
        let x0: Vec<f32> = (0..size).map(|_| rng.random::<f32>()).collect();
        let w: Vec<f32> = (0..size).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        // Off the identity, so samples fall between pixels, and drawn until no sample sits within 0.005
        // pixel of a pixel boundary, so that the finite differences below never straddle a kink.
        let base = [0.93f32, 0.11, 0.07, -0.09, 1.04, -0.05, 1.1, -0.13, -0.02, 0.08, 0.87, 0.12];
        let theta0 = (0..10_000)
            .map(|_| base.iter().map(|b| b + rng.random_range(-0.05..0.05f32)).collect::<Vec<f32>>())
            .find(|t| kink_clearance(t, dims) >= 0.005)
            .expect("a kink-free θ near the base one");
        let device = Default::default();
        let x = Tensor::<B, 4>::from_data(TensorData::new(x0.clone(), dims), &device).require_grad();
        let theta =
            Tensor::<B, 3>::from_data(TensorData::new(theta0.clone(), [2, 2, 3]), &device).require_grad();
        let w_ad = Tensor::<B, 4>::from_data(TensorData::new(w.clone(), dims), &device);
        let grads = (warp(x.clone(), theta.clone()) * w_ad).sum().backward();
        let g_theta: Vec<f32> = theta.grad(&grads).expect("θ gets a gradient").into_data().to_vec().unwrap();
        let g_x: Vec<f32> = x.grad(&grads).expect("the input gets a gradient").into_data().to_vec().unwrap();

        // A step of 2e-4 in θ moves a sample by at most 2e-4 × 1 × 4 = 0.0008 pixel: within the clearance.
        let eps = 2e-4f32;
        for i in 0..theta0.len() {
            let (mut plus, mut minus) = (theta0.clone(), theta0.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let numeric =
                (objective(&x0, &plus, &w, dims) - objective(&x0, &minus, &w, dims)) / (2.0 * eps as f64);
            let analytic = g_theta[i] as f64;
            assert!(
                (numeric - analytic).abs() <= 1e-2 * numeric.abs().max(1.0),
                "dθ[{i}]: autodiff {analytic}, finite differences {numeric}"
            );
        }
        // The output is linear in x: finite differences are exact up to rounding.
        for i in (0..x0.len()).step_by(5) {
            let (mut plus, mut minus) = (x0.clone(), x0.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let numeric = (objective(&plus, &theta0, &w, dims) - objective(&minus, &theta0, &w, dims))
                / (2.0 * eps as f64);
            assert!(
                (numeric - g_x[i] as f64).abs() < 2e-2,
                "dx[{i}]: autodiff {}, finite differences {numeric}",
                g_x[i]
            );
        }
    }
}
