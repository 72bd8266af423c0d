//! Turning a captured picture into the model's input: a square grey image of side `size` (28 for every
//! model here) with values in [0, 1]. The host uses the same code for image folders, so a picture is
//! prepared identically wherever it is clustered.
//!
//! A camera hands over frames in its own pixel format ([`PixelFormat`]); [`letterbox_frame_into`] takes
//! any of them to the model's input without allocating once its scratch buffer has grown to the frame
//! size, so a board can prepare every frame in the same memory.

use std::fmt;

/// How a frame's bytes encode its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// One byte per pixel, 0 black to 255 white.
    Grey8,
    /// Three bytes per pixel, interleaved R, G, B.
    Rgb8,
    /// YUV 4:2:2 as most USB and CSI cameras send it: each pair of pixels is four bytes Y₀ U Y₁ V, the
    /// two pixels sharing one U and one V. Only the lumas Y matter for a grey image.
    Yuyv,
}

impl PixelFormat {
    /// Bytes per pixel, counted over whole rows (YUYV: 4 bytes per 2 pixels).
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Grey8 => 1,
            PixelFormat::Rgb8 => 3,
            PixelFormat::Yuyv => 2,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelFormat::Grey8 => "grey8",
            PixelFormat::Rgb8 => "RGB8",
            PixelFormat::Yuyv => "YUYV",
        })
    }
}

/// A captured frame, borrowed from whoever holds its bytes (a camera buffer, a message payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    /// Row-major pixels, `width × height × format.bytes_per_pixel()` bytes with no row padding.
    pub bytes: &'a [u8],
}

/// Why a frame cannot be prepared; each message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame field `{field}` is 0: a frame has at least one pixel")]
    Empty { field: &'static str },
    #[error("frame field `width` is {width}: a YUYV frame's width must be even (pixels come in pairs)")]
    OddWidth { width: usize },
    #[error("frame of {width} × {height} {format} pixels is too large to address")]
    TooLarge { format: PixelFormat, width: usize, height: usize },
    #[error(
        "frame field `bytes` holds {found} bytes, but a {width} × {height} {format} frame has {expected} \
         ({} per pixel)",
        format.bytes_per_pixel()
    )]
    ByteCount { format: PixelFormat, width: usize, height: usize, expected: usize, found: usize },
    #[error("the output holds {found} values, a {size} × {size} image needs {}", size * size)]
    OutputSize { size: usize, found: usize },
}

impl<'a> FrameRef<'a> {
    /// A checked frame: the fields agree with each other.
    pub fn new(
        format: PixelFormat,
        width: usize,
        height: usize,
        bytes: &'a [u8],
    ) -> Result<FrameRef<'a>, FrameError> {
        let frame = FrameRef { format, width, height, bytes };
        frame.check()?;
        Ok(frame)
    }

    /// Checks that the dimensions are usable and the byte count matches them.
    pub fn check(&self) -> Result<(), FrameError> {
        let &FrameRef { format, width, height, bytes } = self;
        if width == 0 {
            return Err(FrameError::Empty { field: "width" });
        }
        if height == 0 {
            return Err(FrameError::Empty { field: "height" });
        }
        if format == PixelFormat::Yuyv && width % 2 == 1 {
            return Err(FrameError::OddWidth { width });
        }
        let expected = width
            .checked_mul(height)
            .and_then(|pixels| pixels.checked_mul(format.bytes_per_pixel()))
            .ok_or(FrameError::TooLarge { format, width, height })?;
        if bytes.len() != expected {
            return Err(FrameError::ByteCount { format, width, height, expected, found: bytes.len() });
        }
        Ok(())
    }

    /// The frame as one grey byte per pixel: the bytes themselves for grey frames, otherwise converted
    /// into `scratch` (cleared first, so its capacity is reused from frame to frame).
    pub fn grey<'s>(&self, scratch: &'s mut Vec<u8>) -> Result<&'s [u8], FrameError>
    where
        'a: 's,
    {
        self.check()?;
        Ok(match self.format {
            PixelFormat::Grey8 => self.bytes,
            PixelFormat::Rgb8 => {
                scratch.clear();
                scratch.extend(self.bytes.chunks_exact(3).map(|rgb| luma(rgb[0], rgb[1], rgb[2])));
                scratch
            }
            PixelFormat::Yuyv => {
                scratch.clear();
                scratch.extend(self.bytes.chunks_exact(2).map(|y_then_chroma| y_then_chroma[0]));
                scratch
            }
        })
    }
}

