//! Principal component analysis: the directions of largest variance, from the eigen-decomposition of
//! the covariance matrix (fine for the few hundred features of images here).

use nalgebra::{DMatrix, SymmetricEigen};

#[derive(Debug, Clone)]
pub struct Pca {
    pub dim: usize,
    pub mean: Vec<f32>,
    /// Row-major `components` × `dim`, unit vectors, by decreasing variance.
    pub components: Vec<f32>,
    /// Variance along each component.
    pub variance: Vec<f64>,
}

impl Pca {
    /// Fits `components` directions to the rows of `data` (row-major, `dim` columns).
    pub fn fit(data: &[f32], dim: usize, components: usize) -> Pca {
        let n = data.len() / dim;
        assert!(n >= 2 && components >= 1 && components <= dim, "PCA of {n} × {dim} into {components}");
        let mut mean = vec![0.0f64; dim];
        for row in data.chunks_exact(dim) {
            mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x as f64);
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mean: Vec<f32> = mean.into_iter().map(|m| m as f32).collect();

        // Covariance = XᵀX / (n − 1) of the centred data, through a single-precision matrix product.
        // Built as Xᵀ (dim × n) so that the product goes through the blocked matrix multiplication
        // (`tr_mul` takes one long dot product per entry: eight times slower on MNIST).
        let centred_t = DMatrix::from_fn(dim, n, |j, i| data[i * dim + j] - mean[j]);
        let scatter = &centred_t * centred_t.transpose();
        let covariance = scatter.map(|v| v as f64 / (n - 1) as f64);
        let eigen = SymmetricEigen::new(covariance);

        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
        let mut out = Vec::with_capacity(components * dim);
        for &c in &order[..components] {
            let v = eigen.eigenvectors.column(c);
            // An eigenvector's sign is arbitrary: fix it (largest entry positive) so runs agree.
            let largest = v.iter().copied().max_by(|a, b| a.abs().total_cmp(&b.abs())).unwrap_or(1.0);
            let sign = if largest < 0.0 { -1.0 } else { 1.0 };
            out.extend(v.iter().map(|&x| (sign * x) as f32));
        }
        let variance = order[..components].iter().map(|&c| eigen.eigenvalues[c]).collect();
        Pca { dim, mean, components: out, variance }
    }

    pub fn n_components(&self) -> usize {
        self.variance.len()
    }

    /// Coordinates of each row of `data` along the components (row-major, rows × components).
    pub fn transform(&self, data: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(data.len() / self.dim * self.n_components());
        let mut centred = vec![0.0f32; self.dim];
        for row in data.chunks_exact(self.dim) {
            centred.iter_mut().zip(row.iter().zip(&self.mean)).for_each(|(c, (x, m))| *c = x - m);
            out.extend(
                self.components
                    .chunks_exact(self.dim)
                    .map(|axis| stdac_device::centroids::dot(&centred, axis)),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_long_axis_of_an_elongated_cloud() {
        // Points along (1, 1) with a little spread across it.
        let mut data = Vec::new();
        for i in 0..200 {
            let t = i as f32 / 10.0 - 10.0;
            let s = if i % 2 == 0 { 0.1 } else { -0.1 };
            data.extend([5.0 + t + s, -3.0 + t - s]);
        }
        let pca = Pca::fit(&data, 2, 2);
        let first = &pca.components[..2];
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((first[0] - h).abs() < 1e-3 && (first[1] - h).abs() < 1e-3, "{first:?}");
        assert!(pca.variance[0] > 100.0 * pca.variance[1]);
        assert!((pca.mean[0] - 5.0).abs() < 0.1 && (pca.mean[1] + 3.0).abs() < 0.1);
        // Projections are centred.
        let projected = pca.transform(&data);
        let mean0: f32 = projected.chunks(2).map(|p| p[0]).sum::<f32>() / 200.0;
        assert!(mean0.abs() < 1e-3);
    }
}
