//! The autoencoder family as a user runs it, on data CI can afford: DCN on iris (a whole run: pre-training,
//! the joint phase, evaluation, resume, determinism), every kind on a slice of real MNIST with its
//! figures, the convolutional autoencoder, retrieval by picture and by index, and the errors a user meets.

use std::path::Path;

mod common;
use common::{error, last_json, ok, stdac};

use stdac::autoencoder::train::{assign, encode_all, load_trained};
use stdac::data::{self, Source, Split};
use stdac::run::RunDir;

fn records(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn dcn_on_iris_pretrains_joins_k_means_evaluates_resumes_and_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("iris");
    let run_s = run.to_str().unwrap();
    let args = [
        "train",
        "--model",
        "dcn",
        "--dataset",
        "iris",
        "--epochs",
        "40",
        "--dcn-epochs",
        "10",
        "--out",
        run_s,
    ];
    ok(&stdac(&args));

    let epochs = records(&run);
    assert_eq!(epochs.len(), 50);
    assert!(epochs[..40].iter().all(|e| e["phase"] == "pretrain" && f(e, "clustering") == 0.0));
    assert!(epochs[40..].iter().all(|e| e["phase"] == "joint" && f(e, "clustering") > 0.0));
    assert!(f(&epochs[39], "reconstruction") < f(&epochs[0], "reconstruction") / 2.0, "pre-training learns");

    // The evaluation scores the saved centroids on all 150 flowers and agrees with the run's own record.
    let out = ok(&stdac(&["eval", "--checkpoint", run_s]));
    let scores = last_json(&out);
    assert_eq!(scores["n"], 150);
    assert!((f(&scores, "nmi") - f(&epochs[49], "nmi")).abs() < 1e-12, "{scores} vs {}", epochs[49]);
    // Far above chance (NMI ≈ 0.01 for random labels of three balanced classes).
    assert!(f(&scores, "nmi") > 0.5, "{scores}");
    for figure in ["confusion.png", "latent.png", "curves.png", "loss.png", "predictions.txt"] {
        assert!(run.join(figure).is_file(), "{figure} written");
    }
    assert!(!run.join("reconstructions.png").exists(), "tables have no pictures to draw");

    // The predictions are the nearest saved centroid of each code, as a board would assign them.
    let (config, model, state) = load_trained(&RunDir::existing(&run).unwrap()).unwrap();
    let iris = data::load(&Source::Iris, None, None, None).unwrap();
    let codes = encode_all(&model, &iris, &Default::default());
    let expected: String =
        assign(&codes, &state.centroids(config.model.latent)).iter().map(|c| format!("{c}\n")).collect();
    assert_eq!(std::fs::read_to_string(run.join("predictions.txt")).unwrap(), expected);

    // The same command again finds the run finished; another folder with the same seed repeats it.
    let again = stdac(&args);
    ok(&again);
    assert!(String::from_utf8_lossy(&again.stderr).contains("resuming"));
    assert_eq!(records(&run).len(), 50);
    let twin = dir.path().join("twin");
    let mut twin_args = args.to_vec();
    *twin_args.last_mut().unwrap() = twin.to_str().unwrap();
    ok(&stdac(&twin_args));
    let strip = |r: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        r.into_iter()
            .map(|mut e| {
                for timing in ["samples_per_s", "train_seconds"] {
                    e.as_object_mut().unwrap().remove(timing);
                }
                e
            })
            .collect()
    };
    assert_eq!(strip(records(&twin)), strip(records(&run)), "a seed repeats a run exactly");
}

