//! Clustering metrics: how well predicted clusters match true classes.
//!
//! Definitions follow scikit-learn (`sklearn.metrics`), including its conventions for degenerate cases,
//! so figures can be compared with published ones; the tests check agreement to 1e-9. ACC is the share of
//! samples on the best one-to-one matching of clusters to classes (the Hungarian algorithm), which allows
//! more or fewer clusters than classes: unmatched samples count as errors.

use std::collections::BTreeMap;

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;
use serde_json::json;

/// Counts of (true class, predicted cluster) pairs. Rows are classes, columns clusters, each in ascending
/// order of their label values.
#[derive(Debug, Clone, PartialEq)]
pub struct Contingency {
    pub classes: Vec<i64>,
    pub clusters: Vec<i64>,
    /// Row-major, `classes.len()` × `clusters.len()`.
    pub counts: Vec<u64>,
}

impl Contingency {
    pub fn new(truth: &[i64], pred: &[i64]) -> Contingency {
        assert_eq!(truth.len(), pred.len(), "one prediction per sample");
        let index = |labels: &[i64]| -> BTreeMap<i64, usize> {
            let mut map: BTreeMap<i64, usize> = labels.iter().map(|&l| (l, 0)).collect();
            for (i, slot) in map.values_mut().enumerate() {
                *slot = i;
            }
            map
        };
        let (class_index, cluster_index) = (index(truth), index(pred));
        let cols = cluster_index.len();
        let mut counts = vec![0u64; class_index.len() * cols];
        for (t, p) in truth.iter().zip(pred) {
            counts[class_index[t] * cols + cluster_index[p]] += 1;
        }
        Contingency {
            classes: class_index.into_keys().collect(),
            clusters: cluster_index.into_keys().collect(),
            counts,
        }
    }

    pub fn n(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn at(&self, class: usize, cluster: usize) -> u64 {
        self.counts[class * self.clusters.len() + cluster]
    }

    fn class_sizes(&self) -> Vec<u64> {
        (0..self.classes.len()).map(|i| (0..self.clusters.len()).map(|j| self.at(i, j)).sum()).collect()
    }

    fn cluster_sizes(&self) -> Vec<u64> {
        (0..self.clusters.len()).map(|j| (0..self.classes.len()).map(|i| self.at(i, j)).sum()).collect()
    }

    /// The best one-to-one matching of clusters to classes: `(class, cluster)` pairs, as many as the
    /// smaller of the two counts, maximising the samples on matched pairs.
    pub fn best_matching(&self) -> Vec<(usize, usize)> {
        let (rows, cols) = (self.classes.len(), self.clusters.len());
        if rows == 0 || cols == 0 {
            return Vec::new();
        }
        // kuhn_munkres needs rows ≤ columns: match whichever side is smaller onto the other.
        if rows <= cols {
            let weights = Matrix::from_fn(rows, cols, |(i, j)| self.at(i, j) as i64);
            let (_, cluster_of) = kuhn_munkres(&weights);
            cluster_of.into_iter().enumerate().collect()
        } else {
            let weights = Matrix::from_fn(cols, rows, |(j, i)| self.at(i, j) as i64);
            let (_, class_of) = kuhn_munkres(&weights);
            class_of.into_iter().enumerate().map(|(j, i)| (i, j)).collect()
        }
    }

    /// The confusion matrix after matching: rows are classes; column `i` is the cluster matched to class
    /// `i`, and clusters matched to no class follow in label order. Returns the column order (cluster
    /// indices) and the matrix, row-major.
    pub fn matched_confusion(&self) -> (Vec<usize>, Vec<u64>) {
        let matching = self.best_matching();
        let mut order: Vec<usize> = (0..self.classes.len())
            .filter_map(|class| matching.iter().find(|(c, _)| *c == class).map(|&(_, k)| k))
            .collect();
        let unmatched: Vec<usize> = (0..self.clusters.len()).filter(|k| !order.contains(k)).collect();
        order.extend(unmatched);
        let matrix = (0..self.classes.len())
            .flat_map(|i| order.iter().map(move |&j| (i, j)))
            .map(|(i, j)| self.at(i, j))
            .collect();
        (order, matrix)
    }
}

/// Every metric of one clustering, as `stdac metrics` prints them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub n: usize,
    pub acc: f64,
    pub nmi: f64,
    pub ari: f64,
    pub homogeneity: f64,
    pub completeness: f64,
    pub v_measure: f64,
}

impl Scores {
    pub fn of(truth: &[i64], pred: &[i64]) -> Scores {
        Self::from_contingency(&Contingency::new(truth, pred))
    }

