//! Heap allocations per frame in the engine's steady state, counted by a global allocator.
//!
//! The engine keeps its own per-frame memory (tract's state, the input tensor, the colour scratch), so
//! after warm-up it allocates exactly what tract needs to run the plan once with a kept state and a
//! kept input tensor: the floor, run here by hand with tract's own API. tract 0.23.9 has no memory pool
//! for the CPU plan (`RunOptions::memory_sizing_hints` sizes GPU arenas only): every operator's output
//! is a new tensor in a new `Arc`, and a matrix product packs its operand into a new buffer. A kept
//! state does save the per-run spawn and the matrix product's scratch space, which tract keys by
//! session. The counts must also not change from frame to frame.
//!
//! Measured on x86-64 (AVX2 + FMA), tract 0.23.9, release build, allocations per frame:
//!
//! | graph                                 | engine `assign` | tract floor | `plan.run` (fresh state) |
//! |---------------------------------------|-----------------|-------------|--------------------------|
//! | Flatten → Gemm                        | 10              | 10          | 15                       |
//! | Flatten → Gemm, + θ (Gemm → Reshape)  | 13              | 13          | 18                       |
//! | Conv → Relu → Flatten → Gemm          | 21              | 21          | 27                       |
//!
//! The first graph's ten, traced: the reshape's copy of the input (tract copies an input it does not
//! own alone; handing it over instead would cost the engine a new input tensor per frame, one more
//! allocation in all), the packed operand and its descriptors (five), the product's output, and an
//! `Arc` for each of the three operators' outputs. `assign_frame` on a 64 × 48 RGB frame costs the
//! same as `assign`: preprocessing allocates nothing. Run with `--nocapture` to see the counts here.

#[path = "support/onnx.rs"]
mod onnx;
#[path = "support/manifest.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use stdac_device::bundle::{Bundle, Manifest};
use stdac_device::engine::Engine;
use stdac_device::preprocess::{FrameRef, PixelFormat};
use tract_onnx::prelude::*;

/// The system allocator, counting the allocations (and reallocations) of the thread that asks, so
/// tests running side by side do not count each other's.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the allocator may be called while the thread's locals are being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const WARM_UP: usize = 10;
const MEASURED: usize = 20;

/// Allocations of each of `MEASURED` frames after `WARM_UP` frames, frame `i` run by `run(i)`.
fn per_frame(mut run: impl FnMut(usize)) -> Vec<u64> {
    (0..WARM_UP).for_each(&mut run);
    (WARM_UP..WARM_UP + MEASURED).map(|i| allocations_in(|| run(i))).collect()
}

/// The single count of frames that all cost the same; panics naming `what` otherwise.
fn constant(what: &str, counts: &[u64]) -> u64 {
    assert!(counts.iter().all(|&c| c == counts[0]), "{what}: allocations per frame vary: {counts:?}");
    counts[0]
}

const SIDE: usize = 28;
const DIM: usize = 8;

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5).collect()
}

/// Frame `i`, 28 × 28 values in [0, 1].
fn frame(i: usize) -> Vec<f32> {
    values(SIDE * SIDE, i).iter().map(|v| v + 0.5).collect()
}

enum Graph {
    Dense,
    Conv,
    DenseWithTheta,
}

/// The graph's bytes and the manifest outputs it has.
fn graph(kind: &Graph) -> (Vec<u8>, Vec<String>) {
    let image = onnx::value("image", &[-1, 1, SIDE as i64, SIDE as i64]);
    let embedding = onnx::value("embedding", &[-1, DIM as i64]);
    let flat_len = (SIDE * SIDE) as i64;
    let gemm = |input: &str, inputs: i64| {
        (
            onnx::node("Gemm", &[input, "w", "b"], "embedding", vec![]),
            vec![
                onnx::floats("w", &[inputs, DIM as i64], &values(inputs as usize * DIM, 1)),
                onnx::floats("b", &[DIM as i64], &values(DIM, 2)),
            ],
        )
    };
    match kind {
        Graph::Dense => {
            let (node, weights) = gemm("flat", flat_len);
            let nodes = vec![onnx::node("Flatten", &["image"], "flat", vec![]), node];
            (onnx::model(nodes, weights, vec![image], vec![embedding]), vec!["embedding".into()])
        }
        Graph::Conv => {
            // 1 → 4 channels, 3 × 3, stride 2, padding 1: [N, 4, 14, 14].
            let conv = onnx::node(
                "Conv",
                &["image", "k", "kb"],
                "conv",
                vec![
                    onnx::ints("kernel_shape", &[3, 3]),
                    onnx::ints("strides", &[2, 2]),
                    onnx::ints("pads", &[1; 4]),
                ],
            );
            let (node, mut weights) = gemm("flat", 4 * 14 * 14);
            weights.push(onnx::floats("k", &[4, 1, 3, 3], &values(36, 3)));
            weights.push(onnx::floats("kb", &[4], &values(4, 4)));
            let nodes = vec![
                conv,
                onnx::node("Relu", &["conv"], "relu", vec![]),
                onnx::node("Flatten", &["relu"], "flat", vec![]),
                node,
            ];
            (onnx::model(nodes, weights, vec![image], vec![embedding]), vec!["embedding".into()])
        }
        Graph::DenseWithTheta => {
            let (node, mut weights) = gemm("flat", flat_len);
            weights.push(onnx::floats("wt", &[flat_len, 6], &values(SIDE * SIDE * 6, 5)));
            weights.push(onnx::floats("identity", &[6], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]));
            weights.push(onnx::int64s("theta_shape", &[-1, 2, 3]));
            let nodes = vec![
                onnx::node("Flatten", &["image"], "flat", vec![]),
                node,
                onnx::node("Gemm", &["flat", "wt", "identity"], "flat_theta", vec![]),
                onnx::node("Reshape", &["flat_theta", "theta_shape"], "theta", vec![]),
            ];
            let outputs = vec![embedding, onnx::value("theta", &[-1, 2, 3])];
            (onnx::model(nodes, weights, vec![image], outputs), vec!["embedding".into(), "theta".into()])
        }
    }
}

