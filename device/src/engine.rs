//! The inference engine: a checked bundle, its graph optimised once by tract, and nearest-centroid
//! assignment of every frame.
//!
//! [`Engine::load`] refuses a bundle made for another tract version, with a metric it does not know, or
//! whose graph does not load or lacks an `embedding` output, before anything is kept: a bundle either
//! loads whole or not at all.

use std::path::Path;

use tract_onnx::prelude::*;

use crate::bundle::{Bundle, BundleError, Manifest};
use crate::centroids::{Centroids, Metric, Nearest};

/// The tract-onnx version this engine runs graphs with (the workspace pins it).
pub const TRACT_VERSION: &str = "0.23.9";

type Plan = Arc<TypedSimplePlan>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{origin}: made for tract {found}, this engine runs tract {TRACT_VERSION}: export it again")]
    TractVersion { origin: String, found: String },
    #[error("{origin}: {detail}")]
    Graph { origin: String, detail: String },
    #[error("a frame of {found} values, the model takes {expected} ({what})")]
    FrameSize { found: usize, expected: usize, what: String },
    #[error("running the model: {0}")]
    Run(String),
}

/// Where one frame belongs.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub cluster: usize,
    /// Distance to that cluster's centroid.
    pub distance: f32,
    /// How much farther the runner-up centroid is.
    pub margin: f32,
    /// Farther from its centroid than the manifest's novelty threshold.
    pub novel: bool,
}

pub struct Engine {
    manifest: Manifest,
    plan: Plan,
    centroids: Centroids,
    /// The input tensor's shape for one frame (the batch fixed to 1), e.g. [1, 1, 28, 28].
    frame_shape: Vec<usize>,
    /// Values per frame (e.g. 784 for one 28 × 28 grey image).
    frame_len: usize,
    /// Position of `embedding` among the graph's outputs.
    embedding_output: usize,
}

