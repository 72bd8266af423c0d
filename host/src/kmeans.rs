//! k-means: greedy k-means++ seeding, Lloyd iterations, restarts keeping the lowest inertia.
//!
//! Conventions follow scikit-learn's `KMeans(algorithm="lloyd")` so results compare: `tol` is relative to
//! the data's mean per-feature variance and bounds the total squared centre shift of an iteration;
//! iteration also stops as soon as no point changes cluster; an empty cluster is re-seeded with the point
//! farthest from its centre.
//!
//! Deterministic for a seed, whatever the number of threads: the points are cut into fixed blocks, each
//! block's partial sums are computed in parallel, and the blocks are added up in order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use stdac_device::centroids::{squared_distance, Centroids, Metric};

/// Points per parallel block; fixed, so sums do not depend on the thread count.
const BLOCK: usize = 2048;

#[derive(Debug, Clone, PartialEq)]
pub struct KMeansConfig {
    pub k: usize,
    /// Independent seedings; the run with the lowest inertia wins.
    pub restarts: usize,
    pub max_iter: usize,
    /// Relative tolerance on the centre shift (scikit-learn's `tol`).
    pub tol: f64,
    pub seed: u64,
}

impl KMeansConfig {
    pub fn new(k: usize) -> Self {
        KMeansConfig { k, restarts: 10, max_iter: 300, tol: 1e-4, seed: 0 }
    }
}

/// A fitted clustering.
#[derive(Debug, Clone)]
pub struct KMeansFit {
    pub dim: usize,
    /// Row-major `k` × `dim`.
    pub centroids: Vec<f32>,
    /// The cluster of every input point.
    pub labels: Vec<usize>,
    /// Sum of squared distances of the points to their centres.
    pub inertia: f64,
    /// Lloyd iterations of the winning run.
    pub iterations: usize,
}

impl KMeansFit {
    pub fn k(&self) -> usize {
        self.centroids.len() / self.dim
    }

    pub fn centroids(&self) -> Centroids {
        Centroids::new(self.centroids.clone(), self.dim, Metric::Euclidean)
    }
}

/// Clusters the rows of `data` (row-major, `dim` columns).
pub fn fit(data: &[f32], dim: usize, config: &KMeansConfig) -> KMeansFit {
    let n = data.len() / dim;
    assert!(config.k >= 1 && config.k <= n, "k = {} needs 1 ≤ k ≤ {n} points", config.k);
    let tol = config.tol * mean_variance(data, dim);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut best: Option<KMeansFit> = None;
    for _ in 0..config.restarts.max(1) {
        let mut run_rng = ChaCha8Rng::seed_from_u64(rng.random());
        let init = kmeans_plus_plus(data, dim, config.k, &mut run_rng);
        let run = lloyd(data, dim, init, config.max_iter, tol);
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
            best = Some(run);
        }
    }
    best.expect("at least one run")
}

/// Mean over features of their variance: scikit-learn's scale for `tol`.
fn mean_variance(data: &[f32], dim: usize) -> f64 {
    let n = (data.len() / dim) as f64;
    let mut sum = vec![0.0f64; dim];
    let mut sum_sq = vec![0.0f64; dim];
    for row in data.chunks_exact(dim) {
        for (j, &x) in row.iter().enumerate() {
            sum[j] += x as f64;
            sum_sq[j] += (x as f64) * (x as f64);
        }
    }
    (0..dim).map(|j| sum_sq[j] / n - (sum[j] / n).powi(2)).sum::<f64>() / dim as f64
}

/// Greedy k-means++ (Arthur & Vassilvitskii 2007, with scikit-learn's 2 + ⌊ln k⌋ candidates per centre):
/// each new centre is the best of several points drawn with probability proportional to their squared
/// distance to the centres so far.
pub fn kmeans_plus_plus(data: &[f32], dim: usize, k: usize, rng: &mut impl Rng) -> Vec<f32> {
    let n = data.len() / dim;
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let trials = 2 + (k as f64).ln().floor() as usize;
    let mut centres = row(rng.random_range(0..n)).to_vec();
    let mut closest = distances_to(data, dim, &centres);
    for _ in 1..k {
        let total: f64 = block_sums(&closest);
        let mut best: Option<(f64, usize, Vec<f32>)> = None;
        for _ in 0..trials {
            let candidate = sample_proportional(&closest, rng.random::<f64>() * total);
            let to_candidate = distances_to(data, dim, row(candidate));
            let merged: Vec<f32> = closest.iter().zip(&to_candidate).map(|(a, b)| a.min(*b)).collect();
            let potential = block_sums(&merged);
            if best.as_ref().is_none_or(|(p, _, _)| potential < *p) {
                best = Some((potential, candidate, merged));
            }
        }
        let (_, chosen, merged) = best.expect("at least two trials");
        centres.extend_from_slice(row(chosen));
        closest = merged;
    }
    centres
}

