//! Adam in one pass over each parameter: burn's `Adam` (same formula, same defaults, same saved state,
//! so its checkpoints resume here) reads and writes every weight about twelve times per step through
//! separate tensor operations; the CPU kernel here reads the parameter, its gradient and both moments
//! once and writes them back in place.

use burn::backend::Flex;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::flex::{from_flex, into_flex, values};
use super::reference::bias_corrections;
use super::{AdamStep, TrainOps};

/// Adam without weight decay, with burn's defaults (β₁ 0.9, β₂ 0.999, ε 1e-5).
#[derive(Debug, Clone, Copy)]
pub struct FusedAdam {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
}

impl Default for FusedAdam {
    fn default() -> Self {
        FusedAdam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-5 }
    }
}

impl FusedAdam {
    /// The optimizer of a whole module.
    pub fn init<B, M>() -> OptimizerAdaptor<FusedAdam, M, B>
    where
        B: AutodiffBackend,
        B::InnerBackend: TrainOps,
        M: AutodiffModule<B>,
    {
        OptimizerAdaptor::from(FusedAdam::default())
    }
}

impl<B: TrainOps> SimpleOptimizer<B> for FusedAdam {
    type State<const D: usize> = AdamState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (time, moments) = match state {
            Some(s) => (s.momentum.time + 1, Some((s.momentum.moment_1, s.momentum.moment_2))),
            None => (1, None),
        };
        let step =
            AdamStep { lr: lr as f32, beta_1: self.beta_1, beta_2: self.beta_2, epsilon: self.epsilon, time };
        let (param, m, v) = B::adam_step(tensor, grad, moments, step);
        (param, Some(AdamState::new(AdaptiveMomentumState::new(time, m, v))))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum.moment_1 = state.momentum.moment_1.to_device(device);
        state.momentum.moment_2 = state.momentum.moment_2.to_device(device);
        state
    }
}

/// Values per thread's share of the update.
const CHUNK: usize = 1 << 14;

/// One update of `param`, `m` and `v` in place from `grad` (zero moments before the first).
pub fn update(param: &mut [f32], m: &mut [f32], v: &mut [f32], grad: &[f32], step: AdamStep) {
    let AdamStep { lr, beta_1, beta_2, epsilon, time } = step;
    let (factor, second) = bias_corrections(beta_1, beta_2, time);
    let eps = epsilon * second;
    param
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| {
            for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                *m = *m * beta_1 + g * (1.0 - beta_1);
                *v = *v * beta_2 + g * g * (1.0 - beta_2);
                *p -= lr * (*m * factor) / (v.sqrt() + eps);
            }
        });
}

pub(super) fn flex<const D: usize>(
    param: Tensor<Flex, D>,
    grad: Tensor<Flex, D>,
    moments: Option<(Tensor<Flex, D>, Tensor<Flex, D>)>,
    step: AdamStep,
) -> (Tensor<Flex, D>, Tensor<Flex, D>, Tensor<Flex, D>) {
    let dims = param.dims();
    let (m, v) = moments.unwrap_or_else(|| {
        let device = param.device();
        (Tensor::zeros(dims, &device), Tensor::zeros(dims, &device))
    });
    // Contiguous and owned: in place when nothing else holds the buffer, a copy otherwise.
    let owned = |t: Tensor<Flex, D>| {
        let t = into_flex(t);
        if t.as_slice::<f32>().is_some() {
            t
        } else {
            t.to_contiguous()
        }
    };
    let (mut p, mut m, mut v) = (owned(param), owned(m), owned(v));
    let g = into_flex(grad);
    update(p.storage_mut::<f32>(), m.storage_mut::<f32>(), v.storage_mut::<f32>(), &values(&g), step);
    (from_flex(p), from_flex(m), from_flex(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::reference;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn three_updates_match_burns_adam_formula() {
        let device = Default::default();
        let dims = [3, 40_000]; // more than one chunk
        let mut ours = Tensor::<Flex, 2>::random(dims, Distribution::Default, &device);
        let mut theirs = ours.clone();
        let mut moments = None;
        let mut their_moments = None;
        for time in 1..=3 {
            let grad = Tensor::<Flex, 2>::random(dims, Distribution::Uniform(-1.0, 1.0), &device);
            let step = AdamStep { lr: 0.01, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-5, time };
            let (p, m, v) = <Flex as TrainOps>::adam_step(ours, grad.clone(), moments, step);
            let (q, mr, vr) = reference::adam_step(theirs, grad, their_moments, step);
            let tol = Tolerance::absolute(1e-6);
            p.clone().into_data().assert_approx_eq::<f32>(&q.clone().into_data(), tol);
            m.clone().into_data().assert_approx_eq::<f32>(&mr.clone().into_data(), tol);
            (ours, theirs, moments, their_moments) = (p, q, Some((m, v)), Some((mr, vr)));
        }
    }

    #[test]
    fn a_module_trained_with_it_follows_burns_adam() {
        use burn::nn::{Linear, LinearConfig};
        type Ad = burn::backend::Autodiff<Flex>;
        let device = Default::default();
        let model: Linear<Ad> = LinearConfig::new(5, 3).init(&device);
        // Parameters are initialised lazily, on first use: before the copy, so both start alike.
        let _ = (model.weight.val(), model.bias.as_ref().map(|b| b.val()));
        let (mut ours, mut theirs) = (model.clone(), model);
        let mut fused = FusedAdam::init::<Ad, Linear<Ad>>();
        let mut adam = AdamConfig::new().init::<Ad, Linear<Ad>>();
        let x = Tensor::<Ad, 2>::random([8, 5], Distribution::Default, &device);
        for _ in 0..4 {
            let loss = |m: &Linear<Ad>| m.forward(x.clone()).powf_scalar(2.0).mean();
            let g = GradientsParams::from_grads(loss(&ours).backward(), &ours);
            ours = fused.step(1e-2, ours, g);
            let g = GradientsParams::from_grads(loss(&theirs).backward(), &theirs);
            theirs = adam.step(1e-2, theirs, g);
        }
        ours.weight
            .val()
            .into_data()
            .assert_approx_eq::<f32>(&theirs.weight.val().into_data(), Tolerance::absolute(1e-6));
        // The saved state has the layout of burn's Adam: a checkpoint written by it resumes here.
        use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
        let dir = tempfile::tempdir().unwrap();
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        recorder.record(adam.to_record(), dir.path().join("optimizer")).unwrap();
        let record = recorder.load(dir.path().join("optimizer"), &device).expect("burn's Adam record loads");
        let mut resumed = FusedAdam::init::<Ad, Linear<Ad>>().load_record(record);
        let grads = |m: &Linear<Ad>| {
            GradientsParams::from_grads(m.forward(x.clone()).powf_scalar(2.0).mean().backward(), m)
        };
        let (a, b) =
            (resumed.step(1e-2, ours.clone(), grads(&ours)), fused.step(1e-2, ours.clone(), grads(&ours)));
        a.weight
            .val()
            .into_data()
            .assert_approx_eq::<f32>(&b.weight.val().into_data(), Tolerance::absolute(1e-7));
    }
}
