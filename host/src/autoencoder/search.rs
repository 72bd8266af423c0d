//! Retrieval: the training samples nearest a query in an autoencoder's latent space, by exact search.

use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use stdac_device::centroids::squared_distance;

use super::train::{encode_all, load_trained};
use crate::backend::{self, Backend};
use crate::data::{images, Dataset};
use crate::figures::{self, ImageRow};
use crate::run::RunDir;

/// What to look for.
pub enum Query<'a> {
    /// A picture file, brought to the model's 28 × 28 input as the board does.
    Picture(&'a Path),
    /// The sample at this index of the run's scored samples (its test split when held out).
    Scored(usize),
}

/// One neighbour.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Index into the run's training samples.
    pub index: usize,
    /// Euclidean distance in the latent space.
    pub distance: f32,
    /// Its class, when the training samples are labelled.
    pub label: Option<String>,
}

pub struct Results {
    /// What the training samples are, e.g. `mnist/train`.
    pub searched: String,
    /// Pixels (or features) of the query.
    pub query: Vec<f32>,
    pub hits: Vec<Hit>,
    /// `(height, width)` when the samples are images.
    pub image_size: Option<(usize, usize)>,
    /// The hits' pixels (or features), in order.
    pub hit_features: Vec<f32>,
}

/// The `k` training samples of `run` nearest `query`, nearest first (ties by index).
pub fn search(run: &RunDir, query: Query, k: usize, data: Option<&Path>) -> anyhow::Result<Results> {
    anyhow::ensure!(k >= 1, "--k must be at least 1");
    let (config, model, _) = load_trained(run)?;
    let (train, scored): (Dataset, Dataset) = config.datasets(data)?;
    let query = match query {
        Query::Picture(path) => {
            anyhow::ensure!(
                train.image_size == Some((28, 28)),
                "{} was trained on {}, which is not made of 28 × 28 images: query it with --query-index",
                run.path().display(),
                train.name
            );
            images::load_picture(path, 28)?
        }
        Query::Scored(i) => {
            anyhow::ensure!(
                i < scored.len(),
                "--query-index {i} is out of range: {} holds {} samples",
                scored.name,
                scored.len()
            );
            scored.row(i).to_vec()
        }
    };
    let device = backend::device()?;
    let codes = encode_all(&model, &train, &device);
    let (q, _) = model
        .encode(Tensor::<Backend, 2>::from_data(TensorData::new(query.clone(), [1, train.dim]), &device));
    let q: Vec<f32> = q.into_data().to_vec().expect("f32 code");
    let latent = config.model.latent;
    let mut ranked: Vec<(f32, usize)> =
        codes.chunks(latent).enumerate().map(|(i, z)| (squared_distance(z, &q), i)).collect();
    let k = k.min(ranked.len());
    ranked.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    ranked.truncate(k);
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let label = |i: usize| {
        let class = train.labels.as_ref()?[i];
        Some(train.class_names.get(class as usize).cloned().unwrap_or_else(|| class.to_string()))
    };
    let hits: Vec<Hit> =
        ranked.iter().map(|&(d2, index)| Hit { index, distance: d2.sqrt(), label: label(index) }).collect();
    let hit_features = hits.iter().flat_map(|h| train.row(h.index).iter().copied()).collect();
    Ok(Results { searched: train.name, query, hits, image_size: train.image_size, hit_features })
}

impl Results {
    /// The query above its neighbours, each captioned with its distance (and class): images only.
    pub fn draw(&self, path: &Path) -> anyhow::Result<()> {
        let size = self.image_size.ok_or_else(|| {
            anyhow::anyhow!("{} is not made of images: no picture of the results to draw", self.searched)
        })?;
        let captions = self
            .hits
            .iter()
            .map(|h| match &h.label {
                Some(label) => format!("d={:.2} {label}", h.distance),
                None => format!("d={:.2}", h.distance),
            })
            .collect();
        let rows = [
            ImageRow { label: "query".into(), images: self.query.clone(), captions: Vec::new() },
            ImageRow { label: "nearest".into(), images: self.hit_features.clone(), captions },
        ];
        figures::image_rows(&rows, size, &format!("nearest {} in {}", self.hits.len(), self.searched), path)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let hits: Vec<serde_json::Value> = self
            .hits
            .iter()
            .map(|h| serde_json::json!({"index": h.index, "distance": h.distance, "label": h.label}))
            .collect();
        serde_json::json!({ "searched": self.searched, "hits": hits })
    }
}
