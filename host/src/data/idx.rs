//! IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw.
//!
//! Layout: a big-endian header `0x00 0x00 <type> <ndims>` (type 0x08 = unsigned byte), then `ndims`
//! big-endian u32 dimensions, then the data. Images are 2051 (`…08 03`, N × rows × cols), labels 2049
//! (`…08 01`, N). Every check failure names the file and what is wrong with it.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};

use super::{Dataset, Split};

pub const DIGITS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
pub const FASHION: &[&str] = &[
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// An IDX array of bytes.
#[derive(Debug)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes, decompressing it first if it is gzip.
pub fn read(path: &Path) -> anyhow::Result<IdxArray> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1F, 0x8B]) {
        let mut out = Vec::with_capacity(raw.len() * 5);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt or truncated gzip stream", path.display()))?;
        out
    } else {
        raw
    };
    parse(&bytes).with_context(|| format!("{}: not a valid IDX file", path.display()))
}

fn parse(bytes: &[u8]) -> anyhow::Result<IdxArray> {
    ensure!(bytes.len() >= 4, "only {} bytes, shorter than an IDX header", bytes.len());
    ensure!(bytes[0] == 0 && bytes[1] == 0, "bad magic number {:02x}{:02x}…", bytes[0], bytes[1]);
    ensure!(bytes[2] == 0x08, "element type 0x{:02x}, expected 0x08 (unsigned byte)", bytes[2]);
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    ensure!(bytes.len() >= header, "header of {ndims} dimensions is cut short");
    let dims: Vec<usize> = (0..ndims)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize)
        .collect();
    let expected: usize = dims.iter().product();
    let found = bytes.len() - header;
    ensure!(
        found == expected,
        "{} data: header says {dims:?} = {expected} bytes, found {found}",
        if found < expected { "truncated" } else { "trailing" }
    );
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// `dir/stem` with `.gz`, or without it if only the raw file is there.
fn find(dir: &Path, stem: &str) -> anyhow::Result<PathBuf> {
    let gz = dir.join(format!("{stem}.gz"));
    let raw = dir.join(stem);
    if gz.is_file() {
        return Ok(gz);
    }
    if raw.is_file() {
        return Ok(raw);
    }
    bail!("{} not found (nor {}); pass --data DIR or set STDAC_DATA", gz.display(), raw.display())
}

/// Images and labels of one split file pair.
struct Part {
    /// Pixels scaled to [0, 1], image after image.
    pixels: Vec<f32>,
    labels: Vec<i64>,
    /// `(rows, cols)` of each image.
    size: (usize, usize),
}

/// The files of one split (`prefix` `train` or `t10k`).
fn load_part(dir: &Path, prefix: &str, classes: usize) -> anyhow::Result<Part> {
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read(&images_path)?;
    let labels = read(&labels_path)?;
    let &[n, rows, cols] = images.dims.as_slice() else {
        bail!(
            "{}: {} dimensions, expected 3 (images × rows × cols)",
            images_path.display(),
            images.dims.len()
        );
    };
    ensure!(
        labels.dims.len() == 1,
        "{}: {} dimensions, expected 1",
        labels_path.display(),
        labels.dims.len()
    );
    ensure!(
        labels.dims[0] == n,
        "{} holds {} labels but {} holds {n} images",
        labels_path.display(),
        labels.dims[0],
        images_path.display()
    );
    if let Some(i) = labels.data.iter().position(|&l| l as usize >= classes) {
        bail!(
            "{}: label {} at index {i} is not a class (0–{})",
            labels_path.display(),
            labels.data[i],
            classes - 1
        );
    }
    Ok(Part {
        pixels: images.data.iter().map(|&p| p as f32 / 255.0).collect(),
        labels: labels.data.iter().map(|&l| l as i64).collect(),
        size: (rows, cols),
    })
}

