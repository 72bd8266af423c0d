//! The model bundle: the single file `NAME.stdac` that is flashed onto a board.
//!
//! A bundle carries everything a board needs to run a trained model: a JSON manifest (what the model
//! expects as input, what it outputs, its centroids, its novelty threshold, how it was trained) and the
//! ONNX graph itself, sealed by a SHA-256 checksum.
//!
//! # File format, version 1
//!
//! All integers are little-endian.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"STDACMDL"
//! 8       2     format version (u16) = 1
//! 10      2     reserved (u16), 0
//! 12      4     manifest length M (u32)
//! 16      8     graph length G (u64)
//! 24      M     manifest: UTF-8 JSON (the `Manifest` struct)
//! 24+M    G     graph: the ONNX model (protobuf bytes), opaque to this module
//! 24+M+G  32    SHA-256 of every byte before it
//! ```
//!
//! Nothing may follow the checksum, so a file is exactly `24 + M + G + 32` bytes long and the smallest
//! possible one is 56 bytes.
//!
//! Rules a reader applies, in this order (each failure is one [`BundleError`] variant):
//!
//! 1. the file is at least 56 bytes ([`BundleError::TooShort`]);
//! 2. it starts with the magic ([`BundleError::BadMagic`]);
//! 3. the version is [`FORMAT_VERSION`] ([`BundleError::UnsupportedVersion`]);
//! 4. the reserved field is 0 ([`BundleError::Reserved`]);
//! 5. `24 + M + G + 32` equals the file length, computed without overflow
//!    ([`BundleError::Truncated`] if the file is shorter, [`BundleError::TrailingBytes`] if longer);
//! 6. the trailing SHA-256 matches ([`BundleError::ChecksumMismatch`]);
//! 7. the manifest is UTF-8 JSON that describes a usable model ([`BundleError::Manifest`]);
//! 8. the manifest's `graph_sha256` is the SHA-256 of the graph bytes ([`BundleError::GraphChecksum`]).
//!
//! Unknown manifest fields are ignored, so a newer writer may add optional fields without a format bump;
//! anything an older reader would misread needs a new format version.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first 8 bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"STDACMDL";
/// The format version this module writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes before the manifest: magic, version, reserved, manifest length, graph length.
pub const HEADER_LEN: usize = 24;
/// Bytes of the trailing SHA-256.
pub const CHECKSUM_LEN: usize = 32;
/// The smallest possible bundle: a header and a checksum around nothing.
pub const MIN_LEN: usize = HEADER_LEN + CHECKSUM_LEN;

/// Everything about a model except its graph: stored as JSON in the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The model's name, e.g. `"mnist-st-dac"`.
    pub name: String,
    /// `"st-dac"` or `"autoencoder"`.
    pub family: String,
    /// What the graph takes as input.
    pub input: InputSpec,
    /// The graph's output names, e.g. `["embedding", "theta"]`.
    pub outputs: Vec<String>,
    /// Length of one embedding.
    pub embedding_dim: usize,
    /// Number of clusters `k`.
    pub clusters: usize,
    /// `clusters` × `embedding_dim`, row-major.
    pub centroids: Vec<f32>,
    /// `"euclidean"` or `"cosine"`.
    pub metric: String,
    /// A name for each cluster; may be empty.
    #[serde(default)]
    pub class_names: Vec<String>,
    /// Distance to the nearest centroid above which a frame is "novel".
    #[serde(default)]
    pub novelty_threshold: Option<f32>,
    /// `"none"` or `"int8"`.
    pub quantization: String,
    /// The tract-onnx version the graph was made for.
    pub tract_version: String,
    /// Lowercase hex SHA-256 of the graph bytes; [`Bundle::new`] and [`Bundle::to_bytes`] fill it.
    pub graph_sha256: String,
    /// The training card: free-form (command line, data, scores).
    #[serde(default)]
    pub card: serde_json::Value,
}

/// The graph's input tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// The graph's input name.
    pub name: String,
    /// Dimensions; -1 means any size (the batch).
    pub shape: Vec<i64>,
    /// Element type, e.g. `"f32"`.
    pub dtype: String,
    /// The range input values are scaled to, `[low, high]`.
    pub range: [f32; 2],
}