/// Squared distance of every row to `centre`.
fn distances_to(data: &[f32], dim: usize, centre: &[f32]) -> Vec<f32> {
    data.par_chunks(dim * BLOCK)
        .flat_map_iter(|block| block.chunks_exact(dim).map(|x| squared_distance(x, centre)))
        .collect()
}

/// Sum in fixed blocks, added in order: the same result for any thread count.
fn block_sums(values: &[f32]) -> f64 {
    let partial: Vec<f64> = values.par_chunks(BLOCK).map(|b| b.iter().map(|&v| v as f64).sum()).collect();
    partial.iter().sum()
}

/// The index where the running sum of `weights` passes `target`.
fn sample_proportional(weights: &[f32], target: f64) -> usize {
    let mut running = 0.0;
    for (i, &w) in weights.iter().enumerate() {
        running += w as f64;
        if running > target {
            return i;
        }
    }
    // Rounding left `target` at the very end: take the last point with any weight.
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

/// One block's share of an assignment step. Sums within a block are single precision (a block is
/// small), across blocks double.
struct Partial {
    sums: Vec<f32>,
    counts: Vec<usize>,
    inertia: f64,
}

/// Per-cluster sums of the points, their counts and the inertia of an assignment step.
struct Totals {
    sums: Vec<f64>,
    counts: Vec<usize>,
    inertia: f64,
}

/// Assigns every point to its nearest centre: labels, squared distances, and per-cluster sums.
fn assign(data: &[f32], dim: usize, centres: &[f32], labels: &mut [usize], dist_sq: &mut [f32]) -> Totals {
    let centres = Centroids::new(centres.to_vec(), dim, Metric::Euclidean);
    let k = centres.k();
    let partials: Vec<Partial> = data
        .par_chunks(dim * BLOCK)
        .zip(labels.par_chunks_mut(BLOCK))
        .zip(dist_sq.par_chunks_mut(BLOCK))
        .map(|((block, labels), dist_sq)| {
            let mut p = Partial { sums: vec![0.0; k * dim], counts: vec![0; k], inertia: 0.0 };
            for ((x, label), d) in block.chunks_exact(dim).zip(labels).zip(dist_sq) {
                let nearest = centres.nearest(x);
                *label = nearest.index;
                *d = nearest.distance * nearest.distance;
                p.inertia += *d as f64;
                p.counts[nearest.index] += 1;
                for (s, &v) in p.sums[nearest.index * dim..(nearest.index + 1) * dim].iter_mut().zip(x) {
                    *s += v;
                }
            }
            p
        })
        .collect();
    let mut total = Totals { sums: vec![0.0; k * dim], counts: vec![0; k], inertia: 0.0 };
    for p in partials {
        total.sums.iter_mut().zip(&p.sums).for_each(|(a, &b)| *a += b as f64);
        total.counts.iter_mut().zip(&p.counts).for_each(|(a, b)| *a += b);
        total.inertia += p.inertia;
    }
    total
}

/// Lloyd's algorithm from the given centres; `tol` is absolute (total squared centre shift).
pub fn lloyd(data: &[f32], dim: usize, init: Vec<f32>, max_iter: usize, tol: f64) -> KMeansFit {
    let n = data.len() / dim;
    let k = init.len() / dim;
    let mut centres = init;
    let mut labels = vec![usize::MAX; n];
    let mut previous = vec![usize::MAX; n];
    let mut dist_sq = vec![0.0f32; n];
    let mut iterations = 0;
    while iterations < max_iter {
        iterations += 1;
        let step = assign(data, dim, &centres, &mut labels, &mut dist_sq);
        if labels == previous {
            break; // strict convergence: nothing moved
        }
        let mut updated = vec![0.0f32; k * dim];
        let mut empty = Vec::new();
        for c in 0..k {
            let row = &mut updated[c * dim..(c + 1) * dim];
            if step.counts[c] == 0 {
                empty.push(c);
                row.copy_from_slice(&centres[c * dim..(c + 1) * dim]);
            } else {
                for (u, s) in row.iter_mut().zip(&step.sums[c * dim..(c + 1) * dim]) {
                    *u = (s / step.counts[c] as f64) as f32;
                }
            }
        }
        // Re-seed empty clusters with the points farthest from their centres.
        if !empty.is_empty() {
            let mut far: Vec<usize> = (0..n).collect();
            far.sort_by(|&a, &b| dist_sq[b].total_cmp(&dist_sq[a]).then(a.cmp(&b)));
            for (c, &i) in empty.iter().zip(&far) {
                updated[c * dim..(c + 1) * dim].copy_from_slice(&data[i * dim..(i + 1) * dim]);
            }
        }
        let shift: f64 = centres.iter().zip(&updated).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        centres = updated;
        std::mem::swap(&mut labels, &mut previous);
        if shift <= tol {
            break;
        }
    }
    // Labels and inertia of the final centres.
    let step = assign(data, dim, &centres, &mut labels, &mut dist_sq);
    KMeansFit { dim, centroids: centres, labels, inertia: step.inertia, iterations }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tight, well separated 2-D blobs.
    fn blobs() -> (Vec<f32>, Vec<i64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let centres = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)];
        let (mut data, mut truth) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let (cx, cy) = centres[i % 3];
            data.push(cx + rng.random_range(-1.0..1.0f32));
            data.push(cy + rng.random_range(-1.0..1.0f32));
            truth.push((i % 3) as i64);
        }
        (data, truth)
    }

    #[test]
    fn separated_blobs_are_found_exactly() {
        let (data, truth) = blobs();
        let fit = fit(&data, 2, &KMeansConfig::new(3));
        let pred: Vec<i64> = fit.labels.iter().map(|&l| l as i64).collect();
        assert_eq!(crate::metrics::Scores::of(&truth, &pred).acc, 1.0);
        assert!(fit.iterations < 10);
    }

    #[test]
    fn the_same_seed_gives_the_same_result_on_any_number_of_threads() {
        let (data, _) = blobs();
        let config = KMeansConfig { seed: 42, ..KMeansConfig::new(5) };
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| fit(&data, 2, &config));
        let many = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| fit(&data, 2, &config));
        assert_eq!(one.centroids, many.centroids);
        assert_eq!(one.labels, many.labels);
        assert_eq!(one.inertia, many.inertia);
    }

    #[test]
    fn lloyd_matches_a_hand_worked_example() {
        // 1-D points 0, 1, 9, 10 from centres 0 and 1: {0} and {1, 9, 10} → centres 0 and 6.67;
        // then {0, 1} and {9, 10} → 0.5 and 9.5, which is stable. Inertia 4 × 0.25 = 1.
        let fit = lloyd(&[0.0, 1.0, 9.0, 10.0], 1, vec![0.0, 1.0], 100, 0.0);
        assert_eq!(fit.centroids, vec![0.5, 9.5]);
        assert_eq!(fit.labels, vec![0, 0, 1, 1]);
        assert!((fit.inertia - 1.0).abs() < 1e-9);
    }

    #[test]
    fn an_empty_cluster_is_reseeded_with_the_farthest_point() {
        // Centre 2 sits far from everything and starts empty.
        let fit = lloyd(&[0.0, 0.2, 5.0, 5.2, 20.0], 1, vec![0.1, 5.1, 1000.0], 100, 0.0);
        let mut centres = fit.centroids.clone();
        centres.sort_by(f32::total_cmp);
        assert_eq!(centres, vec![0.1, 5.1, 20.0]);
    }

    #[test]
    fn k_means_plus_plus_picks_distinct_points() {
        let (data, _) = blobs();
        let init = kmeans_plus_plus(&data, 2, 3, &mut ChaCha8Rng::seed_from_u64(9));
        let picked: Vec<(f32, f32)> = init.chunks(2).map(|c| (c[0], c[1])).collect();
        // One seed per blob: the blobs are 10 apart and 2 wide.
        for (i, a) in picked.iter().enumerate() {
            for b in &picked[i + 1..] {
                assert!(((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt() > 5.0, "{picked:?}");
            }
        }
    }
}
