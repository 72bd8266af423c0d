//! 2-D convolution on the CPU as matrix products, forward and backward.
//!
//! Per image, the input's patches are laid out as a matrix (im2col, [C·KH·KW, OH·OW]) and the output
//! is weight [O, C·KH·KW] × patches. Backward: the input's gradient is weightᵀ × output gradient,
//! scattered back onto the image (col2im); the weight's is output gradient × patchesᵀ summed over the
//! batch. Images are spread over the threads; the weight gradient is summed per fixed group of
//! [`GROUP`] images and the groups then in order, so the result is the same for any thread count.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{autodiff_parts, from_flex, into_flex, recorded, tensor_of, values, zeros};
use super::matmul::{matmul, Matrix};

/// Images whose weight gradients are summed together before the groups are.
const GROUP: usize = 8;

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: usize,
    pub padding: usize,
    pub out_height: usize,
    pub out_width: usize,
}

impl Geometry {
    /// For an input of `x` = [N, C, H, W] and a weight of `w` = [O, C, KH, KW].
    pub fn new(x: [usize; 4], w: [usize; 4], stride: usize, padding: usize) -> Self {
        assert_eq!(x[1], w[1], "the input has {} channels, the weight takes {}", x[1], w[1]);
        assert!(stride >= 1, "a stride of 0");
        let out = |size: usize, k: usize| {
            assert!(size + 2 * padding >= k, "a {k}-wide kernel on a map of {size} padded by {padding}");
            (size + 2 * padding - k) / stride + 1
        };
        Geometry {
            batch: x[0],
            in_channels: x[1],
            height: x[2],
            width: x[3],
            out_channels: w[0],
            kernel: [w[2], w[3]],
            stride,
            padding,
            out_height: out(x[2], w[2]),
            out_width: out(x[3], w[3]),
        }
    }

    /// Values in one patch: C·KH·KW.
    fn patch(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// Output positions per image: OH·OW.
    fn positions(&self) -> usize {
        self.out_height * self.out_width
    }

    fn image(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    /// A 1×1 kernel with stride 1 and no padding: the image is its own patch matrix.
    fn pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == 1 && self.padding == 0
    }

    /// For kernel offset `k` (in 0..KW) on an output row: the output columns whose input column
    /// lies inside the image, and the input column of the first of them.
    fn columns(&self, k: usize) -> (usize, usize, isize) {
        let (s, p) = (self.stride as isize, self.padding as isize);
        let first_x = |ox: isize| ox * s + k as isize - p;
        let lo = (0..self.out_width as isize).find(|&ox| first_x(ox) >= 0).unwrap_or(self.out_width as isize);
        let hi = (lo..self.out_width as isize)
            .find(|&ox| first_x(ox) >= self.width as isize)
            .unwrap_or(self.out_width as isize);
        (lo as usize, hi as usize, first_x(lo))
    }
}

/// One image's patch matrix [C·KH·KW, OH·OW] into `col`.
fn im2col(image: &[f32], g: &Geometry, col: &mut [f32]) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (ow, positions) = (g.out_width, g.positions());
    let spans: Vec<(usize, usize, isize)> = (0..kw).map(|j| g.columns(j)).collect();
    for c in 0..g.in_channels {
        let plane = &image[c * g.height * g.width..(c + 1) * g.height * g.width];
        for i in 0..kh {
            for (j, &(lo, hi, x0)) in spans.iter().enumerate() {
                let row = &mut col[((c * kh + i) * kw + j) * positions..][..positions];
                for oy in 0..g.out_height {
                    let out = &mut row[oy * ow..(oy + 1) * ow];
                    let y = (oy * g.stride + i) as isize - g.padding as isize;
                    if y < 0 || y >= g.height as isize || lo >= hi {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[y as usize * g.width..(y as usize + 1) * g.width];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if g.stride == 1 {
                        out[lo..hi].copy_from_slice(&src[x0 as usize..x0 as usize + hi - lo]);
                    } else {
                        for (n, v) in out[lo..hi].iter_mut().enumerate() {
                            *v = src[x0 as usize + n * g.stride];
                        }
                    }
                }
            }
        }
    }
}

/// Adds a patch matrix's values back onto the image positions they were read from (im2col's adjoint).
fn col2im(col: &[f32], g: &Geometry, image: &mut [f32]) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (ow, positions) = (g.out_width, g.positions());
    let spans: Vec<(usize, usize, isize)> = (0..kw).map(|j| g.columns(j)).collect();
    for c in 0..g.in_channels {
        let plane = &mut image[c * g.height * g.width..(c + 1) * g.height * g.width];
        for i in 0..kh {
            for (j, &(lo, hi, x0)) in spans.iter().enumerate() {
                let row = &col[((c * kh + i) * kw + j) * positions..][..positions];
                for oy in 0..g.out_height {
                    let y = (oy * g.stride + i) as isize - g.padding as isize;
                    if y < 0 || y >= g.height as isize || lo >= hi {
                        continue;
                    }
                    let dst = &mut plane[y as usize * g.width..(y as usize + 1) * g.width];
                    let src = &row[oy * ow + lo..oy * ow + hi];
                    if g.stride == 1 {
                        // Contiguous on both sides: a loop the compiler vectorises.
                        dst[x0 as usize..x0 as usize + src.len()]
                            .iter_mut()
                            .zip(src)
                            .for_each(|(d, v)| *d += v);
                    } else {
                        for (n, v) in src.iter().enumerate() {
                            dst[x0 as usize + n * g.stride] += v;
                        }
                    }
                }
            }
        }
    }
}