/// A model bundle in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub manifest: Manifest,
    /// The ONNX model, opaque here.
    pub graph: Vec<u8>,
}

/// Why a bundle could not be read or written. Every message names where the bundle came from.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{origin}: {source}")]
    Io { origin: String, source: io::Error },
    #[error("{origin} is {len} bytes: a bundle has at least {MIN_LEN} (truncated?)")]
    TooShort { origin: String, len: usize },
    #[error("{origin} is not a stdac bundle (no STDACMDL magic)")]
    BadMagic { origin: String },
    #[error(
        "{origin} is bundle format version {found}, but this build reads only version {supported} \
         (rebuild the bundle with a matching stdac, or update the device runtime)"
    )]
    UnsupportedVersion { origin: String, found: u16, supported: u16 },
    #[error(
        "{origin} has {found:#06x} in its reserved header field, expected 0 \
         (written by a newer stdac, or corrupted)"
    )]
    Reserved { origin: String, found: u16 },
    #[error(
        "{origin} is {found} bytes, but its header's lengths add up to {expected} \
         (24 header + manifest + graph + 32 checksum): truncated or corrupted"
    )]
    Truncated { origin: String, expected: u128, found: u64 },
    #[error(
        "{origin} is {found} bytes, but its header's lengths end the bundle at {expected}: \
         nothing may follow the checksum"
    )]
    TrailingBytes { origin: String, expected: u64, found: u64 },
    #[error(
        "{origin} fails its checksum: the file records SHA-256 {expected}, its contents hash to {found} \
         (corrupted or partly written)"
    )]
    ChecksumMismatch { origin: String, expected: String, found: String },
    #[error("{origin} has a bad manifest: {detail}")]
    Manifest { origin: String, detail: String },
    #[error(
        "{origin}: the manifest's graph_sha256 is {expected}, but the graph bytes hash to {found} \
         (the graph was replaced without rebuilding the manifest)"
    )]
    GraphChecksum { origin: String, expected: String, found: String },
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

impl Manifest {
    /// Checks that the manifest describes a usable model. `origin` names the bundle in the error.
    /// Does not look at `graph_sha256`: that is checked against the graph by [`Bundle::from_bytes`].
    pub fn validate(&self, origin: &str) -> Result<(), BundleError> {
        let bad = |detail: String| Err(BundleError::Manifest { origin: origin.to_string(), detail });
        if self.clusters == 0 {
            return bad("field `clusters` is 0, expected at least 1".into());
        }
        if self.embedding_dim == 0 {
            return bad("field `embedding_dim` is 0, expected at least 1".into());
        }
        let expected = self.clusters.checked_mul(self.embedding_dim);
        if expected != Some(self.centroids.len()) {
            let expected = expected.map_or("more than fits in memory".to_string(), |n| n.to_string());
            return bad(format!(
                "field `centroids` has {} values, expected clusters × embedding_dim = {} × {} = {expected}",
                self.centroids.len(),
                self.clusters,
                self.embedding_dim
            ));
        }
        if let Some(i) = self.centroids.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "field `centroids` value {i} is {}, expected a finite number",
                self.centroids[i]
            ));
        }
        if !matches!(self.metric.as_str(), "euclidean" | "cosine") {
            return bad(format!("field `metric` is {:?}, expected \"euclidean\" or \"cosine\"", self.metric));
        }
        if !matches!(self.quantization.as_str(), "none" | "int8") {
            return bad(format!(
                "field `quantization` is {:?}, expected \"none\" or \"int8\"",
                self.quantization
            ));
        }
        if let Some(t) = self.novelty_threshold {
            if !(t.is_finite() && t >= 0.0) {
                return bad(format!("field `novelty_threshold` is {t}, expected a finite distance ≥ 0"));
            }
        }
        let [low, high] = self.input.range;
        if !(low.is_finite() && high.is_finite() && low < high) {
            return bad(format!("field `input.range` is [{low}, {high}], expected finite low < high"));
        }
        if let Some(d) = self.input.shape.iter().find(|&&d| d != -1 && d < 1) {
            return bad(format!("field `input.shape` has dimension {d}, expected -1 (any) or at least 1"));
        }
        Ok(())
    }
}