    pub fn from_contingency(c: &Contingency) -> Scores {
        let (homogeneity, completeness, v_measure) = homogeneity_completeness_v(c);
        Scores {
            n: c.n() as usize,
            acc: accuracy(c),
            nmi: nmi(c),
            ari: ari(c),
            homogeneity,
            completeness,
            v_measure,
        }
    }

    /// The one-line JSON form scripts read.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "n": self.n,
            "acc": self.acc,
            "nmi": self.nmi,
            "ari": self.ari,
            "homogeneity": self.homogeneity,
            "completeness": self.completeness,
            "v_measure": self.v_measure,
        })
    }
}

/// Clustering accuracy under the best one-to-one matching; 1.0 for no samples.
pub fn accuracy(c: &Contingency) -> f64 {
    let n = c.n();
    if n == 0 {
        return 1.0;
    }
    let matched: u64 = c.best_matching().iter().map(|&(i, j)| c.at(i, j)).sum();
    matched as f64 / n as f64
}

/// Shannon entropy (nats) of a labelling given its group sizes.
fn entropy(sizes: &[u64]) -> f64 {
    let n: u64 = sizes.iter().sum();
    if n == 0 {
        return 1.0; // scikit-learn's convention for an empty labelling
    }
    let n = n as f64;
    let h: f64 = sizes.iter().filter(|&&s| s > 0).map(|&s| (s as f64 / n) * (s as f64 / n).ln()).sum();
    -h
}

/// Mutual information (nats) between classes and clusters.
pub fn mutual_information(c: &Contingency) -> f64 {
    let n = c.n() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let (a, b) = (c.class_sizes(), c.cluster_sizes());
    let mut mi = 0.0;
    for (i, &ai) in a.iter().enumerate() {
        for (j, &bj) in b.iter().enumerate() {
            let nij = c.at(i, j);
            if nij > 0 {
                let nij = nij as f64;
                mi += (nij / n) * ((nij * n).ln() - (ai as f64 * bj as f64).ln());
            }
        }
    }
    mi.max(0.0)
}

/// Normalised mutual information, arithmetic-mean normalisation (scikit-learn's default).
pub fn nmi(c: &Contingency) -> f64 {
    let (classes, clusters) = (c.classes.len(), c.clusters.len());
    // Neither labelling splits the data (or there is none): a perfect match.
    if classes == clusters && classes <= 1 {
        return 1.0;
    }
    let mi = mutual_information(c);
    if mi == 0.0 {
        return 0.0;
    }
    let normaliser = (entropy(&c.class_sizes()) + entropy(&c.cluster_sizes())) / 2.0;
    mi / normaliser
}

/// Adjusted Rand index, from the pair confusion matrix (exact integer arithmetic up to the last division).
pub fn ari(c: &Contingency) -> f64 {
    let n = c.n() as i128;
    let sum_squares: i128 = c.counts.iter().map(|&x| (x as i128) * (x as i128)).sum();
    let square_sum = |sizes: Vec<u64>| -> i128 { sizes.iter().map(|&s| (s as i128) * (s as i128)).sum() };
    let tp = sum_squares - n;
    let fp = square_sum(c.cluster_sizes()) - sum_squares; // same cluster, different class
    let fn_ = square_sum(c.class_sizes()) - sum_squares; // same class, different cluster
    let tn = n * n - fp - fn_ - sum_squares;
    if fn_ == 0 && fp == 0 {
        return 1.0; // identical partitions, including the degenerate ones
    }
    let numerator = 2 * (tp * tn - fn_ * fp);
    let denominator = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
    numerator as f64 / denominator as f64
}

/// Homogeneity (each cluster holds one class), completeness (each class sits in one cluster) and their
/// harmonic mean, the V-measure.
pub fn homogeneity_completeness_v(c: &Contingency) -> (f64, f64, f64) {
    if c.n() == 0 {
        return (1.0, 1.0, 1.0);
    }
    let (h_class, h_cluster) = (entropy(&c.class_sizes()), entropy(&c.cluster_sizes()));
    let mi = mutual_information(c);
    let homogeneity = if h_class != 0.0 { mi / h_class } else { 1.0 };
    let completeness = if h_cluster != 0.0 { mi / h_cluster } else { 1.0 };
    let v = if homogeneity + completeness == 0.0 {
        0.0
    } else {
        2.0 * homogeneity * completeness / (homogeneity + completeness)
    };
    (homogeneity, completeness, v)
}

