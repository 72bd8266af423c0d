//! Turning a captured picture into the model's input: a square grey image of side `size` (28 for every
//! model here) with values in [0, 1]. The host uses the same code for image folders, so a picture is
//! prepared identically wherever it is clustered.

/// Letterboxes a grey image (`width` × `height` bytes, row-major) into a square and resamples it to
/// `size` × `size`, returning values in [0, 1] (byte / 255).
///
/// The padding takes the median of the picture's border, so it continues the background whatever its
/// shade, even where the subject touches the edge. Resampling is an exact box filter (each output pixel is the area-weighted mean of the input
/// pixels it covers), which neither aliases when shrinking nor rings when enlarging.
pub fn letterbox_grey(pixels: &[u8], width: usize, height: usize, size: usize) -> Vec<f32> {
    assert_eq!(pixels.len(), width * height, "{width}×{height} grey image needs {} bytes", width * height);
    assert!(width > 0 && height > 0 && size > 0, "empty image");
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
    let mut out = Vec::with_capacity(size * size);
    for oy in 0..size {
        let (y0, y1) = (oy as f64 * scale, (oy + 1) as f64 * scale);
        for ox in 0..size {
            let (x0, x1) = (ox as f64 * scale, (ox + 1) as f64 * scale);
            let mut sum = 0.0;
            for y in y0.floor() as usize..(y1.ceil() as usize).min(side) {
                let wy = overlap(y, y0, y1);
                for x in x0.floor() as usize..(x1.ceil() as usize).min(side) {
                    sum += wy * overlap(x, x0, x1) * at(x, y);
                }
            }
            out.push((sum / (scale * scale) / 255.0) as f32);
        }
    }
    out
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
}
