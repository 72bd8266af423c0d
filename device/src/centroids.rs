//! Nearest-centroid assignment: which cluster a point belongs to, how far it is from that cluster's
//! centre, and by how much the runner-up lost. The device assigns every frame with it; the host's k-means
//! uses it for its assignment step, so both sides agree by construction.

/// How distance is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// ‖x − c‖.
    Euclidean,
    /// 1 − cos(x, c), in [0, 2]; a zero vector is at distance 1 from everything.
    Cosine,
}

/// The nearest centroid of one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    pub index: usize,
    pub distance: f32,
    /// Distance to the runner-up minus `distance` (≥ 0); infinite when there is a single centroid.
    pub margin: f32,
}

/// `k` centroids of dimension `dim`, prepared for fast assignment.
#[derive(Debug, Clone)]
pub struct Centroids {
    metric: Metric,
    dim: usize,
    /// Row-major `k` × `dim`; unit-normalised for the cosine metric.
    data: Vec<f32>,
    /// ‖c‖² of each centroid.
    norms_sq: Vec<f32>,
    /// For short vectors (`dim` ≤ [`SHORT`]): the centroids in groups of [`LANES`], each group stored
    /// dimension-major (`dim` × `LANES`, zero-padded), so one point is scored against a whole group at once.
    lanes: Vec<f32>,
    /// `norms_sq` padded to whole groups.
    lane_norms_sq: Vec<f32>,
}

/// Centroids scored together on the short-vector path.
const LANES: usize = 16;
/// Up to this dimension, scoring a group of centroids per input value beats one dot product per centroid.
const SHORT: usize = 32;

impl Centroids {
    pub fn new(data: Vec<f32>, dim: usize, metric: Metric) -> Centroids {
        assert!(dim > 0 && !data.is_empty() && data.len().is_multiple_of(dim), "k × {dim} centroid values");
        let mut data = data;
        if metric == Metric::Cosine {
            for c in data.chunks_mut(dim) {
                let norm = dot(c, c).sqrt();
                if norm > 0.0 {
                    c.iter_mut().for_each(|v| *v /= norm);
                }
            }
        }
        let norms_sq: Vec<f32> = data.chunks(dim).map(|c| dot(c, c)).collect();
        let k = norms_sq.len();
        let mut lanes = Vec::new();
        let mut lane_norms_sq = norms_sq.clone();
        lane_norms_sq.resize(k.div_ceil(LANES) * LANES, 0.0);
        if dim <= SHORT {
            lanes = vec![0.0; k.div_ceil(LANES) * dim * LANES];
            for (j, c) in data.chunks(dim).enumerate() {
                let (group, lane) = (j / LANES, j % LANES);
                for (d, &v) in c.iter().enumerate() {
                    lanes[(group * dim + d) * LANES + lane] = v;
                }
            }
        }
        Centroids { metric, dim, data, norms_sq, lanes, lane_norms_sq }
    }

    pub fn k(&self) -> usize {
        self.norms_sq.len()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Row-major `k` × `dim` (unit-normalised for the cosine metric).
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn nearest(&self, x: &[f32]) -> Nearest {
        assert_eq!(
            x.len(),
            self.dim,
            "point of dimension {} for centroids of dimension {}",
            x.len(),
            self.dim
        );
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the features `nearest_avx2_fma` is compiled for were just detected.
            return unsafe { self.nearest_avx2_fma(x) };
        }
        self.nearest_with::<false>(x)
    }

