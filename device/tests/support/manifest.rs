//! The manifest of a test bundle, and a folder listing, shared by the unit tests (through a `#[path]`
//! module) and the integration tests, so that each test states only what its bundle does differently.

#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;

use stdac_device::bundle::{InputSpec, Manifest};
use stdac_device::engine::TRACT_VERSION;

/// A float graph taking `image` of `shape` (values in [0, 1]) to a 2-dim `embedding`; two euclidean
/// clusters at (1, 0) and (0, 1); no novelty threshold, no card.
pub fn manifest(name: &str, shape: &[i64]) -> Manifest {
    Manifest {
        name: name.into(),
        family: "autoencoder".into(),
        input: InputSpec {
            name: "image".into(),
            shape: shape.to_vec(),
            dtype: "f32".into(),
            range: [0.0, 1.0],
        },
        outputs: vec!["embedding".into()],
        embedding_dim: 2,
        clusters: 2,
        centroids: vec![1.0, 0.0, 0.0, 1.0],
        metric: "euclidean".into(),
        class_names: vec![],
        novelty_threshold: None,
        quantization: "none".into(),
        tract_version: TRACT_VERSION.into(),
        graph_sha256: String::new(),
        card: serde_json::Value::Null,
    }
}

/// The names in `dir`, sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
