//! Running a benchmark's Python peer with arguments of the benchmark's choosing: a script in
//! `host/benches/` that prints its figures as one JSON line (the last line of its output).

use std::path::Path;
use std::process::Command;

/// The peer's JSON line, or why it could not be measured (no python3, a missing module, a failing
/// script: the last line of its error output).
pub fn run(script: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join(script);
    let output = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line.trim()).map_err(|e| format!("{e}: {line}"))
}
