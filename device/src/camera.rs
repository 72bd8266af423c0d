//! A V4L2 camera (`--camera /dev/videoN`), captured with the kernel's own ioctls through `libc`: the
//! few calls a board needs (query, set the format, memory-mapped streaming), without a system
//! library. Only built with the cargo feature `camera`.
//!
//! The structures below mirror `<linux/videodev2.h>` field for field (`#[repr(C)]`, so the compiler
//! lays them out as the C compiler does on every architecture); the ioctl numbers are computed from
//! their sizes with the asm-generic encoding used by x86, ARM and RISC-V.

use std::ffi::c_void;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::preprocess::PixelFormat;
use crate::source::{Frame, FrameSource, SourceError};

/// Buffers the driver fills in turn: one being filled, one being read, spares for jitter.
const BUFFERS: u32 = 4;
/// How long a frame may take before the read fails (a camera unplugged or stalled).
const FRAME_TIMEOUT_MS: i32 = 2000;

const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const MEMORY_MMAP: u32 = 1;
const FIELD_NONE: u32 = 1;
const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
const CAP_STREAMING: u32 = 0x0400_0000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;

const fn fourcc(code: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*code)
}
const PIX_FMT_YUYV: u32 = fourcc(b"YUYV");
const PIX_FMT_GREY: u32 = fourcc(b"GREY");

#[repr(C)]
#[derive(Default)]
struct Capability {
    driver: [u8; 16],
    card: [u8; 32],
    bus_info: [u8; 32],
    version: u32,
    capabilities: u32,
    device_caps: u32,
    reserved: [u32; 3],
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PixFormat {
    width: u32,
    height: u32,
    pixelformat: u32,
    field: u32,
    bytesperline: u32,
    sizeimage: u32,
    colorspace: u32,
    private: u32,
    flags: u32,
    ycbcr_enc: u32,
    quantization: u32,
    xfer_func: u32,
}

/// `struct v4l2_format`: the type, then a 200-byte union whose largest members hold pointers (hence
/// the pointer alignment); only its `pix` member is used here.
#[repr(C)]
union FormatUnion {
    pix: PixFormat,
    raw: [u8; 200],
    _align: [*mut c_void; 0],
}

#[repr(C)]
struct Format {
    kind: u32,
    fmt: FormatUnion,
}

#[repr(C)]
#[derive(Default)]
struct RequestBuffers {
    count: u32,
    kind: u32,
    memory: u32,
    capabilities: u32,
    flags: u8,
    reserved: [u8; 3],
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Timecode {
    kind: u32,
    flags: u32,
    frames: u8,
    seconds: u8,
    minutes: u8,
    hours: u8,
    userbits: [u8; 4],
}

/// `struct v4l2_buffer`; `m` is a union of an offset (MMAP), a pointer and an fd, so pointer-sized.
#[repr(C)]
struct Buffer {
    index: u32,
    kind: u32,
    bytesused: u32,
    flags: u32,
    field: u32,
    timestamp: libc::timeval,
    timecode: Timecode,
    sequence: u32,
    memory: u32,
    m_offset: usize,
    length: u32,
    reserved2: u32,
    request_fd: u32,
}

impl Buffer {
    fn mmap(index: u32) -> Buffer {
        Buffer {
            index,
            kind: BUF_TYPE_VIDEO_CAPTURE,
            bytesused: 0,
            flags: 0,
            field: 0,
            timestamp: libc::timeval { tv_sec: 0, tv_usec: 0 },
            timecode: Timecode::default(),
            sequence: 0,
            memory: MEMORY_MMAP,
            m_offset: 0,
            length: 0,
            reserved2: 0,
            request_fd: 0,
        }
    }
}

/// `_IOC(dir, 'V', nr, size)` in the asm-generic encoding.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'V' as u64) << 8) | nr
}
const WRITE: u64 = 1;
const READ: u64 = 2;
const VIDIOC_QUERYCAP: u64 = ioc(READ, 0, size_of::<Capability>());
const VIDIOC_S_FMT: u64 = ioc(READ | WRITE, 5, size_of::<Format>());
const VIDIOC_REQBUFS: u64 = ioc(READ | WRITE, 8, size_of::<RequestBuffers>());
const VIDIOC_QUERYBUF: u64 = ioc(READ | WRITE, 9, size_of::<Buffer>());
const VIDIOC_QBUF: u64 = ioc(READ | WRITE, 15, size_of::<Buffer>());
const VIDIOC_DQBUF: u64 = ioc(READ | WRITE, 17, size_of::<Buffer>());
const VIDIOC_STREAMON: u64 = ioc(WRITE, 18, size_of::<i32>());
const VIDIOC_STREAMOFF: u64 = ioc(WRITE, 19, size_of::<i32>());

/// One driver buffer mapped into our memory.
struct Mapped {
    pointer: *mut c_void,
    length: usize,
}

/// A V4L2 capture device streaming YUYV or grey frames through memory-mapped buffers.
pub struct V4l2Camera {
    device: PathBuf,
    fd: OwnedFd,
    buffers: Vec<Mapped>,
    width: usize,
    height: usize,
    format: PixelFormat,
    /// Bytes per row in the driver's buffers (rows may be padded).
    stride: usize,
    streaming: bool,
}

// The mapped buffers are only touched by the thread that owns the camera.
unsafe impl Send for V4l2Camera {}

impl V4l2Camera {
    /// Opens `device`, checks it captures by streaming, asks for `width` × `height` in YUYV (or grey if
    /// YUYV is refused), and maps its buffers. Capture starts with [`FrameSource::start`].
    pub fn open(device: &Path, width: u32, height: u32) -> Result<V4l2Camera, SourceError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(device)
            .map_err(|source| SourceError::Camera { device: device.into(), operation: "open", source })?;
        let mut camera = V4l2Camera {
            device: device.into(),
            fd: file.into(),
            buffers: Vec::new(),
            width: 0,
            height: 0,
            format: PixelFormat::Yuyv,
            stride: 0,
            streaming: false,
        };