/// Trains `kind` on the first 256 MNIST training images for 2 epochs, a small network.
fn mnist_run(dir: &Path, kind: &str, extra: &[&str]) -> std::path::PathBuf {
    let run = dir.join(kind);
    let mut args = vec![
        "train",
        "--model",
        kind,
        "--dataset",
        "mnist",
        "--limit",
        "256",
        "--epochs",
        "3",
        "--batch",
        "32",
        "--hidden",
        "128",
        "--latent",
        "8",
        "--dcn-epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend(extra);
    ok(&stdac(&args));
    run
}

#[test]
fn every_kind_learns_on_mnist_and_draws_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["ae", "sae", "dae", "vae", "dcn"] {
        let run = mnist_run(dir.path(), kind, &[]);
        let epochs = records(&run);
        let first = f(&epochs[0], "reconstruction");
        let last = f(epochs.last().unwrap(), "reconstruction");
        assert!(last < first, "{kind}: the reconstruction error falls ({first} → {last})");
        // Each kind's own term is there, and only there.
        let regulariser = f(&epochs[0], "regulariser");
        assert_eq!(regulariser > 0.0, kind == "sae" || kind == "vae", "{kind}: regulariser {regulariser}");

        let out = ok(&stdac(&["eval", "--checkpoint", run.to_str().unwrap()]));
        let scores = last_json(&out);
        assert_eq!(scores["n"], 256, "{kind}: the first 256 test images are scored");
        assert!(f(&scores, "acc") > 0.1 && f(&scores, "reconstruction_mse") > 0.0, "{kind}: {scores}");
        for figure in ["confusion.png", "latent.png", "clusters.png", "reconstructions.png"] {
            let png = image::open(run.join(figure)).unwrap_or_else(|e| panic!("{kind}: {figure}: {e}"));
            assert!(png.width() > 100 && png.height() > 100, "{kind}: {figure}");
        }
        assert_eq!(run.join("denoising.png").is_file(), kind == "dae", "{kind}: denoising figure");
    }
}

