"""The onnxruntime peer of `cargo bench -p stdac --bench inference`: runs the very .onnx files the
benchmark ran with tract, on the same frames, timed the same way: latency one frame at a time (batch 1,
median and p90 over the frames, after two untimed frames) and throughput at the benchmark's batch size
(frames/s over its batches, after one untimed batch), once per thread count (intra_op_num_threads;
inter_op_num_threads 1; the session's default graph optimisation level). Written for the benchmark only.

usage: inference_ort.py CONFIG.json
  CONFIG.json: {"frames": "FRAMES.f32" (raw little-endian f32, [n, 1, 28, 28]), "side": 28,
                "threads": [1, ...],
                "graphs": [{"name", "path", "latency_frames", "batch", "batches"}, ...]}
prints one JSON line: {"onnxruntime": VERSION, "graph_optimization_level": ..., "results": [{"graph",
  "threads", "latency_median_ms", "latency_p90_ms", "latency_frames", "throughput_fps", "batch",
  "batches"} or {"graph", "threads", "error"}, ...]}
"""

import json
import sys
import time

import numpy as np

try:
    import onnxruntime as ort
except ImportError as e:
    sys.exit(f"onnxruntime is not installed for {sys.executable}: {e}")


def nearest_rank(sorted_values, q):
    """The q-quantile as the benchmark computes it: the value at rank q * (n - 1) rounded half up."""
    return sorted_values[int(q * (len(sorted_values) - 1) + 0.5)]


def measure(session, frames, graph):
    name = session.get_inputs()[0].name
    n = frames.shape[0]
    for i in range(2):
        session.run(None, {name: frames[i % n : i % n + 1]})
    latencies = []
    for i in range(graph["latency_frames"]):
        frame = frames[i % n : i % n + 1]
        started = time.perf_counter()
        session.run(None, {name: frame})
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    batch, batches = graph["batch"], graph["batches"]
    x = np.ascontiguousarray(frames[:batch])
    session.run(None, {name: x})
    started = time.perf_counter()
    for _ in range(batches):
        session.run(None, {name: x})
    seconds = time.perf_counter() - started
    return {
        "latency_median_ms": 1e3 * nearest_rank(latencies, 0.5),
        "latency_p90_ms": 1e3 * nearest_rank(latencies, 0.9),
        "latency_frames": len(latencies),
        "throughput_fps": batch * batches / seconds,
        "batch": batch,
        "batches": batches,
    }


def main():
    with open(sys.argv[1]) as f:
        config = json.load(f)
    side = config.get("side", 28)
    frames = np.fromfile(config["frames"], dtype="<f4").reshape(-1, 1, side, side)
    results = []
    level = None
    for graph in config["graphs"]:
        for threads in config["threads"]:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            level = str(options.graph_optimization_level)
            entry = {"graph": graph["name"], "threads": threads}
            try:
                session = ort.InferenceSession(graph["path"], options, providers=["CPUExecutionProvider"])
                entry.update(measure(session, frames, graph))
            except Exception as e:  # one graph ORT cannot run does not hide the others
                entry["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
            results.append(entry)
    print(json.dumps({"onnxruntime": ort.__version__, "graph_optimization_level": level, "results": results}))


if __name__ == "__main__":
    main()