        let mut capability = Capability::default();
        camera.ioctl(VIDIOC_QUERYCAP, "VIDIOC_QUERYCAP", &mut capability)?;
        let caps = if capability.capabilities & CAP_DEVICE_CAPS != 0 {
            capability.device_caps
        } else {
            capability.capabilities
        };
        if caps & CAP_VIDEO_CAPTURE == 0 || caps & CAP_STREAMING == 0 {
            return Err(camera.setup_error("is no streaming video capture device".into()));
        }

        let (format, pix) = [(PixelFormat::Yuyv, PIX_FMT_YUYV), (PixelFormat::Grey8, PIX_FMT_GREY)]
            .into_iter()
            .find_map(|(format, code)| {
                let pix = camera.set_format(width, height, code).ok()?;
                (pix.pixelformat == code).then_some((format, pix))
            })
            .ok_or_else(|| camera.setup_error("takes neither YUYV nor GREY (VIDIOC_S_FMT)".into()))?;
        camera.format = format;
        (camera.width, camera.height) = (pix.width as usize, pix.height as usize);
        camera.stride = (pix.bytesperline as usize).max(camera.width * format.bytes_per_pixel());

        let mut request = RequestBuffers {
            count: BUFFERS,
            kind: BUF_TYPE_VIDEO_CAPTURE,
            memory: MEMORY_MMAP,
            ..Default::default()
        };
        camera.ioctl(VIDIOC_REQBUFS, "VIDIOC_REQBUFS", &mut request)?;
        if request.count == 0 {
            return Err(camera.setup_error("gave no buffers (VIDIOC_REQBUFS)".into()));
        }
        for index in 0..request.count {
            let mut buffer = Buffer::mmap(index);
            camera.ioctl(VIDIOC_QUERYBUF, "VIDIOC_QUERYBUF", &mut buffer)?;
            let length = buffer.length as usize;
            // SAFETY: maps the driver's buffer at the offset it gave; unmapped in Drop.
            let pointer = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    length,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    camera.fd.as_raw_fd(),
                    buffer.m_offset as libc::off_t,
                )
            };
            if pointer == libc::MAP_FAILED {
                return Err(camera.os_error("mmap"));
            }
            camera.buffers.push(Mapped { pointer, length });
        }
        Ok(camera)
    }

    /// The size and format the driver settled on.
    pub fn geometry(&self) -> (usize, usize, PixelFormat) {
        (self.width, self.height, self.format)
    }

    fn set_format(&self, width: u32, height: u32, code: u32) -> Result<PixFormat, SourceError> {
        let pix = PixFormat { width, height, pixelformat: code, field: FIELD_NONE, ..Default::default() };
        let mut format = Format { kind: BUF_TYPE_VIDEO_CAPTURE, fmt: FormatUnion { raw: [0; 200] } };
        format.fmt.pix = pix;
        self.ioctl(VIDIOC_S_FMT, "VIDIOC_S_FMT", &mut format)?;
        // SAFETY: the driver filled the `pix` member for a capture type.
        Ok(unsafe { format.fmt.pix })
    }

    /// Runs one ioctl on the device; the error names the device and the ioctl.
    fn ioctl<T>(&self, request: u64, name: &'static str, argument: &mut T) -> Result<(), SourceError> {
        loop {
            // SAFETY: `argument` is the structure this request reads and writes, of the size encoded in it.
            let result = unsafe { libc::ioctl(self.fd.as_raw_fd(), request as _, argument as *mut T) };
            if result != -1 {
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(SourceError::Camera {
                    device: self.device.clone(),
                    operation: name,
                    source: error,
                });
            }
        }
    }

    fn os_error(&self, operation: &'static str) -> SourceError {
        SourceError::Camera {
            device: self.device.clone(),
            operation,
            source: std::io::Error::last_os_error(),
        }
    }

    fn setup_error(&self, detail: String) -> SourceError {
        SourceError::CameraSetup { device: self.device.clone(), detail }
    }

    fn queue_all(&self) -> Result<(), SourceError> {
        for index in 0..self.buffers.len() as u32 {
            self.ioctl(VIDIOC_QBUF, "VIDIOC_QBUF", &mut Buffer::mmap(index))?;
        }
        Ok(())
    }

    /// Waits for a filled buffer, for at most [`FRAME_TIMEOUT_MS`].
    fn wait_readable(&self) -> Result<(), SourceError> {
        let mut poll = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one valid pollfd.
            match unsafe { libc::poll(&mut poll, 1, FRAME_TIMEOUT_MS) } {
                1.. => return Ok(()),
                0 => {
                    return Err(SourceError::Camera {
                        device: self.device.clone(),
                        operation: "poll",
                        source: std::io::ErrorKind::TimedOut.into(),
                    })
                }
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return Err(self.os_error("poll")),
            }
        }
    }
}

