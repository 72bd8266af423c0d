//! stdac, the host side: the command-line tool's library.
//!
//! - [`backend`]: the tensor backend (CPU, or CUDA with `--features cuda`), chosen in one place.
//! - [`st_dac`]: the ST-DAC model and its training.
//! - [`autoencoder`]: the autoencoders and DCN, their training and retrieval.
//! - [`export`]: trained models as ONNX graphs.
//! - [`data`]: datasets (MNIST, Fashion-MNIST, iris, wine, synthetic control, image folders).
//! - [`figures`]: PNG figures (confusion matrix, curves, sample grids, latent scatter).
//! - [`kmeans`]: k-means++ and Lloyd, deterministic and multi-threaded.
//! - [`metrics`]: ACC, NMI, ARI, homogeneity, completeness, V-measure.
//! - [`run`]: a training run's folder: configuration, metrics, checkpoints; shared by every family.
//! - [`pca`]: principal component analysis.
//! - [`transport`]: the client of a board over a serial port.
//! - [`local_device`]: the firmware run on this machine behind a pseudo-terminal.
//! - [`selftest`]: end-to-end check of a serial link.

pub mod autoencoder;
pub mod backend;
pub mod data;
pub mod export;
pub mod figures;
pub mod kmeans;
pub mod local_device;
pub mod metrics;
pub mod pca;
pub mod run;
pub mod selftest;
pub mod st_dac;
pub mod transport;
