//! Datasets: what the models cluster, loaded into one shape, [`Dataset`].
//!
//! - MNIST and Fashion-MNIST from their IDX files ([`idx`]), gzip or raw, in `--data DIR`, `STDAC_DATA` or
//!   the project's `../shared/datasets`;
//! - iris and wine, small tables bundled in the binary ([`tabular`]);
//! - the synthetic control chart series, generated from their published equations ([`synthetic_control`]);
//! - a folder of pictures, e.g. camera captures ([`images`]).
//!
//! Nothing is downloaded: a missing file is an error that names it and says how to point stdac at it.

pub mod idx;
pub mod images;
pub mod synthetic_control;
pub mod tabular;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};

/// Samples as rows of features, with labels when known.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// What it is, e.g. `mnist/test` (for reports and model cards).
    pub name: String,
    /// Row-major, `len()` × `dim`. Images hold pixels in [0, 1]; tables are z-scored per column.
    pub features: Vec<f32>,
    pub dim: usize,
    /// `(height, width)` when each row is a grey image.
    pub image_size: Option<(usize, usize)>,
    /// One class per row, as an index into `class_names`; `None` for unlabelled data.
    pub labels: Option<Vec<i64>>,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.features.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// The given rows, one after another (a batch).
    pub fn gather(&self, rows: &[usize]) -> Vec<f32> {
        let mut values = Vec::with_capacity(rows.len() * self.dim);
        for &i in rows {
            values.extend_from_slice(self.row(i));
        }
        values
    }

    /// Keeps the first `n` samples (in the dataset's own order).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.features.truncate(n * self.dim);
            if let Some(labels) = &mut self.labels {
                labels.truncate(n);
            }
        }
    }

    /// Appends `other`'s samples (same features, same classes), e.g. a test split after its training
    /// split; the name becomes `a+b`.
    pub fn append(&mut self, other: Dataset) {
        assert_eq!(
            (self.dim, &self.class_names),
            (other.dim, &other.class_names),
            "appending unlike datasets"
        );
        self.name = format!("{}+{}", self.name, other.name);
        self.features.extend(other.features);
        self.labels = match (self.labels.take(), other.labels) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
    }

    /// Rescales every column to mean 0 and standard deviation 1 (population); constant columns become 0.
    pub fn zscore(&mut self) {
        let (n, dim) = (self.len(), self.dim);
        for j in 0..dim {
            let column = || (0..n).map(|i| self.features[i * dim + j] as f64);
            let mean = column().sum::<f64>() / n as f64;
            let var = column().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
            let std = if var > 0.0 { var.sqrt() } else { 1.0 };
            for i in 0..n {
                let x = &mut self.features[i * dim + j];
                *x = ((*x as f64 - mean) / std) as f32;
            }
        }
    }
}

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    Train,
    Test,
    /// Train and test together, train first (the transductive protocol of the DAC papers).
    All,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::All => "all",
        })
    }
}

/// Which samples a model is trained on and which it is scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
pub enum Protocol {
    /// Train on the training split, score on the test split.
    HeldOut,
    /// Train on train + test together and score on all of it, as the DAC and ST-DAC authors did.
    Transductive,
}

/// The samples trained on and the samples scored, under `protocol`. A dataset with a train/test split
/// trains on its first `limit` training samples and scores on its first `limit` test samples when held
/// out, and trains and scores on both when transductive; a dataset without one (tables, folders) trains
/// and scores on all of it (its first `limit`), whatever the protocol.
pub fn training_and_scored(
    source: &Source,
    protocol: Protocol,
    limit: Option<usize>,
    data: Option<&Path>,
) -> anyhow::Result<(Dataset, Dataset)> {
    if source.default_split() == Split::All {
        let all = load(source, Some(Split::All), limit, data)?;
        return Ok((all.clone(), all));
    }
    let mut train = load(source, Some(Split::Train), limit, data)?;
    let test = load(source, Some(Split::Test), limit, data)?;
    Ok(match protocol {
        Protocol::HeldOut => (train, test),
        Protocol::Transductive => {
            train.append(test);
            (train.clone(), train)
        }
    })
}

