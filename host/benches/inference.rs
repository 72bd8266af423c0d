//! Inference benchmark of the shipped ST-DAC graph (one input spatial transformer, dense width 512,
//! k = 10; weights untrained, int8 calibrated on real MNIST test images), float against int8, run by
//! tract (the board's engine) and by onnxruntime (`inference_ort.py`) on the same .onnx files and the
//! same frames in the same run:
//!
//! - latency: one frame at a time (batch 1), median and p90 ms per frame;
//! - throughput: frames/s at batch 64;
//! - sizes: the .onnx bytes and the bundle bytes (`stdac_device::bundle`, wrapped as the exporter does);
//! - the engine's peak memory: the peak RSS (VmHWM) of a child process (this benchmark re-run with
//!   `STDAC_BENCH_ENGINE_MEMORY=BUNDLE`) that loads the bundle with `Engine::load` and assigns 100
//!   frames, next to its VmHWM before loading.
//!
//! Both runtimes run on 1 thread and on all of them: tract through the engine's `use_threads` (a rayon
//! pool for its kernels, tract-linalg's `multithread-mm` feature), onnxruntime through
//! intra_op_num_threads (default graph optimisation level).
//!
//! Run: `cargo bench -p stdac --bench inference` (needs the MNIST folder, as training does; the peer
//! needs python3 with onnxruntime and numpy, without them only tract is printed). Without `--bench` (as
//! `cargo test --release --workspace --benches` runs it) it is a smoke run: a few frames, batch 4, int8
//! calibrated on 16 images, the peer on the same tiny counts. The last line printed is one JSON object
//! holding every figure.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};
use stdac::backend::{self, Backend};
use stdac::data::{self, Source, Split};
use stdac::export::onnx::{encode, TractRunner};
use stdac::export::{graph, input_of, quantize, Quantization, TRACT_VERSION};
use stdac::st_dac::{StDacConfig, StnPosition};

#[path = "common/machine.rs"]
mod machine;
use machine::{cpu_description, vm_hwm_kib};
use stdac_device::bundle::{Bundle, InputSpec, Manifest};
use stdac_device::engine::Engine;

#[path = "common/python_peer.rs"]
mod python_peer;

/// Set (to a bundle's path) in the child process that measures the engine's memory.
const ENGINE_MEMORY_ENV: &str = "STDAC_BENCH_ENGINE_MEMORY";
/// The raw f32 frames that child assigns.
const ENGINE_FRAMES_ENV: &str = "STDAC_BENCH_ENGINE_FRAMES";

const SIDE: usize = 28;
const FRAME_LEN: usize = SIDE * SIDE;
const CLUSTERS: usize = 10;
const DENSE_WIDTH: usize = 512;

/// How many times one graph is run.
#[derive(Debug, Clone, Copy)]
struct Repetitions {
    /// Frames timed one at a time.
    latency_frames: usize,
    batch: usize,
    /// Batches timed.
    batches: usize,
}

/// One configuration's figures.
#[derive(Debug, Clone, Copy)]
struct Timing {
    latency_median_ms: f64,
    latency_p90_ms: f64,
    throughput_fps: f64,
}

impl Timing {
    fn from_json(v: &Value) -> Option<Timing> {
        Some(Timing {
            latency_median_ms: v["latency_median_ms"].as_f64()?,
            latency_p90_ms: v["latency_p90_ms"].as_f64()?,
            throughput_fps: v["throughput_fps"].as_f64()?,
        })
    }

    fn to_json(self, repetitions: Repetitions, threads: usize) -> Value {
        json!({
            "threads": threads,
            "latency_median_ms": self.latency_median_ms,
            "latency_p90_ms": self.latency_p90_ms,
            "latency_frames": repetitions.latency_frames,
            "throughput_fps": self.throughput_fps,
            "batch": repetitions.batch,
            "batches": repetitions.batches,
        })
    }

    /// How many times faster this is than `other`: by latency median, and by throughput.
    fn speed_over(self, other: Timing) -> (f64, f64) {
        (other.latency_median_ms / self.latency_median_ms, self.throughput_fps / other.throughput_fps)
    }
}