/// ITU-R BT.601 luma, 0.299 R + 0.587 G + 0.114 B, rounded half up. In thousandths the weights are
/// whole numbers summing to 1000, so integer arithmetic gives exactly that rounding.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000) as u8
}

/// Prepares a frame of any size and format as the model's `size` × `size` input (see
/// [`letterbox_grey`]).
pub fn letterbox_frame(frame: FrameRef<'_>, size: usize) -> Result<Vec<f32>, FrameError> {
    let mut out = vec![0.0; size * size];
    letterbox_frame_into(frame, size, &mut out, &mut Vec::new())?;
    Ok(out)
}

/// [`letterbox_frame`] into the caller's `out` (`size`², row-major), converting colour frames in the
/// caller's `scratch`: no allocation once `scratch` has held a frame of this size.
pub fn letterbox_frame_into(
    frame: FrameRef<'_>,
    size: usize,
    out: &mut [f32],
    scratch: &mut Vec<u8>,
) -> Result<(), FrameError> {
    if size == 0 || out.len() != size * size {
        return Err(FrameError::OutputSize { size, found: out.len() });
    }
    let grey = frame.grey(scratch)?;
    letterbox(grey, frame.width, frame.height, size, out);
    Ok(())
}

/// Letterboxes a grey image (`width` × `height` bytes, row-major) into a square and resamples it to
/// `size` × `size`, returning values in [0, 1] (byte / 255).
///
/// The padding takes the median of the picture's border, so it continues the background whatever its
/// shade, even where the subject touches the edge. Resampling is an exact box filter (each output pixel is the area-weighted mean of the input
/// pixels it covers), which neither aliases when shrinking nor rings when enlarging.
///
/// Panics if the byte count does not match the dimensions; [`letterbox_frame`] reports it instead.
pub fn letterbox_grey(pixels: &[u8], width: usize, height: usize, size: usize) -> Vec<f32> {
    assert_eq!(pixels.len(), width * height, "{width}×{height} grey image needs {} bytes", width * height);
    assert!(width > 0 && height > 0 && size > 0, "empty image");
    let mut out = vec![0.0; size * size];
    letterbox(pixels, width, height, size, &mut out);
    out
}

/// The letterbox and box filter, on dimensions already checked.
fn letterbox(pixels: &[u8], width: usize, height: usize, size: usize, out: &mut [f32]) {
    let side = width.max(height);
    let (left, top) = ((side - width) / 2, (side - height) / 2);
    let background = border_median(pixels, width, height);
    let at = |x: usize, y: usize| -> f64 {
        if x < left || y < top || x >= left + width || y >= top + height {
            background
        } else {
            pixels[(y - top) * width + (x - left)] as f64
        }
    };

    let scale = side as f64 / size as f64; // input pixels per output pixel
    for (oy, row) in out.chunks_exact_mut(size).enumerate() {
        let (y0, y1) = (oy as f64 * scale, (oy + 1) as f64 * scale);
        for (ox, value) in row.iter_mut().enumerate() {
            let (x0, x1) = (ox as f64 * scale, (ox + 1) as f64 * scale);
            let mut sum = 0.0;
            for y in y0.floor() as usize..(y1.ceil() as usize).min(side) {
                let wy = overlap(y, y0, y1);
                for x in x0.floor() as usize..(x1.ceil() as usize).min(side) {
                    sum += wy * overlap(x, x0, x1) * at(x, y);
                }
            }
            *value = (sum / (scale * scale) / 255.0) as f32;
        }
    }
}

/// How much of the unit cell `[i, i + 1)` lies inside `[a, b)`.
fn overlap(i: usize, a: f64, b: f64) -> f64 {
    ((i + 1) as f64).min(b) - (i as f64).max(a)
}

