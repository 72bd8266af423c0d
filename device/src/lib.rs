//! stdac's edge runtime: the board's side of the serial protocol.
//!
//! - [`link`]: frames in and out over any embedded-io byte stream (a UART, a Linux tty, a pipe).
//! - [`server`]: answers the host's requests.
//! - [`serial`]: opens a Linux serial port (or pseudo-terminal) as an embedded-io stream.
//! - [`centroids`]: nearest-centroid assignment with distance and margin.
//! - [`preprocess`]: a captured picture of any size (grey, RGB or YUYV) → the model's 28×28 grey input.
//! - [`bundle`]: the `NAME.stdac` model file flashed onto a board: manifest, ONNX graph, checksum.
//! - [`engine`]: a bundle's graph run by tract, each frame assigned to its nearest centroid.
//! - [`store`]: the board's model store (`--store DIR`): the active model, the previous one for rollback,
//!   and a resumable flash in progress, each switch crash-safe.
//! - [`warp`]: the spatial transformer's corrected image, redone from θ outside the graph.
//! - [`cli`]: the `stdac-device` command line, shared by the firmware binary and `stdac device`.

pub mod bundle;
pub mod centroids;
pub mod cli;
pub mod engine;
pub mod link;
pub mod preprocess;
pub mod serial;
pub mod server;
pub mod store;
pub mod warp;

#[cfg(test)]
#[path = "../tests/support/onnx.rs"]
mod onnx_support;

pub use link::{Link, LinkError};
pub use server::Server;