/// Reads a label file: one integer per line (surrounding whitespace and a final newline allowed).
/// Errors name the file and the line.
pub fn read_label_file(path: &std::path::Path) -> anyhow::Result<Vec<i64>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let labels = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            line.trim().parse::<i64>().map_err(|_| {
                anyhow::anyhow!(
                    "{}: line {}: {:?} is not an integer label",
                    path.display(),
                    i + 1,
                    line.trim()
                )
            })
        })
        .collect::<anyhow::Result<Vec<i64>>>()?;
    anyhow::ensure!(!labels.is_empty(), "{}: no labels (empty file)", path.display());
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_relabelled_perfect_clustering_scores_one_everywhere() {
        let s = Scores::of(&[0, 0, 1, 1, 2, 2], &[5, 5, 3, 3, 9, 9]);
        for (name, v) in
            [("acc", s.acc), ("nmi", s.nmi), ("ari", s.ari), ("h", s.homogeneity), ("c", s.completeness)]
        {
            assert!(close(v, 1.0), "{name} = {v}");
        }
    }

    #[test]
    fn hand_computed_example() {
        // The example of scikit-learn's user guide (ARI ≈ 0.57, V-measure 0.8), worked by hand.
        // truth [0,0,1,1], pred [0,0,1,2]. Contingency [[2,0,0],[0,1,1]].
        // ACC: match 0→0 (2), 1→1 (1): 3/4.
        // Pairs: 6 in all; same class: 2, same cluster: 1, both: 1, neither: 6-2-1+1 = 4.
        //   tp = 1, fn = 1, fp = 0, tn = 4 (unordered pairs; the formula is scale-free).
        //   ARI = 2(tp·tn − fn·fp) / ((tp+fn)(fn+tn) + (tp+fp)(fp+tn)) = 2·4 / (2·5 + 1·4) = 8/14.
        // H(C) = ln 2, H(K) = 1.5 ln 2, MI = ln 2 (clusters refine classes) →
        //   homogeneity 1, completeness 2/3, V = 2·(2/3)/(5/3) = 0.8, NMI = ln2 / (1.25 ln2) = 0.8.
        let s = Scores::of(&[0, 0, 1, 1], &[0, 0, 1, 2]);
        assert!(close(s.acc, 0.75));
        assert!(close(s.ari, 8.0 / 14.0), "ari {}", s.ari);
        assert!(close(s.homogeneity, 1.0));
        assert!(close(s.completeness, 2.0 / 3.0));
        assert!(close(s.v_measure, 0.8));
        assert!(close(s.nmi, 0.8));
    }

    #[test]
    fn more_clusters_than_classes_leaves_extra_clusters_unmatched() {
        let c = Contingency::new(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 2, 2, 3]);
        assert!(close(accuracy(&c), 4.0 / 6.0));
        let (order, matrix) = c.matched_confusion();
        assert_eq!(order, vec![0, 2, 1, 3], "matched clusters first, in class order");
        assert_eq!(matrix, vec![2, 0, 1, 0, 0, 2, 0, 1]);
    }

    #[test]
    fn fewer_clusters_than_classes() {
        let c = Contingency::new(&[0, 0, 1, 1, 2, 2], &[0, 0, 0, 0, 1, 1]);
        assert!(close(accuracy(&c), 4.0 / 6.0));
        let (order, _) = c.matched_confusion();
        assert_eq!(order.len(), 2);
    }

    #[test]
    fn one_cluster_scores_follow_scikit_learn_conventions() {
        let s = Scores::of(&[0, 1, 2, 3], &[7, 7, 7, 7]);
        assert!(close(s.acc, 0.25));
        assert!(close(s.nmi, 0.0), "no information");
        assert!(close(s.ari, 0.0));
        assert!(close(s.homogeneity, 0.0));
        assert!(close(s.completeness, 1.0), "one cluster holds every class whole");
        assert!(close(s.v_measure, 0.0));
        // Both sides unsplit: a perfect match by convention.
        let s = Scores::of(&[3, 3, 3], &[1, 1, 1]);
        assert!(close(s.nmi, 1.0) && close(s.ari, 1.0) && close(s.acc, 1.0));
    }

    #[test]
    fn all_singletons() {
        let s = Scores::of(&[0, 0, 1, 1], &[0, 1, 2, 3]);
        assert!(close(s.acc, 0.5));
        assert!(close(s.homogeneity, 1.0));
        assert!(close(s.completeness, 0.5), "H(K) = 2 ln 2, MI = ln 2");
        assert!(close(s.ari, 0.0), "tp = 0: no better than chance");
    }
}