fn main() -> anyhow::Result<()> {
    if let Ok(bundle) = std::env::var(ENGINE_MEMORY_ENV) {
        return engine_memory_child(Path::new(&bundle));
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    run(std::env::args().any(|a| a == "--bench"))
}

fn run(full: bool) -> anyhow::Result<()> {
    let calibration_images = if full { 1000 } else { 16 };
    let batch = if full { 64 } else { 4 };
    let float_repetitions = if full {
        Repetitions { latency_frames: 200, batch, batches: 10 }
    } else {
        Repetitions { latency_frames: 3, batch, batches: 1 }
    };
    // tract 0.23.9's int8 kernels run far slower than its float ones on x86 without VNNI: few repetitions.
    let int8_repetitions = if full {
        Repetitions { latency_frames: 20, batch, batches: 2 }
    } else {
        Repetitions { latency_frames: 2, batch, batches: 1 }
    };
    let memory_frames = if full { 100 } else { 4 };

    let mnist = match data::load(&Source::Mnist, Some(Split::Test), Some(calibration_images.max(100)), None) {
        Ok(d) => d,
        Err(e) => {
            println!("inference benchmark skipped: {e:#}");
            return Ok(());
        }
    };
    let all_threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    println!(
        "inference benchmark ({}), ST-DAC: input spatial transformer, dense width {DENSE_WIDTH}, k = {CLUSTERS}, \
         untrained weights, int8 calibrated on {calibration_images} {} images",
        if full { "full" } else { "smoke run; `cargo bench` for the figures" },
        mnist.name
    );
    let cpu = cpu_description();
    let load =
        std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split(' ').next().map(str::to_string));
    println!(
        "CPU: {cpu}, {all_threads} threads available; 1-minute load average at start: {} (other processes on the \
         machine compete with every figure below)",
        load.as_deref().unwrap_or("unknown")
    );

    // The graphs, as the exporter makes them.
    let device = backend::device()?;
    <Backend as burn::tensor::backend::Backend>::seed(&device, 0);
    let model = StDacConfig::new()
        .with_stn(vec![StnPosition::Input])
        .with_dense_width(DENSE_WIDTH)
        .with_clusters(CLUSTERS)
        .init::<Backend>(&device);
    let layers = model.export_layers();
    let input = input_of(FRAME_LEN, Some((SIDE, SIDE)));
    let calibration = quantize::calibrate(
        &layers,
        &input,
        &mnist.features[..calibration_images * FRAME_LEN],
        calibration_images,
    )?;
    let float_onnx = encode(&graph(&layers, &input, CLUSTERS, None));
    let int8_onnx = encode(&graph(&layers, &input, CLUSTERS, Some(&calibration)));

    let dir = tempfile::tempdir()?;
    let float_path = dir.path().join("st-dac-float.onnx");
    let int8_path = dir.path().join("st-dac-int8.onnx");
    std::fs::write(&float_path, &float_onnx)?;
    std::fs::write(&int8_path, &int8_onnx)?;
    let frames = &mnist.features[..100.max(batch) * FRAME_LEN];
    let frames_path = dir.path().join("frames.f32");
    write_f32(&frames_path, frames)?;

    // tract.
    let tract_float = time_tract(&float_onnx, frames, float_repetitions)?;
    print_timing(&format!("tract {TRACT_VERSION}"), "float", 1, tract_float, float_repetitions);
    let tract_int8 = time_tract(&int8_onnx, frames, int8_repetitions)?;
    print_timing(&format!("tract {TRACT_VERSION}"), "int8", 1, tract_int8, int8_repetitions);
    // All threads: the engine's switch for every tract run of the process.
    stdac_device::engine::use_threads(all_threads);
    let tract_float_all = time_tract(&float_onnx, frames, float_repetitions)?;
    print_timing(&format!("tract {TRACT_VERSION}"), "float", all_threads, tract_float_all, float_repetitions);
    let tract_int8_all = time_tract(&int8_onnx, frames, int8_repetitions)?;
    print_timing(&format!("tract {TRACT_VERSION}"), "int8", all_threads, tract_int8_all, int8_repetitions);
    stdac_device::engine::use_threads(1);

    // onnxruntime on the same files and frames.
    let mut ort_threads = vec![1];
    if all_threads > 1 {
        ort_threads.push(all_threads);
    }
    let peer_config = json!({
        "frames": frames_path,
        "side": SIDE,
        "threads": ort_threads,
        "graphs": [
            {"name": "float", "path": float_path, "latency_frames": float_repetitions.latency_frames,
             "batch": float_repetitions.batch, "batches": float_repetitions.batches},
            {"name": "int8", "path": int8_path, "latency_frames": int8_repetitions.latency_frames,
             "batch": int8_repetitions.batch, "batches": int8_repetitions.batches},
        ],
    });
    let peer_config_path = dir.path().join("peer.json");
    std::fs::write(&peer_config_path, serde_json::to_vec(&peer_config)?)?;
    let peer = python_peer::run("inference_ort.py", &[peer_config_path.to_str().unwrap()]);
    // (graph, threads) → figures.
    let mut ort: Vec<(String, usize, Timing)> = Vec::new();
    match &peer {
        Ok(peer) => {
            let version = peer["onnxruntime"].as_str().unwrap_or("?");
            for result in peer["results"].as_array().into_iter().flatten() {
                let name = result["graph"].as_str().unwrap_or("?");
                let threads = result["threads"].as_u64().unwrap_or(0) as usize;
                let repetitions = if name == "int8" { int8_repetitions } else { float_repetitions };
                match Timing::from_json(result) {
                    Some(timing) => {
                        print_timing(&format!("onnxruntime {version}"), name, threads, timing, repetitions);
                        ort.push((name.to_string(), threads, timing));
                    }
                    None => println!(
                        "onnxruntime {version} {name}, {threads} thread(s): cannot run it: {}",
                        result["error"].as_str().unwrap_or("no figures")
                    ),
                }
            }
        }
        Err(why) => println!("onnxruntime peer skipped: {why}"),
    }
    let ort_timing = |name: &str, threads: usize| {
        ort.iter().find(|(n, t, _)| n == name && *t == threads).map(|(_, _, timing)| *timing)
    };

    // Ratios, each against a figure of this same run. "× faster": > 1 means the first is faster.
    let (int8_latency_speedup, int8_throughput_speedup) = tract_int8.speed_over(tract_float);
    println!(
        "int8 speed-up over float in tract (1 thread): latency {int8_latency_speedup:.3}×, throughput \
         {int8_throughput_speedup:.3}×"
    );
    let mut tract_over_ort = serde_json::Map::new();
    for (name, one, all) in [("float", tract_float, tract_float_all), ("int8", tract_int8, tract_int8_all)] {
        for &threads in &ort_threads {
            // Like against like: tract on as many threads as onnxruntime.
            let tract = if threads == 1 { one } else { all };
            let key = format!("{name}_vs_ort_{threads}_thread{}", if threads == 1 { "" } else { "s" });
            match ort_timing(name, threads) {
                Some(theirs) => {
                    let (latency, throughput) = tract.speed_over(theirs);
                    println!(
                        "tract speed / onnxruntime, both on {threads} thread{}, {name}: latency {latency:.3}×, \
                         throughput {throughput:.3}×",
                        if threads == 1 { "" } else { "s" }
                    );
                    tract_over_ort.insert(key, json!({"latency": latency, "throughput": throughput}));
                }
                None => {
                    tract_over_ort.insert(key, Value::Null);
                }
            }
        }
    }
    if let Some(theirs) = ort_timing("int8", 1).zip(ort_timing("float", 1)) {
        let (latency, throughput) = theirs.0.speed_over(theirs.1);
        println!(
            "for reference, onnxruntime's own int8 speed-up over float (1 thread): latency {latency:.3}×, \
             throughput {throughput:.3}×"
        );
    }

    let (all_latency, all_throughput) = tract_int8_all.speed_over(tract_float_all);
    println!(
        "int8 speed-up over float in tract ({all_threads} threads): latency {all_latency:.3}×, throughput \
         {all_throughput:.3}×"
    );

    // Targets of the issue.
    let int8_target_met = int8_latency_speedup >= 2.0 && int8_throughput_speedup >= 2.0;
    println!(
        "target: int8 ≥ 2× faster than float in tract (latency and throughput): {}",
        if int8_target_met { "met" } else { "NOT met" }
    );
    let mut ort_targets = serde_json::Map::new();
    for &threads in &ort_threads {
        let ours = if threads == 1 { tract_int8 } else { tract_int8_all };
        let met = ort_timing("int8", threads).map(|theirs| {
            let (latency, throughput) = ours.speed_over(theirs);
            latency >= 1.0 && throughput >= 1.0
        });
        let plural = if threads == 1 { "" } else { "s" };
        println!(
            "target: tract int8 no slower than onnxruntime int8, both on {threads} thread{plural}, latency and \
             throughput: {}",
            match met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            }
        );
        ort_targets.insert(format!("ort_{threads}_thread{plural}"), json!(met));
    }

    // Sizes, as a board gets them.
    let float_bundle = bundle_of(float_onnx.clone(), Quantization::None, &input.name, &mnist.class_names);
    let int8_bundle = bundle_of(int8_onnx.clone(), Quantization::Int8, &input.name, &mnist.class_names);
    let float_bundle_bytes = float_bundle.to_bytes().len();
    let int8_bundle_bytes = int8_bundle.to_bytes().len();
    println!(
        "sizes: float .onnx {} bytes, bundle {} bytes; int8 .onnx {} bytes, bundle {} bytes; int8 / float bundle \
         {:.3}×",
        float_onnx.len(),
        float_bundle_bytes,
        int8_onnx.len(),
        int8_bundle_bytes,
        int8_bundle_bytes as f64 / float_bundle_bytes as f64
    );

    // The engine's memory, each bundle in a fresh process.
    let memory_frames_path = dir.path().join("engine-frames.f32");
    write_f32(&memory_frames_path, &frames[..memory_frames * FRAME_LEN])?;
    let mut memory = serde_json::Map::new();
    for (name, bundle) in [("float", &float_bundle), ("int8", &int8_bundle)] {
        let path = dir.path().join(format!("st-dac-{name}.stdac"));
        bundle.write_atomic(&path)?;
        match engine_memory(&path, &memory_frames_path) {
            Ok(figures) => {
                let kib = |key: &str| figures[key].as_u64();
                let (baseline, peak) = (kib("baseline_kib"), kib("peak_kib"));
                match baseline.zip(peak) {
                    Some((baseline, peak)) => {
                        let difference = peak.saturating_sub(baseline);
                        println!(
                            "engine memory, {name} bundle: peak RSS {:.1} MiB, baseline before loading {:.1} MiB, \
                             difference {:.1} MiB (VmHWM of a child process: Engine::load, then {} frames assigned \
                             one at a time)",
                            mib(peak),
                            mib(baseline),
                            mib(difference),
                            figures["frames"]
                        );
                        memory.insert(
                            name.into(),
                            json!({"baseline_kib": baseline, "peak_kib": peak, "difference_kib": difference,
                                   "frames": figures["frames"]}),
                        );
                    }
                    None => {
                        println!(
                            "engine memory, {name} bundle: not measured (no VmHWM in /proc/self/status)"
                        );
                        memory.insert(name.into(), Value::Null);
                    }
                }
            }
            Err(why) => {
                println!("engine memory, {name} bundle: not measured: {why}");
                memory.insert(name.into(), Value::Null);
            }
        }
    }

    let ort_json = match &peer {
        Ok(peer) => json!({
            "version": peer["onnxruntime"],
            "graph_optimization_level": peer["graph_optimization_level"],
            "results": peer["results"],
        }),
        Err(why) => json!({"skipped": why}),
    };
    let summary = json!({
        "benchmark": "inference",
        "mode": if full { "full" } else { "smoke" },
        "cpu": cpu,
        "threads_available": all_threads,
        "load_average_1min": load,
        "model": {"family": "st-dac", "stn": ["input"], "dense_width": DENSE_WIDTH, "clusters": CLUSTERS,
                  "weights": "untrained", "calibration_images": calibration_images},
        "tract": {
            "version": TRACT_VERSION,
            "float": tract_float.to_json(float_repetitions, 1),
            "int8": tract_int8.to_json(int8_repetitions, 1),
            "float_all_threads": tract_float_all.to_json(float_repetitions, all_threads),
            "int8_all_threads": tract_int8_all.to_json(int8_repetitions, all_threads),
        },
        "onnxruntime": ort_json,
        "ratios": {
            "int8_speedup_over_float_in_tract": {"latency": int8_latency_speedup, "throughput": int8_throughput_speedup},
            "tract_speed_over_onnxruntime": tract_over_ort,
        },
        "targets": {
            "int8_at_least_2x_float_in_tract": int8_target_met,
            "tract_int8_no_slower_than_onnxruntime_int8": ort_targets,
        },
        "sizes": {
            "onnx_bytes": {"float": float_onnx.len(), "int8": int8_onnx.len()},
            "bundle_bytes": {"float": float_bundle_bytes, "int8": int8_bundle_bytes},
        },
        "engine_memory": memory,
    });
    println!("{summary}");
    Ok(())
}