/// One image's patch matrix: the image itself for a pointwise kernel, else built in `col`.
fn patches<'a>(image: &'a [f32], g: &Geometry, col: &'a mut [f32]) -> &'a [f32] {
    if g.pointwise() {
        image
    } else {
        im2col(image, g, col);
        col
    }
}

/// `buffer` cut into one slice of `len` per group; all empty when the buffer is (a gradient not asked for).
fn per_group(buffer: &mut [f32], len: usize, groups: usize) -> Vec<&mut [f32]> {
    let mut chunks: Vec<&mut [f32]> = buffer.chunks_mut(len.max(1)).collect();
    chunks.resize_with(groups, || &mut []);
    chunks
}

/// The convolution of `x` ([N, C, H, W]) by `weight` ([O, C, KH, KW]) plus `bias`, as [N, O, OH, OW].
pub fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    let (patch, positions) = (g.patch(), g.positions());
    let per_image = g.out_channels * positions;
    let mut out = zeros(g.batch * per_image);
    let w = Matrix::new(weight, g.out_channels, patch);
    out.par_chunks_mut(per_image).enumerate().for_each_init(
        || vec![0.0f32; if g.pointwise() { 0 } else { patch * positions }],
        |col, (n, y)| {
            let patches = patches(&x[n * g.image()..(n + 1) * g.image()], g, col);
            matmul(w, Matrix::new(patches, patch, positions), y, false);
            if let Some(bias) = bias {
                for (row, b) in y.chunks_mut(positions).zip(bias) {
                    row.iter_mut().for_each(|v| *v += b);
                }
            }
        },
    );
    out
}

/// Which gradients to compute.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub input: bool,
    pub weight: bool,
    pub bias: bool,
}

/// The gradients a backward pass computed: each one `Wanted` asked for.
#[derive(Debug, PartialEq)]
pub struct Grads {
    /// [N, C, H, W].
    pub input: Option<Vec<f32>>,
    /// [O, C, KH, KW].
    pub weight: Option<Vec<f32>>,
    /// [O].
    pub bias: Option<Vec<f32>>,
}

/// The gradients of the convolution with respect to what `wanted` asks for, from the output's
/// gradient `dy` ([N, O, OH, OW]).
pub fn backward(x: &[f32], weight: &[f32], dy: &[f32], g: &Geometry, wanted: Wanted) -> Grads {
    let (patch, positions) = (g.patch(), g.positions());
    let per_out = g.out_channels * positions;
    let w = Matrix::new(weight, g.out_channels, patch);
    let mut dx = zeros(if wanted.input { g.batch * g.image() } else { 0 });
    let groups = g.batch.div_ceil(GROUP);
    // One weight (and bias) gradient per group of images, each summed in image order.
    let mut partial_w = vec![0.0f32; if wanted.weight { groups * g.out_channels * patch } else { 0 }];
    let mut partial_b = vec![0.0f32; if wanted.bias { groups * g.out_channels } else { 0 }];
    let dx_chunks = per_group(&mut dx, GROUP * g.image(), groups);
    let w_chunks = per_group(&mut partial_w, g.out_channels * patch, groups);
    let b_chunks = per_group(&mut partial_b, g.out_channels, groups);
    dx_chunks.into_par_iter().zip(w_chunks).zip(b_chunks).enumerate().for_each(|(group, ((dx, dw), db))| {
        let mut col = vec![0.0f32; patch * positions];
        let first = group * GROUP;
        for n in first..(first + GROUP).min(g.batch) {
            let dy_n = &dy[n * per_out..(n + 1) * per_out];
            let dy_m = Matrix::new(dy_n, g.out_channels, positions);
            if wanted.weight {
                let patches = patches(&x[n * g.image()..(n + 1) * g.image()], g, &mut col);
                matmul(dy_m, Matrix::new(patches, patch, positions).t(), dw, n > first);
            }
            if wanted.bias {
                for (b, row) in db.iter_mut().zip(dy_n.chunks(positions)) {
                    *b += row.iter().sum::<f32>();
                }
            }
            if wanted.input {
                let dx_n = &mut dx[(n - first) * g.image()..(n - first + 1) * g.image()];
                if g.pointwise() {
                    matmul(w.t(), dy_m, dx_n, false);
                } else {
                    matmul(w.t(), dy_m, &mut col, false);
                    col2im(&col, g, dx_n);
                }
            }
        }
    });
    let sum_groups = |partial: Vec<f32>, len: usize| {
        let mut total = partial[..len].to_vec();
        for group in partial[len..].chunks(len) {
            total.iter_mut().zip(group).for_each(|(t, v)| *t += v);
        }
        total
    };
    Grads {
        input: wanted.input.then_some(dx),
        weight: wanted.weight.then(|| sum_groups(partial_w, g.out_channels * patch)),
        bias: wanted.bias.then(|| sum_groups(partial_b, g.out_channels)),
    }
}

