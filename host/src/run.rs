//! A training run's folder, shared by every model family:
//!
//! ```text
//! runs/NAME/
//!   config.json        the full training configuration (model, schedule, data, seed)
//!   metrics.jsonl      one JSON object per finished epoch
//!   LATEST             name of the newest complete checkpoint folder
//!   checkpoint-0003/   model.mpk, optimizer.mpk, config.json, state.json (written whole before LATEST
//!                      points at it)
//! ```
//!
//! A checkpoint is written into a fresh folder and only then named in `LATEST` (itself replaced by an
//! atomic rename), so a run killed at any moment resumes from its last complete epoch.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How models and optimizer states are written: named MessagePack, full precision.
type Recorded = NamedMpkFileRecorder<FullPrecisionSettings>;

pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Opens `path` for a run with this `config` (JSON): creates it, or reopens it when it holds a run
    /// of the same configuration (to resume). A folder holding another run is an error.
    pub fn open(path: &Path, config: &str) -> anyhow::Result<RunDir> {
        let run = RunDir { path: path.to_path_buf() };
        let config_path = run.config_path();
        if config_path.is_file() {
            let existing = fs::read_to_string(&config_path)
                .with_context(|| format!("cannot read {}", config_path.display()))?;
            let same = serde_json::from_str::<serde_json::Value>(&existing).ok()
                == serde_json::from_str::<serde_json::Value>(config).ok();
            if !same {
                bail!(
                    "{} holds a run with another configuration (see its config.json): choose another --out, \
                     or delete the folder to start over",
                    path.display()
                );
            }
        } else {
            fs::create_dir_all(path)
                .with_context(|| format!("cannot create run folder {}", path.display()))?;
            write_atomic(&config_path, config.as_bytes())?;
        }
        Ok(run)
    }

    /// An existing run, for evaluation.
    pub fn existing(path: &Path) -> anyhow::Result<RunDir> {
        let run = RunDir { path: path.to_path_buf() };
        if !run.config_path().is_file() {
            bail!(
                "{} is not a training run (no config.json): train one with `stdac train --out DIR`",
                path.display()
            );
        }
        Ok(run)
    }

    /// Which model family trained the run: its configuration's `family`, or `st-dac` for configurations
    /// without one (ST-DAC's came first).
    pub fn family(&self) -> anyhow::Result<String> {
        let path = self.config_path();
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        Ok(config["family"].as_str().unwrap_or("st-dac").to_string())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }

    /// The newest complete checkpoint, if any.
    pub fn latest_checkpoint(&self) -> anyhow::Result<Option<PathBuf>> {
        let latest = self.path.join("LATEST");
        if !latest.is_file() {
            return Ok(None);
        }
        let name =
            fs::read_to_string(&latest).with_context(|| format!("cannot read {}", latest.display()))?;
        let dir = self.path.join(name.trim());
        if !dir.is_dir() {
            bail!("{} names {}, which is missing", latest.display(), dir.display());
        }
        Ok(Some(dir))
    }

    /// The newest complete checkpoint; an error saying to train first when there is none.
    pub fn finished_checkpoint(&self) -> anyhow::Result<PathBuf> {
        self.latest_checkpoint()?
            .with_context(|| format!("{} has no finished epoch yet: train it first", self.path.display()))
    }

    /// The run's configuration as `C`; `what` names the kind expected in the error, e.g. "ST-DAC".
    pub fn load_config<C: burn::config::Config>(&self, what: &str) -> anyhow::Result<C> {
        C::load(self.config_path()).map_err(|e| {
            anyhow::anyhow!("{}: not a valid {what} configuration: {e}", self.config_path().display())
        })
    }

    /// Writes a checkpoint for `epoch` with `save` (which fills the folder it is given), then makes it
    /// the latest and removes the older ones.
    pub fn checkpoint(
        &self,
        epoch: usize,
        save: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let name = format!("checkpoint-{epoch:04}");
        let dir = self.path.join(&name);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        save(&dir)?;
        sync_dir(&dir)?;
        write_atomic(&self.path.join("LATEST"), name.as_bytes())?;
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            let other = entry.file_name().to_string_lossy().into_owned();
            if other.starts_with("checkpoint-") && other != name {
                fs::remove_dir_all(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// Appends one epoch's record to `metrics.jsonl`, dropping records of epochs at or after it first (a
    /// resumed run redoes the epoch that was in progress).
    pub fn record_epoch(&self, record: &serde_json::Value) -> anyhow::Result<()> {
        let epoch = record["epoch"].as_u64();
        let mut records: Vec<serde_json::Value> = self.epochs()?;
        records.retain(|r| r["epoch"].as_u64() < epoch);
        records.push(record.clone());
        let text: String = records.iter().map(|r| format!("{r}\n")).collect();
        write_atomic(&self.metrics_path(), text.as_bytes())
    }

    /// Every epoch record so far.
    pub fn epochs(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let path = self.metrics_path();
        if !path.is_file() {
            return Ok(Vec::new());
        }
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        text.lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .with_context(|| format!("{}: line {} is not JSON", path.display(), i + 1))
            })
            .collect()
    }
}

