//! A folder of pictures (PNG or JPEG, any size, colour or grey), e.g. captures from a board's camera,
//! turned into model inputs by the same preprocessing the device applies (`stdac_device::preprocess`).
//!
//! Pictures directly in the folder are unlabelled. If instead the folder holds subfolders, each subfolder
//! is a class named after it (sorted by name), so a labelled set of captures can be scored too.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use stdac_device::preprocess::letterbox_grey;

use super::Dataset;

fn is_picture(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
}

/// Entries of `dir`, sorted by name.
fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read image folder {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot list image folder {}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

/// Decodes one picture into `size` × `size` grey values in [0, 1].
pub fn load_picture(path: &Path, size: usize) -> anyhow::Result<Vec<f32>> {
    let picture = image::open(path).with_context(|| format!("{}: cannot decode image", path.display()))?;
    let grey = picture.to_luma8();
    let (width, height) = grey.dimensions();
    if width == 0 || height == 0 {
        bail!("{}: empty image", path.display());
    }
    Ok(letterbox_grey(grey.as_raw(), width as usize, height as usize, size))
}

/// Pictures in order, each with its class when the folder has class subfolders.
pub type Pictures = Vec<(PathBuf, Option<i64>)>;

/// The pictures of an image folder and the class names (none for an unlabelled folder).
pub fn list_pictures(dir: &Path) -> anyhow::Result<(Pictures, Vec<String>)> {
    let entries = sorted_entries(dir)?;
    let classes: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    let mut samples: Pictures = Vec::new();
    if classes.is_empty() {
        samples.extend(entries.iter().filter(|p| is_picture(p)).map(|p| (p.clone(), None)));
    } else {
        for (label, class_dir) in classes.iter().enumerate() {
            let pictures = sorted_entries(class_dir)?.into_iter().filter(|p| is_picture(p));
            samples.extend(pictures.map(|p| (p, Some(label as i64))));
        }
    }
    if samples.is_empty() {
        bail!("image folder {} holds no .png, .jpg or .jpeg pictures", dir.display());
    }
    let class_names = classes
        .iter()
        .map(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    Ok((samples, class_names))
}

pub fn load_folder(dir: &Path, size: usize) -> anyhow::Result<Dataset> {
    let (samples, class_names) = list_pictures(dir)?;
    let mut features = Vec::with_capacity(samples.len() * size * size);
    for (path, _) in &samples {
        features.extend(load_picture(path, size)?);
    }
    let labelled = !class_names.is_empty();
    Ok(Dataset {
        name: dir.display().to_string(),
        features,
        dim: size * size,
        image_size: Some((size, size)),
        labels: labelled.then(|| samples.iter().map(|(_, l)| l.expect("labelled")).collect()),
        class_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(path: &Path, width: u32, height: u32, rgb: [u8; 3]) {
        image::RgbImage::from_pixel(width, height, image::Rgb(rgb)).save(path).unwrap();
    }

    #[test]
    fn unlabelled_pictures_of_any_size_and_colour_become_28x28_grey() {
        let dir = tempfile::tempdir().unwrap();
        save(&dir.path().join("b.png"), 640, 480, [255, 255, 255]);
        save(&dir.path().join("a.jpg"), 31, 90, [0, 0, 0]);
        std::fs::write(dir.path().join("notes.txt"), "not a picture").unwrap();
        let d = load_folder(dir.path(), 28).unwrap();
        assert_eq!((d.len(), d.dim, d.image_size), (2, 784, Some((28, 28))));
        assert!(d.labels.is_none());
        assert!(d.row(0).iter().all(|&v| v < 0.02), "a.jpg (sorted first) is black");
        assert!(d.row(1).iter().all(|&v| v > 0.99), "b.png is white");
    }

    #[test]
    fn subfolders_are_classes() {
        let dir = tempfile::tempdir().unwrap();
        for (class, shade) in [("cats", 10u8), ("dogs", 200)] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            for i in 0..3 {
                save(&dir.path().join(class).join(format!("{i}.png")), 40, 40, [shade; 3]);
            }
        }
        let d = load_folder(dir.path(), 28).unwrap();
        assert_eq!(d.class_names, ["cats", "dogs"]);
        assert_eq!(d.labels.unwrap(), [0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn a_corrupt_picture_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("broken.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not the rest of a png").unwrap();
        let error = format!("{:#}", load_folder(dir.path(), 28).unwrap_err());
        assert!(error.starts_with(&format!("{}: cannot decode image", bad.display())), "{error}");
    }

    #[test]
    fn an_empty_folder_says_what_it_expected() {
        let dir = tempfile::tempdir().unwrap();
        let error = load_folder(dir.path(), 28).unwrap_err().to_string();
        assert!(error.contains("holds no .png, .jpg or .jpeg pictures"), "{error}");
    }
}
