//! PNG figures, drawn with plotters and the DejaVu Sans font shipped in `host/assets/fonts` (so nothing
//! depends on the system's fonts).

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::metrics::Contingency;

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes = include_bytes!("../assets/fonts/DejaVuSans.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .unwrap_or_else(|_| panic!("the bundled DejaVuSans.ttf is a valid font"));
    });
}

/// Draws the confusion matrix after matching clusters to classes: one row per class (named from
/// `class_names` where given), one column per cluster with matched clusters first; each cell shows its
/// count, shaded by its share of the row.
pub fn confusion_matrix(
    c: &Contingency,
    class_names: &[String],
    title: &str,
    path: &Path,
) -> anyhow::Result<()> {
    register_font();
    let (order, matrix) = c.matched_confusion();
    let (rows, cols) = (c.classes.len(), order.len());
    let cell = 44i32;
    let (left, top) = (140i32, 70i32);
    let width = (left + cell * cols as i32 + 30) as u32;
    let height = (top + cell * rows as i32 + 60) as u32;
    let root = BitMapBackend::new(path, (width.max(360), height)).into_drawing_area();
    let draw_error = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(draw_error)?;

    let centred = |size: u32| TextStyle::from((FONT, size)).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(title.to_string(), (width as i32 / 2, 20), centred(18))).map_err(draw_error)?;
    let cols_label = "cluster (matched to the class of its row first)";
    root.draw(&Text::new(cols_label, (left + cell * cols as i32 / 2, 45), centred(13)))
        .map_err(draw_error)?;

    for i in 0..rows {
        let row_total: u64 = matrix[i * cols..(i + 1) * cols].iter().sum();
        let name =
            class_names.get(c.classes[i] as usize).cloned().unwrap_or_else(|| c.classes[i].to_string());
        let label = TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(name, (left - 8, top + cell * i as i32 + cell / 2), label))
            .map_err(draw_error)?;
        for j in 0..cols {
            let count = matrix[i * cols + j];
            let share = if row_total > 0 { count as f64 / row_total as f64 } else { 0.0 };
            // White to deep blue.
            let shade = |full: u8| (255.0 - share * (255.0 - full as f64)) as u8;
            let colour = RGBColor(shade(8), shade(48), shade(107));
            let (x, y) = (left + cell * j as i32, top + cell * i as i32);
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], colour.filled()))
                .map_err(draw_error)?;
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], RGBColor(200, 200, 200)))
                .map_err(draw_error)?;
            let ink = if share > 0.5 { WHITE } else { BLACK };
            let text = centred(12).color(&ink);
            root.draw(&Text::new(count.to_string(), (x + cell / 2, y + cell / 2), text))
                .map_err(draw_error)?;
        }
    }
    for (j, &k) in order.iter().enumerate() {
        let x = left + cell * j as i32 + cell / 2;
        let y = top + cell * rows as i32 + 14;
        root.draw(&Text::new(c.clusters[k].to_string(), (x, y), centred(13))).map_err(draw_error)?;
    }
    root.present().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Draws training curves: one line (with its points marked) per named series against `x_label`, e.g. loss,
/// accuracy, NMI and ARI per epoch, with a legend and a y range that fits every finite point. Empty series
/// still get a legend entry; it is an error when no series has a finite point.
pub fn line_chart(
    title: &str,
    x_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    path: &Path,
) -> anyhow::Result<()> {
    register_font();
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    let points = series.iter().flat_map(|(_, points)| points.iter().filter(|p| finite(p)));
    let (mut x_min, mut x_max, mut y_min, mut y_max) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        (x_min, x_max, y_min, y_max) = (x_min.min(x), x_max.max(x), y_min.min(y), y_max.max(y));
    }
    if x_min > x_max {
        return Err(anyhow!("line chart {}: no series has a finite point to draw", path.display()));
    }
    // Pad so that a single point, or a flat series, still has a range; leave a margin around the data.
    let pad = |lo: f64, hi: f64| {
        let span = hi - lo;
        if span > 0.0 {
            (lo - 0.05 * span, hi + 0.05 * span)
        } else {
            let half = if lo.abs() > 0.0 { 0.1 * lo.abs() } else { 1.0 };
            (lo - half, hi + half)
        }
    };
    let (x_min, x_max) = if x_max > x_min { (x_min, x_max) } else { pad(x_min, x_max) };
    let (y_min, y_max) = pad(y_min, y_max);

    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    let draw_error = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x_min..x_max, y_min..y_max)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_error)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let line =
            LineSeries::new(points.iter().copied().filter(finite), colour.stroke_width(2)).point_size(3);
        chart
            .draw_series(line)
            .map_err(draw_error)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    root.present().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Screen pixels per image pixel in the sample grids.
