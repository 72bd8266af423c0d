//! k-means benchmark: time per Lloyd iteration on 60,000 × 784 (MNIST train pixels) and 60,000 × 10 (their
//! first 10 principal components), on one thread and on all, against scikit-learn's `KMeans(algorithm=
//! "lloyd")` on the same data from the same initial centres, measured in the same run.
//!
//! Run: `cargo bench -p stdac --bench kmeans` (needs python3; installs scikit-learn with pip if missing).
//! Without `--bench` (as `cargo test --benches` runs it) it times a 2,000-point slice and skips the peer.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rand::SeedableRng;
use stdac::data::{self, Source, Split};
use stdac::kmeans;
use stdac::pca::Pca;

const K: usize = 10;
const MAX_ITER: usize = 20;

/// Best of three: seconds per iteration and the iterations run.
fn time_ours(data: &[f32], dim: usize, init: &[f32], threads: usize) -> (f64, usize) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut best = (f64::INFINITY, 0);
    for _ in 0..3 {
        let started = Instant::now();
        let fit = pool.install(|| kmeans::lloyd(data, dim, init.to_vec(), MAX_ITER, 0.0));
        let per_iter = started.elapsed().as_secs_f64() / fit.iterations as f64;
        if per_iter < best.0 {
            best = (per_iter, fit.iterations);
        }
    }
    best
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// scikit-learn's seconds per iteration, or why it could not be measured.
fn time_sklearn(
    data: &[f32],
    dim: usize,
    init: &[f32],
    threads: usize,
    dir: &Path,
) -> Result<(f64, usize), String> {
    let (data_path, init_path) = (dir.join(format!("data-{dim}.f32")), dir.join(format!("init-{dim}.f32")));
    write_f32(&data_path, data);
    write_f32(&init_path, init);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sklearn_kmeans.py");
    let output = Command::new("python3")
        .arg(&script)
        .args([data_path.to_str().unwrap(), &(data.len() / dim).to_string(), &dim.to_string()])
        .args([init_path.to_str().unwrap(), &K.to_string(), &MAX_ITER.to_string(), &threads.to_string()])
        // Older OpenBLAS builds need these on some CPUs; current numpy wheels run slower with them.
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| format!("{e}: {line}"))?;
    let iterations = v["n_iter"].as_u64().unwrap() as usize;
    Ok((v["seconds"].as_f64().unwrap() / iterations as f64, iterations))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mut mnist = match data::load(&Source::Mnist, Some(Split::Train), None, None) {
        Ok(d) => d,
        Err(e) => {
            println!("kmeans benchmark skipped: {e:#}");
            return;
        }
    };
    if !full {
        mnist.truncate(2_000);
    }
    let pca = Pca::fit(&mnist.features, mnist.dim, 10);
    let latent = pca.transform(&mnist.features);
    let sets = [("MNIST pixels", &mnist.features, mnist.dim), ("MNIST PCA-10", &latent, 10)];
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kmeans-bench");
    std::fs::create_dir_all(&dir).unwrap();

    println!("## k-means, Lloyd iterations, k = {K}, same initial centres (k-means++, seed 0)\n");
    println!(
        "| data | n × dim | threads | stdac ms/iter | scikit-learn ms/iter | stdac speed vs scikit-learn |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, data, dim) in sets {
        let n = data.len() / dim;
        let init = kmeans::kmeans_plus_plus(data, dim, K, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
        for threads in [1, all] {
            let (ours, our_iters) = time_ours(data, dim, &init, threads);
            let peer =
                if full { time_sklearn(data, dim, &init, threads, &dir) } else { Err("quick run".into()) };
            let (peer_ms, ratio) = match &peer {
                Ok((theirs, their_iters)) => {
                    if *their_iters != our_iters {
                        eprintln!("note: {name}: {our_iters} iterations here, {their_iters} in scikit-learn");
                    }
                    (format!("{:.2}", theirs * 1e3), format!("{:.2}×", theirs / ours))
                }
                Err(why) => {
                    if full {
                        eprintln!("scikit-learn not measured: {why}");
                    }
                    ("—".into(), "—".into())
                }
            };
            println!("| {name} | {n} × {dim} | {threads} | {:.2} | {peer_ms} | {ratio} |", ours * 1e3);
        }
    }
}