    /// The whole search compiled for AVX2 + FMA, so its dot products inline (a call per dot product
    /// costs more than the dot product itself for short vectors).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nearest_avx2_fma(&self, x: &[f32]) -> Nearest {
        self.nearest_with::<true>(x)
    }

    #[inline(always)]
    fn nearest_with<const FMA: bool>(&self, x: &[f32]) -> Nearest {
        let x_norm_sq = dot_kernel::<FMA>(x, x);
        let x_norm = x_norm_sq.sqrt();
        // Rank by a score that is cheap and ordered like the distance (the squared distance for the
        // Euclidean metric); only the best two become distances.
        let score = |x_dot_c: f32, c_norm_sq: f32| match self.metric {
            // ‖x‖² − 2x·c + ‖c‖², clamped: rounding can take it a hair below zero.
            Metric::Euclidean => (x_norm_sq - 2.0 * x_dot_c + c_norm_sq).max(0.0),
            Metric::Cosine if x_norm > 0.0 && c_norm_sq > 0.0 => 1.0 - x_dot_c / x_norm,
            Metric::Cosine => 1.0,
        };
        let mut top = TopTwo { index: 0, best: f32::INFINITY, second: f32::INFINITY };
        if self.dim <= SHORT {
            // LANES centroids at a time, one input value at a time: no horizontal sums, and the best
            // two of a group found without branches (which centroid wins is unpredictable).
            for (g, block) in self.lanes.chunks_exact(self.dim * LANES).enumerate() {
                let mut acc = [0.0f32; LANES];
                for (&xd, column) in x.iter().zip(block.chunks_exact(LANES)) {
                    let column: &[f32; LANES] = column.try_into().expect("LANES values");
                    for l in 0..LANES {
                        acc[l] = if FMA { xd.mul_add(column[l], acc[l]) } else { acc[l] + xd * column[l] };
                    }
                }
                let first = g * LANES;
                let norms: &[f32; LANES] =
                    self.lane_norms_sq[first..first + LANES].try_into().expect("LANES");
                // One loop per metric, so each is a straight line of SIMD.
                let mut scores = [0.0f32; LANES];
                match self.metric {
                    Metric::Euclidean => {
                        for l in 0..LANES {
                            scores[l] = (x_norm_sq - 2.0 * acc[l] + norms[l]).max(0.0);
                        }
                    }
                    Metric::Cosine => {
                        for l in 0..LANES {
                            scores[l] = score(acc[l], norms[l]);
                        }
                    }
                }
                for padding in &mut scores[(self.k() - first).min(LANES)..] {
                    *padding = f32::INFINITY;
                }
                let best = min_of(&scores);
                let mut at_best = 0u32;
                for (l, &s) in scores.iter().enumerate() {
                    at_best |= ((s == best) as u32) << l;
                }
                let lane = at_best.trailing_zeros() as usize;
                scores[lane] = f32::INFINITY;
                top.merge(first + lane, best, min_of(&scores));
            }
        } else {
            for (j, c) in self.data.chunks_exact(self.dim).enumerate() {
                top.merge(j, score(dot_kernel::<FMA>(x, c), self.norms_sq[j]), f32::INFINITY);
            }
        }
        let distance = |score: f32| if self.metric == Metric::Euclidean { score.sqrt() } else { score };
        let (distance, runner_up) = (distance(top.best), distance(top.second));
        Nearest { index: top.index, distance, margin: runner_up - distance }
    }
}

/// The best two scores seen, and where the best was.
struct TopTwo {
    index: usize,
    best: f32,
    second: f32,
}

impl TopTwo {
    /// Takes in a candidate `index` with score `best`, whose own runner-up scored `second`.
    #[inline(always)]
    fn merge(&mut self, index: usize, best: f32, second: f32) {
        if best < self.best {
            self.second = self.best.min(second);
            self.best = best;
            self.index = index;
        } else {
            self.second = self.second.min(best);
        }
    }
}

/// Minimum of a group of lanes as a tree of pairwise minimums, which maps onto SIMD.
#[inline(always)]
fn min_of(values: &[f32; LANES]) -> f32 {
    let mut m = *values;
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            m[l] = m[l].min(m[l + width]);
        }
    }
    m[0]
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Dot product; uses AVX2 and FMA where the processor has them (detected at run time).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the features `dot_avx2_fma` is compiled for were just detected.
        return unsafe { dot_avx2_fma(a, b) };
    }
    dot_kernel::<false>(a, b)
}

