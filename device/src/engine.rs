//! The inference engine: a checked bundle, its graph optimised once by tract, and nearest-centroid
//! assignment of every frame.
//!
//! [`Engine::load`] refuses a bundle made for another tract version, with a metric it does not know, or
//! whose graph does not load, lacks an `embedding` output or disagrees with its manifest, before
//! anything is kept: a bundle either loads whole or not at all.
//!
//! Frames one at a time (the board's steady state) run in a session kept from frame to frame: tract's
//! state, the input tensor, written in place, and the scratch for colour conversion. The engine
//! itself then allocates nothing per frame; tract still allocates each operator's output, a fixed
//! number per frame that `tests/allocations.rs` counts. Batches (evaluation on a host) run through a
//! second plan whose batch dimension is symbolic, built the first time a batch comes.

use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};

use tract_onnx::prelude::*;

use crate::bundle::{Bundle, BundleError, Manifest};
use crate::centroids::{Centroids, Metric, Nearest};
use crate::preprocess::{letterbox_frame_into, FrameError, FrameRef};

/// The STN-corrected picture from an [`Assignment::theta`].
pub use crate::warp::{corrected, corrected_into};

/// The tract-onnx version this engine runs graphs with (the workspace pins it).
pub const TRACT_VERSION: &str = "0.23.9";

type Plan = Arc<TypedSimplePlan>;

/// Runs every engine of this process on `threads` threads (tract's kernels, through a rayon pool);
/// 1, the default, keeps tract on the calling thread. Boards with cores to spare for one camera stream
/// trade them for latency here.
pub fn use_threads(threads: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    set_default_executor(if threads > 1 { Executor::multithread(threads) } else { Executor::SingleThread });
}

/// Values in a 2 × 3 affine θ.
const THETA_LEN: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{origin}: made for tract {found}, this engine runs tract {TRACT_VERSION}: export it again")]
    TractVersion { origin: String, found: String },
    #[error("{origin}: {detail}")]
    Graph { origin: String, detail: String },
    #[error("a frame of {found} values, the model takes {expected} ({what})")]
    FrameSize { found: usize, expected: usize, what: String },
    #[error(
        "a batch of {found} values for {frames} frames, the model takes {per_frame} per frame, \
         {expected} in all ({what})"
    )]
    BatchSize { found: usize, frames: usize, per_frame: usize, expected: usize, what: String },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(
        "{origin}: the manifest's `input.shape` is {shape:?}, not one square grey image [N, 1, S, S]: \
         camera frames cannot be prepared for it (pass the model's values to `assign`)"
    )]
    NotAnImage { origin: String, shape: Vec<i64> },
    #[error("{origin}: running the model: {detail}")]
    Run { origin: String, detail: String },
}

/// Where one frame belongs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment {
    pub cluster: usize,
    /// Distance to that cluster's centroid.
    pub distance: f32,
    /// How much farther the runner-up centroid is.
    pub margin: f32,
    /// Farther from its centroid than the manifest's novelty threshold.
    pub novel: bool,
    /// The input spatial transformer's 2 × 3 affine θ (row-major), for graphs with a `theta` output;
    /// [`corrected`] turns it into the picture the model saw.
    pub theta: Option<[f32; THETA_LEN]>,
}

/// Everything one frame needs besides the plan, kept between frames so a frame allocates nothing of
/// the engine's own.
struct Session {
    state: TypedSimpleState,
    /// The frame tensor. tract gets a second handle for the run and drops it when the run ends, after
    /// which the next frame is written in place.
    input: Arc<Tensor>,
    /// Grey bytes of a colour frame.
    grey: Vec<u8>,
}

impl Session {
    fn new(plan: &Plan, frame_shape: &[usize]) -> TractResult<Session> {
        Ok(Session {
            state: plan.spawn()?,
            input: Arc::new(Tensor::zero::<f32>(frame_shape)?),
            grey: Vec::new(),
        })
    }
}