impl Bundle {
    /// Builds a bundle; fills `manifest.graph_sha256` from `graph`.
    pub fn new(mut manifest: Manifest, graph: Vec<u8>) -> Bundle {
        manifest.graph_sha256 = sha256_hex(&graph);
        Bundle { manifest, graph }
    }

    /// Serializes the bundle. The manifest is written with `graph_sha256` recomputed from `graph`, so
    /// the result always passes the graph check even if `graph` was changed after [`Bundle::new`].
    ///
    /// Panics if the manifest's JSON is 4 GiB or more (it has no room in the header).
    pub fn to_bytes(&self) -> Vec<u8> {
        let graph_sha256 = sha256_hex(&self.graph);
        let json = if self.manifest.graph_sha256 == graph_sha256 {
            serde_json::to_vec(&self.manifest)
        } else {
            serde_json::to_vec(&Manifest { graph_sha256, ..self.manifest.clone() })
        }
        .expect("a Manifest always serializes to JSON");
        let manifest_len = u32::try_from(json.len()).expect("bundle manifest JSON must be under 4 GiB");
        let graph_len = self.graph.len() as u64;

        let mut out = Vec::with_capacity(MIN_LEN + json.len() + self.graph.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&manifest_len.to_le_bytes());
        out.extend_from_slice(&graph_len.to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&self.graph);
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// Parses and checks everything (see the module docs for the order); `origin` names the source
    /// (a file path, "flash buffer") in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Bundle, BundleError> {
        let origin_s = || origin.to_string();
        if bytes.len() < MIN_LEN {
            return Err(BundleError::TooShort { origin: origin_s(), len: bytes.len() });
        }
        if bytes[0..8] != MAGIC {
            return Err(BundleError::BadMagic { origin: origin_s() });
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedVersion {
                origin: origin_s(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let reserved = u16::from_le_bytes([bytes[10], bytes[11]]);
        if reserved != 0 {
            return Err(BundleError::Reserved { origin: origin_s(), found: reserved });
        }
        let manifest_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        let graph_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));

        // In u128 the sum cannot overflow (at most 2^64 + 2^32 + 56), so a hostile header cannot wrap
        // around to the file's real length.
        let expected =
            HEADER_LEN as u128 + u128::from(manifest_len) + u128::from(graph_len) + CHECKSUM_LEN as u128;
        let found = bytes.len() as u64;
        if expected > u128::from(found) {
            return Err(BundleError::Truncated { origin: origin_s(), expected, found });
        }
        if expected < u128::from(found) {
            // expected < found ≤ u64::MAX, so it fits.
            return Err(BundleError::TrailingBytes { origin: origin_s(), expected: expected as u64, found });
        }
        // Both lengths are now bounded by bytes.len(), so they fit in usize and the slices are in range.
        let manifest_end = HEADER_LEN + manifest_len as usize;
        let checksum_start = bytes.len() - CHECKSUM_LEN;
        debug_assert_eq!(manifest_end as u64 + graph_len, checksum_start as u64);

        let (body, stored) = bytes.split_at(checksum_start);
        let computed = Sha256::digest(body);
        if computed.as_slice() != stored {
            return Err(BundleError::ChecksumMismatch {
                origin: origin_s(),
                expected: hex(stored),
                found: hex(&computed),
            });
        }

        let json = &bytes[HEADER_LEN..manifest_end];
        let text = std::str::from_utf8(json).map_err(|e| BundleError::Manifest {
            origin: origin_s(),
            detail: format!("not UTF-8 ({e}), expected UTF-8 JSON"),
        })?;
        let manifest: Manifest = serde_json::from_str(text).map_err(|e| BundleError::Manifest {
            origin: origin_s(),
            detail: format!("invalid JSON: {e}"),
        })?;
        manifest.validate(origin)?;

        let graph = &bytes[manifest_end..checksum_start];
        let graph_sha256 = sha256_hex(graph);
        if manifest.graph_sha256 != graph_sha256 {
            return Err(BundleError::GraphChecksum {
                origin: origin_s(),
                expected: manifest.graph_sha256,
                found: graph_sha256,
            });
        }
        Ok(Bundle { manifest, graph: graph.to_vec() })
    }

    /// Reads and checks the bundle at `path`; errors name the path.
    pub fn read(path: &Path) -> Result<Bundle, BundleError> {
        let origin = path.display().to_string();
        let bytes = fs::read(path).map_err(|source| BundleError::Io { origin: origin.clone(), source })?;
        Bundle::from_bytes(&bytes, &origin)
    }

    /// Writes the bundle to `path` atomically: to a sibling temporary file, fsynced, renamed over
    /// `path`, then the folder fsynced. A crash leaves either the old file or the new one, never half
    /// of one. Refuses (with [`BundleError::Manifest`]) a manifest that [`Bundle::read`] would reject.
    pub fn write_atomic(&self, path: &Path) -> Result<(), BundleError> {
        let origin = path.display().to_string();
        self.manifest.validate(&origin)?;
        let bytes = self.to_bytes();

        let file_name = path.file_name().ok_or_else(|| BundleError::Io {
            origin: origin.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };

        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (tmp_path, mut file) = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut name = std::ffi::OsString::from(".");
            name.push(file_name);
            name.push(format!(".tmp-{}-{n}", std::process::id()));
            let tmp_path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&tmp_path) {
                Ok(file) => break (tmp_path, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(BundleError::Io { origin: tmp_path.display().to_string(), source })
                }
            }
        };

        let written = file.write_all(&bytes).and_then(|()| file.sync_all());
        drop(file);
        let renamed = written.and_then(|()| fs::rename(&tmp_path, path));
        if let Err(source) = renamed {
            let _ = fs::remove_file(&tmp_path);
            return Err(BundleError::Io { origin: tmp_path.display().to_string(), source });
        }
        sync_dir(dir).map_err(|source| BundleError::Io { origin: dir.display().to_string(), source })
    }

