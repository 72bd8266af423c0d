//! The spatial transformer's corrected image, computed on the board from θ alone.
//!
//! An ST-DAC graph outputs the affine θ its input transformer chose, not the resampled image; the board
//! shows what the model saw by redoing the resampling here. It matches the graph's ONNX GridSample
//! (bilinear, zeros outside, `align_corners` = 1) on an affine grid, so the picture agrees with what
//! was clustered.

/// The `size` × `size` frame resampled through the 2 × 3 affine `theta` (row-major).
///
/// Output pixel (i, j) sits at normalised (x, y) = (−1 + 2j/(size − 1), −1 + 2i/(size − 1)); it samples
/// the frame at θ · (x, y, 1), read back in pixels as ((s + 1)(size − 1)/2), bilinearly, with zeros
/// outside the frame. Panics if `frame` is not `size`² values.
pub fn corrected(frame: &[f32], theta: &[f32; 6], size: usize) -> Vec<f32> {
    let mut out = vec![0.0; size * size];
    corrected_into(frame, theta, size, &mut out);
    out
}

/// [`corrected`] into the caller's `out` (`size`² values), for a board that redraws every frame.
pub fn corrected_into(frame: &[f32], theta: &[f32; 6], size: usize, out: &mut [f32]) {
    assert_eq!(frame.len(), size * size, "a {size} × {size} frame has {} values", size * size);
    assert_eq!(out.len(), size * size, "a {size} × {size} output has {} values", size * size);
    let last = size.saturating_sub(1) as f32;
    // A single pixel spans the whole range: it sits at the centre, 0.
    let normalised = |i: usize| if size > 1 { -1.0 + 2.0 * i as f32 / last } else { 0.0 };
    // Past one pixel outside, every tap reads zero: clamping there keeps the integer taps in range
    // for wild θ without changing the result.
    let to_pixel = |s: f32| ((s + 1.0) * last / 2.0).clamp(-2.0, size as f32 + 1.0);
    let at = |x: isize, y: isize| {
        if x < 0 || y < 0 || x >= size as isize || y >= size as isize {
            0.0
        } else {
            frame[y as usize * size + x as usize]
        }
    };
    let [a, b, c, d, e, f] = *theta;
    for (i, row) in out.chunks_exact_mut(size.max(1)).enumerate() {
        let y = normalised(i);
        for (j, value) in row.iter_mut().enumerate() {
            let x = normalised(j);
            let (px, py) = (to_pixel(a * x + b * y + c), to_pixel(d * x + e * y + f));
            let (left, top) = (px.floor(), py.floor());
            let (fx, fy) = (px - left, py - top);
            let (x0, y0) = (left as isize, top as isize);
            let upper = (1.0 - fx) * at(x0, y0) + fx * at(x0 + 1, y0);
            let lower = (1.0 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1);
            *value = (1.0 - fy) * upper + fy * lower;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx_support as onnx;
    use tract_onnx::prelude::*;

    fn picture(size: usize) -> Vec<f32> {
        (0..size * size).map(|i| ((i * 37) % 101) as f32 / 100.0).collect()
    }

    #[test]
    fn the_identity_reproduces_the_frame() {
        let frame = picture(28);
        let out = corrected(&frame, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 28);
        for (o, p) in out.iter().zip(&frame) {
            assert!((o - p).abs() < 1e-5, "{o} against {p}");
        }
    }

    #[test]
    fn a_translation_of_one_pixel_shifts_the_picture_left() {
        // Sampling one pixel to the right: output (i, j) is input (i, j + 1), and the last column reads
        // from outside the frame, zero.
        let (size, frame) = (28, picture(28));
        let out = corrected(&frame, &[1.0, 0.0, 2.0 / (size - 1) as f32, 0.0, 1.0, 0.0], size);
        for i in 0..size {
            for j in 0..size {
                let expected = if j + 1 < size { frame[i * size + j + 1] } else { 0.0 };
                assert!((out[i * size + j] - expected).abs() < 1e-5, "({i}, {j})");
            }
        }
    }

    #[test]
    fn a_half_pixel_shift_averages_neighbours() {
        // 2 × 2: (x, y) ∈ {−1, 1}², pixel = (s + 1)/2, so one pixel spans 2 normalised units and θ's x
        // offset of 1 is half a pixel: output column 0 samples at 0.5, column 1 at 1.5 (half outside).
        let frame = [0.0, 1.0, 2.0, 3.0];
        let out = corrected(&frame, &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0], 2);
        assert_eq!(out, [0.5, 0.5, 2.5, 1.5]);
    }

    /// GridSample(X [1, 1, size, size], grid [1, size, size, 2]) run by tract.
    fn tract_grid_sample(frame: &[f32], grid: &[f32], size: usize) -> Vec<f32> {
        let s = size as i64;
        let attributes = vec![
            onnx::string("mode", "bilinear"),
            onnx::string("padding_mode", "zeros"),
            onnx::int("align_corners", 1),
        ];
        let graph = onnx::model(
            vec![onnx::node("GridSample", &["x", "grid"], "y", attributes)],
            vec![],
            vec![onnx::value("x", &[1, 1, s, s]), onnx::value("grid", &[1, s, s, 2])],
            vec![onnx::value("y", &[1, 1, s, s])],
        );
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &graph[..])
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .unwrap();
        let x = Tensor::from_shape(&[1, 1, size, size], frame).unwrap();
        let g = Tensor::from_shape(&[1, size, size, 2], grid).unwrap();
        let out = plan.run(tvec!(x.into(), g.into())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    #[test]
    fn the_crop_matches_tracts_grid_sample_on_an_affine_grid() {
        let size = 9;
        let frame = picture(size);
        let (cos, sin) = (0.5f32.cos(), 0.5f32.sin());
        let thetas = [
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            // Rotated, shrunk and moved: some taps fall outside the frame.
            [0.8 * cos, -0.8 * sin, 0.13, 0.8 * sin, 0.8 * cos, -0.21],
            // Enlarged past the frame with a shear.
            [1.7, 0.3, -0.4, -0.2, 1.4, 0.6],
            [0.05, 0.0, 0.0, 0.0, 0.05, 0.0],
        ];
        for theta in thetas {
            // The affine grid, as the formula in `corrected` states it.
            let at = |i: usize| -1.0 + 2.0 * i as f32 / (size - 1) as f32;
            let mut grid = Vec::with_capacity(size * size * 2);
            for i in 0..size {
                for j in 0..size {
                    let (x, y) = (at(j), at(i));
                    grid.push(theta[0] * x + theta[1] * y + theta[2]);
                    grid.push(theta[3] * x + theta[4] * y + theta[5]);
                }
            }
            let expected = tract_grid_sample(&frame, &grid, size);
            assert!(expected.iter().any(|&v| v > 0.05), "θ {theta:?} samples something");
            let ours = corrected(&frame, &theta, size);
            for (k, (o, e)) in ours.iter().zip(&expected).enumerate() {
                assert!((o - e).abs() < 1e-5, "θ {theta:?}, pixel {k}: {o} against tract's {e}");
            }
        }
    }

    #[test]
    fn wild_thetas_read_zeros_and_nan_stays_nan() {
        let frame = picture(4);
        assert!(corrected(&frame, &[1.0, 0.0, 1e30, 0.0, 1.0, 0.0], 4).iter().all(|&v| v == 0.0));
        assert!(corrected(&frame, &[f32::INFINITY, 0.0, 0.0, 0.0, 1.0, 0.0], 4).iter().all(|&v| v == 0.0));
        assert!(corrected(&frame, &[f32::NAN, 0.0, 0.0, 0.0, 1.0, 0.0], 4).iter().all(|v| v.is_nan()));
        assert_eq!(corrected(&[0.25], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 1), [0.25]);
    }
}
