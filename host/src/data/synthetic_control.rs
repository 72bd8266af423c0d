//! The synthetic control chart time series (Alcock & Manolopoulos, 1999; the UCI "Synthetic Control
//! Chart Time Series" set): 600 series of 60 points, 100 of each of six patterns, generated here from the
//! published equations with a seeded random source, so every run and every machine gets the same data.
//!
//! With `t` = 1..=60, `m` = 30, `s` = 2 and `r` uniform in [-3, 3] drawn anew at every point:
//! - normal: `y(t) = m + r·s`
//! - cyclic: `y(t) = m + r·s + a·sin(2πt/T)`, `a` in [10, 15], `T` in [10, 15]
//! - increasing / decreasing trend: `y(t) = m + r·s ± g·t`, `g` in [0.2, 0.5]
//! - upward / downward shift: `y(t) = m + r·s ± k·x`, `x` in [7.5, 20], `k` = 0 before a time `t₃` drawn
//!   in [n/3, 2n/3] and 1 from it on.
//!
//! The per-series parameters (`a`, `T`, `g`, `x`, `t₃`) are drawn uniformly once per series.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Dataset;

pub const DEFAULT_SEED: u64 = 1999;
pub const LENGTH: usize = 60;
pub const PER_CLASS: usize = 100;
pub const CLASSES: [&str; 6] =
    ["normal", "cyclic", "increasing trend", "decreasing trend", "upward shift", "downward shift"];

/// The 600 × 60 set, z-scored per time step.
pub fn generate(seed: u64) -> Dataset {
    let mut dataset = Dataset {
        name: "synthetic-control".into(),
        features: raw_series(seed),
        dim: LENGTH,
        image_size: None,
        labels: Some((0..CLASSES.len() as i64).flat_map(|c| std::iter::repeat_n(c, PER_CLASS)).collect()),
        class_names: CLASSES.iter().map(|c| c.to_string()).collect(),
    };
    dataset.zscore();
    dataset
}

/// The series as the equations give them, class by class, row-major.
fn raw_series(seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (m, s, n) = (30.0f64, 2.0f64, LENGTH as f64);
    let mut features = Vec::with_capacity(CLASSES.len() * PER_CLASS * LENGTH);
    for class in 0..CLASSES.len() {
        for _ in 0..PER_CLASS {
            let a = rng.random_range(10.0..=15.0);
            let period = rng.random_range(10.0..=15.0);
            let g = rng.random_range(0.2..=0.5);
            let x = rng.random_range(7.5..=20.0);
            let t3 = rng.random_range(n / 3.0..=2.0 * n / 3.0);
            for t in 1..=LENGTH {
                let t = t as f64;
                let noise = m + rng.random_range(-3.0..=3.0) * s;
                let k = if t >= t3 { 1.0 } else { 0.0 };
                let y = match class {
                    0 => noise,
                    1 => noise + a * (2.0 * std::f64::consts::PI * t / period).sin(),
                    2 => noise + g * t,
                    3 => noise - g * t,
                    4 => noise + k * x,
                    _ => noise - k * x,
                };
                features.push(y as f32);
            }
        }
    }
    features
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_hundred_series_of_sixty_in_six_classes_of_a_hundred() {
        let d = generate(DEFAULT_SEED);
        assert_eq!((d.len(), d.dim), (600, 60));
        let labels = d.labels.unwrap();
        for c in 0..6 {
            assert_eq!(labels.iter().filter(|&&l| l == c).count(), 100);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_data_and_another_seed_other_data() {
        assert_eq!(generate(7).features, generate(7).features);
        assert_ne!(generate(7).features, generate(8).features);
    }

    #[test]
    fn each_pattern_follows_its_equation() {
        let raw = raw_series(DEFAULT_SEED);
        let series = |class: usize| raw.chunks(LENGTH).skip(class * PER_CLASS).take(PER_CLASS);
        let mean = |ys: &[f32]| ys.iter().map(|&y| y as f64).sum::<f64>() / ys.len() as f64;
        let var =
            |ys: &[f32]| ys.iter().map(|&y| (y as f64 - mean(ys)).powi(2)).sum::<f64>() / ys.len() as f64;
        // Least-squares slope against t.
        let slope = |ys: &[f32]| {
            let t_mean = (LENGTH as f64 + 1.0) / 2.0;
            let (mut num, mut den) = (0.0, 0.0);
            for (i, &y) in ys.iter().enumerate() {
                let dt = (i + 1) as f64 - t_mean;
                num += dt * (y as f64 - mean(ys));
                den += dt * dt;
            }
            num / den
        };
        // Noise alone: 30 ± 6, variance 12 (uniform on [-6, 6]); 4 standard errors of margin below.
        for ys in series(0) {
            assert!(ys.iter().all(|&y| (24.0..=36.0).contains(&y)));
            assert!(var(ys) < 25.0);
        }
        // Cyclic: variance ≈ 12 + a²/2 ≥ 62.
        assert!(series(1).all(|ys| var(ys) > 35.0));
        // Trends: slope ±g with g in [0.2, 0.5] (the slope's standard error is about 0.026).
        assert!(series(2).all(|ys| (0.1..=0.6).contains(&slope(ys))));
        assert!(series(3).all(|ys| (-0.6..=-0.1).contains(&slope(ys))));
        // Shifts: t₃ in [20, 40], so the last ten points are shifted by ±x (x in [7.5, 20]) and the first
        // ten are not.
        let jump = |ys: &[f32]| mean(&ys[50..]) - mean(&ys[..10]);
        assert!(series(4).all(|ys| (1.5..=26.0).contains(&jump(ys))));
        assert!(series(5).all(|ys| (-26.0..=-1.5).contains(&jump(ys))));
    }
}