    /// SHA-256 of the whole serialized bundle (checksum included), lowercase hex: what a board reports
    /// for its active model, and what `sha256sum NAME.stdac` prints.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.to_bytes())
    }
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "flash buffer";

    fn manifest(clusters: usize, dim: usize) -> Manifest {
        Manifest {
            name: "mnist-st-dac".into(),
            family: "st-dac".into(),
            input: InputSpec {
                name: "pixels".into(),
                shape: vec![-1, 1, 28, 28],
                dtype: "f32".into(),
                range: [0.0, 1.0],
            },
            outputs: vec!["embedding".into(), "theta".into()],
            embedding_dim: dim,
            clusters,
            centroids: (0..clusters * dim).map(|i| i as f32 * 0.25 - 1.0).collect(),
            metric: "euclidean".into(),
            class_names: (0..clusters).map(|i| format!("digit {i}")).collect(),
            novelty_threshold: Some(2.5),
            quantization: "none".into(),
            tract_version: "0.21.13".into(),
            graph_sha256: String::new(),
            card: serde_json::json!({ "command": "stdac train --data mnist", "scores": { "acc": 0.97 } }),
        }
    }

    fn small() -> Bundle {
        Bundle::new(manifest(2, 2), b"\x08\x07fake onnx graph".to_vec())
    }

    /// Lays out a bundle from raw parts with a correct trailing checksum.
    fn assemble(version: u16, reserved: u16, json: &[u8], graph: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&reserved.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&(graph.len() as u64).to_le_bytes());
        out.extend_from_slice(json);
        out.extend_from_slice(graph);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    fn reseal(bytes: &mut [u8]) {
        let n = bytes.len() - CHECKSUM_LEN;
        let sum = Sha256::digest(&bytes[..n]);
        bytes[n..].copy_from_slice(&sum);
    }

    fn err(bytes: &[u8]) -> BundleError {
        let e = Bundle::from_bytes(bytes, ORIGIN).expect_err("should be rejected");
        assert!(e.to_string().contains(ORIGIN), "message does not name the origin: {e}");
        e
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn new_fills_graph_sha256() {
        let b = small();
        assert_eq!(b.manifest.graph_sha256, sha256_hex(&b.graph));
    }

    #[test]
    fn round_trip_bytes() {
        for b in
            [small(), Bundle::new(manifest(10, 64), vec![0xAB; 100_000]), Bundle::new(manifest(1, 1), vec![])]
        {
            let bytes = b.to_bytes();
            assert_eq!(Bundle::from_bytes(&bytes, ORIGIN).unwrap(), b);
            assert_eq!(b.sha256(), sha256_hex(&bytes));
        }
    }

    #[test]
    fn layout_matches_spec() {
        let b = small();
        let bytes = b.to_bytes();
        assert_eq!(&bytes[0..8], b"STDACMDL");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1);
        assert_eq!(&bytes[10..12], &[0, 0]);
        let m = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        let g = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        assert_eq!(g, b.graph.len());
        assert_eq!(bytes.len(), 24 + m + g + 32);
        let parsed: Manifest = serde_json::from_slice(&bytes[24..24 + m]).unwrap();
        assert_eq!(parsed, b.manifest);
        assert_eq!(&bytes[24 + m..24 + m + g], &b.graph[..]);
        assert_eq!(&bytes[24 + m + g..], Sha256::digest(&bytes[..24 + m + g]).as_slice());
    }

    #[test]
    fn to_bytes_refreshes_a_stale_graph_sha256() {
        let mut b = small();
        b.graph.push(0x42);
        let back = Bundle::from_bytes(&b.to_bytes(), ORIGIN).unwrap();
        assert_eq!(back.graph, b.graph);
        assert_eq!(back.manifest.graph_sha256, sha256_hex(&b.graph));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = small().to_bytes();
        for len in 0..bytes.len() {
            match err(&bytes[..len]) {
                BundleError::TooShort { len: l, .. } => assert!(len < MIN_LEN && l == len),
                BundleError::Truncated { expected, found, .. } => {
                    assert!(len >= MIN_LEN);
                    assert_eq!((expected, found), (bytes.len() as u128, len as u64));
                }
                e => panic!("truncation to {len} gave {e}"),
            }
        }
    }

    #[test]
    fn every_single_byte_flip_is_an_error() {
        let bytes = small().to_bytes();
        for pos in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[pos] ^= mask;
                let e = err(&bad);
                if pos >= HEADER_LEN {
                    assert!(matches!(e, BundleError::ChecksumMismatch { .. }), "flip at {pos}: {e}");
                }
            }
        }
    }

    #[test]
    fn too_short() {
        let e = err(&[0u8; 10]);
        assert!(matches!(e, BundleError::TooShort { len: 10, .. }));
        assert_eq!(e.to_string(), "flash buffer is 10 bytes: a bundle has at least 56 (truncated?)");
    }

    #[test]
    fn bad_magic() {
        let mut bytes = small().to_bytes();
        bytes[0] = b'X';
        reseal(&mut bytes);
        let e = err(&bytes);
        assert!(matches!(e, BundleError::BadMagic { .. }));
        assert!(e.to_string().contains("not a stdac bundle"));
        assert!(matches!(err(&[0x7f; 200]), BundleError::BadMagic { .. }));
    }

    #[test]
    fn unsupported_version() {
        let m = serde_json::to_vec(&small().manifest).unwrap();
        let e = err(&assemble(2, 0, &m, &small().graph));
        assert!(matches!(e, BundleError::UnsupportedVersion { found: 2, supported: 1, .. }), "{e}");
        assert!(e.to_string().contains("version 2"));
    }

    #[test]
    fn reserved_must_be_zero() {
        let m = serde_json::to_vec(&small().manifest).unwrap();
        let e = err(&assemble(1, 7, &m, &small().graph));
        assert!(matches!(e, BundleError::Reserved { found: 7, .. }), "{e}");
    }

    #[test]
    fn header_lengths_disagree() {
        let bytes = small().to_bytes();
        // Graph length one too big.
        let mut bad = bytes.clone();
        let g = u64::from_le_bytes(bad[16..24].try_into().unwrap());
        bad[16..24].copy_from_slice(&(g + 1).to_le_bytes());
        let e = err(&bad);
        assert!(matches!(e, BundleError::Truncated { expected, found, .. }
            if expected == bytes.len() as u128 + 1 && found == bytes.len() as u64));
        let msg = e.to_string();
        assert!(
            msg.contains(&bytes.len().to_string()) && msg.contains(&(bytes.len() + 1).to_string()),
            "{msg}"
        );

        // Trailing bytes after a good bundle.
        let mut long = bytes.clone();
        long.push(0);
        let e = err(&long);
        assert!(matches!(e, BundleError::TrailingBytes { expected, found, .. }
            if expected == bytes.len() as u64 && found == long.len() as u64));
    }

    #[test]
    fn hostile_lengths_do_not_overflow() {
        let bytes = small().to_bytes();
        let len = bytes.len() as u64;
        let cases: [(u32, u64); 5] = [
            (u32::MAX, u64::MAX),
            (0, u64::MAX),
            (u32::MAX, 0),
            // These two add up to exactly the file length in wrapping u64 arithmetic.
            (1 << 31, len.wrapping_sub(MIN_LEN as u64 + (1 << 31))),
            (u32::MAX, len.wrapping_sub(MIN_LEN as u64 + u64::from(u32::MAX))),
        ];
        for (m, g) in cases {
            let mut bad = bytes.clone();
            bad[12..16].copy_from_slice(&m.to_le_bytes());
            bad[16..24].copy_from_slice(&g.to_le_bytes());
            reseal(&mut bad);
            let e = err(&bad);
            assert!(
                matches!(e, BundleError::Truncated { .. } | BundleError::TrailingBytes { .. }),
                "M={m} G={g}: {e}"
            );
        }
    }

    #[test]
    fn checksum_mismatch() {
        let mut bytes = small().to_bytes();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        let e = err(&bytes);
        let BundleError::ChecksumMismatch { expected, found, .. } = &e else { panic!("{e}") };
        assert_eq!((expected.len(), found.len()), (64, 64));
        assert_ne!(expected, found);
        assert!(e.to_string().contains(expected.as_str()) && e.to_string().contains(found.as_str()));
    }

    #[test]
    fn manifest_not_json() {
        let e = err(&assemble(1, 0, b"{ not json", b"graph"));
        assert!(matches!(e, BundleError::Manifest { .. }), "{e}");
        assert!(e.to_string().contains("invalid JSON"));
        let e = err(&assemble(1, 0, b"\xff\xfe", b"graph"));
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn manifest_missing_field_is_named() {
        let mut v = serde_json::to_value(small().manifest).unwrap();
        v.as_object_mut().unwrap().remove("metric");
        let e = err(&assemble(1, 0, &serde_json::to_vec(&v).unwrap(), &small().graph));
        assert!(matches!(e, BundleError::Manifest { .. }) && e.to_string().contains("metric"), "{e}");
    }

    /// A manifest that fails one field check, sealed with correct checksums.
    fn with_manifest(edit: impl FnOnce(&mut Manifest)) -> BundleError {
        let mut b = small();
        edit(&mut b.manifest);
        let json = serde_json::to_vec(&b.manifest).unwrap();
        err(&assemble(1, 0, &json, &b.graph))
    }

    #[test]
    fn manifest_field_checks_name_the_field() {
        type Edit = Box<dyn FnOnce(&mut Manifest)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("centroids", Box::new(|m| m.centroids.push(0.0))),
            ("centroids", Box::new(|m| m.centroids.clear())),
            ("clusters", Box::new(|m| m.clusters = 0)),
            ("embedding_dim", Box::new(|m| m.embedding_dim = 0)),
            ("centroids", Box::new(|m| m.clusters = usize::MAX)),
            ("metric", Box::new(|m| m.metric = "manhattan".into())),
            ("quantization", Box::new(|m| m.quantization = "int4".into())),
            ("novelty_threshold", Box::new(|m| m.novelty_threshold = Some(-1.0))),
            ("input.range", Box::new(|m| m.input.range = [1.0, 0.0])),
            ("input.shape", Box::new(|m| m.input.shape = vec![-1, 0, 28, 28])),
        ];
        for (field, edit) in cases {
            let e = with_manifest(edit);
            assert!(matches!(e, BundleError::Manifest { .. }), "{field}: {e}");
            assert!(e.to_string().contains(&format!("`{field}`")), "{field}: {e}");
        }
        let e = with_manifest(|m| m.centroids.push(0.0));
        assert!(e.to_string().contains("has 5 values, expected clusters × embedding_dim = 2 × 2 = 4"), "{e}");
    }

    #[test]
    fn infinite_centroid_from_json_is_rejected() {
        let json = String::from_utf8(serde_json::to_vec(&small().manifest).unwrap()).unwrap();
        let json = json.replacen("\"centroids\":[-1.0", "\"centroids\":[1e300", 1);
        let e = err(&assemble(1, 0, json.as_bytes(), &small().graph));
        assert!(e.to_string().contains("`centroids`"), "{e}");
    }

    #[test]
    fn graph_checksum() {
        let b = small();
        let json = serde_json::to_vec(&b.manifest).unwrap();
        let e = err(&assemble(1, 0, &json, b"another graph"));
        let BundleError::GraphChecksum { expected, found, .. } = &e else { panic!("{e}") };
        assert_eq!(expected, &b.manifest.graph_sha256);
        assert_eq!(found, &sha256_hex(b"another graph"));
    }

    #[test]
    fn optional_fields_may_be_missing_and_unknown_fields_are_ignored() {
        let b = small();
        let mut v = serde_json::to_value(&b.manifest).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("class_names");
        o.remove("novelty_threshold");
        o.remove("card");
        o.insert("from_the_future".into(), serde_json::json!(1));
        let back =
            Bundle::from_bytes(&assemble(1, 0, &serde_json::to_vec(&v).unwrap(), &b.graph), ORIGIN).unwrap();
        assert!(back.manifest.class_names.is_empty());
        assert_eq!(back.manifest.novelty_threshold, None);
        assert_eq!(back.manifest.card, serde_json::Value::Null);
    }

    use crate::manifest_support::dir_entries;

    #[test]
    fn write_atomic_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnist.stdac");
        let b = Bundle::new(manifest(10, 16), vec![7; 5000]);
        b.write_atomic(&path).unwrap();
        assert_eq!(Bundle::read(&path).unwrap(), b);
        assert_eq!(fs::read(&path).unwrap(), b.to_bytes());
        assert_eq!(dir_entries(dir.path()), ["mnist.stdac"]);
    }

    #[test]
    fn write_atomic_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.stdac");
        fs::write(&path, vec![0xEE; 1_000_000]).unwrap();
        let first = small();
        first.write_atomic(&path).unwrap();
        assert_eq!(Bundle::read(&path).unwrap(), first);
        let second = Bundle::new(manifest(3, 4), b"second graph".to_vec());
        second.write_atomic(&path).unwrap();
        assert_eq!(Bundle::read(&path).unwrap(), second);
        assert_eq!(fs::metadata(&path).unwrap().len(), second.to_bytes().len() as u64);
        assert_eq!(dir_entries(dir.path()), ["model.stdac"]);
    }

    #[test]
    fn write_atomic_refuses_a_bad_manifest_and_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.stdac");
        small().write_atomic(&path).unwrap();
        let mut bad = small();
        bad.manifest.metric = "hamming".into();
        let e = bad.write_atomic(&path).unwrap_err();
        assert!(matches!(e, BundleError::Manifest { .. }) && e.to_string().contains("model.stdac"), "{e}");
        assert_eq!(Bundle::read(&path).unwrap(), small());
        assert_eq!(dir_entries(dir.path()), ["model.stdac"]);
    }

    #[test]
    fn write_atomic_into_a_missing_folder_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = small().write_atomic(&dir.path().join("nope/model.stdac")).unwrap_err();
        assert!(matches!(e, BundleError::Io { .. }), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn read_missing_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.stdac");
        let e = Bundle::read(&path).unwrap_err();
        assert!(matches!(e, BundleError::Io { .. }));
        assert!(e.to_string().contains("missing.stdac"), "{e}");
    }

    #[test]
    fn read_names_the_path_in_format_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.stdac");
        fs::write(&path, b"0123456789").unwrap();
        let e = Bundle::read(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{} is 10 bytes: a bundle has at least 56 (truncated?)", path.display())
        );
    }
}