impl FrameSource for V4l2Camera {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        self.wait_readable()?;
        let mut buffer = Buffer::mmap(0);
        self.ioctl(VIDIOC_DQBUF, "VIDIOC_DQBUF", &mut buffer)?;
        let mapped = &self.buffers[buffer.index as usize];
        // SAFETY: the driver filled `bytesused` bytes of this mapped buffer and will not touch it until
        // it is queued again below.
        let filled = unsafe {
            std::slice::from_raw_parts(
                mapped.pointer as *const u8,
                (buffer.bytesused as usize).min(mapped.length),
            )
        };
        // Rows without their padding, as the engine takes them.
        let row = self.width * self.format.bytes_per_pixel();
        let mut bytes = Vec::with_capacity(row * self.height);
        for line in filled.chunks(self.stride).take(self.height) {
            bytes.extend_from_slice(&line[..row.min(line.len())]);
        }
        let index = buffer.index;
        self.ioctl(VIDIOC_QBUF, "VIDIOC_QBUF", &mut Buffer::mmap(index))?;
        if bytes.len() != row * self.height {
            return Err(self.setup_error(format!("gave a short frame of {} bytes", bytes.len())));
        }
        Ok(Some(Frame { width: self.width, height: self.height, format: self.format, bytes }))
    }

    fn start(&mut self) -> Result<(), SourceError> {
        if !self.streaming {
            self.queue_all()?;
            let mut kind = BUF_TYPE_VIDEO_CAPTURE as i32;
            self.ioctl(VIDIOC_STREAMON, "VIDIOC_STREAMON", &mut kind)?;
            self.streaming = true;
        }
        Ok(())
    }

    fn stop(&mut self) {
        if self.streaming {
            // STREAMOFF also takes back every queued buffer; `start` queues them again.
            let mut kind = BUF_TYPE_VIDEO_CAPTURE as i32;
            if let Err(error) = self.ioctl(VIDIOC_STREAMOFF, "VIDIOC_STREAMOFF", &mut kind) {
                eprintln!("stdac-device: {error}");
            }
            self.streaming = false;
        }
    }

    fn describe(&self) -> String {
        format!("camera {} ({} × {} {})", self.device.display(), self.width, self.height, self.format)
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        self.stop();
        for mapped in &self.buffers {
            // SAFETY: each was mapped in `open` with this length and is no longer used.
            unsafe { libc::munmap(mapped.pointer, mapped.length) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_numbers_match_the_kernel_headers() {
        // The values <linux/videodev2.h> gives on 64-bit x86 and ARM.
        if cfg!(target_pointer_width = "64") {
            // Checked against the C compiler's sizeof and offsetof on x86-64.
            assert_eq!(size_of::<Capability>(), 104);
            assert_eq!(size_of::<PixFormat>(), 48);
            assert_eq!(size_of::<RequestBuffers>(), 20);
            assert_eq!(size_of::<Format>(), 208);
            assert_eq!(size_of::<Buffer>(), 88);
            assert_eq!(
                (
                    std::mem::offset_of!(Buffer, timecode),
                    std::mem::offset_of!(Buffer, m_offset),
                    std::mem::offset_of!(Buffer, length)
                ),
                (40, 64, 72)
            );
            assert_eq!(VIDIOC_QUERYBUF, 0xc058_5609);
            assert_eq!(VIDIOC_STREAMOFF, 0x4004_5613);
            assert_eq!(VIDIOC_QUERYCAP, 0x8068_5600);
            assert_eq!(VIDIOC_S_FMT, 0xc0d0_5605);
            assert_eq!(VIDIOC_REQBUFS, 0xc014_5608);
            assert_eq!(VIDIOC_QBUF, 0xc058_560f);
            assert_eq!(VIDIOC_DQBUF, 0xc058_5611);
            assert_eq!(VIDIOC_STREAMON, 0x4004_5612);
        }
    }

    #[test]
    fn a_missing_camera_is_an_error_naming_the_device_and_the_call() {
        let error =
            V4l2Camera::open(Path::new("/dev/stdac-no-such-video"), 320, 240).err().unwrap().to_string();
        assert!(error.contains("/dev/stdac-no-such-video") && error.contains("open"), "{error}");
    }
}