/// Squared Euclidean distance, computed directly (no cancellation).
pub fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as in `dot`.
        return unsafe { squared_distance_avx2_fma(a, b) };
    }
    squared_distance_kernel::<false>(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_kernel::<true>(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn squared_distance_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    squared_distance_kernel::<true>(a, b)
}

/// Sixteen independent partial sums, which the compiler maps onto SIMD registers. `FMA` selects fused
/// multiply-add, only where the processor has it (elsewhere `mul_add` is a slow library call).
#[inline(always)]
fn dot_kernel<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a16.remainder().iter().zip(b16.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a16.zip(b16) {
        for i in 0..16 {
            acc[i] = if FMA { x[i].mul_add(y[i], acc[i]) } else { acc[i] + x[i] * y[i] };
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn squared_distance_kernel<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a16.remainder().iter().zip(b16.remainder()).map(|(x, y)| (x - y) * (x - y)).sum();
    for (x, y) in a16.zip(b16) {
        for i in 0..16 {
            let d = x[i] - y[i];
            acc[i] = if FMA { d.mul_add(d, acc[i]) } else { acc[i] + d * d };
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euclidean_nearest_with_distance_and_margin() {
        let c = Centroids::new(vec![0.0, 0.0, 10.0, 0.0, 0.0, 4.0], 2, Metric::Euclidean);
        let n = c.nearest(&[3.0, 0.0]);
        assert_eq!(n.index, 0);
        assert!((n.distance - 3.0).abs() < 1e-5);
        assert!((n.margin - (5.0 - 3.0)).abs() < 1e-5, "runner-up is (0,4) at distance 5");
    }

    #[test]
    fn cosine_ignores_length() {
        let c = Centroids::new(vec![1.0, 0.0, 0.0, 3.0], 2, Metric::Cosine);
        let n = c.nearest(&[0.1, 5.0]);
        assert_eq!(n.index, 1);
        let expected = 1.0 - 5.0 / (0.01f32 + 25.0).sqrt();
        assert!((n.distance - expected).abs() < 1e-6);
        assert_eq!(c.nearest(&[0.0, 0.0]).distance, 1.0, "a zero vector is at distance 1");
    }

    #[test]
    fn short_and_long_vectors_find_the_same_nearest_centroids() {
        // 20 centroids (more than one group of lanes) in 5 and in 40 dimensions, checked against a
        // brute-force search.
        for dim in [5, 40] {
            let value = |i: usize| ((i * 7919) % 101) as f32 / 10.0 - 5.0;
            let centres: Vec<f32> = (0..20 * dim).map(value).collect();
            for metric in [Metric::Euclidean, Metric::Cosine] {
                let c = Centroids::new(centres.clone(), dim, metric);
                for p in 0..50 {
                    let x: Vec<f32> = (0..dim).map(|d| value(p * 31 + d * 3 + 1)).collect();
                    let brute = |j: usize| {
                        let cj = &c.as_slice()[j * dim..(j + 1) * dim];
                        match metric {
                            Metric::Euclidean => squared_distance(&x, cj).sqrt(),
                            Metric::Cosine => 1.0 - dot(&x, cj) / dot(&x, &x).sqrt(),
                        }
                    };
                    let expected = (0..20).min_by(|&a, &b| brute(a).total_cmp(&brute(b))).unwrap();
                    let n = c.nearest(&x);
                    assert_eq!(n.index, expected, "dim {dim}, {metric:?}, point {p}");
                    assert!((n.distance - brute(expected)).abs() < 1e-3);
                }
            }
        }
    }

    #[test]
    fn a_single_centroid_has_infinite_margin() {
        let c = Centroids::new(vec![1.0, 1.0, 1.0], 3, Metric::Euclidean);
        assert_eq!(c.nearest(&[0.0; 3]).margin, f32::INFINITY);
    }

    #[test]
    fn dot_and_distance_match_the_plain_loops_at_every_length() {
        for len in 0..70 {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let plain_d: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4);
            assert!((squared_distance(&a, &b) - plain_d).abs() < 1e-4);
            // The portable kernel agrees too, whichever one `dot` picked on this machine.
            assert!((dot_kernel::<false>(&a, &b) - plain).abs() < 1e-4);
            assert!((squared_distance_kernel::<false>(&a, &b) - plain_d).abs() < 1e-4);
        }
    }
}
