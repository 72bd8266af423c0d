//! The device's end of the serial line, over any embedded-io byte stream: a UART driver, a Linux tty
//! (through `embedded_io_adapters::std::FromStd`) or an in-memory pipe in tests.

use embedded_io::{Error as _, ErrorKind, Read, ReadReady, Write};
use stdac_protocol::{Decoder, DeviceMsg, FrameError, FrameStats, Request, TooLarge};

/// Why the link stopped.
#[derive(Debug, thiserror::Error)]
pub enum LinkError<E: core::fmt::Debug> {
    #[error("serial I/O error: {0:?}")]
    Io(E),
    #[error("the serial line was closed (end of stream)")]
    Closed,
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

/// What one [`Link::poll`] produced.
pub type Incoming = Result<Request, FrameError>;

pub struct Link<T> {
    io: T,
    encoder: stdac_protocol::FrameEncoder,
    decoder: Decoder<Request>,
    /// Bytes read but not yet fed to the decoder: a read may carry more than one frame.
    rx: [u8; 256],
    rx_start: usize,
    rx_end: usize,
}

impl<T: Read + Write> Link<T> {
    pub fn new(io: T) -> Self {
        Link {
            io,
            encoder: stdac_protocol::FrameEncoder::new(),
            decoder: Decoder::new(),
            rx: [0; 256],
            rx_start: 0,
            rx_end: 0,
        }
    }

    /// The next request or framing error. Reads at most once, so it returns `Ok(None)` when the
    /// transport's read times out or brings only part of a frame: the caller gets to do periodic work.
    pub fn poll(&mut self) -> Result<Option<Incoming>, LinkError<T::Error>> {
        if self.rx_start == self.rx_end {
            match self.io.read(&mut self.rx) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(n) => (self.rx_start, self.rx_end) = (0, n),
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    return Ok(None)
                }
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
        let pending = &self.rx[self.rx_start..self.rx_end];
        match self.decoder.feed(pending) {
            Some((event, rest)) => {
                self.rx_start = self.rx_end - rest.len();
                Ok(Some(event))
            }
            None => {
                self.rx_start = self.rx_end;
                Ok(None)
            }
        }
    }

    /// Sends one message, whole.
    pub fn send(&mut self, msg: &DeviceMsg) -> Result<(), LinkError<T::Error>> {
        let wire = self.encoder.encode(msg)?;
        self.io.write_all(wire).map_err(LinkError::Io)?;
        self.io.flush().map_err(LinkError::Io)
    }

    /// What the decoder has received so far, dropped frames included.
    pub fn stats(&self) -> FrameStats {
        self.decoder.stats()
    }

    pub fn io_mut(&mut self) -> &mut T {
        &mut self.io
    }
}

impl<T: Read + Write + ReadReady> Link<T> {
    /// Whether [`Link::poll`] would return without waiting: bytes already read but not yet decoded, or
    /// bytes waiting in the transport. A streaming server polls only then, so the line's read timeout
    /// never stalls the stream.
    pub fn input_ready(&mut self) -> Result<bool, LinkError<T::Error>> {
        if self.rx_start < self.rx_end {
            return Ok(true);
        }
        self.io.read_ready().map_err(LinkError::Io)
    }
}