type Ad = Autodiff<Flex>;

/// The forward pass on the CPU backend.
pub(super) fn flex(
    x: Tensor<Flex, 4>,
    weight: Tensor<Flex, 4>,
    bias: Option<Tensor<Flex, 1>>,
    stride: usize,
    padding: usize,
) -> Tensor<Flex, 4> {
    let (x, weight, bias) = (into_flex(x), into_flex(weight), bias.map(into_flex));
    from_flex(compute(&x, &weight, bias.as_ref(), stride, padding).0)
}

fn compute(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    stride: usize,
    padding: usize,
) -> (FlexTensor, Geometry) {
    let dims = |t: &FlexTensor| -> [usize; 4] { t.layout().shape().dims() };
    let g = Geometry::new(dims(x), dims(weight), stride, padding);
    let bias = bias.map(values);
    let out = forward(&values(x), &values(weight), bias.as_deref(), &g);
    (tensor_of(out, [g.batch, g.out_channels, g.out_height, g.out_width]), g)
}

#[derive(Debug)]
struct ConvBackward;

impl<const N: usize> Backward<Flex, N> for ConvBackward {
    /// The input, the weight, the sizes.
    type State = (FlexTensor, FlexTensor, Geometry);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight, g) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let parent = |i: usize| ops.parents.get(i).cloned().flatten();
        let (px, pw, pb) = (parent(0), parent(1), parent(2));
        let wanted = Wanted { input: px.is_some(), weight: pw.is_some(), bias: pb.is_some() };
        let Grads { input: dx, weight: dw, bias: db } =
            backward(&values(&x), &values(&weight), &values(&dy), &g, wanted);
        let [o, c, kh, kw] = [g.out_channels, g.in_channels, g.kernel[0], g.kernel[1]];
        if let (Some(node), Some(dx)) = (px, dx) {
            grads.register::<Flex>(node.id, tensor_of(dx, [g.batch, c, g.height, g.width]));
        }
        if let (Some(node), Some(dw)) = (pw, dw) {
            grads.register::<Flex>(node.id, tensor_of(dw, [o, c, kh, kw]));
        }
        if let (Some(node), Some(db)) = (pb, db) {
            grads.register::<Flex>(node.id, tensor_of(db, [o]));
        }
    }
}

