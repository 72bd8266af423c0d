//! Matrix products for the kernels, on the `gemm` crate (single-threaded: the kernels parallelise over
//! images themselves, which keeps every sum in a fixed order).

/// A row-major matrix of `rows` × `cols` stored in `data`, read as itself or transposed.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub transposed: bool,
}

impl<'a> Matrix<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= rows * cols,
            "a {rows} × {cols} matrix needs {} values, has {}",
            rows * cols,
            data.len()
        );
        Matrix { data, rows, cols, transposed: false }
    }

    pub fn t(self) -> Self {
        Matrix { transposed: !self.transposed, ..self }
    }

    /// Rows and columns as read.
    fn shape(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// Row and column strides as read.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.cols as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
}

/// `out` (row-major, `a`'s rows × `b`'s columns) = a · b, or += a · b when `accumulate`.
pub fn matmul(a: Matrix, b: Matrix, out: &mut [f32], accumulate: bool) {
    let (m, k) = a.shape();
    let (k2, n) = b.shape();
    assert_eq!(k, k2, "inner dimensions differ: {m} × {k} times {k2} × {n}");
    assert!(out.len() >= m * n, "the product needs {} values, the output has {}", m * n, out.len());
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    // SAFETY: the asserts above keep every index the product reads or writes inside its slice.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_of_plain_and_transposed_matrices_match_the_definition() {
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect(); // 2 × 3
        let b: Vec<f32> = (0..12).map(|v| (v as f32) * 0.5 - 2.0).collect(); // 3 × 4
        let expected = |a: &dyn Fn(usize, usize) -> f32, b: &dyn Fn(usize, usize) -> f32| {
            let mut c = vec![0.0f32; 8];
            for i in 0..2 {
                for j in 0..4 {
                    c[i * 4 + j] = (0..3).map(|k| a(i, k) * b(k, j)).sum();
                }
            }
            c
        };
        let mut out = vec![0.0f32; 8];
        matmul(Matrix::new(&a, 2, 3), Matrix::new(&b, 3, 4), &mut out, false);
        assert_eq!(out, expected(&|i, k| a[i * 3 + k], &|k, j| b[k * 4 + j]));
        // The same matrices stored transposed.
        let at: Vec<f32> = (0..6).map(|i| a[(i % 2) * 3 + i / 2]).collect(); // 3 × 2
        let bt: Vec<f32> = (0..12).map(|i| b[(i % 3) * 4 + i / 3]).collect(); // 4 × 3
        let mut out_t = vec![1.0f32; 8];
        matmul(Matrix::new(&at, 3, 2).t(), Matrix::new(&bt, 4, 3).t(), &mut out_t, true);
        let plus_one: Vec<f32> = out.iter().map(|v| v + 1.0).collect();
        assert_eq!(out_t, plus_one, "accumulates onto what was there");
    }
}
