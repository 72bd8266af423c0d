//! The autoencoder family: plain, sparse, denoising and variational autoencoders, which cluster by
//! k-means on their codes, and DCN (Yang et al. 2017), which trains the autoencoder and k-means jointly.
//!
//! - [`model`]: dense and convolutional autoencoders, optionally variational.
//! - [`loss`]: reconstruction error, sparsity, KL and k-means terms; the denoising corruption.
//! - [`train`]: training (the steps in the one training loop, DCN's joint phase included), codes,
//!   centroids, loading a trained run.
//! - [`eval`]: scores and figures of a trained run.
//! - [`search`]: nearest training samples in the latent space.

pub mod eval;
pub mod loss;
pub mod model;
pub mod search;
pub mod train;

pub use model::{Architecture, Autoencoder, AutoencoderConfig};
pub use train::{AeTrainConfig, Kind};