/// Times `onnx` in tract: `latency_frames` frames one at a time (after two untimed ones, the first of
/// which builds the plan), then `batches` batches (after one untimed batch).
fn time_tract(onnx: &[u8], frames: &[f32], repetitions: Repetitions) -> anyhow::Result<Timing> {
    let n_frames = frames.len() / FRAME_LEN;
    let frame = |i: usize| &frames[(i % n_frames) * FRAME_LEN..][..FRAME_LEN];
    let mut runner = TractRunner::new(onnx, &[1, SIDE, SIDE])?;
    for i in 0..2 {
        black_box(runner.run(frame(i), 1)?);
    }
    let mut latencies = Vec::with_capacity(repetitions.latency_frames);
    for i in 0..repetitions.latency_frames {
        let started = Instant::now();
        black_box(runner.run(frame(i), 1)?);
        latencies.push(started.elapsed().as_secs_f64());
    }
    latencies.sort_by(f64::total_cmp);
    let batch = &frames[..repetitions.batch * FRAME_LEN];
    black_box(runner.run(batch, repetitions.batch)?);
    let started = Instant::now();
    for _ in 0..repetitions.batches {
        black_box(runner.run(batch, repetitions.batch)?);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Timing {
        latency_median_ms: 1e3 * nearest_rank(&latencies, 0.5),
        latency_p90_ms: 1e3 * nearest_rank(&latencies, 0.9),
        throughput_fps: (repetitions.batch * repetitions.batches) as f64 / seconds,
    })
}

