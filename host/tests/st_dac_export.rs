//! ST-DAC from a trained run to a bundle a board runs, as a user does it: `stdac export` in float and in
//! int8, the bundle's manifest, and `stdac eval --bundle` through the board's engine against the run's own
//! evaluation.

use std::path::Path;

mod common;
use common::{last_json, ok, stdac};

/// A small ST-DAC run with an input transformer, trained on 256 MNIST images.
fn train(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("run");
    ok(&stdac(&[
        "train",
        "--dataset",
        "mnist",
        "--stn",
        "input",
        "--limit",
        "256",
        "--epochs",
        "1",
        "--dense-width",
        "32",
        "--out",
        run.to_str().unwrap(),
    ]));
    run
}

#[test]
fn a_trained_st_dac_exports_in_float_and_int8_and_the_engine_assigns_as_the_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path());
    let eval = last_json(&ok(&stdac(&["eval", "--checkpoint", run.to_str().unwrap()])));

    // Float: the graph computes what burn computes.
    let out = dir.path().join("models/tiny-st-dac");
    let report = last_json(&ok(&stdac(&[
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])));
    assert!(report["max_abs_diff"].as_f64().unwrap() < 1e-4, "{report}");
    assert_eq!(report["cluster_agreement"], 1.0, "{report}");
    assert_eq!(report["scores"]["acc"], eval["acc"], "{report} vs {eval}");
    assert_eq!(report["quantization"], "none");

    let bundle = stdac_device::bundle::Bundle::read(&out.join("tiny-st-dac.stdac")).unwrap();
    let m = &bundle.manifest;
    assert_eq!((m.family.as_str(), m.quantization.as_str()), ("st-dac", "none"));
    assert_eq!(m.outputs, ["embedding", "theta"]);
    assert_eq!((m.embedding_dim, m.clusters), (10, 10));
    // ST-DAC's clusters are the largest entry of its unit output: its centroids are the unit vectors.
    let identity: Vec<f32> = (0..100).map(|i| if i / 10 == i % 10 { 1.0 } else { 0.0 }).collect();
    assert_eq!(m.centroids, identity);
    assert_eq!(m.card["check"]["float"]["cluster_agreement"], 1.0);
    assert!(m.card["training"]["model"]["stn"].as_array().is_some_and(|s| s.len() == 1), "{}", m.card);

    // The board's engine, one frame at a time, assigns every scored image as the run's evaluation.
    let predictions = dir.path().join("bundle-predictions.txt");
    let through_engine = last_json(&ok(&stdac(&[
        "eval",
        "--bundle",
        out.join("tiny-st-dac.stdac").to_str().unwrap(),
        "--dataset",
        "mnist",
        "--limit",
        "256",
        "--predictions",
        predictions.to_str().unwrap(),
    ])));
    assert_eq!(through_engine["acc"], eval["acc"]);
    assert_eq!(through_engine["nmi"], eval["nmi"]);
    assert_eq!(
        std::fs::read_to_string(&predictions).unwrap(),
        std::fs::read_to_string(run.join("predictions.txt")).unwrap()
    );

    // int8: weighted layers as QLinearConv / QLinearMatMul, calibrated, checked, recorded. A run this
    // short may miss the 99.5 % agreement bar, so --force writes it whatever the figures; they are
    // recorded either way.
    let out8 = dir.path().join("models/tiny-st-dac-int8");
    let report8 = last_json(&ok(&stdac(&[
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--quantize",
        "int8",
        "--calib",
        "64",
        "--force",
        "--out",
        out8.to_str().unwrap(),
    ])));
    assert_eq!(report8["quantization"], "int8");
    let agreement = report8["int8_cluster_agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&agreement), "{report8}");
    let bundle8 = stdac_device::bundle::Bundle::read(&out8.join("tiny-st-dac-int8.stdac")).unwrap();
    assert_eq!(bundle8.manifest.quantization, "int8");
    assert_eq!(bundle8.manifest.card["calibration_images"], 64);
    assert_eq!(
        bundle8.manifest.card["check"]["int8"]["cluster_agreement"],
        report8["int8_cluster_agreement"]
    );
    let graph = String::from_utf8_lossy(&bundle8.graph);
    assert!(graph.contains("QLinearConv") && graph.contains("QLinearMatMul") && graph.contains("GridSample"));
    // int8 weights: the bundle is much smaller than the float one.
    assert!(bundle8.to_bytes().len() * 2 < bundle.to_bytes().len());

    // The engine runs the int8 bundle, and assigns as the export's check said.
    let predictions8 = dir.path().join("int8-predictions.txt");
    ok(&stdac(&[
        "eval",
        "--bundle",
        out8.join("tiny-st-dac-int8.stdac").to_str().unwrap(),
        "--dataset",
        "mnist",
        "--limit",
        "256",
        "--predictions",
        predictions8.to_str().unwrap(),
    ]));
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().map(String::from).collect::<Vec<_>>();
    let (ours, run_clusters) = (lines(&predictions8), lines(&run.join("predictions.txt")));
    let same = ours.iter().zip(&run_clusters).filter(|(a, b)| a == b).count();
    // (The engine runs one frame at a time, the export's check in batches: the float parts may round
    // differently by an ulp, which can move an activation to the next int8 step.)
    let engine_agreement = same as f64 / 256.0;
    assert!((engine_agreement - agreement).abs() <= 2.0 / 256.0, "{engine_agreement} vs {agreement}");
}

#[test]
fn export_mistakes_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-run");
    let out = stdac(&["export", "--checkpoint", missing.to_str().unwrap(), "--out", "x"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no-such-run"), "{e}");
    let run = train(dir.path());
    let out = stdac(&[
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--quantize",
        "int8",
        "--calib",
        "0",
        "--out",
        dir.path().join("m").to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("--calib"), "{e}");
}