/// Fills a checkpoint folder (for [`RunDir::checkpoint`]): `model.mpk`, `optimizer.mpk`, the run's
/// `config.json` (so a copied checkpoint folder stays usable) and `state.json` (where training resumes).
pub fn save_training<B, M, O>(
    dir: &Path,
    model: &M,
    optimizer: &O,
    config: &impl Serialize,
    state: &impl Serialize,
) -> anyhow::Result<()>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let recorder = Recorded::new();
    model.clone().save_file(dir.join("model"), &recorder)?;
    recorder.record(optimizer.to_record(), dir.join("optimizer"))?;
    write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(config)?.as_bytes())?;
    write_atomic(&dir.join("state.json"), serde_json::to_string(state)?.as_bytes())
}

/// Reads back what [`save_training`] wrote into `dir`, into a freshly initialised `model` and `optimizer`.
pub fn load_training<B, M, O, S>(
    dir: &Path,
    model: M,
    optimizer: O,
    device: &B::Device,
) -> anyhow::Result<(M, O, S)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    S: DeserializeOwned,
{
    let model = load_model(dir, model, device)?;
    let recorder = Recorded::new();
    let record = recorder
        .load(dir.join("optimizer"), device)
        .with_context(|| format!("cannot load {}", dir.join("optimizer.mpk").display()))?;
    Ok((model, optimizer.load_record(record), load_state(dir)?))
}

/// The `state.json` of a checkpoint folder.
pub fn load_state<S: DeserializeOwned>(dir: &Path) -> anyhow::Result<S> {
    let path = dir.join("state.json");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid state", path.display()))
}

/// The weights of a checkpoint folder, loaded into `model` (initialised with the run's configuration).
pub fn load_model<B: Backend, M: Module<B>>(dir: &Path, model: M, device: &B::Device) -> anyhow::Result<M> {
    model
        .load_file(dir.join("model"), &Recorded::new(), device)
        .with_context(|| format!("cannot load {}", dir.join("model.mpk").display()))
}

/// The progress bar of one training epoch over `batches` batches.
pub fn epoch_progress(epoch: usize, epochs: usize, batches: usize) -> ProgressBar {
    let progress = ProgressBar::new(batches as u64).with_prefix(format!("epoch {}/{epochs}", epoch + 1));
    progress.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}").expect("valid template"),
    );
    progress
}

/// The seed of one epoch's randomness (order, augmentation, noise, dropout): it depends only on the run's
/// seed and the epoch, so a resumed run draws what an uninterrupted one would have.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Replaces `path` with `bytes` all at once: write a sibling, flush it to disk, rename over.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Flushes every file of `dir` and the folder itself to disk.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            fs::File::open(&path)?.sync_all()?;
        }
    }
    fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_run_folder_refuses_another_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        RunDir::open(&path, r#"{"epochs": 3}"#).unwrap();
        RunDir::open(&path, r#"{ "epochs": 3 }"#).expect("the same configuration reopens (to resume)");
        let error = RunDir::open(&path, r#"{"epochs": 4}"#).err().unwrap().to_string();
        assert!(error.contains("holds a run with another configuration"), "{error}");
    }

    #[test]
    fn only_the_latest_complete_checkpoint_is_kept_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path(), "{}").unwrap();
        assert_eq!(run.latest_checkpoint().unwrap(), None);
        for epoch in 1..=3 {
            run.checkpoint(epoch, |d| Ok(fs::write(d.join("model.mpk"), [epoch as u8])?)).unwrap();
        }
        let latest = run.latest_checkpoint().unwrap().unwrap();
        assert!(latest.ends_with("checkpoint-0003"));
        assert_eq!(fs::read(latest.join("model.mpk")).unwrap(), [3]);
        assert!(!dir.path().join("checkpoint-0002").exists());
        // A checkpoint whose writing fails never becomes the latest.
        let failed = run.checkpoint(4, |_| anyhow::bail!("disk full"));
        assert!(failed.is_err());
        assert!(run.latest_checkpoint().unwrap().unwrap().ends_with("checkpoint-0003"));
    }

    #[test]
    fn a_redone_epoch_replaces_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path(), "{}").unwrap();
        run.record_epoch(&json!({"epoch": 1, "acc": 0.5})).unwrap();
        run.record_epoch(&json!({"epoch": 2, "acc": 0.6})).unwrap();
        run.record_epoch(&json!({"epoch": 2, "acc": 0.7})).unwrap();
        let epochs = run.epochs().unwrap();
        assert_eq!(epochs.len(), 2);
        assert_eq!(epochs[1]["acc"], 0.7);
    }
}
