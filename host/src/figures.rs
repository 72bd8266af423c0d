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
}