pub struct Engine {
    /// Where the bundle came from, named in errors.
    origin: String,
    manifest: Manifest,
    plan: Plan,
    centroids: Centroids,
    /// The input tensor's shape for one frame (the batch fixed to 1), e.g. [1, 1, 28, 28].
    frame_shape: Vec<usize>,
    /// Values per frame (e.g. 784 for one 28 × 28 grey image).
    frame_len: usize,
    /// Position of `embedding` among the graph's outputs.
    embedding_output: usize,
    /// Position of `theta`, for graphs with an input spatial transformer.
    theta_output: Option<usize>,
    /// The side S of an input [N, 1, S, S]: frames from a camera can be prepared for the model.
    image_side: Option<usize>,
    /// The single-frame session. A caller that finds it busy (another thread mid-frame) runs in a
    /// session of its own rather than wait.
    session: Mutex<Session>,
    /// The graph, kept to build the batch plan when the first batch comes (most boards never batch).
    graph: Vec<u8>,
    batch_plan: OnceLock<Plan>,
}

impl Engine {
    /// Builds the engine of `bundle` (read from `origin`, named in errors).
    pub fn load(bundle: Bundle, origin: &str) -> Result<Engine, EngineError> {
        let Bundle { manifest: m, graph } = bundle;
        m.validate(origin)?;
        if m.tract_version != TRACT_VERSION {
            return Err(EngineError::TractVersion { origin: origin.into(), found: m.tract_version });
        }
        let metric = match m.metric.as_str() {
            "euclidean" => Metric::Euclidean,
            _ => Metric::Cosine,
        };
        let graph_error = |detail: String| EngineError::Graph { origin: origin.into(), detail };
        if !m.outputs.iter().any(|o| o == "embedding") {
            return Err(graph_error("the manifest names no `embedding` output".into()));
        }
        // One frame at a time: the batch dimension is fixed to 1 for the single-frame plan.
        let frame_shape: Vec<usize> =
            m.input.shape.iter().map(|&d| if d < 0 { 1 } else { d as usize }).collect();
        let frame_len = frame_shape.iter().product();
        let image_side = match m.input.shape[..] {
            [n, 1, h, w] if (n == 1 || n < 0) && h == w && h > 0 => Some(h as usize),
            _ => None,
        };
        let model = tract_onnx::onnx()
            .model_for_read(&mut &graph[..])
            .map_err(|e| graph_error(format!("tract cannot load the graph: {e:#}")))?;
        // Outputs are found by name: the graph may order them otherwise, or have more.
        let graph_outputs: Vec<String> = model
            .outputs
            .iter()
            .map(|&outlet| model.outlet_label(outlet).unwrap_or_default().to_string())
            .collect();
        let output = |name: &str| graph_outputs.iter().position(|o| o == name);
        if let Some(missing) = m.outputs.iter().find(|name| output(name).is_none()) {
            return Err(graph_error(format!(
                "the manifest's `outputs` names `{missing}`, which the graph does not have (its outputs: {})",
                graph_outputs.join(", ")
            )));
        }
        let embedding_output = output("embedding").expect("checked above");
        let theta_output = m.outputs.iter().any(|o| o == "theta").then(|| output("theta")).flatten();
        let plan = model
            .with_input_fact(0, f32::fact(&frame_shape).into())
            .and_then(|model| model.into_optimized())
            .and_then(|model| model.into_runnable())
            .map_err(|e| graph_error(format!("tract cannot load the graph: {e:#}")))?;
        check_output_sizes(&plan, &m, embedding_output, theta_output).map_err(graph_error)?;
        let session = Session::new(&plan, &frame_shape)
            .map_err(|e| graph_error(format!("tract cannot start a session: {e:#}")))?;
        let centroids = Centroids::new(m.centroids.clone(), m.embedding_dim, metric);
        Ok(Engine {
            origin: origin.into(),
            manifest: m,
            plan,
            centroids,
            frame_shape,
            frame_len,
            embedding_output,
            theta_output,
            image_side,
            session: Mutex::new(session),
            graph,
            batch_plan: OnceLock::new(),
        })
    }

    /// Reads, checks and loads the bundle file at `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Engine, EngineError> {
        Engine::load(Bundle::read(path)?, &path.display().to_string())
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The side S of the square grey image the model takes, when it takes one ([N, 1, S, S]).
    pub fn image_side(&self) -> Option<usize> {
        self.image_side
    }

    /// The model's output for one frame (the input tensor's values, e.g. 28 × 28 grey in [0, 1]).
    pub fn embed(&self, frame: &[f32]) -> Result<Vec<f32>, EngineError> {
        self.check_frame_len(frame)?;
        self.run_one(|input, _| copy(frame, input), |embedding, _| embedding.to_vec())
    }

