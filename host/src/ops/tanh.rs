//! tanh, element-wise, forward and backward (∂x = ∂y · (1 − y²), from the kept output), spread over
//! the threads. burn-flex runs its tanh on the calling thread: the localization nets' activations
//! took about 6 % of an edge-network step's time there, on one core while the other waited
//! (models/RESULTS.md).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{autodiff_parts, from_flex, into_flex, recorded, tensor_like, values, zeros};

/// Values per parallel task.
const CHUNK: usize = 4096;

pub fn forward(x: &[f32]) -> Vec<f32> {
    let mut y = zeros(x.len());
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| {
        y.iter_mut().zip(x).for_each(|(y, x)| *y = x.tanh());
    });
    y
}

/// The input's gradient from the output `y` and its gradient `dy`.
pub fn backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = zeros(y.len());
    dx.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)).for_each(|((dx, y), dy)| {
        dx.iter_mut().zip(y).zip(dy).for_each(|((dx, y), g)| *dx = g * (1.0 - y * y));
    });
    dx
}

pub(super) fn flex<const D: usize>(x: Tensor<Flex, D>) -> Tensor<Flex, D> {
    let x = into_flex(x);
    from_flex(tensor_like(&x, forward(&values(&x))))
}

#[derive(Debug)]
struct TanhBackward;

impl Backward<Flex, 1> for TanhBackward {
    /// The output.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        if let [Some(node)] = ops.parents {
            grads.register::<Flex>(node.id, tensor_like(&y, backward(&values(&y), &values(&dy))));
        }
    }
}

pub(super) fn autodiff<const D: usize>(x: Tensor<Autodiff<Flex>, D>) -> Tensor<Autodiff<Flex>, D> {
    let x = autodiff_parts(x);
    let y = tensor_like(&x.primitive, forward(&values(&x.primitive)));
    let prep = TanhBackward.prepare::<NoCheckpointing>([x.node]).compute_bound().stateful();
    recorded(prep, y.clone(), y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{reference, TrainOps};
    use burn::tensor::{Distribution, Tolerance};

    type Ad = Autodiff<Flex>;

    #[test]
    fn forward_and_gradient_match_burns_tanh() {
        let device = Default::default();
        // More values than one task holds, and fewer.
        for dims in [[3, 20, 14, 14], [2, 1, 3, 5]] {
            let x = Tensor::<Ad, 4>::random(dims, Distribution::Uniform(-3.0, 3.0), &device).require_grad();
            let ours = <Ad as TrainOps>::tanh(x.clone());
            let theirs = reference::tanh(x.clone());
            ours.clone()
                .into_data()
                .assert_approx_eq::<f32>(&theirs.clone().into_data(), Tolerance::absolute(1e-6));
            let probe = Tensor::<Ad, 4>::random(dims, Distribution::Uniform(-1.0, 1.0), &device);
            let g_ours = (ours * probe.clone()).sum().backward();
            let g_theirs = (theirs * probe).sum().backward();
            let (a, b) = (x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap());
            a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) / 30.0).collect();
        let probe: Vec<f32> = (0..200).map(|i| ((i * 11 % 19) as f32 - 9.0) / 9.0).collect();
        let objective =
            |x: &[f32]| -> f64 { forward(x).iter().zip(&probe).map(|(y, p)| (y * p) as f64).sum() };
        let dx = backward(&forward(&x), &probe);
        let eps = 1e-3f32;
        for i in 0..x.len() {
            let (mut plus, mut minus) = (x.clone(), x.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let numeric = (objective(&plus) - objective(&minus)) / (2.0 * eps as f64);
            assert!((numeric - dx[i] as f64).abs() < 1e-3, "dx[{i}]: {} against {numeric}", dx[i]);
        }
    }
}