/// The `q`-quantile of sorted values: the one at rank q·(n − 1) rounded half up (as the peer computes it).
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64 + 0.5) as usize]
}

fn print_timing(runtime: &str, graph: &str, threads: usize, timing: Timing, repetitions: Repetitions) {
    println!(
        "{runtime} {graph:<5} {threads} thread{}: latency median {:8.3} ms, p90 {:8.3} ms per frame (batch 1, \
         {} frames); throughput {:9.1} frames/s (batch {} × {})",
        if threads == 1 { " " } else { "s" },
        timing.latency_median_ms,
        timing.latency_p90_ms,
        repetitions.latency_frames,
        timing.throughput_fps,
        repetitions.batch,
        repetitions.batches
    );
}

/// `onnx` wrapped as the exporter wraps an ST-DAC graph (the k unit vectors as centroids, Euclidean).
/// Left out, as an untrained model has none: the novelty threshold and the training card (a real
/// export's manifest is a few hundred bytes longer).
fn bundle_of(onnx: Vec<u8>, quantization: Quantization, input_name: &str, class_names: &[String]) -> Bundle {
    let centroids =
        (0..CLUSTERS * CLUSTERS).map(|i| if i / CLUSTERS == i % CLUSTERS { 1.0 } else { 0.0 }).collect();
    let manifest = Manifest {
        name: format!("bench-st-dac-{}", quantization.name()),
        family: stdac::st_dac::train::FAMILY.into(),
        input: InputSpec {
            name: input_name.into(),
            shape: vec![-1, 1, SIDE as i64, SIDE as i64],
            dtype: "f32".into(),
            range: [0.0, 1.0],
        },
        outputs: vec!["embedding".into(), "theta".into()],
        embedding_dim: CLUSTERS,
        clusters: CLUSTERS,
        centroids,
        metric: "euclidean".into(),
        class_names: class_names.to_vec(),
        novelty_threshold: None,
        quantization: quantization.name().into(),
        tract_version: TRACT_VERSION.into(),
        graph_sha256: String::new(),
        card: json!({"benchmark": "inference", "weights": "untrained"}),
    };
    Bundle::new(manifest, onnx)
}