    /// Runs one frame of the model's values and assigns it to its nearest centroid.
    pub fn assign(&self, frame: &[f32]) -> Result<Assignment, EngineError> {
        self.check_frame_len(frame)?;
        self.run_one(|input, _| copy(frame, input), |embedding, theta| self.nearest(embedding, theta))
    }

    /// Prepares a captured frame (any size; grey, RGB or YUYV) as the model's square grey input and
    /// assigns it. Only for models that take one grey image ([`Engine::image_side`]).
    pub fn assign_frame(&self, frame: FrameRef<'_>) -> Result<Assignment, EngineError> {
        let side = self.image_side.ok_or_else(|| EngineError::NotAnImage {
            origin: self.origin.clone(),
            shape: self.manifest.input.shape.clone(),
        })?;
        self.run_one(
            |input, grey| Ok(letterbox_frame_into(frame, side, input, grey)?),
            |embedding, theta| self.nearest(embedding, theta),
        )
    }

    /// Assigns `n` frames laid end to end in `frames`, in one run of the model. The results equal
    /// [`Engine::assign`]'s frame by frame (embeddings within rounding: tract may pick other kernels
    /// for a batch).
    pub fn assign_batch(&self, frames: &[f32], n: usize) -> Result<Vec<Assignment>, EngineError> {
        let expected = n.checked_mul(self.frame_len);
        if expected != Some(frames.len()) {
            return Err(EngineError::BatchSize {
                found: frames.len(),
                frames: n,
                per_frame: self.frame_len,
                expected: expected.unwrap_or(usize::MAX),
                what: self.input_description(),
            });
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.manifest.input.shape.first().is_none_or(|&d| d >= 0) {
            // The graph's batch is fixed: one frame at a time is all it runs.
            return frames.chunks_exact(self.frame_len).map(|frame| self.assign(frame)).collect();
        }
        let plan = self.batch_plan()?;
        let mut shape = self.frame_shape.clone();
        shape[0] = n;
        let input = Tensor::from_shape(&shape, frames).map_err(|e| self.run_error(e))?;
        let outputs = plan.run(tvec!(input.into())).map_err(|e| self.run_error(e))?;
        let embeddings = self.output_values(&outputs, self.embedding_output, "embedding")?;
        let thetas = match self.theta_output {
            Some(ix) => Some(self.output_values(&outputs, ix, "theta")?),
            None => None,
        };
        let dim = self.manifest.embedding_dim;
        if embeddings.len() != n * dim || thetas.is_some_and(|t| t.len() != n * THETA_LEN) {
            return Err(self.output_size_error(n, embeddings.len(), thetas.map(<[f32]>::len)));
        }
        Ok((0..n)
            .map(|i| {
                let theta = thetas.map(|t| &t[i * THETA_LEN..(i + 1) * THETA_LEN]);
                self.nearest(&embeddings[i * dim..(i + 1) * dim], theta)
            })
            .collect())
    }

    /// Runs one frame in the kept session: `fill` writes the frame into the input tensor (with the
    /// session's scratch at hand), `read` takes the embedding and θ before tract lets go of them.
    fn run_one<R>(
        &self,
        fill: impl FnOnce(&mut [f32], &mut Vec<u8>) -> Result<(), EngineError>,
        read: impl FnOnce(&[f32], Option<&[f32]>) -> R,
    ) -> Result<R, EngineError> {
        let mut own_session;
        let mut kept: MutexGuard<'_, Session>;
        let session: &mut Session = match self.session.try_lock() {
            Ok(guard) => {
                kept = guard;
                &mut kept
            }
            Err(TryLockError::Poisoned(poisoned)) => {
                // A panic mid-frame: the kept state may be half-run, so start afresh.
                kept = poisoned.into_inner();
                *kept = Session::new(&self.plan, &self.frame_shape).map_err(|e| self.run_error(e))?;
                self.session.clear_poison();
                &mut kept
            }
            Err(TryLockError::WouldBlock) => {
                own_session = Session::new(&self.plan, &self.frame_shape).map_err(|e| self.run_error(e))?;
                &mut own_session
            }
        };
        // tract lets go of the input when a run ends; should it not have (a run that failed), the next
        // frame gets a fresh tensor instead of a shared one.
        if Arc::get_mut(&mut session.input).is_none() {
            session.input = Arc::new(Tensor::zero::<f32>(&self.frame_shape).map_err(|e| self.run_error(e))?);
        }
        {
            let tensor = Arc::get_mut(&mut session.input).expect("no other handle: just checked");
            let mut view = tensor.try_as_plain_ram_mut().map_err(|e| self.run_error(e))?;
            let values = view.as_slice_mut::<f32>().map_err(|e| self.run_error(e))?;
            fill(values, &mut session.grey)?;
        }
        let outputs = match session.state.run(tvec!(session.input.clone().into_tvalue())) {
            Ok(outputs) => outputs,
            Err(e) => {
                // Drop whatever the failed run left behind, the input's second handle among it.
                let _ = session.state.reset_turn();
                return Err(self.run_error(e));
            }
        };
        let embedding = self.output_values(&outputs, self.embedding_output, "embedding")?;
        let theta = match self.theta_output {
            Some(ix) => Some(self.output_values(&outputs, ix, "theta")?),
            None => None,
        };
        if embedding.len() != self.manifest.embedding_dim || theta.is_some_and(|t| t.len() != THETA_LEN) {
            return Err(self.output_size_error(1, embedding.len(), theta.map(<[f32]>::len)));
        }
        Ok(read(embedding, theta))
    }

    /// The plan with a symbolic batch dimension `N`, built on first use.
    fn batch_plan(&self) -> Result<&Plan, EngineError> {
        if let Some(plan) = self.batch_plan.get() {
            return Ok(plan);
        }
        let plan = (|| -> TractResult<Plan> {
            let model = tract_onnx::onnx().model_for_read(&mut &self.graph[..])?;
            let batch = model.symbols.sym("N");
            let shape: Vec<TDim> = std::iter::once(batch.to_dim())
                .chain(self.frame_shape[1..].iter().map(|&d| d.to_dim()))
                .collect();
            model.with_input_fact(0, f32::fact(shape).into())?.into_optimized()?.into_runnable()
        })()
        .map_err(|e| EngineError::Graph {
            origin: self.origin.clone(),
            detail: format!("tract cannot build the batch plan: {e:#}"),
        })?;
        // Two threads may both have built one; either will do.
        Ok(self.batch_plan.get_or_init(|| plan))
    }

    fn nearest(&self, embedding: &[f32], theta: Option<&[f32]>) -> Assignment {
        let Nearest { index, distance, margin } = self.centroids.nearest(embedding);
        let novel = self.manifest.novelty_threshold.is_some_and(|t| distance > t);
        let theta = theta.map(|t| t.try_into().expect("θ's length was checked"));
        Assignment { cluster: index, distance, margin, novel, theta }
    }

    fn check_frame_len(&self, frame: &[f32]) -> Result<(), EngineError> {
        if frame.len() != self.frame_len {
            return Err(EngineError::FrameSize {
                found: frame.len(),
                expected: self.frame_len,
                what: self.input_description(),
            });
        }
        Ok(())
    }

    /// The values of output `ix` (named `name` in errors).
    fn output_values<'o>(
        &self,
        outputs: &'o [TValue],
        ix: usize,
        name: &str,
    ) -> Result<&'o [f32], EngineError> {
        let output = outputs.get(ix).ok_or_else(|| EngineError::Run {
            origin: self.origin.clone(),
            detail: format!("the graph returned {} outputs, `{name}` is output {ix}", outputs.len()),
        })?;
        output.try_as_plain_ram().and_then(|view| view.as_slice::<f32>()).map_err(|e| EngineError::Run {
            origin: self.origin.clone(),
            detail: format!("output `{name}`: {e:#}"),
        })
    }

    fn output_size_error(&self, frames: usize, embedding: usize, theta: Option<usize>) -> EngineError {
        let mut detail = format!(
            "{frames} frame(s) gave {embedding} `embedding` values, expected {} (manifest `embedding_dim` {})",
            frames * self.manifest.embedding_dim,
            self.manifest.embedding_dim
        );
        if let Some(theta) = theta {
            detail += &format!(" and {theta} `theta` values, expected {}", frames * THETA_LEN);
        }
        EngineError::Run { origin: self.origin.clone(), detail }
    }

    fn run_error(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError::Run { origin: self.origin.clone(), detail: format!("{e:#}") }
    }

    fn input_description(&self) -> String {
        format!("{} {:?}", self.manifest.input.name, self.manifest.input.shape)
    }
}

