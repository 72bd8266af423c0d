//! What the autoencoders minimise: the reconstruction error, plus a sparsity penalty (sparse), the KL
//! term (variational) or DCN's k-means term; and how a denoising autoencoder corrupts its input.
//!
//! Every term is a sum over a sample's features (or code units), averaged over the batch, so that the
//! reconstruction error and the KL term weigh as in the VAE's evidence bound.

use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

/// A sparse autoencoder's penalty on its code.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Sparsity {
    /// `weight` × Σ|zⱼ|: an L1 penalty on the activity of the code.
    L1 { weight: f64 },
    /// `weight` × Σⱼ KL(ρ ‖ ρ̂ⱼ), ρ̂ⱼ being the batch's mean of sigmoid(zⱼ): each unit is pushed to be
    /// active (near 1) for a share `target` of the samples only.
    Kl { target: f64, weight: f64 },
}

/// How a denoising autoencoder corrupts its input (its loss is taken against the clean input).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Noise {
    /// Adds N(0, std²) to every feature.
    Gaussian { std: f64 },
    /// Sets each feature to 0 with probability `fraction`.
    Masking { fraction: f64 },
}

impl Noise {
    /// A corrupted copy of `x`, drawn from the backend's (seeded) generator.
    pub fn apply<B: Backend>(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let device = x.device();
        match *self {
            Noise::Gaussian { std } => {
                x.clone() + Tensor::random(x.shape(), Distribution::Normal(0.0, std), &device)
            }
            Noise::Masking { fraction } => {
                let keep =
                    Tensor::<B, 2>::random(x.shape(), Distribution::Bernoulli(1.0 - fraction), &device);
                x * keep
            }
        }
    }
}

/// Σ over features of the squared error, averaged over the batch: [1].
pub fn reconstruction_error<B: Backend>(reconstruction: Tensor<B, 2>, clean: Tensor<B, 2>) -> Tensor<B, 1> {
    (reconstruction - clean).powf_scalar(2.0).sum_dim(1).mean()
}

/// The sparsity penalty of a batch of codes: [1].
pub fn sparsity_penalty<B: Backend>(code: Tensor<B, 2>, sparsity: Sparsity) -> Tensor<B, 1> {
    match sparsity {
        Sparsity::L1 { weight } => code.abs().sum_dim(1).mean() * weight,
        Sparsity::Kl { target, weight } => {
            // Clamped so that a unit always on (or off) gives a large, finite penalty.
            let rho_hat = sigmoid(code).mean_dim(0).clamp(1e-6, 1.0 - 1e-6); // [1, latent]
            let (rho, one_minus) = (target, 1.0 - target);
            let kl = (rho_hat.clone().recip() * rho).log() * rho
                + ((rho_hat.neg() + 1.0).recip() * one_minus).log() * one_minus;
            kl.sum() * weight
        }
    }
}

/// KL(q(z|x) ‖ N(0, I)) = −½ Σⱼ (1 + log σⱼ² − μⱼ² − σⱼ²), averaged over the batch: [1].
pub fn kl_divergence<B: Backend>(mean: Tensor<B, 2>, log_var: Tensor<B, 2>) -> Tensor<B, 1> {
    let terms = log_var.clone() + 1.0 - mean.powf_scalar(2.0) - log_var.exp();
    terms.sum_dim(1).mean() * -0.5
}

/// DCN's clustering term: (λ/2)·‖zᵢ − c(sᵢ)‖², averaged over the batch, `assigned` holding each
/// sample's current centroid (a constant): [1].
pub fn kmeans_term<B: Backend>(code: Tensor<B, 2>, assigned: Tensor<B, 2>, lambda: f64) -> Tensor<B, 1> {
    (code - assigned).powf_scalar(2.0).sum_dim(1).mean() * (lambda / 2.0)
}

