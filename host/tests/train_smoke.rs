//! A small CPU training run on real MNIST images, as CI can afford: the loss falls within the first epoch
//! and from one epoch to the next, the scores are recorded every epoch, a checkpoint is written with its
//! configuration, running the same command again resumes instead of starting over, a second run with the
//! same seed repeats the first exactly, and `stdac eval` scores the checkpoint, draws its figures, and
//! finds every output a unit, non-negative vector.

use std::process::Command;

use stdac::run::RunDir;
use stdac::st_dac::train::{load_trained, predict};

fn stdac(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stdac")).args(args).output().unwrap()
}

fn train(out: &str) -> std::process::Output {
    stdac(&[
        "train",
        "--dataset",
        "mnist",
        "--stn",
        "input",
        "--limit",
        "256",
        "--epochs",
        "2",
        "--dense-width",
        "128",
        "--out",
        out,
    ])
}

#[test]
fn a_small_run_learns_records_checkpoints_resumes_repeats_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let first = train(out);
    assert!(first.status.success(), "stderr: {}", String::from_utf8_lossy(&first.stderr));

    let text = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(epochs.len(), 2);
    let get = |e: &serde_json::Value, key: &str| e[key].as_f64().unwrap();
    assert!(
        get(&epochs[0], "loss_last_quarter") < get(&epochs[0], "loss_first_quarter"),
        "the loss falls within the first epoch: {text}"
    );
    assert!(get(&epochs[1], "loss") < get(&epochs[0], "loss"), "the loss falls: {text}");
    for e in &epochs {
        let acc = get(e, "acc");
        assert!((0.0..=1.0).contains(&acc) && e["nmi"].is_f64() && e["ari"].is_f64(), "{e}");
    }
    let latest = std::fs::read_to_string(dir.path().join("run/LATEST")).unwrap();
    let checkpoint = dir.path().join("run").join(latest.trim());
    assert!(checkpoint.join("model.mpk").is_file());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(checkpoint.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["model"]["stn"], serde_json::json!(["Input"]), "the configuration is saved with it");

    let again = train(out);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("resuming"),
        "the finished run is picked up, not redone"
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap(), text);

    // Same seed, same run: every record matches but for the timings.
    let out2 = dir.path().join("run2");
    assert!(train(out2.to_str().unwrap()).status.success());
    let untimed = |text: &str| -> Vec<serde_json::Value> {
        let mut records: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        for r in &mut records {
            let fields = r.as_object_mut().unwrap();
            fields.remove("images_per_s");
            fields.remove("train_seconds");
        }
        records
    };
    assert_eq!(untimed(&std::fs::read_to_string(out2.join("metrics.jsonl")).unwrap()), untimed(&text));

    let eval = stdac(&["eval", "--checkpoint", out]);
    assert!(eval.status.success(), "stderr: {}", String::from_utf8_lossy(&eval.stderr));
    let stdout = String::from_utf8_lossy(&eval.stdout);
    let scores: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(scores["n"], 256, "scored on the run's 256 test images: {stdout}");
    assert_eq!(scores["acc"].as_f64(), epochs[1]["acc"].as_f64(), "eval agrees with the last epoch's record");
    for figure in ["confusion.png", "curves.png", "loss.png", "clusters.png", "stn.png"] {
        let path = dir.path().join("run").join(figure);
        assert!(image::open(&path).is_ok(), "{figure} was drawn: {stdout}");
    }
    let predictions = std::fs::read_to_string(dir.path().join("run/predictions.txt")).unwrap();
    assert_eq!(predictions.lines().count(), 256);

    // The constraint layer's promise, checked on the trained model's own outputs.
    let run = RunDir::existing(std::path::Path::new(out)).unwrap();
    let (config, model) = load_trained(&run).unwrap();
    let images = config.scored_images(None).unwrap();
    let device = stdac::backend::device().unwrap();
    let p = predict(&model, &images, false, &device);
    assert_eq!(p.embeddings.len(), 256 * 10);
    for row in p.embeddings.chunks(10) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5 && row.iter().all(|&v| v >= 0.0), "not a unit vector: {row:?}");
    }
}

/// The edge network (issue 14) trains one epoch the same way: the loss falls within it, the record and
/// the checkpoint carry the architecture, and `stdac eval` scores it.
#[test]
fn a_one_epoch_run_of_the_edge_network_learns_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edge");
    let out = out.to_str().unwrap();
    let args = ["train", "--dataset", "mnist", "--arch", "edge", "--stn", "input,block2", "--limit", "256"];
    let run = stdac(&[&args[..], &["--epochs", "1", "--out", out]].concat());
    assert!(run.status.success(), "stderr: {}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(dir.path().join("edge/metrics.jsonl")).unwrap();
    let epoch: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let get = |key: &str| epoch[key].as_f64().unwrap();
    assert!(get("loss_last_quarter") < get("loss_first_quarter"), "the loss falls within the epoch: {text}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("edge/config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["arch"], "edge");
    assert_eq!(config["model"]["dense_width"], 128, "the edge network's own default width");
    let eval = stdac(&["eval", "--checkpoint", out]);
    assert!(eval.status.success(), "stderr: {}", String::from_utf8_lossy(&eval.stderr));
    let stdout = String::from_utf8_lossy(&eval.stdout);
    let scores: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(scores["acc"].as_f64(), epoch["acc"].as_f64(), "eval agrees with the epoch's record");
}