#[test]
fn the_convolutional_and_masking_variants_train() {
    let dir = tempfile::tempdir().unwrap();
    let conv = mnist_run(&dir.path().join("conv"), "ae", &["--architecture", "conv"]);
    let epochs = records(&conv);
    assert!(f(&epochs[1], "reconstruction") < f(&epochs[0], "reconstruction"), "{epochs:?}");
    let masked = mnist_run(dir.path(), "dae", &["--noise", "masking", "--noise-level", "0.3"]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(masked.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["noise"], serde_json::json!({"Masking": {"fraction": 0.3}}));
    let kl = mnist_run(dir.path(), "sae", &["--sparsity", "kl", "--sparsity-target", "0.1"]);
    assert!(f(&records(&kl)[0], "regulariser") > 0.0);
    // No hidden layer: a linear code.
    let linear = dir.path().join("linear");
    let args = ["train", "--model", "vae", "--dataset", "wine", "--hidden", "none", "--epochs", "3"];
    ok(&stdac(&[&args[..], &["--out", linear.to_str().unwrap()]].concat()));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(linear.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["hidden"], serde_json::json!([]));
    assert_eq!(config["model"]["latent"], 3, "a code as wide as wine's three classes");
}

#[test]
fn a_folder_of_pictures_trains_and_evaluates_with_its_subfolders_as_labels() {
    let dir = tempfile::tempdir().unwrap();
    let pictures = dir.path().join("captures");
    let mnist = data::load(&Source::Mnist, Some(Split::Test), Some(200), None).unwrap();
    let labels = mnist.labels.as_ref().unwrap();
    for digit in [0i64, 1] {
        let folder = pictures.join(format!("digit-{digit}"));
        std::fs::create_dir_all(&folder).unwrap();
        for (n, i) in (0..mnist.len()).filter(|&i| labels[i] == digit).take(12).enumerate() {
            let pixels: Vec<u8> = mnist.row(i).iter().map(|&v| (v * 255.0).round() as u8).collect();
            // Bigger than the model's input, as a camera's would be: the loader brings them to 28 × 28.
            let picture = image::GrayImage::from_raw(28, 28, pixels).unwrap();
            let big = image::imageops::resize(&picture, 56, 56, image::imageops::FilterType::Triangle);
            big.save(folder.join(format!("{n}.png"))).unwrap();
        }
    }
    let run = dir.path().join("run");
    let folder = pictures.to_str().unwrap();
    ok(&stdac(&[
        "train",
        "--model",
        "ae",
        "--dataset",
        folder,
        "--epochs",
        "3",
        "--batch",
        "8",
        "--hidden",
        "64",
        "--latent",
        "4",
        "--out",
        run.to_str().unwrap(),
    ]));
    let scores = last_json(&ok(&stdac(&["eval", "--checkpoint", run.to_str().unwrap()])));
    assert_eq!(scores["n"], 24, "every picture scored: {scores}");
    assert!(run.join("reconstructions.png").is_file() && run.join("latent.png").is_file());
}

#[test]
fn search_finds_the_nearest_training_images_by_picture_or_index() {
    let dir = tempfile::tempdir().unwrap();
    let run = mnist_run(dir.path(), "ae", &[]);
    let run_s = run.to_str().unwrap();
    let by_index = ok(&stdac(&["search", "--checkpoint", run_s, "--query-index", "0", "--k", "5"]));
    let hits = last_json(&by_index)["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 5);
    let distances: Vec<f64> = hits.iter().map(|h| f(h, "distance")).collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]), "nearest first: {distances:?}");
    assert!(hits.iter().all(|h| h["index"].as_u64().unwrap() < 256 && h["label"].is_string()));
    assert!(run.join("search.png").is_file());

    // The same test image as a PNG file is the same query.
    let test = data::load(&Source::Mnist, Some(Split::Test), Some(1), None).unwrap();
    let pixels: Vec<u8> = test.row(0).iter().map(|&v| (v * 255.0).round() as u8).collect();
    let picture = dir.path().join("seven.png");
    image::GrayImage::from_raw(28, 28, pixels).unwrap().save(&picture).unwrap();
    let grid = dir.path().join("grid.png");
    let by_picture = ok(&stdac(&[
        "search",
        "--checkpoint",
        run_s,
        "--query",
        picture.to_str().unwrap(),
        "--k",
        "5",
        "--grid",
        grid.to_str().unwrap(),
    ]));
    let picture_hits = last_json(&by_picture)["hits"].clone();
    let indices = |h: &serde_json::Value| -> Vec<u64> {
        h.as_array().unwrap().iter().map(|x| x["index"].as_u64().unwrap()).collect()
    };
    assert_eq!(indices(&picture_hits), indices(&serde_json::Value::Array(hits)));
    let png = image::open(&grid).unwrap();
    assert!(png.width() > 5 * 28, "query and 5 neighbours drawn");

    let e = error(&stdac(&["search", "--checkpoint", run_s, "--query-index", "999"]));
    assert!(e.contains("--query-index 999 is out of range") && e.contains("256"), "{e}");
}