impl Engine {
    /// Builds the engine of `bundle` (read from `origin`, named in errors).
    pub fn load(bundle: Bundle, origin: &str) -> Result<Engine, EngineError> {
        let m = bundle.manifest;
        m.validate(origin)?;
        if m.tract_version != TRACT_VERSION {
            return Err(EngineError::TractVersion { origin: origin.into(), found: m.tract_version });
        }
        let metric = match m.metric.as_str() {
            "euclidean" => Metric::Euclidean,
            _ => Metric::Cosine,
        };
        let graph_error = |detail: String| EngineError::Graph { origin: origin.into(), detail };
        let embedding_output = m
            .outputs
            .iter()
            .position(|o| o == "embedding")
            .ok_or_else(|| graph_error("the manifest names no `embedding` output".into()))?;
        // One frame at a time: the batch dimension is fixed to 1 for the single-frame plan.
        let frame_shape: Vec<usize> =
            m.input.shape.iter().map(|&d| if d < 0 { 1 } else { d as usize }).collect();
        let frame_len = frame_shape.iter().product();
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &bundle.graph[..])
            .and_then(|model| model.with_input_fact(0, f32::fact(&frame_shape).into()))
            .and_then(|model| model.into_optimized())
            .and_then(|model| model.into_runnable())
            .map_err(|e| graph_error(format!("tract cannot load the graph: {e:#}")))?;
        let centroids = Centroids::new(m.centroids.clone(), m.embedding_dim, metric);
        Ok(Engine { manifest: m, plan, centroids, frame_shape, frame_len, embedding_output })
    }

    /// Reads, checks and loads the bundle file at `path`.
    pub fn from_file(path: &Path) -> Result<Engine, EngineError> {
        Engine::load(Bundle::read(path)?, &path.display().to_string())
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The model's output for one frame (the input tensor's values, e.g. 28 × 28 grey in [0, 1]).
    pub fn embed(&self, frame: &[f32]) -> Result<Vec<f32>, EngineError> {
        if frame.len() != self.frame_len {
            return Err(EngineError::FrameSize {
                found: frame.len(),
                expected: self.frame_len,
                what: format!("{} {:?}", self.manifest.input.name, self.manifest.input.shape),
            });
        }
        let input =
            Tensor::from_shape(&self.frame_shape, frame).map_err(|e| EngineError::Run(format!("{e:#}")))?;
        let outputs = self.plan.run(tvec!(input.into())).map_err(|e| EngineError::Run(format!("{e:#}")))?;
        let embedding = outputs[self.embedding_output]
            .to_plain_array_view::<f32>()
            .map_err(|e| EngineError::Run(format!("{e:#}")))?;
        Ok(embedding.iter().copied().collect())
    }

    /// Runs one frame and assigns it to its nearest centroid.
    pub fn assign(&self, frame: &[f32]) -> Result<Assignment, EngineError> {
        let embedding = self.embed(frame)?;
        let Nearest { index, distance, margin } = self.centroids.nearest(&embedding);
        let novel = self.manifest.novelty_threshold.is_some_and(|t| distance > t);
        Ok(Assignment { cluster: index, distance, margin, novel })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::InputSpec;
    use tract_onnx::pb::{self, tensor_proto::DataType};

    /// A 2 × 2 grey image → Flatten → Gemm with W [4, 2] = rows (1, 0), (0, 1), (1, 0), (0, 1): the
    /// embedding is (x₀ + x₂, x₁ + x₃), written with ONNX's protobuf types directly.
    fn graph() -> Vec<u8> {
        let weights: Vec<f32> = vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let tensor_type = |dims: &[i64]| pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        };
        let node = |op: &str, inputs: &[&str], output: &str| pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        };
        let graph = pb::GraphProto {
            node: vec![node("Flatten", &["image"], "flat"), node("Gemm", &["flat", "w"], "embedding")],
            initializer: vec![pb::TensorProto {
                name: "w".into(),
                dims: vec![4, 2],
                data_type: DataType::Float as i32,
                float_data: weights,
                ..Default::default()
            }],
            input: vec![pb::ValueInfoProto {
                name: "image".into(),
                r#type: Some(tensor_type(&[1, 1, 2, 2])),
                ..Default::default()
            }],
            output: vec![pb::ValueInfoProto {
                name: "embedding".into(),
                r#type: Some(tensor_type(&[1, 2])),
                ..Default::default()
            }],
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(graph),
            ..Default::default()
        };
        prost::Message::encode_to_vec(&model)
    }

    fn manifest() -> Manifest {
        Manifest {
            name: "two-pixels".into(),
            family: "autoencoder".into(),
            input: InputSpec {
                name: "image".into(),
                shape: vec![-1, 1, 2, 2],
                dtype: "f32".into(),
                range: [0.0, 1.0],
            },
            outputs: vec!["embedding".into()],
            embedding_dim: 2,
            clusters: 2,
            centroids: vec![0.0, 0.0, 2.0, 0.0],
            metric: "euclidean".into(),
            class_names: vec![],
            novelty_threshold: Some(0.5),
            quantization: "none".into(),
            tract_version: TRACT_VERSION.into(),
            graph_sha256: String::new(),
            card: serde_json::Value::Null,
        }
    }

    #[test]
    fn frames_are_embedded_by_the_graph_and_assigned_to_the_nearest_centroid() {
        let engine = Engine::load(Bundle::new(manifest(), graph()), "test").unwrap();
        // Embedding (1 + 1, 0 + 0) = (2, 0): on centroid 1, two away from centroid 0.
        let a = engine.assign(&[1.0, 0.0, 1.0, 0.0]).unwrap();
        assert_eq!(a, Assignment { cluster: 1, distance: 0.0, margin: 2.0, novel: false });
        // Embedding (0, 1): 1 from centroid 0, √5 from centroid 1, and past the novelty threshold.
        let b = engine.assign(&[0.0, 0.5, 0.0, 0.5]).unwrap();
        assert_eq!((b.cluster, b.novel), (0, true));
        assert!((b.distance - 1.0).abs() < 1e-6 && (b.margin - (5f32.sqrt() - 1.0)).abs() < 1e-6);
        let e = engine.assign(&[0.0; 3]).unwrap_err().to_string();
        assert!(e.contains("3 values") && e.contains("takes 4"), "{e}");
    }

    #[test]
    fn a_bundle_that_cannot_run_here_is_refused_whole() {
        let mut old = manifest();
        old.tract_version = "0.21.0".into();
        let e = Engine::load(Bundle::new(old, graph()), "old.stdac").err().unwrap().to_string();
        assert!(e.contains("old.stdac") && e.contains("tract 0.21.0") && e.contains(TRACT_VERSION), "{e}");
        let e = Engine::load(Bundle::new(manifest(), b"not a graph".to_vec()), "junk.stdac").err().unwrap();
        assert!(e.to_string().contains("junk.stdac: tract cannot load the graph"), "{e}");
        let mut unnamed = manifest();
        unnamed.outputs = vec!["codes".into()];
        let e = Engine::load(Bundle::new(unnamed, graph()), "x.stdac").err().unwrap().to_string();
        assert!(e.contains("no `embedding` output"), "{e}");
    }
}
