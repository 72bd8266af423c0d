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

/// The range `lo..hi` of some data widened by a margin of 5% on each side; a single value `lo == hi` gets a
/// range of ±10% around it (±1 around 0), so that every axis has some extent.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    if span > 0.0 {
        (lo - 0.05 * span, hi + 0.05 * span)
    } else {
        let half = if lo.abs() > 0.0 { 0.1 * lo.abs() } else { 1.0 };
        (lo - half, hi + half)
    }
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
    let (x_min, x_max) = if x_max > x_min { (x_min, x_max) } else { padded(x_min, x_max) };
    let (y_min, y_max) = padded(y_min, y_max);

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

/// A categorical palette for clusters and classes: Tableau's ten colours, then their ten lighter
/// companions; category `i` gets entry `i` modulo its length.
const PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(199, 199, 199),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

/// The palette colour of category `i`.
fn category_colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The most points a scatter plot draws; beyond it an evenly spaced subsample is drawn.
const MAX_SCATTER_POINTS: usize = 5000;

/// `max` positions spread evenly over `0..n`, in increasing order and starting at 0 (all of `0..n` when
/// `n <= max`).
fn evenly_spaced(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        (0..n).collect()
    } else {
        (0..max).map(|j| j * n / max).collect()
    }
}

/// One panel of [`latent_scatter`]: its name, the palette index of each shown point, and its legend (palette
/// index and name of each cluster or class present among the shown points, in order).
type ScatterPanel<'a> = (&'a str, Vec<usize>, Vec<(usize, String)>);