#[test]
fn an_image_model_exports_to_onnx_and_a_bundle_that_tract_agrees_with() {
    let dir = tempfile::tempdir().unwrap();
    let run = mnist_run(dir.path(), "dcn", &[]);
    let out = dir.path().join("models/tiny-dcn");
    let stdout =
        ok(&stdac(&["export", "--checkpoint", run.to_str().unwrap(), "--out", out.to_str().unwrap()]));
    let report = last_json(&stdout);
    assert!(f(&report, "max_abs_diff") < 1e-4, "{report}");
    assert_eq!(f(&report, "cluster_agreement"), 1.0, "{report}");
    // The scores through tract are the run's own (the same clusters).
    let eval = last_json(&ok(&stdac(&["eval", "--checkpoint", run.to_str().unwrap()])));
    assert_eq!(report["scores"]["acc"], eval["acc"]);

    let bundle = stdac_device::bundle::Bundle::read(&out.join("tiny-dcn.stdac")).unwrap();
    let m = &bundle.manifest;
    assert_eq!((m.name.as_str(), m.family.as_str()), ("tiny-dcn", "autoencoder"));
    assert_eq!((m.input.name.as_str(), &m.input.shape[..]), ("image", &[-1, 1, 28, 28][..]));
    assert_eq!((m.embedding_dim, m.clusters, m.centroids.len()), (8, 10, 80));
    assert_eq!(m.class_names.len(), 10);
    assert!(m.novelty_threshold.unwrap() > 0.0);
    assert_eq!(bundle.graph, std::fs::read(out.join("model.onnx")).unwrap());
    let (_, _, state) = load_trained(&RunDir::existing(&run).unwrap()).unwrap();
    assert_eq!(m.centroids, state.centroids, "the board gets the run's own centroids");
    assert_eq!(report["sha256"].as_str().unwrap(), bundle.sha256());

    // The board's engine, one frame at a time, assigns every image as the trained run does.
    let predictions = dir.path().join("bundle-predictions.txt");
    let through_engine = last_json(&ok(&stdac(&[
        "eval",
        "--bundle",
        out.join("tiny-dcn.stdac").to_str().unwrap(),
        "--dataset",
        "mnist",
        "--limit",
        "256",
        "--predictions",
        predictions.to_str().unwrap(),
    ])));
    assert_eq!(through_engine, {
        let mut scores = eval.clone();
        scores.as_object_mut().unwrap().remove("reconstruction_mse");
        scores
    });
    assert_eq!(
        std::fs::read_to_string(&predictions).unwrap(),
        std::fs::read_to_string(run.join("predictions.txt")).unwrap()
    );
    // A damaged bundle is refused by name.
    let mut bytes = std::fs::read(out.join("tiny-dcn.stdac")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let damaged = dir.path().join("damaged.stdac");
    std::fs::write(&damaged, bytes).unwrap();
    let e =
        error(&stdac(&["eval", "--bundle", damaged.to_str().unwrap(), "--dataset", "mnist", "--limit", "4"]));
    assert!(e.contains("damaged.stdac") && e.to_lowercase().contains("checksum"), "{e}");

    // Tables are not for a camera board.
    let table = dir.path().join("iris");
    ok(&stdac(&[
        "train",
        "--model",
        "ae",
        "--dataset",
        "iris",
        "--epochs",
        "2",
        "--out",
        table.to_str().unwrap(),
    ]));
    let e =
        error(&stdac(&["export", "--checkpoint", table.to_str().unwrap(), "--out", out.to_str().unwrap()]));
    assert!(e.contains("a table") && e.contains("iris"), "{e}");
}

#[test]
fn mistakes_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let e = error(&stdac(&[
        "train",
        "--model",
        "ae",
        "--dataset",
        "iris",
        "--architecture",
        "conv",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("--architecture conv takes 28 × 28 images") && e.contains("iris"), "{e}");
    let e = error(&stdac(&[
        "train",
        "--model",
        "dae",
        "--dataset",
        "iris",
        "--noise",
        "masking",
        "--noise-level",
        "1.5",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("--noise-level"), "{e}");
    let e = error(&stdac(&[
        "train",
        "--model",
        "dae",
        "--dataset",
        "iris",
        "--noise-level=-0.5",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("standard deviation"), "{e}");
    let e = error(&stdac(&[
        "train",
        "--model",
        "ae",
        "--dataset",
        "iris",
        "--hidden",
        "64,x",
        "--out",
        "unused",
    ]));
    assert!(e.contains("\"x\" is not a layer width"), "{e}");
    // Search needs a latent space: an ST-DAC run folder is refused by name.
    let st_dac = dir.path().join("st-dac");
    std::fs::create_dir_all(&st_dac).unwrap();
    std::fs::write(st_dac.join("config.json"), r#"{"model": {"clusters": 10}}"#).unwrap();
    let e = error(&stdac(&["search", "--checkpoint", st_dac.to_str().unwrap(), "--query-index", "0"]));
    assert!(e.contains("is not an autoencoder run") && e.contains("st-dac"), "{e}");
    // A run that never finished an epoch.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("config.json"), r#"{"family": "autoencoder"}"#).unwrap();
    let e = error(&stdac(&["eval", "--checkpoint", empty.to_str().unwrap()]));
    assert!(e.contains("config.json") && e.contains("not a valid autoencoder configuration"), "{e}");
}
