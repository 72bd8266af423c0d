//! stdac, the host side: the command-line tool's library.
//!
//! - [`transport`]: the client of a board over a serial port.
//! - [`local_device`]: the firmware run on this machine behind a pseudo-terminal.
//! - [`selftest`]: end-to-end check of a serial link.

pub mod local_device;
pub mod selftest;
pub mod transport;