fn border_median(pixels: &[u8], width: usize, height: usize) -> f64 {
    let mut histogram = [0usize; 256];
    let mut count = 0;
    for y in 0..height {
        for x in 0..width {
            if y == 0 || x == 0 || y == height - 1 || x == width - 1 {
                histogram[pixels[y * width + x] as usize] += 1;
                count += 1;
            }
        }
    }
    let mut seen = 0;
    for (value, n) in histogram.iter().enumerate() {
        seen += n;
        if 2 * seen >= count {
            return value as f64;
        }
    }
    unreachable!("the border has at least one pixel")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_28x28_image_passes_through_unchanged() {
        let pixels: Vec<u8> = (0..784).map(|i| (i * 7 % 256) as u8).collect();
        let out = letterbox_grey(&pixels, 28, 28, 28);
        for (o, p) in out.iter().zip(&pixels) {
            assert!((o - *p as f32 / 255.0).abs() < 1e-6);
        }
    }

    #[test]
    fn shrinking_averages_whole_blocks() {
        // 56×56 made of 2×2 blocks of one value each: the 28×28 result is those values.
        let pixels: Vec<u8> = (0..56 * 56).map(|i| ((i / 56 / 2) * 3 + (i % 56 / 2)) as u8).collect();
        let out = letterbox_grey(&pixels, 56, 56, 28);
        for y in 0..28 {
            for x in 0..28 {
                assert!((out[y * 28 + x] * 255.0 - (y * 3 + x) as f32).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn a_wide_image_is_padded_with_its_background_top_and_bottom() {
        // 56 wide, 28 high, background 200, a black bar in the middle column band.
        let mut pixels = vec![200u8; 56 * 28];
        for y in 0..28 {
            for x in 26..30 {
                pixels[y * 56 + x] = 0;
            }
        }
        let out = letterbox_grey(&pixels, 56, 28, 28);
        let v = |x: usize, y: usize| out[y * 28 + x] * 255.0;
        assert!((v(0, 0) - 200.0).abs() < 1e-3, "padding continues the background");
        assert!((v(14, 2) - 200.0).abs() < 1e-3, "the top band is padding");
        assert!(v(13, 14) < 1.0 && v(14, 14) < 1.0, "the bar lands in the middle, shrunk by half");
        assert!((v(5, 14) - 200.0).abs() < 1e-3);
    }

    #[test]
    fn enlarging_keeps_the_mean() {
        let pixels = [0u8, 255, 255, 0];
        let out = letterbox_grey(&pixels, 2, 2, 28);
        let mean: f32 = out.iter().sum::<f32>() / out.len() as f32;
        assert!((mean - 0.5).abs() < 1e-6);
    }

    #[test]
    fn luma_weighs_red_green_and_blue_as_bt601_rounded() {
        // By hand: 0.299·255 = 76.245, 0.587·255 = 149.685, 0.114·255 = 29.07.
        assert_eq!([luma(255, 0, 0), luma(0, 255, 0), luma(0, 0, 255)], [76, 150, 29]);
        // 2.99 + 11.74 + 3.42 = 18.15; 29.9 + 88.05 + 22.8 = 140.75.
        assert_eq!([luma(10, 20, 30), luma(100, 150, 200)], [18, 141]);
        assert_eq!([luma(0, 0, 0), luma(255, 255, 255), luma(77, 77, 77)], [0, 255, 77]);
        // 0.299·1 + 0.587·1 = 0.886 rounds up; 0.299·1 + 0.114·1 = 0.413 rounds down.
        assert_eq!([luma(1, 1, 0), luma(1, 0, 1)], [1, 0]);
    }

    #[test]
    fn rgb_and_yuyv_frames_become_their_grey_values() {
        let mut scratch = Vec::new();
        // 2 × 1 RGB: red, then (100, 150, 200).
        let rgb = [255, 0, 0, 100, 150, 200];
        let frame = FrameRef::new(PixelFormat::Rgb8, 2, 1, &rgb).unwrap();
        assert_eq!(frame.grey(&mut scratch).unwrap(), [76, 141]);
        // 4 × 1 YUYV: Y₀ U Y₁ V Y₂ U Y₃ V, with chroma bytes that must not leak into the grey.
        let yuyv = [10, 128, 20, 255, 30, 0, 40, 7];
        let frame = FrameRef::new(PixelFormat::Yuyv, 4, 1, &yuyv).unwrap();
        assert_eq!(frame.grey(&mut scratch).unwrap(), [10, 20, 30, 40]);
        // Grey frames are used as they are.
        let grey = [9, 8, 7, 6];
        assert_eq!(FrameRef::new(PixelFormat::Grey8, 2, 2, &grey).unwrap().grey(&mut scratch).unwrap(), grey);
    }

    #[test]
    fn every_format_of_the_same_picture_prepares_alike() {
        // A 4 × 2 picture of grey levels g, written as grey, as RGB (r = g = b, whose luma is g) and as
        // YUYV (Y = g), letterboxed to 2 × 2.
        let g: [u8; 8] = [10, 20, 30, 40, 50, 60, 70, 80];
        let rgb: Vec<u8> = g.iter().flat_map(|&v| [v, v, v]).collect();
        let yuyv: Vec<u8> = g.chunks(2).flat_map(|p| [p[0], 90, p[1], 200]).collect();
        let frames = [
            FrameRef::new(PixelFormat::Grey8, 4, 2, &g).unwrap(),
            FrameRef::new(PixelFormat::Rgb8, 4, 2, &rgb).unwrap(),
            FrameRef::new(PixelFormat::Yuyv, 4, 2, &yuyv).unwrap(),
        ];
        // The 4 × 4 square has one padding row above the picture and one below, of the border median
        // (all 8 pixels are border: 40). Each output pixel averages a 2 × 2 block: (0, 0) is padding
        // 40, 40 over 10, 20; (1, 0) is 40, 40 over 30, 40; (0, 1) is 50, 60 over 40, 40; (1, 1) is
        // 70, 80 over 40, 40.
        let expected = [27.5, 37.5, 47.5, 57.5].map(|v: f32| v / 255.0);
        let mut scratch = Vec::new();
        for frame in frames {
            let mut out = [0.0f32; 4];
            letterbox_frame_into(frame, 2, &mut out, &mut scratch).unwrap();
            for (o, e) in out.iter().zip(&expected) {
                assert!((o - e).abs() < 1e-6, "{}: {out:?}", frame.format);
            }
            assert_eq!(letterbox_frame(frame, 2).unwrap(), out);
        }
    }

    #[test]
    fn bad_frames_are_reported_by_field_not_panicked_on() {
        let error = |format, width, height, bytes: &[u8]| {
            FrameRef::new(format, width, height, bytes).unwrap_err().to_string()
        };
        let e = error(PixelFormat::Rgb8, 2, 2, &[0; 11]);
        assert!(e.contains("`bytes` holds 11 bytes") && e.contains("2 × 2 RGB8 frame has 12"), "{e}");
        let e = error(PixelFormat::Yuyv, 3, 1, &[0; 6]);
        assert!(e.contains("`width` is 3") && e.contains("even"), "{e}");
        assert!(error(PixelFormat::Grey8, 0, 4, &[]).contains("`width` is 0"));
        assert!(error(PixelFormat::Grey8, 4, 0, &[]).contains("`height` is 0"));
        assert!(error(PixelFormat::Rgb8, usize::MAX, 2, &[]).contains("too large"));
        // A frame built field by field is checked when it is prepared.
        let unchecked = FrameRef { format: PixelFormat::Grey8, width: 3, height: 3, bytes: &[0; 8] };
        let e = letterbox_frame(unchecked, 28).unwrap_err();
        assert_eq!(
            e,
            FrameError::ByteCount { format: PixelFormat::Grey8, width: 3, height: 3, expected: 9, found: 8 }
        );
        let frame = FrameRef::new(PixelFormat::Grey8, 1, 1, &[0]).unwrap();
        let e = letterbox_frame_into(frame, 28, &mut [0.0; 10], &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("10 values, a 28 × 28 image needs 784"), "{e}");
    }
}