fn engine(graph_bytes: Vec<u8>, outputs: Vec<String>) -> Engine {
    let clusters = 10;
    let manifest = Manifest {
        family: "st-dac".into(),
        outputs,
        embedding_dim: DIM,
        clusters,
        centroids: values(clusters * DIM, 6),
        novelty_threshold: Some(1.0),
        ..support::manifest("allocations", &[-1, 1, SIDE as i64, SIDE as i64])
    };
    Engine::load(Bundle::new(manifest, graph_bytes), "allocations.stdac").unwrap()
}

/// The graph optimised for one frame, as the engine builds it.
fn single_frame_plan(graph_bytes: &[u8]) -> Arc<TypedSimplePlan> {
    tract_onnx::onnx()
        .model_for_read(&mut &graph_bytes[..])
        .and_then(|m| m.with_input_fact(0, f32::fact([1, 1, SIDE, SIDE]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap()
}

/// What tract itself allocates per frame at best: the engine's plan, built the same way, run in one
/// kept state on one kept input tensor written in place.
fn tract_floor(graph_bytes: &[u8], frames: &[Vec<f32>]) -> u64 {
    let shape = [1, 1, SIDE, SIDE];
    let plan = single_frame_plan(graph_bytes);
    let mut state = plan.spawn().unwrap();
    let mut input = Arc::new(Tensor::zero::<f32>(&shape).unwrap());
    let counts = per_frame(|i| {
        let tensor = Arc::get_mut(&mut input).expect("tract let go of the input");
        let mut view = tensor.try_as_plain_ram_mut().unwrap();
        view.as_slice_mut::<f32>().unwrap().copy_from_slice(&frames[i]);
        let outputs = state.run(tvec!(input.clone().into_tvalue())).unwrap();
        let embedding = outputs[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().len();
        assert_eq!(embedding, DIM);
    });
    constant("tract, kept state", &counts)
}

/// tract's one-call convenience, `plan.run`: a fresh state and input tensor every frame.
fn tract_fresh(graph_bytes: &[u8], frames: &[Vec<f32>]) -> u64 {
    let shape = [1, 1, SIDE, SIDE];
    let plan = single_frame_plan(graph_bytes);
    let counts = per_frame(|i| {
        let input = Tensor::from_shape(&shape, &frames[i]).unwrap();
        plan.run(tvec!(input.into())).unwrap();
    });
    constant("tract, plan.run", &counts)
}

fn check(kind: Graph, name: &str) {
    let (bytes, outputs) = graph(&kind);
    let frames: Vec<Vec<f32>> = (0..WARM_UP + MEASURED).map(frame).collect();
    let engine = engine(bytes.clone(), outputs);

    let assign = constant(
        "engine.assign",
        &per_frame(|i| {
            engine.assign(&frames[i]).unwrap();
        }),
    );
    // A 64 × 48 RGB frame: converted to grey in the engine's scratch, letterboxed into its input.
    let rgb: Vec<Vec<u8>> = (0..WARM_UP + MEASURED)
        .map(|i| (0..64 * 48 * 3).map(|p| ((p * 31 + i * 17) % 256) as u8).collect())
        .collect();
    let assign_frame = constant(
        "engine.assign_frame",
        &per_frame(|i| {
            engine.assign_frame(FrameRef::new(PixelFormat::Rgb8, 64, 48, &rgb[i]).unwrap()).unwrap();
        }),
    );
    let floor = tract_floor(&bytes, &frames);
    let fresh = tract_fresh(&bytes, &frames);
    println!(
        "{name}: allocations per frame: engine.assign {assign}, engine.assign_frame {assign_frame}, \
         tract with a kept state {floor}, tract plan.run {fresh}"
    );
    assert_eq!(assign, floor, "{name}: the engine allocates beyond what tract needs");
    assert_eq!(assign_frame, floor, "{name}: preprocessing allocates");
    assert!(floor <= fresh, "{name}: a kept state costs no more than a fresh one");
}

#[test]
fn a_dense_graph_allocates_only_what_tract_needs_every_frame() {
    check(Graph::Dense, "Flatten → Gemm");
}

#[test]
fn a_convolutional_graph_allocates_only_what_tract_needs_every_frame() {
    check(Graph::Conv, "Conv → Relu → Flatten → Gemm");
}

#[test]
fn a_spatial_transformer_graph_allocates_only_what_tract_needs_every_frame() {
    check(Graph::DenseWithTheta, "Flatten → Gemm, + θ");
}
