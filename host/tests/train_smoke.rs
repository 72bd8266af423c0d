//! A small CPU training run on real MNIST images, as CI can afford: the loss falls, the scores are
//! recorded every epoch, a checkpoint is written, and running the same command again resumes instead of
//! starting over.

use std::process::Command;

fn train(out: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stdac"))
        .args(["train", "--dataset", "mnist", "--stn", "input", "--limit", "256", "--epochs", "2"])
        .args(["--dense-width", "128", "--out", out])
        .output()
        .unwrap()
}

#[test]
fn a_small_run_learns_records_checkpoints_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let first = train(out);
    assert!(first.status.success(), "stderr: {}", String::from_utf8_lossy(&first.stderr));

    let text = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(epochs.len(), 2);
    let loss = |e: &serde_json::Value| e["loss"].as_f64().unwrap();
    assert!(loss(&epochs[1]) < loss(&epochs[0]), "the loss falls: {text}");
    for e in &epochs {
        let acc = e["acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc) && e["nmi"].is_f64() && e["ari"].is_f64(), "{e}");
    }
    let latest = std::fs::read_to_string(dir.path().join("run/LATEST")).unwrap();
    assert!(dir.path().join("run").join(latest.trim()).join("model.mpk").is_file());

    let again = train(out);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("resuming"),
        "the finished run is picked up, not redone"
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap(), text);
}