/// Runs this benchmark again as a child that loads `bundle` and assigns the frames in `frames`, and
/// returns what it prints.
fn engine_memory(bundle: &Path, frames: &Path) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .env(ENGINE_MEMORY_ENV, bundle)
        .env(ENGINE_FRAMES_ENV, frames)
        .output()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("").to_string());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))
}

/// The child: VmHWM before loading (the frames already read), then after `Engine::load` and every
/// frame assigned one at a time; one JSON line.
fn engine_memory_child(bundle: &Path) -> anyhow::Result<()> {
    let frames_path = PathBuf::from(std::env::var(ENGINE_FRAMES_ENV)?);
    let frames = read_f32(&frames_path)?;
    let baseline_kib = vm_hwm_kib();
    let engine = Engine::from_file(bundle)?;
    let mut assigned = 0;
    for frame in frames.chunks_exact(FRAME_LEN) {
        black_box(engine.assign(frame)?);
        assigned += 1;
    }
    let peak_kib = vm_hwm_kib();
    println!("{}", json!({"baseline_kib": baseline_kib, "peak_kib": peak_kib, "frames": assigned}));
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn write_f32(path: &Path, values: &[f32]) -> std::io::Result<()> {
    std::fs::write(path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
}

fn read_f32(path: &Path) -> std::io::Result<Vec<f32>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}
