//! DAC*'s self-labelling: which pairs of images a batch teaches as "same cluster" or "different
//! cluster", and the loss that teaches them.
//!
//! Labels come from the network's own predictions on the clean images (made before the step); the loss
//! is taken on its outputs for the augmented images. With unit, non-negative outputs, the dot product of
//! two outputs lies in [0, 1] and is read as the probability that they share a cluster.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

/// How pairs are selected over training. Two published variants disagree; both are here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Selection {
    /// The dissertation's text: pairs above `upper` are positive, below `lower` negative, the rest left
    /// out; the two thresholds close linearly, epoch by epoch, until they meet halfway.
    Text,
    /// The authors' published code: one threshold, from `upper` down to `lower` in equal steps over the
    /// schedule; every pair is labelled; plus 10 × the cross-entropy of each output toward its own
    /// prediction on the clean image.
    Code,
    /// The original DAC: u(λ) = 0.95 − λ, l(λ) = 0.455 + 0.1λ, λ raised by gradient descent on
    /// u(λ) − l(λ) at every step until l passes u.
    Learned,
}

/// Pair-selection thresholds in force: similar above `upper`, dissimilar at or below `lower`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub upper: f64,
    pub lower: f64,
}

/// The schedule of the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub selection: Selection,
    /// Starting thresholds (ignored by `Learned`, which starts at λ = 0).
    pub start: Thresholds,
    /// Epochs over which the thresholds move (text, code).
    pub epochs: usize,
    /// Step size of λ (learned).
    pub eta: f64,
}

impl Schedule {
    /// The thresholds for an epoch (text, code) or after `lambda` has grown (learned).
    pub fn thresholds(&self, epoch: usize, lambda: f64) -> Thresholds {
        let Thresholds { upper, lower } = self.start;
        let progress = (epoch as f64 / self.epochs.max(1) as f64).min(1.0);
        match self.selection {
            Selection::Text => {
                let middle = (upper + lower) / 2.0;
                Thresholds {
                    upper: upper - (upper - middle) * progress,
                    lower: lower + (middle - lower) * progress,
                }
            }
            Selection::Code => {
                let t = upper - (upper - lower) * progress;
                Thresholds { upper: t, lower: t }
            }
            Selection::Learned => Thresholds { upper: 0.95 - lambda, lower: 0.455 + 0.1 * lambda },
        }
    }

    /// λ after one step of gradient descent on E(λ) = u(λ) − l(λ), whose derivative is −1.1.
    pub fn step_lambda(&self, lambda: f64) -> f64 {
        if self.selection == Selection::Learned {
            lambda + self.eta * 1.1
        } else {
            lambda
        }
    }

    /// Whether the learned schedule has run its course (l > u): training stops there, as in DAC.
    pub fn finished(&self, lambda: f64) -> bool {
        let t = self.thresholds(0, lambda);
        self.selection == Selection::Learned && t.lower > t.upper
    }
}

/// The loss of a batch and what it selected.
pub struct PairLoss<B: Backend> {
    pub loss: Tensor<B, 1>,
    /// Share of the batch's pairs that were labelled.
    pub selected: f64,
    /// Share of the batch's pairs labelled "same cluster".
    pub positive: f64,
}

const EPS: f64 = 1e-7;