fn copy(frame: &[f32], input: &mut [f32]) -> Result<(), EngineError> {
    input.copy_from_slice(frame);
    Ok(())
}

/// Checks the single-frame plan's outputs against the manifest, wherever tract knows their shapes:
/// `embedding` of `embedding_dim` values, `theta` of six.
fn check_output_sizes(
    plan: &Plan,
    m: &Manifest,
    embedding_output: usize,
    theta_output: Option<usize>,
) -> Result<(), String> {
    let expectations =
        [("embedding", Some(embedding_output), m.embedding_dim), ("theta", theta_output, THETA_LEN)];
    for (name, ix, expected) in expectations {
        let Some(ix) = ix else { continue };
        let fact = plan.model().output_fact(ix).map_err(|e| format!("output `{name}`: {e:#}"))?;
        if let Some(shape) = fact.shape.as_concrete() {
            let found: usize = shape.iter().product();
            if found != expected {
                return Err(format!(
                    "the graph's output `{name}` has shape {shape:?} for one frame ({found} values), \
                     expected {expected}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx_support as onnx;
    use crate::preprocess::PixelFormat;

    /// A 2 × 2 grey image → Flatten → Gemm with W [4, 2] = rows (1, 0), (0, 1), (1, 0), (0, 1): the
    /// embedding is (x₀ + x₂, x₁ + x₃). With `theta`, a second Gemm makes θ = identity + x₀·(0, 0, 1,
    /// 0, 0, 0) (a shift right by x₀), reshaped to [N, 2, 3].
    fn graph(theta: bool) -> Vec<u8> {
        let weights = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let mut nodes = vec![
            onnx::node("Flatten", &["image"], "flat", vec![]),
            onnx::node("Gemm", &["flat", "w"], "embedding", vec![]),
        ];
        let mut initializers = vec![onnx::floats("w", &[4, 2], &weights)];
        let mut outputs = vec![onnx::value("embedding", &[-1, 2])];
        if theta {
            let mut shift = [0.0; 24];
            shift[2] = 1.0; // x₀ → θ₀₂
            nodes.push(onnx::node("Gemm", &["flat", "w_theta", "identity"], "flat_theta", vec![]));
            nodes.push(onnx::node("Reshape", &["flat_theta", "theta_shape"], "theta", vec![]));
            initializers.push(onnx::floats("w_theta", &[4, 6], &shift));
            initializers.push(onnx::floats("identity", &[6], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]));
            initializers.push(onnx::int64s("theta_shape", &[-1, 2, 3]));
            outputs.push(onnx::value("theta", &[-1, 2, 3]));
        }
        onnx::model(nodes, initializers, vec![onnx::value("image", &[-1, 1, 2, 2])], outputs)
    }

    fn manifest() -> Manifest {
        Manifest {
            centroids: vec![0.0, 0.0, 2.0, 0.0],
            novelty_threshold: Some(0.5),
            ..crate::manifest_support::manifest("two-pixels", &[-1, 1, 2, 2])
        }
    }

    fn st_dac() -> Engine {
        let mut m = manifest();
        m.family = "st-dac".into();
        m.outputs = vec!["embedding".into(), "theta".into()];
        Engine::load(Bundle::new(m, graph(true)), "stn.stdac").unwrap()
    }

    #[test]
    fn frames_are_embedded_by_the_graph_and_assigned_to_the_nearest_centroid() {
        let engine = Engine::load(Bundle::new(manifest(), graph(false)), "test").unwrap();
        // Embedding (1 + 1, 0 + 0) = (2, 0): on centroid 1, two away from centroid 0.
        let a = engine.assign(&[1.0, 0.0, 1.0, 0.0]).unwrap();
        assert_eq!(a, Assignment { cluster: 1, distance: 0.0, margin: 2.0, novel: false, theta: None });
        // Embedding (0, 1): 1 from centroid 0, √5 from centroid 1, and past the novelty threshold.
        let b = engine.assign(&[0.0, 0.5, 0.0, 0.5]).unwrap();
        assert_eq!((b.cluster, b.novel, b.theta), (0, true, None));
        assert!((b.distance - 1.0).abs() < 1e-6 && (b.margin - (5f32.sqrt() - 1.0)).abs() < 1e-6);
        assert_eq!(engine.embed(&[0.0, 0.5, 0.0, 0.5]).unwrap(), [0.0, 1.0]);
        let e = engine.assign(&[0.0; 3]).unwrap_err().to_string();
        assert!(e.contains("3 values") && e.contains("takes 4"), "{e}");
    }

    #[test]
    fn a_spatial_transformer_graph_reports_its_theta() {
        let engine = st_dac();
        let a = engine.assign(&[0.25, 0.0, 1.0, 0.0]).unwrap();
        assert_eq!((a.cluster, a.theta), (1, Some([1.0, 0.0, 0.25, 0.0, 1.0, 0.0])));
        // The corrected picture through θ₀₂ = 1 (half a pixel: a pixel of a 2 × 2 image spans 2
        // normalised units) averages each pixel with its right neighbour, zero past the edge.
        let frame = [1.0, 0.0, 0.0, 0.0];
        let theta = engine.assign(&frame).unwrap().theta.unwrap();
        assert_eq!(corrected(&frame, &theta, 2), [0.5, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn outputs_are_found_by_name_whatever_their_order() {
        // The manifest lists θ first, the graph has it second; a manifest without θ ignores it.
        let mut m = manifest();
        m.outputs = vec!["theta".into(), "embedding".into()];
        let engine = Engine::load(Bundle::new(m, graph(true)), "swapped.stdac").unwrap();
        assert_eq!(
            engine.assign(&[0.25, 0.0, 1.0, 0.0]).unwrap(),
            st_dac().assign(&[0.25, 0.0, 1.0, 0.0]).unwrap()
        );
        let plain = Engine::load(Bundle::new(manifest(), graph(true)), "plain.stdac").unwrap();
        let a = plain.assign(&[0.25, 0.0, 1.0, 0.0]).unwrap();
        assert_eq!((a.cluster, a.theta), (1, None));
    }

    #[test]
    fn camera_frames_are_prepared_then_assigned() {
        let engine = Engine::load(Bundle::new(manifest(), graph(false)), "test").unwrap();
        assert_eq!(engine.image_side(), Some(2));
        // A 4 × 4 grey frame whose 2 × 2 blocks are 255, 0 / 255, 0 shrinks to (1, 0, 1, 0): embedding
        // (2, 0), cluster 1, as for those values directly.
        let mut grey = [0u8; 16];
        for y in 0..4 {
            grey[y * 4] = 255;
            grey[y * 4 + 1] = 255;
        }
        let direct = engine.assign(&[1.0, 0.0, 1.0, 0.0]).unwrap();
        let frame = FrameRef::new(PixelFormat::Grey8, 4, 4, &grey).unwrap();
        assert_eq!(engine.assign_frame(frame).unwrap(), direct);
        // The same picture in RGB and in YUYV.
        let rgb: Vec<u8> = grey.iter().flat_map(|&g| [g, g, g]).collect();
        let frame = FrameRef::new(PixelFormat::Rgb8, 4, 4, &rgb).unwrap();
        assert_eq!(engine.assign_frame(frame).unwrap(), direct);
        let yuyv: Vec<u8> = grey.chunks(2).flat_map(|p| [p[0], 128, p[1], 128]).collect();
        let frame = FrameRef::new(PixelFormat::Yuyv, 4, 4, &yuyv).unwrap();
        assert_eq!(engine.assign_frame(frame).unwrap(), direct);
        // A bad frame is an error naming the field.
        let bad = FrameRef { format: PixelFormat::Rgb8, width: 4, height: 4, bytes: &grey };
        let e = engine.assign_frame(bad).unwrap_err().to_string();
        assert!(e.contains("`bytes` holds 16 bytes") && e.contains("has 48"), "{e}");
    }

    #[test]
    fn a_model_that_takes_no_image_refuses_camera_frames() {
        let mut m = manifest();
        m.input.shape = vec![-1, 4];
        let flat = onnx::model(
            vec![onnx::node("Gemm", &["image", "w"], "embedding", vec![])],
            vec![onnx::floats("w", &[4, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])],
            vec![onnx::value("image", &[-1, 4])],
            vec![onnx::value("embedding", &[-1, 2])],
        );
        let engine = Engine::load(Bundle::new(m, flat), "flat.stdac").unwrap();
        assert_eq!(engine.image_side(), None);
        assert_eq!(engine.assign(&[1.0, 0.0, 1.0, 0.0]).unwrap().cluster, 1);
        let frame = FrameRef::new(PixelFormat::Grey8, 2, 2, &[0; 4]).unwrap();
        let e = engine.assign_frame(frame).unwrap_err().to_string();
        assert!(e.contains("flat.stdac") && e.contains("`input.shape` is [-1, 4]"), "{e}");
    }

    #[test]
    fn a_batch_is_assigned_as_its_frames_are_one_by_one() {
        let frames: Vec<f32> = (0..7 * 4).map(|i| ((i * 13) % 17) as f32 / 16.0).collect();
        for engine in [Engine::load(Bundle::new(manifest(), graph(false)), "test").unwrap(), st_dac()] {
            let batch = engine.assign_batch(&frames, 7).unwrap();
            assert_eq!(batch.len(), 7);
            for (frame, b) in frames.chunks(4).zip(&batch) {
                let one = engine.assign(frame).unwrap();
                assert_eq!((b.cluster, b.novel), (one.cluster, one.novel));
                assert!((b.distance - one.distance).abs() < 1e-5 && (b.margin - one.margin).abs() < 1e-5);
                let (bt, ot) = (b.theta.map(Vec::from), one.theta.map(Vec::from));
                assert_eq!(bt.is_some(), engine.manifest().outputs.len() == 2);
                for (x, y) in bt.unwrap_or_default().iter().zip(&ot.unwrap_or_default()) {
                    assert!((x - y).abs() < 1e-5);
                }
            }
            // Another batch size through the same plan, and the empty batch.
            let two: Vec<usize> =
                engine.assign_batch(&frames[..8], 2).unwrap().iter().map(|a| a.cluster).collect();
            assert_eq!(two, [batch[0].cluster, batch[1].cluster]);
            assert!(engine.assign_batch(&[], 0).unwrap().is_empty());
            let e = engine.assign_batch(&frames[..9], 2).unwrap_err().to_string();
            assert!(e.contains("9 values for 2 frames") && e.contains("8 in all"), "{e}");
        }
    }

    #[test]
    fn the_engine_is_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Engine>();
        let engine = Engine::load(Bundle::new(manifest(), graph(false)), "test").unwrap();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let engine = &engine;
                scope.spawn(move || {
                    for i in 0..50 {
                        let x = ((t * 50 + i) % 3) as f32;
                        // Embedding (2x, 0): on centroid 0 or 1 for x = 0 or 1, 2 past centroid 1 for x = 2.
                        let a = engine.assign(&[x, 0.0, x, 0.0]).unwrap();
                        let expected = (2.0 * x).min((2.0 * x - 2.0).abs());
                        assert!((a.distance - expected).abs() < 1e-5, "x = {x}: {a:?}");
                    }
                });
            }
        });
    }

    #[test]
    fn a_bundle_that_cannot_run_here_is_refused_whole() {
        let mut old = manifest();
        old.tract_version = "0.21.0".into();
        let e = Engine::load(Bundle::new(old, graph(false)), "old.stdac").err().unwrap().to_string();
        assert!(e.contains("old.stdac") && e.contains("tract 0.21.0") && e.contains(TRACT_VERSION), "{e}");
        let e = Engine::load(Bundle::new(manifest(), b"not a graph".to_vec()), "junk.stdac").err().unwrap();
        assert!(e.to_string().contains("junk.stdac: tract cannot load the graph"), "{e}");
        let mut unnamed = manifest();
        unnamed.outputs = vec!["codes".into()];
        let e = Engine::load(Bundle::new(unnamed, graph(false)), "x.stdac").err().unwrap().to_string();
        assert!(e.contains("no `embedding` output"), "{e}");
        // The manifest promises θ the graph does not have.
        let mut more = manifest();
        more.outputs = vec!["embedding".into(), "theta".into()];
        let e = Engine::load(Bundle::new(more, graph(false)), "y.stdac").err().unwrap().to_string();
        assert!(e.contains("y.stdac") && e.contains("names `theta`, which the graph does not have"), "{e}");
        assert!(e.contains("(its outputs: embedding)"), "{e}");
        // The manifest's embedding length disagrees with the graph's.
        let mut wide = manifest();
        (wide.embedding_dim, wide.centroids) = (3, vec![0.0; 6]);
        let e = Engine::load(Bundle::new(wide, graph(false)), "z.stdac").err().unwrap().to_string();
        assert!(e.contains("output `embedding` has shape [1, 2]") && e.contains("expected 3"), "{e}");
    }
}
