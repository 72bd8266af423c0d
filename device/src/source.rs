//! Where the board's own frames come from when the host asks it to stream (`StartStream`): a camera
//! (`camera::V4l2Camera`, with the cargo feature `camera`) or a folder of pictures played as if a
//! camera saw them ([`FolderSource`]), which lets a board without a camera, a test or a demo stream
//! real frames.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::preprocess::{FrameError, FrameRef, PixelFormat};

/// One captured picture, owning its bytes (it outlives the source's buffer while it waits in the queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub format: PixelFormat,
    /// Row-major pixels, `width × height × format.bytes_per_pixel()` bytes, no row padding.
    pub bytes: Vec<u8>,
}

impl Frame {
    /// The frame, borrowed and checked, as the engine takes it.
    pub fn as_ref(&self) -> Result<FrameRef<'_>, FrameError> {
        FrameRef::new(self.format, self.width, self.height, &self.bytes)
    }
}

/// Why a source gave no frame this time. Each names the file or device and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("frame folder {dir}: {source}")]
    Folder { dir: PathBuf, source: std::io::Error },
    #[error("frame folder {dir} holds no PNG or JPEG picture")]
    NoPictures { dir: PathBuf },
    #[error("picture {path} does not decode: {detail}")]
    Picture { path: PathBuf, detail: String },
    #[error("camera {device}: {operation} failed: {source}")]
    Camera { device: PathBuf, operation: &'static str, source: std::io::Error },
    #[error("camera {device}: {detail}")]
    CameraSetup { device: PathBuf, detail: String },
}

/// A producer of frames, run on the capture thread ([`crate::capture`]).
pub trait FrameSource: Send {
    /// The next frame, waiting for it as long as the source needs (its frame rate). `Ok(None)`: the
    /// source has run out (a folder played once). An error is for this frame only: the caller reports
    /// it and asks again.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;

    /// Called when a stream starts: a camera starts capturing, a folder plays from its first picture.
    fn start(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    /// Called when a stream stops: a camera stops capturing (and frees the sensor's bandwidth).
    fn stop(&mut self) {}

    /// What the source is, for the log ("folder /data/digits", "camera /dev/video0").
    fn describe(&self) -> String;
}

/// A folder of PNG and JPEG pictures, in file-name order, decoded to grey (pictures without colour) or
/// RGB, paced like a camera at a fixed frame rate.
pub struct FolderSource {
    dir: PathBuf,
    pictures: Vec<PathBuf>,
    /// Next picture to play.
    next: usize,
    looping: bool,
    /// Time between frames; `None` plays as fast as the pictures decode.
    period: Option<Duration>,
    /// When the next frame is due.
    due: Option<Instant>,
    /// Pictures decoded in the current pass: a looping folder whose every picture fails ends instead
    /// of failing forever.
    decoded_this_pass: usize,
    /// Pictures that failed to decode, counted over every pass.
    failed: u64,
}

impl FolderSource {
    /// The pictures of `dir` (by extension: .png, .jpg, .jpeg, any case), played at `fps` frames per
    /// second (0: as fast as possible), from the first again after the last when `looping`.
    pub fn open(dir: &Path, fps: u32, looping: bool) -> Result<FolderSource, SourceError> {
        let folder_error = |source| SourceError::Folder { dir: dir.to_path_buf(), source };
        let mut pictures = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(folder_error)? {
            let path = entry.map_err(folder_error)?.path();
            let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            if matches!(extension.as_deref(), Some("png" | "jpg" | "jpeg")) && path.is_file() {
                pictures.push(path);
            }
        }
        if pictures.is_empty() {
            return Err(SourceError::NoPictures { dir: dir.to_path_buf() });
        }
        pictures.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        Ok(FolderSource {
            dir: dir.to_path_buf(),
            pictures,
            next: 0,
            looping,
            period: (fps > 0).then(|| Duration::from_secs(1) / fps),
            due: None,
            decoded_this_pass: 0,
            failed: 0,
        })
    }

    /// The pictures it plays, in order.
    pub fn pictures(&self) -> &[PathBuf] {
        &self.pictures
    }

    /// Pictures that failed to decode so far (each failure also returned as an error naming the file).
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Sleeps until the next frame is due, keeping a steady rate (a late frame does not make the
    /// following ones early).
    fn pace(&mut self) {
        let Some(period) = self.period else { return };
        let now = Instant::now();
        let due = self.due.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        // A frame more than a period late restarts the schedule rather than bursting to catch up.
        let next = due + period;
        self.due = Some(if next < now { now + period } else { next });
    }
}

impl FrameSource for FolderSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.next == self.pictures.len() {
            if !self.looping || self.decoded_this_pass == 0 {
                return Ok(None);
            }
            self.next = 0;
            self.decoded_this_pass = 0;
        }
        self.pace();
        let path = &self.pictures[self.next];
        self.next += 1;
        match decode(path) {
            Ok(frame) => {
                self.decoded_this_pass += 1;
                Ok(Some(frame))
            }
            Err(error) => {
                self.failed += 1;
                Err(error)
            }
        }
    }

    fn start(&mut self) -> Result<(), SourceError> {
        self.next = 0;
        self.decoded_this_pass = 0;
        self.due = None;
        Ok(())
    }

