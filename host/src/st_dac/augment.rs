//! Data augmentation as the DAC authors used it (Keras' ImageDataGenerator settings): a random rotation,
//! shift and zoom per image, and for Fashion-MNIST a horizontal flip. Each is one affine θ, applied with
//! the spatial transformer's own sampler, so augmentation runs on the training device.

use burn::tensor::{Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::stn::warp;
use crate::ops::TrainOps;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Largest rotation, degrees either way.
    pub rotation_deg: f64,
    /// Largest shift, as a fraction of the width (height) either way.
    pub shift: f64,
    /// Zoom factor range, drawn per axis as Keras does.
    pub zoom: (f64, f64),
    /// Mirror left–right half of the time.
    pub flip: bool,
}

impl Augmentation {
    pub const MNIST: Augmentation =
        Augmentation { rotation_deg: 10.0, shift: 0.1, zoom: (0.95, 1.05), flip: false };
    pub const FASHION_MNIST: Augmentation =
        Augmentation { rotation_deg: 20.0, shift: 0.18, zoom: (0.85, 1.15), flip: true };
    pub const NONE: Augmentation =
        Augmentation { rotation_deg: 0.0, shift: 0.0, zoom: (1.0, 1.0), flip: false };

    /// One θ per image ([n × 6], row-major 2 × 3), mapping output coordinates to input coordinates in
    /// the sampler's [-1, 1] frame.
    pub fn thetas(&self, n: usize, rng: &mut impl Rng) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * 6);
        let uniform =
            |rng: &mut dyn rand::RngCore, a: f64, b: f64| if a < b { rng.random_range(a..b) } else { a };
        for _ in 0..n {
            let angle = uniform(rng, -self.rotation_deg, self.rotation_deg).to_radians();
            // A shift of f of the width is 2f in [-1, 1] coordinates.
            let (tx, ty) =
                (2.0 * uniform(rng, -self.shift, self.shift), 2.0 * uniform(rng, -self.shift, self.shift));
            let (zx, zy) = (uniform(rng, self.zoom.0, self.zoom.1), uniform(rng, self.zoom.0, self.zoom.1));
            let mirror = if self.flip && rng.random::<bool>() { -1.0 } else { 1.0 };
            let (c, s) = (angle.cos(), angle.sin());
            // Rotation × zoom (a zoom factor below 1 samples a smaller area: it enlarges), then mirror x.
            let theta = [c * zx * mirror, -s * zy, tx, s * zx * mirror, c * zy, ty];
            out.extend(theta.iter().map(|&v| v as f32));
        }
        out
    }

    /// Augmented copies of `images` ([N, C, H, W]).
    pub fn apply<B: TrainOps>(&self, images: Tensor<B, 4>, rng: &mut impl Rng) -> Tensor<B, 4> {
        if *self == Self::NONE {
            return images;
        }
        let n = images.dims()[0];
        let theta =
            Tensor::<B, 3>::from_data(TensorData::new(self.thetas(n, rng), [n, 2, 3]), &images.device());
        warp(images, theta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend as Cpu;
    use rand::SeedableRng;

    #[test]
    fn no_augmentation_is_the_identity_and_thetas_stay_in_range() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(Augmentation::NONE.thetas(1, &mut rng), vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let thetas = Augmentation::MNIST.thetas(500, &mut rng);
        for t in thetas.chunks(6) {
            // |shift| ≤ 0.2 in sampler units; the linear part's columns have lengths within the zoom range.
            assert!(t[2].abs() <= 0.2 && t[5].abs() <= 0.2);
            let col_x = (t[0] * t[0] + t[3] * t[3]).sqrt();
            assert!((0.95..=1.05).contains(&col_x), "{t:?}");
        }
    }

    #[test]
    fn augmentation_moves_pixels_but_keeps_the_picture() {
        let device = Default::default();
        let mut pixels = vec![0.0f32; 28 * 28];
        for y in 8..20 {
            for x in 12..16 {
                pixels[y * 28 + x] = 1.0;
            }
        }
        let image = Tensor::<Cpu, 4>::from_data(TensorData::new(pixels.clone(), [1, 1, 28, 28]), &device);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let out: Vec<f32> = Augmentation::MNIST.apply(image, &mut rng).into_data().to_vec().unwrap();
        let (before, after): (f32, f32) = (pixels.iter().sum(), out.iter().sum());
        assert!((after / before - 1.0).abs() < 0.15, "ink roughly conserved: {before} → {after}");
        assert_ne!(out, pixels, "but moved");
    }
}