const SCALE: i32 = 3;
/// Space between two images, in screen pixels.
const GAP: i32 = 6;

/// Checks that `images` holds one `height × width` image per entry of `clusters` and that every cluster is
/// below `k`; `what` names the images and the figure in the error.
fn check_images(
    images: &[f32],
    (h, w): (usize, usize),
    clusters: &[usize],
    k: usize,
    what: &str,
) -> anyhow::Result<()> {
    if h == 0 || w == 0 {
        return Err(anyhow!("{what}: the image size {h}×{w} is empty"));
    }
    if k == 0 {
        return Err(anyhow!("{what}: k is 0, there are no clusters to draw"));
    }
    if images.len() != clusters.len() * h * w {
        return Err(anyhow!(
            "{what}: {} values are not {} images of {h}×{w} (one per cluster assignment)",
            images.len(),
            clusters.len()
        ));
    }
    if let Some((i, &c)) = clusters.iter().enumerate().find(|&(_, &c)| c >= k) {
        return Err(anyhow!("{what}: image {i} is in cluster {c}, not below k = {k}"));
    }
    Ok(())
}

/// Draws one grey image (values in [0, 1], clamped; NaN drawn black) with its top-left corner at `(x, y)`,
/// each image pixel as a `scale × scale` square.
fn draw_grey<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    pixels: &[f32],
    (h, w): (usize, usize),
    (x, y): (i32, i32),
    scale: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (r, row) in pixels.chunks(w).take(h).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let v = if v.is_nan() { 0 } else { (v.clamp(0.0, 1.0) * 255.0).round() as u8 };
            let (px, py) = (x + c as i32 * scale, y + r as i32 * scale);
            // The bitmap backend fills up to, not including, the bottom-right corner.
            let square = [(px, py), (px + scale, py + scale)];
            area.draw(&Rectangle::new(square, RGBColor(v, v, v).filled()))?;
        }
    }
    Ok(())
}

/// Draws a grid with one row per cluster `0..k`: its label "cluster j (n)", n being how many images the
/// cluster has, then the first `per_cluster` of its images, scaled up (white on black as MNIST digits
/// are). An empty cluster gets a row with only its label.
pub fn cluster_samples(
    images: &[f32],
    size: (usize, usize),
    clusters: &[usize],
    k: usize,
    per_cluster: usize,
    path: &Path,
) -> anyhow::Result<()> {
    register_font();
    check_images(images, size, clusters, k, &format!("cluster samples {}", path.display()))?;
    let (h, w) = size;
    let (cell_w, cell_h) = (w as i32 * SCALE + GAP, h as i32 * SCALE + GAP);
    let (left, top) = (130i32, 40i32);
    let width = (left + cell_w * per_cluster as i32 + 10).max(360) as u32;
    let height = (top + cell_h * k as i32 + 10) as u32;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    let draw_error = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(draw_error)?;

    let title = format!("first {per_cluster} images of each cluster");
    let centred = TextStyle::from((FONT, 16)).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(title, (width as i32 / 2, 18), centred)).map_err(draw_error)?;
    let mut counts = vec![0usize; k];
    for &c in clusters {
        counts[c] += 1;
    }
    let label = TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Right, VPos::Center));
    for (j, &n) in counts.iter().enumerate() {
        let y = top + cell_h * j as i32;
        let text = format!("cluster {j} ({n})");
        root.draw(&Text::new(text, (left - 10, y + cell_h / 2), label.clone())).map_err(draw_error)?;
        let members = clusters.iter().enumerate().filter(|&(_, &c)| c == j).map(|(i, _)| i);
        for (slot, i) in members.take(per_cluster).enumerate() {
            let image = &images[i * h * w..(i + 1) * h * w];
            draw_grey(&root, image, size, (left + cell_w * slot as i32, y + GAP / 2), SCALE)
                .map_err(draw_error)?;
        }
    }
    root.present().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Draws what a spatial transformer does: on top, the first `pairs` samples as given ("input") above the
