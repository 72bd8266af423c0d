//! A Linux serial port (a UART's tty, a USB gadget, a pseudo-terminal) as an embedded-io byte stream.

use std::time::Duration;

use anyhow::Context;
use embedded_io_adapters::std::FromStd;
use serialport::SerialPort;

/// How long a read waits for bytes before the server gets to do its periodic work.
pub const READ_TIMEOUT: Duration = Duration::from_millis(50);

pub type SerialStream = FromStd<Box<dyn SerialPort>>;

/// Opens `path` raw at `baud`, exclusively (a second opener fails instead of stealing bytes), leaving
/// the modem lines as they are.
pub fn open(path: &str, baud: u32) -> anyhow::Result<SerialStream> {
    let port = serialport::new(path, baud)
        .timeout(READ_TIMEOUT)
        .exclusive(true)
        .preserve_dtr_on_open()
        .open()
        .with_context(|| format!("cannot open serial port {path}"))?;
    Ok(FromStd::new(port))
}