/// MNIST-layout dataset in `dir`.
pub fn load(dir: &Path, name: &str, split: Split, class_names: &[&str]) -> anyhow::Result<Dataset> {
    let parts: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["t10k"],
        Split::All => &["train", "t10k"],
    };
    let (mut features, mut labels, mut size) = (Vec::new(), Vec::new(), None);
    for prefix in parts {
        let part = load_part(dir, prefix, class_names.len())?;
        ensure!(size.is_none_or(|prev| prev == part.size), "{name}: train and test images differ in size");
        size = Some(part.size);
        features.extend(part.pixels);
        labels.extend(part.labels);
    }
    let (rows, cols) = size.expect("at least one part");
    Ok(Dataset {
        name: format!("{name}/{split}"),
        features,
        dim: rows * cols,
        image_size: Some((rows, cols)),
        labels: Some(labels),
        class_names: class_names.iter().map(|s| s.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(data);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn raw_and_gzip_files_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let raw = read(&write(dir.path(), "a", &bytes)).unwrap();
        let gz = read(&write(dir.path(), "a.gz", &gzip(&bytes))).unwrap();
        assert_eq!(raw.dims, vec![2, 2, 3]);
        assert_eq!(raw.data, gz.data);
    }

    #[test]
    fn a_truncated_file_names_itself_and_the_shortfall() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "cut", &idx(&[3, 2, 2], &[0; 10]));
        let error = format!("{:#}", read(&path).unwrap_err());
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("truncated data: header says [3, 2, 2] = 12 bytes, found 10"), "{error}");
    }

    #[test]
    fn a_cut_gzip_stream_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let gz = gzip(&idx(&[100], &[7; 100]));
        let path = write(dir.path(), "cut.gz", &gz[..gz.len() / 2]);
        let error = format!("{:#}", read(&path).unwrap_err());
        assert!(error.contains("cut.gz: corrupt or truncated gzip stream"), "{error}");
    }

    #[test]
    fn wrong_magic_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "png", b"\x89PNG\r\n\x1a\n");
        let error = format!("{:#}", read(&path).unwrap_err());
        assert!(error.contains("png: not a valid IDX file: bad magic number 89"), "{error}");
    }

    #[test]
    fn a_label_outside_the_classes_is_reported_with_its_index() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t10k-images-idx3-ubyte", &idx(&[3, 1, 1], &[0, 128, 255]));
        write(dir.path(), "t10k-labels-idx1-ubyte", &idx(&[3], &[1, 12, 3]));
        let error = format!("{:#}", load(dir.path(), "x", Split::Test, DIGITS).unwrap_err());
        assert!(
            error.contains("t10k-labels-idx1-ubyte: label 12 at index 1 is not a class (0–9)"),
            "{error}"
        );
    }

    #[test]
    fn images_and_labels_must_agree_in_count() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t10k-images-idx3-ubyte", &idx(&[3, 1, 1], &[0, 128, 255]));
        write(dir.path(), "t10k-labels-idx1-ubyte", &idx(&[2], &[1, 2]));
        let error = format!("{:#}", load(dir.path(), "x", Split::Test, DIGITS).unwrap_err());
        assert!(error.contains("holds 2 labels but") && error.contains("holds 3 images"), "{error}");
    }

    #[test]
    fn a_missing_file_says_where_it_looked_and_how_to_point_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let error = format!("{:#}", load(dir.path(), "x", Split::Train, DIGITS).unwrap_err());
        assert!(
            error.contains("train-images-idx3-ubyte.gz not found") && error.contains("STDAC_DATA"),
            "{error}"
        );
    }

    #[test]
    fn pixels_scale_to_the_unit_interval() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t10k-images-idx3-ubyte", &idx(&[1, 1, 3], &[0, 51, 255]));
        write(dir.path(), "t10k-labels-idx1-ubyte.gz", &gzip(&idx(&[1], &[4])));
        let d = load(dir.path(), "x", Split::Test, DIGITS).unwrap();
        assert_eq!(d.features, vec![0.0, 0.2, 1.0]);
        assert_eq!((d.dim, d.image_size, d.labels), (3, Some((1, 3)), Some(vec![4])));
    }
}