/// Binary cross-entropy on the pair matrix of `outputs` ([N, k], with gradients), against the labels
/// that `thresholds` give to the pair matrix of `targets` ([N, k], the predictions before the step).
/// `self_weight` > 0 adds that many times the cross-entropy of each output toward its target.
pub fn pair_loss<B: Backend>(
    outputs: Tensor<B, 2>,
    targets: Tensor<B, 2>,
    thresholds: Thresholds,
    self_weight: f64,
) -> PairLoss<B> {
    let similarity = outputs.clone().matmul(outputs.clone().transpose()).clamp(EPS, 1.0 - EPS);
    let target_similarity = targets.clone().matmul(targets.clone().transpose());
    let positive = target_similarity.clone().greater_elem(thresholds.upper).float();
    let negative = target_similarity.lower_equal_elem(thresholds.lower).float();
    let pairs = (outputs.dims()[0] * outputs.dims()[0]) as f64;
    let positive_share = positive.clone().sum().into_scalar().elem::<f64>() / pairs;
    let count = (positive.clone() + negative.clone()).sum();
    let selected = count.clone().into_scalar().elem::<f64>() / pairs;

    let bce = -(positive * similarity.clone().log() + negative * (similarity.neg() + 1.0).log());
    let mut loss = bce.sum() / count.clamp_min(1.0);
    if self_weight > 0.0 {
        let out = outputs.clamp(EPS, 1.0 - EPS);
        let own = -(targets.clone() * out.clone().log() + (targets.neg() + 1.0) * (out.neg() + 1.0).log());
        loss = loss + own.mean() * self_weight;
    }
    PairLoss { loss, selected, positive: positive_share }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend as Cpu;

    fn schedule(selection: Selection) -> Schedule {
        Schedule { selection, start: Thresholds { upper: 0.99, lower: 0.9 }, epochs: 10, eta: 0.009 }
    }

    #[test]
    fn text_thresholds_close_linearly_until_they_meet_halfway() {
        let s = schedule(Selection::Text);
        assert_eq!(s.thresholds(0, 0.0), Thresholds { upper: 0.99, lower: 0.9 });
        let t5 = s.thresholds(5, 0.0);
        assert!((t5.upper - 0.9675).abs() < 1e-12 && (t5.lower - 0.9225).abs() < 1e-12);
        let t10 = s.thresholds(10, 0.0);
        assert!((t10.upper - 0.945).abs() < 1e-12 && (t10.lower - 0.945).abs() < 1e-12);
        assert_eq!(s.thresholds(20, 0.0), t10, "they stay met");
    }

    #[test]
    fn the_code_threshold_falls_in_ten_equal_steps() {
        let s = Schedule { start: Thresholds { upper: 0.99, lower: 0.8 }, ..schedule(Selection::Code) };
        for epoch in 0..=12 {
            let expected = 0.99 - 0.019 * epoch.min(10) as f64;
            let t = s.thresholds(epoch, 0.0);
            assert!((t.upper - expected).abs() < 1e-12 && t.upper == t.lower, "epoch {epoch}: {t:?}");
        }
    }

    #[test]
    fn learned_lambda_closes_the_gap_then_stops_training() {
        let s = schedule(Selection::Learned);
        let mut lambda = 0.0;
        let mut steps = 0;
        while !s.finished(lambda) {
            lambda = s.step_lambda(lambda);
            steps += 1;
        }
        // u − l = 0.495 − 1.1λ turns negative once λ > 0.45, i.e. after 0.45 / (0.009 · 1.1) ≈ 45.5 steps.
        assert_eq!(steps, 46);
    }

    #[test]
    fn the_pair_loss_matches_a_hand_computation() {
        let device = Default::default();
        // Two samples: outputs at 60° (similarity 0.5); targets identical (similarity 1 → positive pair).
        let h = 3.0f32.sqrt() / 2.0;
        let outputs = Tensor::<Cpu, 2>::from_floats([[1.0, 0.0], [0.5, h]], &device);
        let targets = Tensor::<Cpu, 2>::from_floats([[1.0, 0.0], [1.0, 0.0]], &device);
        let t = Thresholds { upper: 0.95, lower: 0.5 };
        let l = pair_loss(outputs, targets, t, 0.0);
        // All four pairs are positive; the diagonal costs −ln(1 − ε) ≈ 0, the off-diagonal −ln 0.5 each.
        let expected = 2.0 * 2.0f64.ln() / 4.0;
        assert!((l.loss.into_scalar() as f64 - expected).abs() < 1e-5);
        assert_eq!((l.selected, l.positive), (1.0, 1.0));
    }

    #[test]
    fn pairs_between_the_thresholds_are_left_out() {
        let device = Default::default();
        let h = 3.0f32.sqrt() / 2.0;
        let v = Tensor::<Cpu, 2>::from_floats([[1.0, 0.0], [0.5, h]], &device);
        let l = pair_loss(v.clone(), v, Thresholds { upper: 0.9, lower: 0.3 }, 0.0);
        // The diagonal (1.0) is positive, the off-diagonal pair (0.5) in between: 2 of 4 labelled.
        assert_eq!(l.selected, 0.5);
        assert_eq!(l.positive, 0.5);
    }
}
