//! A Linux serial port (a UART's tty, a USB gadget, a pseudo-terminal) as an embedded-io byte stream
//! that also says whether bytes are waiting ([`ReadReady`]), so a streaming server reads only then
//! instead of blocking for [`READ_TIMEOUT`] between frames.
//!
//! Opened with `serialport`, which sets the speed with the `termios2` ioctls. Where those do not exist
//! (qemu-user, which CI runs the aarch64 build under, answers them ENOSYS), the tty is opened again with
//! the classic termios calls and read through `poll`, so reads still time out.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use anyhow::Context;
use embedded_io::{ErrorType, ReadReady};
use embedded_io_adapters::std::FromStd;
use serialport::SerialPort;

/// How long a read waits for bytes before the server gets to do its periodic work.
pub const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// A tty std can read and write, that can tell how many bytes wait to be read.
pub trait Port: Read + Write + Send {
    fn bytes_waiting(&self) -> io::Result<u32>;
}

impl Port for Box<dyn SerialPort> {
    fn bytes_waiting(&self) -> io::Result<u32> {
        self.bytes_to_read().map_err(io::Error::from)
    }
}

/// An open serial port.
pub struct SerialStream {
    port: FromStd<Box<dyn Port>>,
}

/// Opens `path` raw at `baud`, exclusively (a second opener fails instead of stealing bytes), leaving
/// the modem lines as they are.
pub fn open(path: &str, baud: u32) -> anyhow::Result<SerialStream> {
    let opened =
        serialport::new(path, baud).timeout(READ_TIMEOUT).exclusive(true).preserve_dtr_on_open().open();
    let port: Box<dyn Port> = match opened {
        Ok(port) => Box::new(port),
        Err(error) if is_unimplemented(&error) => Box::new(
            PlainTty::open(path, baud)
                .with_context(|| format!("cannot open serial port {path} (plain termios)"))?,
        ),
        Err(error) => return Err(error).with_context(|| format!("cannot open serial port {path}")),
    };
    Ok(SerialStream { port: FromStd::new(port) })
}

impl ErrorType for SerialStream {
    type Error = io::Error;
}

impl embedded_io::Read for SerialStream {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        embedded_io::Read::read(&mut self.port, buf)
    }
}

impl embedded_io::Write for SerialStream {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        embedded_io::Write::write(&mut self.port, buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        embedded_io::Write::write_all(&mut self.port, buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        embedded_io::Write::flush(&mut self.port)
    }
}

impl ReadReady for SerialStream {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.port.inner().bytes_waiting()? > 0)
    }
}

fn is_unimplemented(error: &serialport::Error) -> bool {
    matches!(error.kind, serialport::ErrorKind::Io(io::ErrorKind::Unsupported))
        || error.description.contains("not implemented")
}

/// A tty set raw with the classic termios calls, each read waiting at most [`READ_TIMEOUT`].
pub struct PlainTty {
    file: File,
}

impl PlainTty {
    pub fn open(path: &str, baud: u32) -> io::Result<PlainTty> {
        let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(path)?;
        let fd = file.as_raw_fd();
        // SAFETY: `fd` is an open descriptor we own; `termios` is plain data filled in by tcgetattr.
        unsafe {
            if libc::ioctl(fd, libc::TIOCEXCL) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut termios: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut termios) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::cfmakeraw(&mut termios);
            termios.c_cflag |= libc::CLOCAL | libc::CREAD;
            if let Some(speed) = standard_speed(baud) {
                libc::cfsetispeed(&mut termios, speed);
                libc::cfsetospeed(&mut termios, speed);
            }
            if libc::tcsetattr(fd, libc::TCSANOW, &termios) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(PlainTty { file })
    }
}

/// The termios constant of a standard speed; other speeds need termios2 (a pseudo-terminal ignores the
/// speed anyway).
fn standard_speed(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        9_600 => libc::B9600,
        19_200 => libc::B19200,
        38_400 => libc::B38400,
        57_600 => libc::B57600,
        115_200 => libc::B115200,
        230_400 => libc::B230400,
        460_800 => libc::B460800,
        921_600 => libc::B921600,
        _ => return None,
    })
}

impl Port for PlainTty {
    fn bytes_waiting(&self) -> io::Result<u32> {
        let mut waiting: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which outlives the call.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), libc::FIONREAD, &mut waiting) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(waiting.max(0) as u32)
    }
}

impl Read for PlainTty {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut poll = libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, READ_TIMEOUT.as_millis() as libc::c_int) };
        match ready {
            0 => Err(io::ErrorKind::TimedOut.into()),
            n if n < 0 => Err(io::Error::last_os_error()),
            _ => self.file.read(buf),
        }
    }
}

impl Write for PlainTty {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialport::{SerialPort, TTYPort};

    /// The fallback on a real pseudo-terminal: raw bytes both ways, and a read with nothing to read
    /// times out instead of blocking.
    #[test]
    fn a_plain_tty_is_raw_and_its_reads_time_out() {
        let (mut master, slave) = TTYPort::pair().unwrap();
        let mut tty = PlainTty::open(&slave.name().unwrap(), 115_200).unwrap();
        let mut buf = [0u8; 16];
        let e = tty.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(tty.bytes_waiting().unwrap(), 0);

        // Bytes a cooked tty would change: CR, a ^C, a ^D, a zero.
        let bytes = [b'\r', 0x03, 0x04, 0, b'\n', 0xFF];
        master.write_all(&bytes).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(tty.bytes_waiting().unwrap(), bytes.len() as u32);
        let mut got = Vec::new();
        while got.len() < bytes.len() {
            let n = tty.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, bytes);
        tty.write_all(&bytes).unwrap();
        master.set_timeout(Duration::from_secs(2)).unwrap();
        let mut back = [0u8; 6];
        master.read_exact(&mut back).unwrap();
        assert_eq!(back, bytes);
        drop(slave);
    }
}
