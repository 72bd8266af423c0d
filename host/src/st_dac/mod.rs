//! ST-DAC: Deep Adaptive Clustering (DAC*, Chang et al. 2017) with spatial transformers, after the
//! ST-DAC dissertation.
//!
//! - [`model`]: the network and DAC's constraint layer; its feature networks, [`paper`] (the
//!   dissertation's) and [`edge`] (sized for a board).
//! - [`augment`]: random affine augmentation through the transformer's sampler.
//! - [`loss`]: DAC*'s pair selection and loss.
//! - [`stn`]: the spatial transformer.
//! - [`train`]: DAC* training (its steps in the one training loop), prediction, loading a trained run.
//! - [`eval`]: scores and figures of a trained run.

pub mod augment;
pub mod edge;
pub mod eval;
pub mod loss;
pub mod model;
pub mod paper;
pub mod stn;
pub mod train;

pub use model::{Arch, StDac, StDacConfig, StDacOutput, StnPosition};