/// The forward pass with its backward pass recorded.
pub(super) fn autodiff(
    x: Tensor<Ad, 4>,
    weight: Tensor<Ad, 4>,
    bias: Option<Tensor<Ad, 1>>,
    stride: usize,
    padding: usize,
) -> Tensor<Ad, 4> {
    let (x, weight, bias) = (autodiff_parts(x), autodiff_parts(weight), bias.map(autodiff_parts));
    let (out, g) =
        compute(&x.primitive, &weight.primitive, bias.as_ref().map(|b| &b.primitive), stride, padding);
    let state = (x.primitive, weight.primitive, g);
    let (xn, wn) = (x.node, weight.node);
    match bias {
        Some(b) => recorded(
            ConvBackward.prepare::<NoCheckpointing>([xn, wn, b.node]).compute_bound().stateful(),
            state,
            out,
        ),
        None => {
            recorded(ConvBackward.prepare::<NoCheckpointing>([xn, wn]).compute_bound().stateful(), state, out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{reference, TrainOps};
    use burn::tensor::{Distribution, Tolerance};

    fn random<const D: usize>(dims: [usize; D]) -> Tensor<Ad, D> {
        Tensor::random(dims, Distribution::Uniform(-1.0, 1.0), &Default::default())
    }

    /// Ours and burn's, forward and every gradient, for one set of sizes.
    fn check(x: [usize; 4], w: [usize; 4], stride: usize, padding: usize) {
        let (xs, ws, bs) =
            (random(x).require_grad(), random(w).require_grad(), random([w[0]]).require_grad());
        // A fixed random weighting of the outputs, so that every output position matters.
        let ours = <Ad as TrainOps>::conv2d(xs.clone(), ws.clone(), Some(bs.clone()), stride, padding);
        let probe = random(ours.dims());
        let theirs = reference::conv2d(xs.clone(), ws.clone(), Some(bs.clone()), stride, padding);
        let tol = Tolerance::absolute(1e-4);
        ours.clone().into_data().assert_approx_eq::<f32>(&theirs.clone().into_data(), tol);
        let g_ours = (ours * probe.clone()).sum().backward();
        let g_theirs = (theirs * probe).sum().backward();
        for (name, t) in [("input", xs.clone()), ("weight", ws.clone())] {
            let (a, b) = (t.grad(&g_ours).unwrap(), t.grad(&g_theirs).unwrap());
            assert_eq!(a.dims(), b.dims(), "{name}");
            a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(2e-3));
        }
        bs.grad(&g_ours)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&bs.grad(&g_theirs).unwrap().into_data(), Tolerance::absolute(2e-3));
    }

    #[test]
    fn forward_and_gradients_match_burns_convolution() {
        check([3, 2, 7, 6], [4, 2, 3, 3], 1, 1); // "same"
        check([2, 3, 9, 9], [5, 3, 5, 5], 1, 0); // the transformers' localization nets
        check([GROUP + 3, 1, 6, 5], [2, 1, 3, 3], 1, 1); // more images than one group
        check([2, 2, 8, 7], [3, 2, 3, 3], 2, 1); // strided
        check([2, 4, 5, 5], [3, 4, 1, 1], 1, 0); // pointwise
        check([1, 2, 3, 3], [2, 2, 3, 3], 1, 0); // one output position
    }

    #[test]
    fn gradients_match_finite_differences() {
        let g = Geometry::new([2, 2, 5, 4], [3, 2, 3, 3], 1, 1);
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let x: Vec<f32> = (0..2 * 2 * 5 * 4).map(|_| next()).collect();
        let w: Vec<f32> = (0..3 * 2 * 9).map(|_| next()).collect();
        let b: Vec<f32> = (0..3).map(|_| next()).collect();
        let probe: Vec<f32> = (0..2 * 3 * 5 * 4).map(|_| next()).collect();
        let objective = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            forward(x, w, Some(b), &g).iter().zip(&probe).map(|(y, p)| (y * p) as f64).sum()
        };
        let all = Wanted { input: true, weight: true, bias: true };
        let Grads { input: dx, weight: dw, bias: db } = backward(&x, &w, &probe, &g, all);
        let eps = 1e-2f32;
        let numeric = |f: &dyn Fn(f32) -> f64| (f(eps) - f(-eps)) / (2.0 * eps as f64);
        for (name, analytic, base) in [("x", dx.unwrap(), &x), ("w", dw.unwrap(), &w), ("b", db.unwrap(), &b)]
        {
            for i in 0..base.len() {
                let shifted = |d: f32| {
                    let mut v = base.clone();
                    v[i] += d;
                    match name {
                        "x" => objective(&v, &w, &b),
                        "w" => objective(&x, &v, &b),
                        _ => objective(&x, &w, &v),
                    }
                };
                let n = numeric(&shifted);
                // The objective is linear in each argument: differences are exact up to rounding.
                assert!((n - analytic[i] as f64).abs() < 1e-3, "d{name}[{i}]: {} against {n}", analytic[i]);
            }
        }
    }

    #[test]
    fn the_weight_gradient_does_not_depend_on_the_thread_count() {
        let g = Geometry::new([20, 3, 6, 6], [4, 3, 3, 3], 1, 1);
        let x: Vec<f32> = (0..20 * 3 * 36).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let w: Vec<f32> = (0..4 * 27).map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0).collect();
        let dy: Vec<f32> = (0..20 * 4 * 36).map(|i| ((i * 7 % 31) as f32 - 15.0) / 15.0).collect();
        let all = Wanted { input: true, weight: true, bias: true };
        let many = backward(&x, &w, &dy, &g, all);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let one = pool.install(|| backward(&x, &w, &dy, &g, all));
        assert_eq!(many, one, "bit for bit");
    }
}