    fn describe(&self) -> String {
        let pace = match self.period {
            Some(period) => format!("{:.1} fps", 1.0 / period.as_secs_f64()),
            None => "as fast as they decode".into(),
        };
        let mode = if self.looping { "looping" } else { "once" };
        format!("folder {} ({} pictures, {pace}, {mode})", self.dir.display(), self.pictures.len())
    }
}

/// Decodes one picture (its format sniffed from its bytes) to grey when it has no colour, else RGB.
pub fn decode(path: &Path) -> Result<Frame, SourceError> {
    let error = |detail: String| SourceError::Picture { path: path.to_path_buf(), detail };
    let picture = image::io::Reader::open(path)
        .map_err(|e| error(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| error(e.to_string()))?
        .decode()
        .map_err(|e| error(e.to_string()))?;
    let (width, height) = (picture.width() as usize, picture.height() as usize);
    let (format, bytes) = if picture.color().has_color() {
        (PixelFormat::Rgb8, picture.into_rgb8().into_raw())
    } else {
        (PixelFormat::Grey8, picture.into_luma8().into_raw())
    };
    Ok(Frame { width, height, format, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey_png(path: &Path, width: u32, height: u32, value: u8) {
        image::GrayImage::from_pixel(width, height, image::Luma([value])).save(path).unwrap();
    }

    #[test]
    fn a_folder_plays_its_pictures_in_name_order_and_loops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        grey_png(&dir.path().join("b.png"), 28, 28, 20);
        grey_png(&dir.path().join("a.PNG"), 28, 28, 10);
        image::RgbImage::from_pixel(6, 4, image::Rgb([200, 0, 0])).save(dir.path().join("c.jpg")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a picture").unwrap();

        let mut once = FolderSource::open(dir.path(), 0, false).unwrap();
        assert_eq!(once.pictures().len(), 3, "{:?}", once.pictures());
        let a = once.next_frame().unwrap().unwrap();
        assert_eq!((a.width, a.height, a.format, a.bytes[0]), (28, 28, PixelFormat::Grey8, 10));
        assert_eq!(once.next_frame().unwrap().unwrap().bytes[0], 20);
        let c = once.next_frame().unwrap().unwrap();
        assert_eq!((c.width, c.height, c.format, c.bytes.len()), (6, 4, PixelFormat::Rgb8, 6 * 4 * 3));
        assert!(c.bytes[0] > 150 && c.bytes[1] < 60, "red stays red through JPEG: {:?}", &c.bytes[..3]);
        assert_eq!(once.next_frame().unwrap(), None, "played once");
        once.start().unwrap();
        assert_eq!(once.next_frame().unwrap().unwrap().bytes[0], 10, "a new stream plays from the first");

        let mut looping = FolderSource::open(dir.path(), 0, true).unwrap();
        let firsts: Vec<u8> = (0..7).map(|_| looping.next_frame().unwrap().unwrap().bytes[0]).collect();
        assert_eq!(&firsts[..3], &firsts[3..6]);
        assert_eq!(firsts[6], 10);
    }

    #[test]
    fn a_picture_that_does_not_decode_is_an_error_naming_it_and_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        grey_png(&dir.path().join("1.png"), 28, 28, 1);
        std::fs::write(dir.path().join("2.png"), b"\x89PNG but cut short").unwrap();
        grey_png(&dir.path().join("3.png"), 28, 28, 3);
        let mut source = FolderSource::open(dir.path(), 0, true).unwrap();
        assert_eq!(source.next_frame().unwrap().unwrap().bytes[0], 1);
        let error = source.next_frame().unwrap_err().to_string();
        assert!(error.contains("2.png") && error.contains("does not decode"), "{error}");
        assert_eq!(source.next_frame().unwrap().unwrap().bytes[0], 3, "the next picture still plays");
        assert_eq!(source.failed(), 1);

        // A folder where nothing decodes ends after one pass instead of failing forever.
        let broken = tempfile::tempdir().unwrap();
        std::fs::write(broken.path().join("x.jpg"), b"no jpeg").unwrap();
        let mut source = FolderSource::open(broken.path(), 0, true).unwrap();
        assert!(source.next_frame().is_err());
        assert_eq!(source.next_frame().unwrap(), None);
    }

    #[test]
    fn a_folder_is_paced_at_its_frame_rate_and_errors_name_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        grey_png(&dir.path().join("p.png"), 4, 4, 0);
        let mut source = FolderSource::open(dir.path(), 50, true).unwrap();
        let started = Instant::now();
        for _ in 0..6 {
            source.next_frame().unwrap().unwrap();
        }
        // Six frames at 50 fps: the first at once, five more 20 ms apart.
        assert!(started.elapsed() >= Duration::from_millis(95), "{:?}", started.elapsed());

        let empty = tempfile::tempdir().unwrap();
        let error = FolderSource::open(empty.path(), 0, false).err().unwrap().to_string();
        assert!(error.contains(&empty.path().display().to_string()) && error.contains("no PNG"), "{error}");
        let missing = dir.path().join("missing");
        let error = FolderSource::open(&missing, 0, false).err().unwrap().to_string();
        assert!(error.contains("missing"), "{error}");
    }
}
