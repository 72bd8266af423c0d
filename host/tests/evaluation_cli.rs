//! `stdac metrics` and `stdac baseline` as scripts call them: a JSON line last on stdout, clear errors
//! and a non-zero exit on bad input.

use std::path::Path;
use std::process::{Command, Output};

fn stdac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stdac")).args(args).output().unwrap()
}

fn last_json_line(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn metrics_prints_one_json_line_with_every_score_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let truth = write(dir.path(), "truth.txt", "0\n0\n1\n1\n");
    let pred = write(dir.path(), "pred.txt", "0\n0\n1\n2\n");
    let png = dir.path().join("confusion.png");
    let output =
        stdac(&["metrics", "--truth", &truth, "--pred", &pred, "--confusion", png.to_str().unwrap()]);
    let line = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(line.starts_with("{\"n\":4,\"acc\":0.75,\"nmi\":"), "keys in the documented order: {line}");
    let json = last_json_line(&output);
    let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["n", "acc", "nmi", "ari", "homogeneity", "completeness", "v_measure"]);
    assert!((json["v_measure"].as_f64().unwrap() - 0.8).abs() < 1e-12);
    assert!(image::open(&png).is_ok(), "the confusion matrix PNG was drawn");
}

#[test]
fn metrics_rejects_bad_files_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let three = write(dir.path(), "three.txt", "1\n2\n3\n");
    let two = write(dir.path(), "two.txt", "1\n2\n");
    let empty = write(dir.path(), "empty.txt", "");
    let words = write(dir.path(), "words.txt", "1\ncat\n3\n");
    for (truth, pred, expected) in [
        (&three, &two, format!("{three} holds 3 labels but {two} holds 2")),
        (&three, &empty, format!("{empty}: no labels (empty file)")),
        (&three, &words, format!("{words}: line 2: \"cat\" is not an integer label")),
        (&three, &"/nonexistent/p.txt".to_string(), "cannot read /nonexistent/p.txt".to_string()),
    ] {
        let output = stdac(&["metrics", "--truth", truth, "--pred", pred]);
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&expected), "expected {expected:?} in {stderr}");
        assert!(output.stdout.is_empty(), "no half result on stdout");
    }
}

#[test]
fn baseline_on_iris_prints_the_metrics_json_last() {
    let json = last_json_line(&stdac(&["baseline", "--dataset", "iris", "--method", "kmeans"]));
    assert_eq!(json["n"], 150);
    // The known optimum of k-means on standardised iris (checked against scikit-learn elsewhere).
    assert!((json["acc"].as_f64().unwrap() - 0.8333333333333334).abs() < 1e-12, "{json}");
}

#[test]
fn baseline_writes_predictions_that_metrics_scores_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let pred = dir.path().join("pred.txt");
    let json = last_json_line(&stdac(&[
        "baseline",
        "--dataset",
        "synthetic-control",
        "--method",
        "pca-kmeans",
        "--components",
        "5",
        "--predictions",
        pred.to_str().unwrap(),
    ]));
    let truth: String = (0..6).flat_map(|c| std::iter::repeat_n(format!("{c}\n"), 100)).collect();
    let truth_path = write(dir.path(), "truth.txt", &truth);
    let again =
        last_json_line(&stdac(&["metrics", "--truth", &truth_path, "--pred", pred.to_str().unwrap()]));
    assert_eq!(json, again);
}

#[test]
fn baseline_on_a_slice_of_real_mnist() {
    let json =
        last_json_line(&stdac(&["baseline", "--dataset", "mnist", "--limit", "1000", "--restarts", "2"]));
    assert_eq!(json["n"], 1000);
    // Far from chance (0.1) and far from perfect: what k-means on raw pixels does.
    let acc = json["acc"].as_f64().unwrap();
    assert!((0.35..0.8).contains(&acc), "acc {acc}");
}

#[test]
fn dataset_errors_are_clear() {
    let output = stdac(&["baseline", "--dataset", "mnist", "--data", "/nonexistent/data"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("data folder /nonexistent/data does not exist"));
    let output = stdac(&["baseline", "--dataset", "iris", "--split", "test"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("iris has no train/test split: use --split all"));
    let output = stdac(&["baseline", "--dataset", "imagenet"]);
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown dataset \"imagenet\""));
}

#[test]
fn eval_names_a_folder_that_is_not_a_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().display().to_string();
    let output = stdac(&["eval", "--checkpoint", &empty]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{empty} is not a training run (no config.json)")), "{stderr}");

    // A run that was started but never finished an epoch: its configuration is there, no checkpoint.
    let started = dir.path().join("started").display().to_string();
    let train = stdac(&["train", "--dataset", "mnist", "--limit", "2", "--epochs", "0", "--out", &started]);
    assert!(train.status.success(), "{}", String::from_utf8_lossy(&train.stderr));
    let output = stdac(&["eval", "--checkpoint", &started]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no finished epoch yet"), "{stderr}");
    assert!(output.stdout.is_empty(), "no half result on stdout");

    // Too few images to learn from pairs, or to score, is refused rather than scored as a perfect 1.0.
    let none = dir.path().join("none").display().to_string();
    let output = stdac(&["train", "--dataset", "mnist", "--limit", "1", "--epochs", "1", "--out", &none]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[..1] holds 1 images: --limit must leave at least 2"), "{stderr}");
}