/// Draws a 2-D view of latent codes (`points`, n × 2 row-major, one point per entry of `clusters`) as a
/// scatter plot coloured by cluster (left, "by cluster") and, when `labels` is given, the same points
/// coloured by true label (right, "by label", named from `class_names` where a label indexes it). Each panel
/// has axes and, beside it, a legend with a dot and a name per cluster or class among the drawn points.
/// Points with a non-finite coordinate are skipped (it is an error when no point is finite); of more than
/// 5000 finite points an evenly spaced subsample of 5000 is drawn, which the title says.
pub fn latent_scatter(
    points: &[f32],
    clusters: &[usize],
    labels: Option<&[i64]>,
    class_names: &[String],
    title: &str,
    path: &Path,
) -> anyhow::Result<()> {
    register_font();
    let what = format!("latent scatter {}", path.display());
    let n = clusters.len();
    if points.len() != 2 * n {
        return Err(anyhow!(
            "{what}: {} coordinates are not 2 per point for {n} cluster assignments",
            points.len()
        ));
    }
    if let Some(labels) = labels {
        if labels.len() != n {
            return Err(anyhow!(
                "{what}: {} labels for {n} points (one cluster assignment each)",
                labels.len()
            ));
        }
    }
    let xy = |i: usize| (points[2 * i] as f64, points[2 * i + 1] as f64);
    let finite: Vec<usize> = (0..n)
        .filter(|&i| {
            let (x, y) = xy(i);
            x.is_finite() && y.is_finite()
        })
        .collect();
    if finite.is_empty() {
        return Err(anyhow!("{what}: none of the {n} points has finite coordinates"));
    }
    let shown: Vec<usize> =
        evenly_spaced(finite.len(), MAX_SCATTER_POINTS).into_iter().map(|j| finite[j]).collect();
    let mut notes = Vec::new();
    if shown.len() < finite.len() {
        notes.push(format!("{} of {} points", shown.len(), finite.len()));
    }
    if finite.len() < n {
        notes.push(format!("{} non-finite skipped", n - finite.len()));
    }
    let full_title =
        if notes.is_empty() { title.to_string() } else { format!("{title} ({})", notes.join(", ")) };

    let (mut x_min, mut x_max, mut y_min, mut y_max) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &i in &shown {
        let (x, y) = xy(i);
        (x_min, x_max, y_min, y_max) = (x_min.min(x), x_max.max(x), y_min.min(y), y_max.max(y));
    }
    let (x_min, x_max) = padded(x_min, x_max);
    let (y_min, y_max) = padded(y_min, y_max);

    let mut panels: Vec<ScatterPanel> = Vec::new();
    let present: std::collections::BTreeSet<usize> = shown.iter().map(|&i| clusters[i]).collect();
    let legend = present.into_iter().map(|c| (c, format!("cluster {c}"))).collect();
    panels.push(("by cluster", shown.iter().map(|&i| clusters[i]).collect(), legend));
    if let Some(labels) = labels {
        let colour = |l: i64| l.rem_euclid(PALETTE.len() as i64) as usize;
        let name = |l: i64| {
            usize::try_from(l).ok().and_then(|l| class_names.get(l)).cloned().unwrap_or_else(|| l.to_string())
        };
        let present: std::collections::BTreeSet<i64> = shown.iter().map(|&i| labels[i]).collect();
        let legend = present.into_iter().map(|l| (colour(l), name(l))).collect();
        panels.push(("by label", shown.iter().map(|&i| colour(labels[i])).collect(), legend));
    }

    // Each panel is a square plot with its legend to the right, in as many columns as it needs.
    let (title_h, plot_side) = (40i32, 520i32);
    let (legend_top, legend_row, legend_col) = (45i32, 18i32, 150i32);
    let rows_per_column = ((plot_side - legend_top - 10) / legend_row) as usize;
    let panel_widths: Vec<i32> = panels
        .iter()
        .map(|(_, _, legend)| plot_side + legend_col * legend.len().div_ceil(rows_per_column).max(1) as i32)
        .collect();
    let width = panel_widths.iter().sum::<i32>() as u32;
    let root = BitMapBackend::new(path, (width, (title_h + plot_side) as u32)).into_drawing_area();
    let draw_error = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(draw_error)?;

    let (head, mut body) = root.split_vertically(title_h);
    let centred = TextStyle::from((FONT, 18)).pos(Pos::new(HPos::Center, VPos::Center));
    head.draw(&Text::new(full_title, (width as i32 / 2, title_h / 2), centred)).map_err(draw_error)?;
    let entry_style = TextStyle::from((FONT, 12)).pos(Pos::new(HPos::Left, VPos::Center));
    for ((name, colours, legend), &panel_width) in panels.iter().zip(&panel_widths) {
        let (panel, rest) = body.split_horizontally(panel_width);
        body = rest;
        let (plot, legend_area) = panel.split_horizontally(plot_side);
        let mut chart = ChartBuilder::on(&plot)
            .caption(*name, (FONT, 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(x_min..x_max, y_min..y_max)
            .map_err(draw_error)?;
        chart.configure_mesh().label_style((FONT, 12)).draw().map_err(draw_error)?;
        let dots =
            shown.iter().zip(colours).map(|(&i, &c)| Circle::new(xy(i), 2, category_colour(c).filled()));
        chart.draw_series(dots).map_err(draw_error)?;
        for (e, (c, entry)) in legend.iter().enumerate() {
            let x = 10 + legend_col * (e / rows_per_column) as i32;
            let y = legend_top + legend_row * (e % rows_per_column) as i32;
            legend_area
                .draw(&Circle::new((x + 5, y), 5, category_colour(*c).filled()))
                .map_err(draw_error)?;
            legend_area
                .draw(&Text::new(entry.as_str(), (x + 16, y), entry_style.clone()))
                .map_err(draw_error)?;
        }
    }
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

/// One row of an [`image_rows`] figure: the label drawn at its left, its grey images one after another
/// (values in [0, 1]), and either no captions or one per image.
pub struct ImageRow {
    pub label: String,
    pub images: Vec<f32>,
    pub captions: Vec<String>,
}

/// Draws `title` above one row per entry of `rows`: the row's label, then its `size` (height × width) grey
/// images scaled up as in [`cluster_samples`], each with its caption, if the row has captions, in small
/// text beneath it. Shows e.g. inputs above their reconstructions, clean, noisy and denoised images, or a
/// query above its nearest neighbours captioned by distance. Rows may hold different numbers of images;
/// the figure is as wide as the longest row.
pub fn image_rows(rows: &[ImageRow], size: (usize, usize), title: &str, path: &Path) -> anyhow::Result<()> {
    register_font();
    let what = format!("image rows {}", path.display());
    let (h, w) = size;
    if h == 0 || w == 0 {
        return Err(anyhow!("{what}: the image size {h}×{w} is empty"));
    }
    if rows.is_empty() {
        return Err(anyhow!("{what}: there are no rows to draw"));
    }
    let pixels = h * w;
    for (r, row) in rows.iter().enumerate() {
        let label = &row.label;
        if row.images.len() % pixels != 0 {
            return Err(anyhow!(
                "{what}: row {r} ({label:?}) has {} values, not a whole number of {h}×{w} images",
                row.images.len()
            ));
        }
        let count = row.images.len() / pixels;
        if !row.captions.is_empty() && row.captions.len() != count {
            return Err(anyhow!(
                "{what}: row {r} ({label:?}) has {} captions for {count} images",
                row.captions.len()
            ));
        }
    }

    let label_style = TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Right, VPos::Center));
    // The labels' column fits the widest label (estimated from its length if the font cannot say).
    let label_width = |label: &str| {
        label_style.font.box_size(label).map(|(w, _)| w as i32).unwrap_or(8 * label.chars().count() as i32)
    };
    let left = rows.iter().map(|row| label_width(&row.label)).max().unwrap_or(0).max(40) + 20;
    let (image_w, image_h) = (w as i32 * SCALE, h as i32 * SCALE);
    let cell_w = image_w + GAP;
    let caption_h = 16i32;
    let row_h = |row: &ImageRow| image_h + GAP + if row.captions.is_empty() { 0 } else { caption_h };
    let longest = rows.iter().map(|row| row.images.len() / pixels).max().unwrap_or(0) as i32;
    let top = 40i32;
    let width = (left + cell_w * longest + 10).max(360) as u32;
    let height = (top + rows.iter().map(row_h).sum::<i32>() + 10) as u32;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    let draw_error = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(draw_error)?;

    let centred = |size: u32| TextStyle::from((FONT, size)).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(title, (width as i32 / 2, 18), centred(16))).map_err(draw_error)?;
    let mut y = top;
    for row in rows {
        let image_top = y + GAP / 2;
        root.draw(&Text::new(row.label.as_str(), (left - 10, image_top + image_h / 2), label_style.clone()))
            .map_err(draw_error)?;
        for (j, image) in row.images.chunks(pixels).enumerate() {
            let x = left + cell_w * j as i32;
            draw_grey(&root, image, size, (x, image_top), SCALE).map_err(draw_error)?;
            if let Some(caption) = row.captions.get(j) {
                let at = (x + image_w / 2, image_top + image_h + caption_h / 2 + 1);
                root.draw(&Text::new(caption.as_str(), at, centred(11))).map_err(draw_error)?;
            }
        }
        y += row_h(row);
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

    /// `n` points in three blobs, the blob of point `i` being `i % 3`, with a little deterministic spread.
    fn blobs(n: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|i| {
                let (b, t) = ((i % 3) as f32, i as f32 * 0.37);
                [4.0 * b + 0.5 * t.sin(), -2.0 * b + 0.5 * (1.3 * t).cos()]
            })
            .collect()
    }

    fn distinct_colours(png: &image::DynamicImage) -> usize {
        png.to_rgb8().pixels().map(|p| p.0).collect::<std::collections::HashSet<_>>().len()
    }

    #[test]
    fn a_latent_scatter_png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let n = 300;
        let points = blobs(n);
        let clusters: Vec<usize> = (0..n).map(|i| (i + i / 50) % 3).collect();
        let labels: Vec<i64> = (0..n).map(|i| (i % 3) as i64).collect();
        // Label 2 has no name: its number stands in.
        let names = vec!["zero".to_string(), "one".to_string()];
        let both = dir.path().join("scatter.png");
        latent_scatter(&points, &clusters, Some(&labels), &names, "latent codes", &both).unwrap();
        let png = image::open(&both).expect("a readable PNG");
        assert!(dark_and_bright(&png));
        assert!(distinct_colours(&png) > 2, "{}", distinct_colours(&png));

        let one = dir.path().join("scatter_clusters.png");
        latent_scatter(&points, &clusters, None, &[], "latent codes", &one).unwrap();
        let single = image::open(&one).expect("a readable PNG");
        assert!(dark_and_bright(&single));
        assert!(distinct_colours(&single) > 2);
        // The label panel sits to the right of the cluster panel.
        assert!(png.width() > single.width() + 400, "{} vs {}", png.width(), single.width());
        assert_eq!(png.height(), single.height());
    }

    #[test]
    fn a_large_latent_scatter_is_subsampled() {
        let positions = evenly_spaced(12_345, MAX_SCATTER_POINTS);
        assert_eq!(positions.len(), MAX_SCATTER_POINTS);
        assert_eq!(positions[0], 0);
        assert!(positions.windows(2).all(|p| p[0] < p[1]));
        assert!(*positions.last().unwrap() >= 12_345 - 3);
        assert_eq!(evenly_spaced(7, MAX_SCATTER_POINTS), (0..7).collect::<Vec<_>>());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large.png");
        let n = 6000;
        let mut points = blobs(n);
        points[10] = f32::NAN;
        points[21] = f32::INFINITY;
        let clusters: Vec<usize> = (0..n).map(|i| i % 12).collect();
        latent_scatter(&points, &clusters, None, &[], "many", &path).unwrap();
        let png = image::open(&path).expect("a readable PNG");
        assert!(dark_and_bright(&png));
        assert!(distinct_colours(&png) > 2);
    }

    #[test]
    fn a_latent_scatter_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad_scatter.png");
        let points = blobs(4);
        let e = latent_scatter(&points[1..], &[0, 1, 0, 1], None, &[], "t", &path).unwrap_err().to_string();
        assert!(e.contains("bad_scatter.png") && e.contains("7 coordinates"), "{e}");
        let e = latent_scatter(&points, &[0, 1, 0, 1], Some(&[0, 1, 2]), &[], "t", &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad_scatter.png") && e.contains("3 labels for 4 points"), "{e}");
        let e = latent_scatter(&[f32::NAN, 0.0, 1.0, f32::INFINITY], &[0, 1], None, &[], "t", &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad_scatter.png") && e.contains("finite"), "{e}");
        assert!(!path.exists());
    }

    #[test]
    fn an_image_rows_png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let clusters: Vec<usize> = (0..5).collect();
        let images = squares(&clusters);
        let blurred: Vec<f32> = images.iter().map(|v| 0.2 + 0.6 * v).collect();
        let row = |label: &str, images: Vec<f32>, captions: Vec<String>| ImageRow {
            label: label.to_string(),
            images,
            captions,
        };
        let path = dir.path().join("reconstructions.png");
        let rows = [row("input", images.clone(), vec![]), row("reconstruction", blurred, vec![])];
        image_rows(&rows, (28, 28), "reconstructions", &path).unwrap();
        let png = image::open(&path).expect("a readable PNG");
        assert!(png.width() >= 5 * 28 * 3 && png.width() < 800, "{}", png.width());
        assert!(png.height() >= 2 * 28 * 3 && png.height() < 400, "{}", png.height());
        assert!(dark_and_bright(&png));

        // A query and its ten nearest neighbours, captioned by distance: the longest row sets the width.
        let path = dir.path().join("retrieval.png");
        let neighbours: Vec<usize> = (0..10).collect();
        let captions = (0..10).map(|i| format!("d={:.2}", 0.5 + i as f64 * 0.25)).collect();
        let rows = [
            row("query", images[..28 * 28].to_vec(), vec!["label 0".to_string()]),
            row("nearest", squares(&neighbours), captions),
        ];
        image_rows(&rows, (28, 28), "retrieval", &path).unwrap();
        let png = image::open(&path).expect("a readable PNG");
        assert!(png.width() >= 10 * 28 * 3, "{}", png.width());
        assert!(png.height() >= 2 * 28 * 3 + 2 * 16, "{}", png.height());
        assert!(dark_and_bright(&png));
    }

    #[test]
    fn image_rows_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad_rows.png");
        let images = squares(&[0, 1]);
        let row = |images: &[f32], captions: Vec<String>| ImageRow {
            label: "denoised".to_string(),
            images: images.to_vec(),
            captions,
        };
        let e = image_rows(&[row(&images[1..], vec![])], (28, 28), "t", &path).unwrap_err().to_string();
        assert!(e.contains("bad_rows.png") && e.contains("not a whole number of 28×28 images"), "{e}");
        let e =
            image_rows(&[row(&images, vec![]), row(&images, vec!["a".to_string()])], (28, 28), "t", &path)
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("bad_rows.png") && e.contains("row 1") && e.contains("1 captions for 2 images"),
            "{e}"
        );
        assert!(image_rows(&[], (28, 28), "t", &path).is_err());
        assert!(image_rows(&[row(&images, vec![])], (0, 28), "t", &path).is_err());
        assert!(!path.exists());
    }
}
