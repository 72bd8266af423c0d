//! stdac's edge runtime: the board's side of the serial protocol.
//!
//! - [`link`]: frames in and out over any embedded-io byte stream (a UART, a Linux tty, a pipe).
//! - [`server`]: answers the host's requests.
//! - [`serial`]: opens a Linux serial port (or pseudo-terminal) as an embedded-io stream.
//! - [`cli`]: the `stdac-device` command line, shared by the firmware binary and `stdac device`.

pub mod cli;
pub mod link;
pub mod serial;
pub mod server;

pub use link::{Link, LinkError};
pub use server::Server;
