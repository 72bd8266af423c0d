//! stdac, the host side: the command-line tool's library.
//!
//! - [`data`]: datasets (MNIST, Fashion-MNIST, iris, wine, synthetic control, image folders).
//! - [`figures`]: PNG figures (confusion matrix).
//! - [`kmeans`]: k-means++ and Lloyd, deterministic and multi-threaded.
//! - [`metrics`]: ACC, NMI, ARI, homogeneity, completeness, V-measure.
//! - [`pca`]: principal component analysis.
//! - [`transport`]: the client of a board over a serial port.
//! - [`local_device`]: the firmware run on this machine behind a pseudo-terminal.
//! - [`selftest`]: end-to-end check of a serial link.

pub mod data;
pub mod figures;
pub mod kmeans;
pub mod local_device;
pub mod metrics;
pub mod pca;
pub mod selftest;
pub mod transport;
