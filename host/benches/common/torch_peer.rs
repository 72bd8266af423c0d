//! Running a benchmark's PyTorch peer: a script in `host/benches/` that reads the same images (raw
//! little-endian f32) and prints one JSON line of its figures. Shared by the training-step benchmarks.

#[path = "python_peer.rs"]
mod python_peer;

/// The peer's JSON line, or why it could not be measured (no python3, no torch, a failing script).
/// `extra`: the script's own arguments after the common ones.
pub fn run(
    script: &str,
    images: &[f32],
    n: usize,
    steps: usize,
    threads: usize,
    extra: &[&str],
) -> Result<serde_json::Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("images.f32");
    let bytes: Vec<u8> = images.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let device = if cfg!(feature = "cuda") { "cuda" } else { "cpu" };
    let (n, steps, threads) = (n.to_string(), steps.to_string(), threads.to_string());
    let mut args = vec![path.to_str().unwrap(), &n, &steps, &threads, device];
    args.extend_from_slice(extra);
    python_peer::run(script, &args)
}