/// same samples after the transformer ("after STN"); below, for each cluster, the mean and the
/// standard deviation, pixel by pixel, of its transformed samples. A well-aligning transformer gives sharp
/// means and dark deviations. Empty clusters get their label only.
pub fn stn_view(
    originals: &[f32],
    transformed: &[f32],
    size: (usize, usize),
    clusters: &[usize],
    k: usize,
    pairs: usize,
    path: &Path,
) -> anyhow::Result<()> {
    register_font();
    let what = format!("STN view {}", path.display());
    check_images(originals, size, clusters, k, &format!("{what}, originals"))?;
    check_images(transformed, size, clusters, k, &format!("{what}, transformed"))?;
    let (h, w) = size;
    let pixels = h * w;
    let pairs = pairs.min(clusters.len());

    // Mean and standard deviation per cluster and pixel, over the transformed samples.
    let mut counts = vec![0usize; k];
    let mut sum = vec![0f64; k * pixels];
    let mut sum_sq = vec![0f64; k * pixels];
    for (i, &c) in clusters.iter().enumerate() {
        counts[c] += 1;
        let image = &transformed[i * pixels..(i + 1) * pixels];
        for (p, &v) in image.iter().enumerate() {
            sum[c * pixels + p] += v as f64;
            sum_sq[c * pixels + p] += (v as f64) * (v as f64);
        }
    }
    let mut mean = vec![0f32; k * pixels];
    let mut std = vec![0f32; k * pixels];
    for (c, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let n = count as f64;
        for p in c * pixels..(c + 1) * pixels {
            let m = sum[p] / n;
            mean[p] = m as f32;
            std[p] = (sum_sq[p] / n - m * m).max(0.0).sqrt() as f32;
        }
    }
    // The deviations are rescaled to [0, 1] by dividing by the largest over all clusters and pixels, so
    // that clusters can be compared with each other (all black when every cluster is constant).
    let max_std = std.iter().copied().fold(0f32, f32::max);
    if max_std > 0.0 {
        std.iter_mut().for_each(|s| *s /= max_std);
    }

    let (cell_w, cell_h) = (w as i32 * SCALE + GAP, h as i32 * SCALE + GAP);
    let left = 90i32;
    // Clusters are laid out in bands of at most `per_band` columns.
    let per_band = k.min(10);
    let bands = k.div_ceil(per_band);
    let columns = per_band.max(pairs) as i32;
    let width = (left + cell_w * columns + 10).max(640) as u32;
    let pairs_top = 40i32;
    let clusters_top = if pairs > 0 { pairs_top + 2 * cell_h + 40 } else { pairs_top };
    let band_h = 20 + 2 * cell_h + 10;
    let height = (clusters_top + band_h * bands as i32 + 10) as u32;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    let draw_error = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(draw_error)?;

    let centred = |size: u32| TextStyle::from((FONT, size)).pos(Pos::new(HPos::Center, VPos::Center));
    let right = TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Right, VPos::Center));
    if pairs > 0 {
        let title = format!("the first {pairs} samples before and after the spatial transformer");
        root.draw(&Text::new(title, (width as i32 / 2, 18), centred(15))).map_err(draw_error)?;
        for (row, (name, images)) in
            [("input", originals), ("after STN", transformed)].into_iter().enumerate()
        {
            let y = pairs_top + cell_h * row as i32;
            root.draw(&Text::new(name, (left - 10, y + cell_h / 2), right.clone())).map_err(draw_error)?;
            for i in 0..pairs {
                let image = &images[i * pixels..(i + 1) * pixels];
                draw_grey(&root, image, size, (left + cell_w * i as i32, y + GAP / 2), SCALE)
                    .map_err(draw_error)?;
            }
        }
    }
    let title =
        "per cluster, after the spatial transformer: mean and standard deviation (scaled to the largest)";
    root.draw(&Text::new(title, (width as i32 / 2, clusters_top - 12), centred(13))).map_err(draw_error)?;
    for band in 0..bands {
        let top = clusters_top + band_h * band as i32;
        for (row, name) in ["mean", "std"].into_iter().enumerate() {
            let y = top + 20 + cell_h * row as i32 + cell_h / 2;
            root.draw(&Text::new(name, (left - 10, y), right.clone())).map_err(draw_error)?;
        }
        for (col, c) in (band * per_band..((band + 1) * per_band).min(k)).enumerate() {
            let x = left + cell_w * col as i32;
            let label = format!("{c} ({})", counts[c]);
            root.draw(&Text::new(label, (x + cell_w / 2 - GAP / 2, top + 10), centred(12)))
                .map_err(draw_error)?;
            if counts[c] == 0 {
                continue;
            }
            for (row, images) in [&mean, &std].into_iter().enumerate() {
                let image = &images[c * pixels..(c + 1) * pixels];
                draw_grey(&root, image, size, (x, top + 20 + cell_h * row as i32 + GAP / 2), SCALE)
                    .map_err(draw_error)?;
            }
        }
    }
    root.present().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confusion_matrix_png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        let c = Contingency::new(&[0, 0, 1, 1, 2, 2], &[1, 1, 0, 2, 2, 2]);
        let names = vec!["zero".to_string(), "one".to_string(), "two".to_string()];
        confusion_matrix(&c, &names, "test", &path).unwrap();
        let png = image::open(&path).expect("a readable PNG");
        assert!(png.width() >= 360 && png.height() > 150);
        // Not a blank canvas: some pixels are dark (text, full cells).
        assert!(png.to_luma8().pixels().any(|p| p.0[0] < 64));
    }

    /// `n` synthetic 28×28 images with a bright 8×8 square whose place depends on the image's cluster
    /// (moved by one pixel for odd images, so that each cluster has some spread).
    fn squares(clusters: &[usize]) -> Vec<f32> {
        let mut images = vec![0f32; clusters.len() * 28 * 28];
        for (i, &c) in clusters.iter().enumerate() {
            let (r0, c0) = (2 + (c % 3) * 7 + i % 2, 2 + (c / 3 % 3) * 7);
            for r in r0..r0 + 8 {
                for col in c0..c0 + 8 {
                    images[i * 28 * 28 + r * 28 + col] = 1.0;
                }
            }
        }
        images
    }

    /// Whether the PNG has both dark and bright pixels (not a blank canvas).
    fn dark_and_bright(png: &image::DynamicImage) -> bool {
        let grey = png.to_luma8();
        grey.pixels().any(|p| p.0[0] < 40) && grey.pixels().any(|p| p.0[0] > 215)
    }

    #[test]
    fn a_line_chart_png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let loss: Vec<(f64, f64)> = (0..10).map(|e| (e as f64, 2.0 / (1.0 + e as f64))).collect();
        let acc: Vec<(f64, f64)> = (0..10).map(|e| (e as f64, 0.1 + 0.08 * e as f64)).collect();
        let series = [("loss", loss), ("acc", acc), ("nmi", vec![(3.0, 0.5)]), ("ari", vec![])];
        line_chart("training", "epoch", &series, &path).unwrap();
        let png = image::open(&path).expect("a readable PNG");
        assert_eq!((png.width(), png.height()), (800, 500));
        assert!(dark_and_bright(&png));
        // Some pixels are coloured (the lines), not only grey.
        assert!(png.to_rgb8().pixels().any(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 80));
    }

    #[test]
    fn a_line_chart_of_one_point_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.png");
        line_chart("one", "epoch", &[("loss", vec![(0.0, 0.0)])], &path).unwrap();
        assert!(dark_and_bright(&image::open(&path).unwrap()));
    }

    #[test]
    fn a_line_chart_without_points_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.png");
        let series = [("loss", vec![]), ("acc", vec![(f64::NAN, 1.0)])];
        let e = line_chart("none", "epoch", &series, &path).unwrap_err().to_string();
        assert!(e.contains("no series has a finite point"), "{e}");
        assert!(e.contains("empty.png"), "{e}");
        assert!(line_chart("none", "epoch", &[], &path).is_err());
    }

    #[test]
    fn a_cluster_samples_png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.png");
        // Cluster 2 of 4 is empty.
        let clusters = [0, 1, 0, 3, 1, 0, 3, 0, 0, 1];
        let images = squares(&clusters);
        cluster_samples(&images, (28, 28), &clusters, 4, 3, &path).unwrap();
        let png = image::open(&path).expect("a readable PNG");
        assert!(png.width() >= 130 + 3 * 28 * 3 && png.width() < 800, "{}", png.width());
        assert!(png.height() >= 4 * 28 * 3 && png.height() < 600, "{}", png.height());
        assert!(dark_and_bright(&png));
    }

    #[test]
    fn cluster_samples_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let clusters = [0, 1, 2];
        let images = squares(&clusters);
        let e = cluster_samples(&images, (28, 28), &clusters, 2, 3, &path).unwrap_err().to_string();
        assert!(e.contains("image 2 is in cluster 2, not below k = 2"), "{e}");
        let e = cluster_samples(&images[1..], (28, 28), &clusters, 3, 3, &path).unwrap_err().to_string();
        assert!(e.contains("are not 3 images of 28×28"), "{e}");
        assert!(!path.exists());
    }

    #[test]
    fn an_stn_view_png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stn.png");
        let clusters = [0, 1, 2, 0, 1, 2, 0, 4, 4, 1, 0, 2];
        let originals = squares(&clusters);
        // A "transformer" that moves every square to its cluster's place, dropping the odd images' shift.
        let aligned: Vec<usize> = clusters.iter().map(|&c| c * 2).collect();
        let mut transformed = squares(&aligned);
        transformed.iter_mut().for_each(|v| *v *= 0.9);
        stn_view(&originals, &transformed, (28, 28), &clusters, 5, 6, &path).unwrap();
        let png = image::open(&path).expect("a readable PNG");
        assert!(png.width() >= 90 + 6 * 28 * 3 && png.width() < 1000, "{}", png.width());
        assert!(png.height() >= 4 * 28 * 3 && png.height() < 800, "{}", png.height());
        assert!(dark_and_bright(&png));
    }

    #[test]
    fn an_stn_view_with_many_clusters_and_no_pairs_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stn_bands.png");
        let clusters: Vec<usize> = (0..30).map(|i| i % 12).collect();
        let images = squares(&clusters);
        stn_view(&images, &images, (28, 28), &clusters, 12, 0, &path).unwrap();
        let png = image::open(&path).expect("a readable PNG");
        // Twelve clusters make two bands of at most ten columns.
        assert!(png.width() <= 1000, "{}", png.width());
        assert!(png.height() >= 2 * 2 * 28 * 3, "{}", png.height());
        assert!(dark_and_bright(&png));
    }

    #[test]
    fn an_stn_view_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let clusters = [0, 1];
        let images = squares(&clusters);
        let e =
            stn_view(&images, &images[..28 * 28], (28, 28), &clusters, 2, 2, &path).unwrap_err().to_string();
        assert!(e.contains("transformed") && e.contains("are not 2 images of 28×28"), "{e}");
        let e = stn_view(&images, &images, (28, 28), &clusters, 1, 2, &path).unwrap_err().to_string();
        assert!(e.contains("image 1 is in cluster 1, not below k = 1"), "{e}");
    }
}
