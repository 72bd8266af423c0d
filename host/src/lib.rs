//! stdac, the host side: the command-line tool's library.
//!
//! - [`backend`]: the tensor backend (CPU, or CUDA with `--features cuda`), chosen in one place.
//! - [`st_dac`]: the ST-DAC model and its training.
//! - [`ops`]: the trainer's own CPU kernels (convolution, BatchNorm, the sampler, Adam) with their
//!   backward passes, behind a backend extension trait.
//! - [`autoencoder`]: the autoencoders and DCN, their training and retrieval.
//! - [`export`]: trained models as ONNX graphs.
//! - [`data`]: datasets (MNIST, Fashion-MNIST, iris, wine, synthetic control, image folders).
//! - [`figures`]: PNG figures (confusion matrix, curves, sample grids, latent scatter).
//! - [`kmeans`]: k-means++ and Lloyd, deterministic and multi-threaded.
//! - [`metrics`]: ACC, NMI, ARI, homogeneity, completeness, V-measure.
//! - [`run`]: a training run's folder: configuration, metrics, checkpoints; shared by every family.
//! - [`training`]: the one training loop (seeding, batches, records, checkpoints, resume) that every
//!   family plugs its steps into.
//! - [`pca`]: principal component analysis.
//! - [`transport`]: the client of a board over a serial port.
//! - [`local_device`]: the firmware run on this machine behind a pseudo-terminal.
//! - [`selftest`]: end-to-end check of a serial link.
//! - [`flash`]: a bundle written onto a board (resumable, verified), and rollback.
//! - [`stream`]: frames to a board, assignments back; running totals and JSON lines.
//! - [`hil`]: hardware-in-the-loop test: the board's assignments checked against the host's engine.
//! - [`demo`]: the main job: a local board flashed with the default model and streamed to.
//! - [`progress`]: progress bars and status lines on a terminal.
//! - [`relay`]: a serial line between two pseudo-terminals, paced to a baud rate or damaged on purpose.

/// The bundle the product ships as its default model (relative to the repository root).
pub const DEFAULT_BUNDLE: &str = "models/mnist-st-dac/mnist-st-dac.stdac";

/// Where `path` is, the default bundle found from the source tree when it is not below the current
/// folder (a binary run from elsewhere in the checkout).
pub fn locate_bundle(path: &std::path::Path) -> std::path::PathBuf {
    if path == std::path::Path::new(DEFAULT_BUNDLE) && !path.exists() {
        return std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DEFAULT_BUNDLE);
    }
    path.to_path_buf()
}

pub mod autoencoder;
pub mod backend;
pub mod data;
pub mod demo;
pub mod export;
pub mod figures;
pub mod flash;
pub mod hil;
pub mod kmeans;
pub mod local_device;
pub mod metrics;
pub mod ops;
pub mod pca;
pub mod progress;
pub mod relay;
pub mod run;
pub mod selftest;
pub mod st_dac;
pub mod stream;
pub mod training;
pub mod transport;