/// A scalar tensor's value.
pub fn value<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_scalar().elem()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend as Cpu;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-5, "{a} ≠ {b}");
    }

    #[test]
    fn reconstruction_error_sums_features_and_averages_samples() {
        let d = Default::default();
        let r = Tensor::<Cpu, 2>::from_floats([[1.0, 2.0], [0.0, 0.0]], &d);
        let x = Tensor::<Cpu, 2>::from_floats([[0.0, 0.0], [0.0, 3.0]], &d);
        // (1 + 4 + 0 + 9) / 2
        close(value(&reconstruction_error(r, x)), 7.0);
    }

    #[test]
    fn the_kl_term_is_zero_at_the_prior_and_matches_the_closed_form() {
        let d = Default::default();
        let zeros = Tensor::<Cpu, 2>::zeros([3, 4], &d);
        close(value(&kl_divergence(zeros.clone(), zeros)), 0.0);
        // μ = 1, σ² = e: −½ (1 + 1 − 1 − e) per unit, two units.
        let mean = Tensor::<Cpu, 2>::ones([1, 2], &d);
        let log_var = Tensor::<Cpu, 2>::ones([1, 2], &d);
        close(value(&kl_divergence(mean, log_var)), -(2.0 - 1.0 - std::f64::consts::E));
    }

    #[test]
    fn the_sparsity_penalties_match_their_definitions() {
        let d = Default::default();
        let code = Tensor::<Cpu, 2>::from_floats([[1.0, -2.0], [0.0, 3.0]], &d);
        close(value(&sparsity_penalty(code.clone(), Sparsity::L1 { weight: 0.5 })), 0.5 * 6.0 / 2.0);
        // Codes of zero give ρ̂ = ½ per unit.
        let half = Tensor::<Cpu, 2>::zeros([4, 3], &d);
        let (rho, hat) = (0.05f64, 0.5f64);
        let kl = rho * (rho / hat).ln() + (1.0 - rho) * ((1.0 - rho) / (1.0 - hat)).ln();
        close(value(&sparsity_penalty(half, Sparsity::Kl { target: rho, weight: 2.0 })), 2.0 * 3.0 * kl);
        // A unit active at exactly the target share costs nothing.
        let at_target = Tensor::<Cpu, 2>::full([2, 1], (rho / (1.0 - rho)).ln(), &d);
        close(value(&sparsity_penalty(at_target, Sparsity::Kl { target: rho, weight: 1.0 })), 0.0);
    }

    #[test]
    fn the_kmeans_term_is_half_lambda_times_the_squared_distance() {
        let d = Default::default();
        let z = Tensor::<Cpu, 2>::from_floats([[1.0, 1.0], [0.0, 0.0]], &d);
        let c = Tensor::<Cpu, 2>::from_floats([[0.0, 1.0], [0.0, 2.0]], &d);
        close(value(&kmeans_term(z, c, 3.0)), 1.5 * (1.0 + 4.0) / 2.0);
    }

    #[test]
    fn noise_corrupts_as_configured() {
        let d = Default::default();
        <Cpu as Backend>::seed(&d, 7);
        let x = Tensor::<Cpu, 2>::ones([100, 100], &d);
        let masked: Vec<f32> =
            Noise::Masking { fraction: 0.3 }.apply(x.clone()).into_data().to_vec().unwrap();
        let zeros = masked.iter().filter(|&&v| v == 0.0).count() as f64 / masked.len() as f64;
        assert!((zeros - 0.3).abs() < 0.03, "{zeros} of the features masked");
        assert!(masked.iter().all(|&v| v == 0.0 || v == 1.0));
        let noisy: Vec<f32> = Noise::Gaussian { std: 0.5 }.apply(x).into_data().to_vec().unwrap();
        let n = noisy.len() as f64;
        let mean = noisy.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (noisy.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((mean - 1.0).abs() < 0.02 && (std - 0.5).abs() < 0.02, "mean {mean}, std {std}");
    }
}
