//! stdac's edge runtime: the board's side of the serial protocol.
//!
//! - [`link`]: frames in and out over any embedded-io byte stream (a UART, a Linux tty, a pipe).
//! - [`server`]: answers the host's requests and streams the assignments of the board's own frames.
//! - [`serial`]: opens a Linux serial port (or pseudo-terminal) as an embedded-io stream.
//! - [`centroids`]: nearest-centroid assignment with distance and margin.
//! - [`preprocess`]: a captured picture of any size (grey, RGB or YUYV) → the model's 28×28 grey input.
//! - [`bundle`]: the `NAME.stdac` model file flashed onto a board: manifest, ONNX graph, checksum.
//! - [`engine`]: a bundle's graph run by tract, each frame assigned to its nearest centroid.
//! - [`store`]: the board's model store (`--store DIR`): the active model, the previous one for rollback,
//!   and a resumable flash in progress, each switch crash-safe.
//! - [`warp`]: the spatial transformer's corrected image, redone from θ outside the graph.
//! - [`source`]: the board's own frames: the [`source::FrameSource`] trait and a folder of pictures
//!   played like a camera (`--frames DIR`).
//! - `camera`: a V4L2 camera (`--camera /dev/videoN`), only with the cargo feature `camera`.
//! - [`capture`]: the capture thread, filling a bounded queue that drops the oldest frame when full.
//! - [`queue`]: that bounded drop-oldest queue (also the server's outbox).
//! - [`status`]: the status LED through embedded-hal (`--led PATH`: a sysfs LED).
//! - [`cli`]: the `stdac-device` command line, shared by the firmware binary and `stdac device`.

pub mod bundle;
#[cfg(feature = "camera")]
pub mod camera;
pub mod capture;
pub mod centroids;
pub mod cli;
pub mod engine;
pub mod link;
pub mod preprocess;
pub mod queue;
pub mod serial;
pub mod server;
pub mod source;
pub mod status;
pub mod store;
pub mod warp;

#[cfg(test)]
#[path = "../tests/support/manifest.rs"]
mod manifest_support;
#[cfg(test)]
#[path = "../tests/support/onnx.rs"]
mod onnx_support;
// The support modules name this crate as the integration tests do.
#[cfg(test)]
extern crate self as stdac_device;

pub use link::{Link, LinkError};
pub use server::Server;
