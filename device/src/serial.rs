//! A Linux serial port (a UART's tty, a USB gadget, a pseudo-terminal) as an embedded-io byte stream.

use std::time::Duration;

use anyhow::Context;
use embedded_io::{ErrorType, Read, ReadReady, Write};
use embedded_io_adapters::std::FromStd;
use serialport::SerialPort;

/// How long a read waits for bytes before the server gets to do its periodic work.
pub const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// An open serial port. Besides reading and writing it says whether bytes are waiting
/// ([`ReadReady`]), so a streaming server reads only then instead of blocking for [`READ_TIMEOUT`]
/// between frames.
pub struct SerialStream {
    port: FromStd<Box<dyn SerialPort>>,
}

/// Opens `path` raw at `baud`, exclusively (a second opener fails instead of stealing bytes), leaving
/// the modem lines as they are.
pub fn open(path: &str, baud: u32) -> anyhow::Result<SerialStream> {
    let port = serialport::new(path, baud)
        .timeout(READ_TIMEOUT)
        .exclusive(true)
        .preserve_dtr_on_open()
        .open()
        .with_context(|| format!("cannot open serial port {path}"))?;
    Ok(SerialStream { port: FromStd::new(port) })
}

impl ErrorType for SerialStream {
    type Error = std::io::Error;
}

impl Read for SerialStream {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.port.read(buf)
    }
}

impl Write for SerialStream {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.port.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.port.write_all(buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.port.flush()
    }
}

impl ReadReady for SerialStream {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        let waiting = self.port.inner().bytes_to_read().map_err(std::io::Error::from)?;
        Ok(waiting > 0)
    }
}