/// A dataset by name, or a folder of pictures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Mnist,
    FashionMnist,
    Iris,
    Wine,
    SyntheticControl,
    Folder(PathBuf),
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "mnist" => Source::Mnist,
            "fashion-mnist" => Source::FashionMnist,
            "iris" => Source::Iris,
            "wine" => Source::Wine,
            "synthetic-control" => Source::SyntheticControl,
            path if Path::new(path).is_dir() => Source::Folder(PathBuf::from(path)),
            other => {
                return Err(format!(
                "unknown dataset {other:?}: use mnist, fashion-mnist, iris, wine, synthetic-control or the \
                     path of a folder of images"
            ))
            }
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Mnist => f.write_str("mnist"),
            Source::FashionMnist => f.write_str("fashion-mnist"),
            Source::Iris => f.write_str("iris"),
            Source::Wine => f.write_str("wine"),
            Source::SyntheticControl => f.write_str("synthetic-control"),
            Source::Folder(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Source {
    /// The split used when none is asked for: the test split where there is one, else everything.
    pub fn default_split(&self) -> Split {
        match self {
            Source::Mnist | Source::FashionMnist => Split::Test,
            _ => Split::All,
        }
    }
}

/// Where the IDX datasets live: `--data`/`STDAC_DATA` if given, else the project's `../shared/datasets`
/// (next to the working directory, or next to the source tree this binary was built from).
pub fn data_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        if !dir.is_dir() {
            bail!("data folder {} does not exist (from --data or STDAC_DATA)", dir.display());
        }
        return Ok(dir.to_path_buf());
    }
    let candidates = [
        PathBuf::from("../shared/datasets"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"),
    ];
    candidates.iter().find(|dir| dir.is_dir()).cloned().with_context(|| {
        format!(
            "no data folder: tried {} and {}; pass --data DIR or set STDAC_DATA to the folder holding mnist/ \
             and fashion-mnist/",
            candidates[0].display(),
            candidates[1].display()
        )
    })
}

/// Loads `source`'s `split` (its default when `None`), keeping the first `limit` samples if given.
pub fn load(
    source: &Source,
    split: Option<Split>,
    limit: Option<usize>,
    data: Option<&Path>,
) -> anyhow::Result<Dataset> {
    let split = split.unwrap_or(source.default_split());
    let single = |name: &str| -> anyhow::Result<()> {
        if split != Split::All {
            bail!("{name} has no train/test split: use --split all");
        }
        Ok(())
    };
    let mut dataset = match source {
        Source::Mnist => idx::load(&data_dir(data)?.join("mnist"), "mnist", split, idx::DIGITS)?,
        Source::FashionMnist => {
            idx::load(&data_dir(data)?.join("fashion-mnist"), "fashion-mnist", split, idx::FASHION)?
        }
        Source::Iris => {
            single("iris")?;
            tabular::iris()?
        }
        Source::Wine => {
            single("wine")?;
            tabular::wine()?
        }
        Source::SyntheticControl => {
            single("synthetic-control")?;
            synthetic_control::generate(synthetic_control::DEFAULT_SEED)
        }
        Source::Folder(dir) => {
            single(&dir.display().to_string())?;
            images::load_folder(dir, 28)?
        }
    };
    if let Some(n) = limit {
        dataset.truncate(n);
        dataset.name = format!("{}[..{n}]", dataset.name);
    }
    Ok(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_centres_and_scales_each_column() {
        let mut d = Dataset {
            name: "t".into(),
            features: vec![1.0, 10.0, 5.0, 2.0, 10.0, 6.0, 3.0, 10.0, 7.0],
            dim: 3,
            image_size: None,
            labels: None,
            class_names: vec![],
        };
        d.zscore();
        let col = |j: usize| [d.features[j], d.features[3 + j], d.features[6 + j]];
        let s = (2.0f32 / 3.0).sqrt();
        for j in [0, 2] {
            let c = col(j);
            assert!(
                (c[0] + 1.0 / s).abs() < 1e-6 && c[1].abs() < 1e-6 && (c[2] - 1.0 / s).abs() < 1e-6,
                "{c:?}"
            );
        }
        assert_eq!(col(1), [0.0; 3], "a constant column becomes zero, not NaN");
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let error = "mnits".parse::<Source>().unwrap_err();
        assert!(error.contains("mnist, fashion-mnist, iris, wine, synthetic-control"), "{error}");
    }
}
