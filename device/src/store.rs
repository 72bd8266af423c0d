//! The board's model store: the directory given as `--store DIR` that holds the model in use, the one
//! before it, and a flash in progress. Switching models is crash-safe: whatever instant power is cut,
//! [`ModelStore::open`] finds a model that verifies if one was there before.
//!
//! # Layout
//!
//! ```text
//! DIR/active.stdac        the model in use (a bundle, see crate::bundle)
//! DIR/previous.stdac      the model it replaced, kept for `rollback`
//! DIR/incoming.part       the bundle being flashed: the bytes written so far, always a prefix
//! DIR/incoming.json       what incoming.part is to become: {"size": N, "sha256": "<hex>"}
//! DIR/incoming.json.tmp   incoming.json while `begin` writes it
//! DIR/rollback.stdac      the model a `rollback` is moving from active to previous
//! ```
//!
//! The last two exist only while an operation is under way; `open` removes or settles them. Nothing
//! else in the directory is touched. One store per directory: two processes sharing one are not guarded
//! against.
//!
//! # Flashing
//!
//! [`begin`](ModelStore::begin) → [`write_chunk`](ModelStore::write_chunk)… → [`commit`](ModelStore::commit).
//! Chunks may come in any order and may be sent again (a resent chunk rewrites the same bytes), but none
//! may start past the bytes written so far: the written part of `incoming.part` is always a prefix, so its
//! length is the [resume offset](ModelStore::resume_offset), in memory and after a restart alike.
//!
//! Chunks are not fsynced. A flash is hundreds of 1 KiB chunks, and an fsync each would slow flashing to
//! SD or eMMC storage many times over. A process crash loses nothing (the kernel keeps the bytes); a
//! power cut may lose the file's tail, which resume sends again, or leave its length covering bytes that
//! never reached the disk, which commit catches: it hashes every byte against `begin`'s SHA-256 before
//! anything is switched, refuses and discards the flash, and the host flashes again from 0. So one fsync
//! at commit, before the file gets its new name, is enough.
//!
//! # Commit
//!
//! 1. Verify, all in memory: the written size, the SHA-256 announced by `begin`, the bundle's own checks
//!    ([`Bundle::from_bytes`]), and that the engine loads it ([`Engine::load`]). A refusal leaves the
//!    active model untouched. An incomplete flash is kept, to be finished; one that fails its checksum,
//!    parse or load is discarded, since sending the same bytes again cannot fix it.
//! 2. fsync `incoming.part`.
//! 3. Rename `active.stdac` → `previous.stdac` (replacing the older one), fsync the directory. Skipped
//!    when the store has no active model that verifies.
//! 4. Rename `incoming.part` → `active.stdac`, fsync the directory. The flash is done here.
//! 5. Remove `incoming.json`.
//!
//! Each rename is atomic and made durable before the next starts, so a crash leaves one of these states:
//!
//! ```text
//! crash after      on disk                                         open leaves
//! step 1 or 2      active=A previous=P part=B json                 A active, P previous, B resumable
//!                                                                  at its full size: commit again
//! step 3           previous=A part=B json (no active)              A active (renamed back), no previous,
//!                                                                  B resumable at its full size
//! step 4           active=B previous=A json                        B active, A previous, json removed
//! ```
//!
//! Only after step 3 is `active.stdac` missing, and then `previous.stdac` is the model that was active,
//! verified then and untouched since. Going back to it undoes a commit the host was never told of (the
//! reply comes after step 4): the host's next hello reports the old model, and committing again finishes
//! the switch without resending a byte.
//!
//! # Rollback
//!
//! 1. Verify `previous.stdac` and load its engine; refuse if it is missing or either fails.
//! 2. Rename `active.stdac` → `rollback.stdac`, fsync the directory. Skipped, and step 4 with it, when
//!    the store has no active model that verifies.
//! 3. Rename `previous.stdac` → `active.stdac`, fsync the directory. The rollback is done here.
//! 4. Rename `rollback.stdac` → `previous.stdac`, fsync the directory.
//!
//! A crash after step 2 leaves no `active.stdac`: open finishes the rollback (previous → active, then
//! rollback → previous). After step 3 it leaves `rollback.stdac` with no `previous.stdac`: open finishes
//! step 4.
//!
//! # Open
//!
//! In this order:
//!
//! 1. Remove `incoming.json.tmp` (a `begin` cut short; its flash never started).
//! 2. If `active.stdac` is missing or fails its bundle checks, rename over it the first of
//!    `previous.stdac` and `rollback.stdac` that passes them. With none, the board has no model.
//! 3. If `rollback.stdac` is still there, rename it to `previous.stdac` when that is missing (a rollback
//!    cut short), else remove it.
//! 4. Keep the flash in progress if `incoming.part` and `incoming.json` are both there, the record reads,
//!    and the part is no longer than announced; otherwise remove both: the host starts that flash again.
//!
//! What open did is kept in [`ModelStore::repairs`], for the board's log.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stdac_protocol::{ErrorCode, ModelInfo, MAX_MODEL_ID};

use crate::bundle::{hex, sync_dir, Bundle, BundleError, MIN_LEN};
use crate::engine::{Engine, EngineError};

/// The model in use.
pub const ACTIVE: &str = "active.stdac";
/// The model the active one replaced.
pub const PREVIOUS: &str = "previous.stdac";
/// The bundle being flashed.
pub const INCOMING: &str = "incoming.part";
/// The size and SHA-256 `incoming.part` is to reach, so a flash resumes after a restart.
pub const INCOMING_RECORD: &str = "incoming.json";
/// `incoming.json` while it is written.
const INCOMING_RECORD_TMP: &str = "incoming.json.tmp";
/// The model a rollback moves from active to previous.
const ROLLBACK: &str = "rollback.stdac";

/// The largest bundle the store accepts: far above any model a board runs, low enough that a wrong size
/// in `FlashBegin` cannot ask for the whole disk (and the commit reads the bundle into memory).
pub const MAX_BUNDLE_SIZE: u64 = 256 << 20;

/// Why the store refused. Every message names the file, field or offset at fault; [`StoreError::code`]
/// gives the protocol's answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("FlashBegin field `size` is {size} bytes: a bundle has at least {MIN_LEN}")]
    TooSmall { size: u64 },
    #[error("FlashBegin field `size` is {size} bytes, above the store's limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("no flash in progress: FlashBegin first")]
    NotStarted,
    #[error(
        "{path}: a chunk at offset {offset} would leave a gap: {written} bytes are written, \
         so the next chunk starts at offset {written} or before"
    )]
    Gap { path: String, offset: u64, written: u64 },
    #[error(
        "{path}: a chunk of {len} bytes at offset {offset} ends past the announced size of {size} bytes"
    )]
    PastEnd { path: String, offset: u64, len: u64, size: u64 },
    #[error(
        "{path}: {written} of the announced {size} bytes are written: send the rest from offset {written}"
    )]
    Incomplete { path: String, size: u64, written: u64 },
    #[error(
        "{path}: the written bytes hash to SHA-256 {found}, but FlashBegin announced {expected} \
         (a chunk was damaged or wrong): flash the bundle again"
    )]
    Checksum { path: String, expected: String, found: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{path} does not exist: there is no previous model to roll back to")]
    NoPrevious { path: String },
}

impl StoreError {
    /// The protocol's error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        let u32_or_max = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        match *self {
            StoreError::Io { .. } => ErrorCode::Storage,
            // No size below the smallest bundle can ever make a valid one.
            StoreError::TooSmall { .. } => ErrorCode::FlashInvalidBundle,
            StoreError::TooLarge { max, .. } => ErrorCode::FlashTooLarge { max: u32_or_max(max) },
            StoreError::NotStarted => ErrorCode::FlashNotStarted,
            StoreError::Gap { written, .. } => ErrorCode::FlashOffset { expected: u32_or_max(written) },
            // More bytes than announced: the host's sizes disagree, resending from an offset won't help.
            StoreError::PastEnd { offset, len, size, .. } => ErrorCode::FlashSize {
                expected: u32_or_max(size),
                written: u32_or_max(offset.saturating_add(len)),
            },
            StoreError::Incomplete { size, written, .. } => {
                ErrorCode::FlashSize { expected: u32_or_max(size), written: u32_or_max(written) }
            }
            StoreError::Checksum { .. } => ErrorCode::FlashChecksum,
            StoreError::Bundle(_) | StoreError::Engine(_) => ErrorCode::FlashInvalidBundle,
            // The protocol has no rollback request yet; the nearest meaning is "no model to use".
            StoreError::NoPrevious { .. } => ErrorCode::NoPrevious,
        }
    }
}

/// What the store knows about its active model without keeping the bundle in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveModel {
    pub path: PathBuf,
    /// SHA-256 of the whole file: what the host announced in `FlashBegin`, what `sha256sum` prints.
    pub sha256: [u8; 32],
    /// The manifest's `name`.
    pub name: String,
    pub size: u64,
}

impl ActiveModel {
    /// The model as a hello reports it; a name longer than the protocol's id is cut at a character.
    pub fn info(&self) -> ModelInfo {
        let mut end = self.name.len().min(MAX_MODEL_ID);
        while !self.name.is_char_boundary(end) {
            end -= 1;
        }
        let id = heapless::String::try_from(&self.name[..end]).expect("cut to MAX_MODEL_ID bytes");
        ModelInfo { id, sha256: self.sha256 }
    }
}

/// A model just made active by [`ModelStore::commit`] or [`ModelStore::rollback`], with the engine
/// that was loaded to check it, so the caller need not load it a second time.
pub struct Activated {
    pub model: ActiveModel,
    pub engine: Engine,
}

impl fmt::Debug for Activated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Activated").field("model", &self.model).finish_non_exhaustive()
    }
}

/// `incoming.json`.
#[derive(Debug, Serialize, Deserialize)]
struct IncomingRecord {
    size: u64,
    /// Lowercase hex.
    sha256: String,
}

/// The flash in progress.
#[derive(Debug)]
struct Incoming {
    size: u64,
    sha256: [u8; 32],
    /// Bytes written from offset 0 without a gap: the length of `incoming.part`.
    written: u64,
    file: File,
}

/// The store directory and what it holds. See the module docs for the layout and the crash rules.
#[derive(Debug)]
pub struct ModelStore {
    dir: PathBuf,
    active: Option<ActiveModel>,
    incoming: Option<Incoming>,
    repairs: Vec<String>,
}

impl ModelStore {
    /// Opens the store at `dir`, creating it if missing, and repairs what an interrupted operation left
    /// (see "Open" in the module docs). Fails only when the directory cannot be read or written.
    pub fn open(dir: impl Into<PathBuf>) -> Result<ModelStore, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let mut store = ModelStore { dir, active: None, incoming: None, repairs: Vec::new() };
        if store.remove(INCOMING_RECORD_TMP)? {
            store.repair(format!("removed {} (a flash start cut short)", store.show(INCOMING_RECORD_TMP)));
        }
        store.recover_active()?;
        store.settle_rollback()?;
        store.reopen_incoming()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model in use; `None` on a board never flashed (or whose every model failed its checks).
    pub fn active(&self) -> Option<&ActiveModel> {
        self.active.as_ref()
    }

    /// Reads and loads the active model; `Ok(None)` without one.
    pub fn load_active_engine(&self) -> Result<Option<Engine>, StoreError> {
        match &self.active {
            Some(model) => Ok(Some(Engine::from_file(&model.path)?)),
            None => Ok(None),
        }
    }

    /// What [`ModelStore::open`] repaired, one line each, for the board's log.
    pub fn repairs(&self) -> &[String] {
        &self.repairs
    }

    /// Where the flash in progress continues: the bytes written from offset 0 without a gap. `None`
    /// without a flash in progress.
    pub fn resume_offset(&self) -> Option<u64> {
        self.incoming.as_ref().map(|incoming| incoming.written)
    }

    /// Starts flashing a bundle of `size` bytes whose SHA-256 is `sha256`. If that very bundle is
    /// already in progress (the host reconnected, the board restarted) it is kept and continues at
    /// [`ModelStore::resume_offset`]; any other flash in progress is dropped.
    pub fn begin(&mut self, size: u64, sha256: [u8; 32]) -> Result<(), StoreError> {
        if size < MIN_LEN as u64 {
            return Err(StoreError::TooSmall { size });
        }
        if size > MAX_BUNDLE_SIZE {
            return Err(StoreError::TooLarge { size, max: MAX_BUNDLE_SIZE });
        }
        if self.incoming.as_ref().is_some_and(|i| i.size == size && i.sha256 == sha256) {
            return Ok(());
        }
        self.discard_incoming()?;

        // The record first, made durable, then the part: a crash between leaves a record without a
        // part, which open removes.
        let record = serde_json::to_vec(&IncomingRecord { size, sha256: hex(&sha256) })
            .expect("an IncomingRecord always serializes");
        let tmp = self.path(INCOMING_RECORD_TMP);
        File::create(&tmp)
            .and_then(|mut file| file.write_all(&record).and_then(|()| file.sync_all()))
            .map_err(io_error(&tmp))?;
        self.rename(INCOMING_RECORD_TMP, INCOMING_RECORD)?;

        let part = self.path(INCOMING);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&part)
            .map_err(io_error(&part))?;
        self.incoming = Some(Incoming { size, sha256, written: 0, file });
        Ok(())
    }

    /// Writes `data` at `offset` of the flash in progress. A chunk may rewrite bytes already written
    /// (a resend) but may not start past them (a gap) nor end past the announced size.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let part = self.path(INCOMING);
        let incoming = self.incoming.as_mut().ok_or(StoreError::NotStarted)?;
        let len = data.len() as u64;
        let end = match offset.checked_add(len) {
            Some(end) if end <= incoming.size => end,
            _ => {
                let path = part.display().to_string();
                return Err(StoreError::PastEnd { path, offset, len, size: incoming.size });
            }
        };
        if offset > incoming.written {
            let path = part.display().to_string();
            return Err(StoreError::Gap { path, offset, written: incoming.written });
        }
        let mut file = &incoming.file;
        file.seek(SeekFrom::Start(offset)).and_then(|_| file.write_all(data)).map_err(|source| {
            StoreError::Io { context: format!("{} at offset {offset}", part.display()), source }
        })?;
        incoming.written = incoming.written.max(end);
        Ok(())
    }

    /// Checks the flash in progress and makes it the active model, the old one becoming the previous.
    /// See "Commit" in the module docs for the steps, what a refusal keeps, and what a crash leaves.
    pub fn commit(&mut self) -> Result<Activated, StoreError> {
        let part = self.path(INCOMING);
        let origin = part.display().to_string();
        let incoming = self.incoming.as_ref().ok_or(StoreError::NotStarted)?;
        let (size, expected) = (incoming.size, incoming.sha256);
        if incoming.written != size {
            return Err(StoreError::Incomplete { path: origin, size, written: incoming.written });
        }
        let bytes = fs::read(&part).map_err(io_error(&part))?;
        if bytes.len() as u64 != size {
            // Changed behind the store's back: resume from what is really there, or start over.
            let written = bytes.len() as u64;
            match self.incoming.as_mut() {
                Some(incoming) if written < size => incoming.written = written,
                _ => self.discard_after_refusal(),
            }
            return Err(StoreError::Incomplete { path: origin, size, written });
        }
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        if sha256 != expected {
            self.discard_after_refusal();
            return Err(StoreError::Checksum { path: origin, expected: hex(&expected), found: hex(&sha256) });
        }
        let loaded = Bundle::from_bytes(&bytes, &origin).map_err(StoreError::from).and_then(|bundle| {
            let name = bundle.manifest.name.clone();
            Ok((name, Engine::load(bundle, &origin)?))
        });
        drop(bytes);
        let (name, engine) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                self.discard_after_refusal();
                return Err(e);
            }
        };

        let incoming = self.incoming.as_ref().expect("checked above");
        incoming.file.sync_all().map_err(io_error(&part))?;
        let displaced = self.active.is_some();
        if displaced {
            self.rename(ACTIVE, PREVIOUS)?;
        }
        if let Err(e) = self.rename(INCOMING, ACTIVE) {
            // Put the old model back; if even that fails, open does it at the next start.
            if displaced && self.rename(PREVIOUS, ACTIVE).is_err() {
                self.active = None;
            }
            return Err(e);
        }
        self.incoming = None;
        // Past the switch, a failure here is harmless: open removes a record without its part.
        let _ = self.remove(INCOMING_RECORD);

        let model = ActiveModel { path: self.path(ACTIVE), sha256, name, size };
        self.active = Some(model.clone());
        Ok(Activated { model, engine })
    }

    /// Drops the flash in progress, if any; the active model is untouched.
    pub fn abort(&mut self) -> Result<(), StoreError> {
        self.discard_incoming()
    }

    /// Makes the previous model active again and keeps the one it replaces as the previous, so a second
    /// rollback undoes the first. Refuses, changing nothing, when there is no previous model or it does
    /// not verify or load.
    pub fn rollback(&mut self) -> Result<Activated, StoreError> {
        let previous = self.path(PREVIOUS);
        let origin = previous.display().to_string();
        let Some((bundle, mut model)) = read_model(&previous)? else {
            return Err(StoreError::NoPrevious { path: origin });
        };
        let engine = Engine::load(bundle, &origin)?;

        let displaced = self.active.is_some();
        if displaced {
            self.rename(ACTIVE, ROLLBACK)?;
        }
        if let Err(e) = self.rename(PREVIOUS, ACTIVE) {
            if displaced && self.rename(ROLLBACK, ACTIVE).is_err() {
                self.active = None;
            }
            return Err(e);
        }
        // The rollback is done; if this last rename fails, open finishes it at the next start.
        if displaced {
            let _ = self.rename(ROLLBACK, PREVIOUS);
        }
        model.path = self.path(ACTIVE);
        self.active = Some(model.clone());
        Ok(Activated { model, engine })
    }

    /// Open, step 2: makes sure `active.stdac` verifies, or that there is none.
    fn recover_active(&mut self) -> Result<(), StoreError> {
        let why = match read_model(&self.path(ACTIVE)) {
            Ok(Some((_, model))) => {
                self.active = Some(model);
                return Ok(());
            }
            Ok(None) => "is missing".to_string(),
            Err(e) => format!("fails its checks ({e})"),
        };
        let mut candidate_failed = false;
        for candidate in [PREVIOUS, ROLLBACK] {
            match read_model(&self.path(candidate)) {
                Ok(Some((_, mut model))) => {
                    self.rename(candidate, ACTIVE)?;
                    model.path = self.path(ACTIVE);
                    self.active = Some(model);
                    self.repair(format!("{} {why}: {} made active", self.show(ACTIVE), self.show(candidate)));
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    candidate_failed = true;
                    self.repair(format!("{} cannot replace {ACTIVE}: {e}", self.show(candidate)));
                }
            }
        }
        // A store never flashed is no repair.
        if candidate_failed || self.path(ACTIVE).exists() {
            self.repair(format!(
                "{} {why} and nothing replaces it: the board has no model",
                self.show(ACTIVE)
            ));
        }
        Ok(())
    }

    /// Open, step 3: finishes or clears a rollback cut short.
    fn settle_rollback(&mut self) -> Result<(), StoreError> {
        if !self.path(ROLLBACK).exists() {
            return Ok(());
        }
        if self.path(PREVIOUS).exists() {
            self.remove(ROLLBACK)?;
            self.repair(format!("removed {} (a rollback's leftover)", self.show(ROLLBACK)));
        } else {
            self.rename(ROLLBACK, PREVIOUS)?;
            self.repair(format!("{} renamed to {} (a rollback cut short)", self.show(ROLLBACK), PREVIOUS));
        }
        Ok(())
    }

    /// Open, step 4: picks up the flash in progress, or clears what cannot be resumed.
    fn reopen_incoming(&mut self) -> Result<(), StoreError> {
        let (record_path, part) = (self.path(INCOMING_RECORD), self.path(INCOMING));
        let record = match fs::read(&record_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&record_path)(e)),
        };
        let part_len = match fs::metadata(&part) {
            Ok(meta) => Some(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&part)(e)),
        };
        let why = match (record, part_len) {
            (None, None) => return Ok(()),
            (Some(_), None) => format!("{} without {INCOMING}", self.show(INCOMING_RECORD)),
            (None, Some(_)) => format!("{} without {INCOMING_RECORD}", self.show(INCOMING)),
            (Some(record), Some(written)) => match parse_record(&record) {
                Some((size, sha256)) if written <= size => {
                    let file = OpenOptions::new().write(true).open(&part).map_err(io_error(&part))?;
                    self.incoming = Some(Incoming { size, sha256, written, file });
                    return Ok(());
                }
                Some((size, _)) => {
                    format!("{} is {written} bytes, more than the {size} announced", self.show(INCOMING))
                }
                None => format!("{} is not a flash record", self.show(INCOMING_RECORD)),
            },
        };
        self.discard_incoming()?;
        self.repair(format!("{why}: the flash in progress was dropped"));
        Ok(())
    }

    /// Drops the flash in progress: in memory first, so that a file that cannot be removed is still
    /// replaced (truncated) by the next `begin`.
    fn discard_incoming(&mut self) -> Result<(), StoreError> {
        self.incoming = None;
        // The record first: a part left alone is removed by open.
        self.remove(INCOMING_RECORD)?;
        self.remove(INCOMING)?;
        Ok(())
    }

    /// Drops a flash that failed its checks, keeping the refusal as the error the caller sees.
    fn discard_after_refusal(&mut self) {
        let _ = self.discard_incoming();
    }

    /// Renames `from` to `to` in the store and makes the rename durable before returning.
    fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let (from_path, to_path) = (self.path(from), self.path(to));
        fs::rename(&from_path, &to_path).map_err(|source| StoreError::Io {
            context: format!("renaming {} to {}", from_path.display(), to_path.display()),
            source,
        })?;
        sync_dir(&self.dir).map_err(io_error(&self.dir))
    }

    /// Removes `name` from the store; `false` if it was not there.
    fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn show(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn repair(&mut self, line: String) {
        self.repairs.push(line);
    }
}

/// Reads and checks the bundle at `path`: `None` if there is no such file.
fn read_model(path: &Path) -> Result<Option<(Bundle, ActiveModel)>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let bundle = Bundle::from_bytes(&bytes, &path.display().to_string())?;
    let model = ActiveModel {
        path: path.to_path_buf(),
        sha256: Sha256::digest(&bytes).into(),
        name: bundle.manifest.name.clone(),
        size: bytes.len() as u64,
    };
    Ok(Some((bundle, model)))
}

/// The size and SHA-256 in `incoming.json`, if it holds a usable pair.
fn parse_record(bytes: &[u8]) -> Option<(u64, [u8; 32])> {
    let record: IncomingRecord = serde_json::from_slice(bytes).ok()?;
    if !(MIN_LEN as u64..=MAX_BUNDLE_SIZE).contains(&record.size) || record.sha256.len() != 64 {
        return None;
    }
    let mut sha256 = [0u8; 32];
    for (byte, pair) in sha256.iter_mut().zip(record.sha256.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some((record.size, sha256))
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { context: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Manifest;
    use crate::onnx_support as onnx;

    /// Small enough that a bundle of a few hundred bytes takes several chunks.
    const CHUNK: usize = 64;

    fn manifest(name: &str) -> Manifest {
        Manifest {
            centroids: vec![0.0, 0.0, 2.0, 0.0],
            ..crate::manifest_support::manifest(name, &[-1, 1, 2, 2])
        }
    }

    /// A real bundle named `name`: a 2 × 2 image → Flatten → Gemm, embedding (x₀ + x₂, x₁ + x₃).
    fn bundle(name: &str) -> Vec<u8> {
        let graph = onnx::model(
            vec![
                onnx::node("Flatten", &["image"], "flat", vec![]),
                onnx::node("Gemm", &["flat", "w"], "embedding", vec![]),
            ],
            vec![onnx::floats("w", &[4, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])],
            vec![onnx::value("image", &[-1, 1, 2, 2])],
            vec![onnx::value("embedding", &[-1, 2])],
        );
        Bundle::new(manifest(name), graph).to_bytes()
    }

    fn sha(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    /// Flashes `bytes` in order, in chunks of [`CHUNK`].
    fn flash(store: &mut ModelStore, bytes: &[u8]) -> Result<Activated, StoreError> {
        store.begin(bytes.len() as u64, sha(bytes))?;
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            store.write_chunk((i * CHUNK) as u64, chunk)?;
        }
        store.commit()
    }

    /// Checks that the active model is `bytes`, named `name`, and that its engine runs.
    fn assert_active(store: &ModelStore, bytes: &[u8], name: &str) {
        let active = store.active().expect("an active model");
        assert_eq!(
            (active.name.as_str(), active.sha256, active.size),
            (name, sha(bytes), bytes.len() as u64)
        );
        assert_eq!(active.path, store.dir().join(ACTIVE));
        assert_eq!(fs::read(&active.path).unwrap(), bytes);
        let engine = store.load_active_engine().unwrap().expect("an engine");
        assert_eq!(engine.manifest().name, name);
        assert_eq!(engine.assign(&[1.0, 0.0, 1.0, 0.0]).unwrap().cluster, 1);
    }

    use crate::manifest_support::dir_entries as entries;

    fn record(bytes: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&IncomingRecord { size: bytes.len() as u64, sha256: hex(&sha(bytes)) }).unwrap()
    }

    /// A store directory in the state a crash would leave it, laid out by hand: a unit test cannot kill
    /// itself between two renames, but every state a crash can leave is one of these (the renames are
    /// atomic and each is made durable before the next), so checking `open` on each covers them all.
    fn crashed(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    #[test]
    fn a_new_store_is_created_and_has_no_model() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("boards/store");
        let store = ModelStore::open(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(store.active(), None);
        assert!(store.load_active_engine().unwrap().is_none());
        assert_eq!(store.resume_offset(), None);
        assert!(store.repairs().is_empty(), "{:?}", store.repairs());
        assert!(entries(&dir).is_empty());
    }

    /// Out of order within the rule that keeps resume simple: a chunk may go back over written bytes
    /// (resends after lost acks, overlaps) but never ahead of them.
    #[test]
    fn chunks_out_of_order_and_resent_flash_a_bundle_that_becomes_active() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ModelStore::open(dir.path()).unwrap();
        let a = bundle("first");
        let chunks: Vec<&[u8]> = a.chunks(CHUNK).collect();
        assert!(chunks.len() >= 5, "the test bundle should span several chunks, it has {}", chunks.len());
        store.begin(a.len() as u64, sha(&a)).unwrap();
        assert_eq!(store.resume_offset(), Some(0));
        let at = |i: usize| (i * CHUNK) as u64;
        for i in 0..chunks.len() {
            store.write_chunk(at(i), chunks[i]).unwrap();
            // Go back: resend the chunk before, and the first, as a host does after lost acks.
            store.write_chunk(at(i.saturating_sub(1)), chunks[i.saturating_sub(1)]).unwrap();
            store.write_chunk(0, chunks[0]).unwrap();
            assert_eq!(store.resume_offset(), Some(at(i) + chunks[i].len() as u64));
        }
        // A resend that straddles two chunks, and an empty chunk at the end.
        store.write_chunk(at(1) - 7, &a[CHUNK - 7..2 * CHUNK + 3]).unwrap();
        store.write_chunk(a.len() as u64, &[]).unwrap();
        let activated = store.commit().unwrap();
        assert_eq!(activated.model.name, "first");
        assert_eq!(activated.engine.manifest().name, "first");
        assert_active(&store, &a, "first");
        assert_eq!(store.resume_offset(), None);
        assert_eq!(entries(dir.path()), [ACTIVE]);
        let info = activated.model.info();
        assert_eq!((info.id.as_str(), info.sha256), ("first", sha(&a)));

        // The next start finds the same model, with nothing to repair.
        drop(store);
        let store = ModelStore::open(dir.path()).unwrap();
        assert_active(&store, &a, "first");
        assert!(store.repairs().is_empty(), "{:?}", store.repairs());
    }

    #[test]
    fn a_second_flash_keeps_the_first_as_previous_and_rollback_swaps_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ModelStore::open(dir.path()).unwrap();
        let (a, b) = (bundle("first"), bundle("second"));
        flash(&mut store, &a).unwrap();
        flash(&mut store, &b).unwrap();
        assert_active(&store, &b, "second");
        assert_eq!(fs::read(dir.path().join(PREVIOUS)).unwrap(), a);
        assert_eq!(entries(dir.path()), [ACTIVE, PREVIOUS]);

        let back = store.rollback().unwrap();
        assert_eq!((back.model.name.as_str(), back.model.sha256), ("first", sha(&a)));
        assert_eq!(back.engine.manifest().name, "first");
        assert_active(&store, &a, "first");
        assert_eq!(fs::read(dir.path().join(PREVIOUS)).unwrap(), b);
        assert_eq!(entries(dir.path()), [ACTIVE, PREVIOUS]);

        // It lasts across a restart, and a second rollback undoes the first.
        drop(store);
        let mut store = ModelStore::open(dir.path()).unwrap();
        assert_active(&store, &a, "first");
        store.rollback().unwrap();
        assert_active(&store, &b, "second");
        assert_eq!(fs::read(dir.path().join(PREVIOUS)).unwrap(), a);
    }

    #[test]
    fn rollback_without_a_usable_previous_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ModelStore::open(dir.path()).unwrap();
        let e = store.rollback().unwrap_err();
        assert!(matches!(e, StoreError::NoPrevious { .. }), "{e}");
        assert!(e.to_string().contains("previous.stdac does not exist"), "{e}");
        assert_eq!(e.code(), ErrorCode::NoPrevious);

        let a = bundle("first");
        flash(&mut store, &a).unwrap();
        assert!(matches!(store.rollback().unwrap_err(), StoreError::NoPrevious { .. }));
        // A previous that fails its checksum is refused by name.
        let mut broken = bundle("second");
        let n = broken.len();
        broken[n - 1] ^= 1;
        fs::write(dir.path().join(PREVIOUS), &broken).unwrap();
        let e = store.rollback().unwrap_err();
        assert!(matches!(e, StoreError::Bundle(BundleError::ChecksumMismatch { .. })), "{e}");
        assert!(e.to_string().contains("previous.stdac"), "{e}");
        assert_active(&store, &a, "first");
        assert_eq!(entries(dir.path()), [ACTIVE, PREVIOUS]);
    }

    #[test]
    fn a_damaged_chunk_fails_the_checksum_and_leaves_the_active_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ModelStore::open(dir.path()).unwrap();
        let (a, b) = (bundle("first"), bundle("second"));
        flash(&mut store, &a).unwrap();

        store.begin(b.len() as u64, sha(&b)).unwrap();
        for (i, chunk) in b.chunks(CHUNK).enumerate() {
            let mut chunk = chunk.to_vec();
            if i == 2 {
                chunk[5] ^= 0x10;
            }
            store.write_chunk((i * CHUNK) as u64, &chunk).unwrap();
        }
        let e = store.commit().unwrap_err();
        let StoreError::Checksum { expected, found, .. } = &e else { panic!("{e}") };
        assert_eq!(expected, &hex(&sha(&b)));
        assert_ne!(found, expected);
        let message = e.to_string();
        assert!(message.contains("incoming.part") && message.contains(expected.as_str()), "{message}");
        assert_eq!(e.code(), ErrorCode::FlashChecksum);

        // Discarded: the same bytes would fail again.
        assert_active(&store, &a, "first");
        assert_eq!(store.resume_offset(), None);
        assert_eq!(entries(dir.path()), [ACTIVE]);
        assert!(matches!(store.write_chunk(0, &b[..CHUNK]), Err(StoreError::NotStarted)));
        assert!(matches!(store.commit().unwrap_err(), StoreError::NotStarted));
    }

    #[test]
    fn a_bundle_that_does_not_parse_or_load_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ModelStore::open(dir.path()).unwrap();
        let a = bundle("first");
        flash(&mut store, &a).unwrap();

        // Intact as announced, but not a bundle.
        let junk = vec![0x5a; 300];
        let e = flash(&mut store, &junk).unwrap_err();
        assert!(matches!(e, StoreError::Bundle(BundleError::BadMagic { .. })), "{e}");
        assert!(e.to_string().contains("incoming.part"), "{e}");
        assert_eq!(e.code(), ErrorCode::FlashInvalidBundle);
        assert_eq!(entries(dir.path()), [ACTIVE]);

        // A sound bundle whose graph tract cannot load.
        let no_graph = Bundle::new(manifest("no-graph"), b"not an onnx graph".to_vec()).to_bytes();
        let e = flash(&mut store, &no_graph).unwrap_err();
        assert!(matches!(e, StoreError::Engine(EngineError::Graph { .. })), "{e}");
        assert!(e.to_string().contains("incoming.part: tract cannot load the graph"), "{e}");
        assert_eq!(e.code(), ErrorCode::FlashInvalidBundle);

        assert_active(&store, &a, "first");
        assert_eq!(store.resume_offset(), None);
        assert_eq!(entries(dir.path()), [ACTIVE]);
    }

    #[test]
    fn begin_refuses_sizes_no_bundle_can_have() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ModelStore::open(dir.path()).unwrap();
        let e = store.begin(0, [0; 32]).unwrap_err();
        assert!(matches!(e, StoreError::TooSmall { size: 0 }), "{e}");
        assert_eq!(e.to_string(), "FlashBegin field `size` is 0 bytes: a bundle has at least 56");
        assert_eq!(e.code(), ErrorCode::FlashInvalidBundle);
        assert!(store.begin(MIN_LEN as u64 - 1, [0; 32]).is_err());

        let e = store.begin(MAX_BUNDLE_SIZE + 1, [0; 32]).unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { max: MAX_BUNDLE_SIZE, .. }), "{e}");
        assert!(
            e.to_string().contains("field `size` is 268435457 bytes") && e.to_string().contains("268435456")
        );
        assert_eq!(e.code(), ErrorCode::FlashTooLarge { max: 268_435_456 });
        assert_eq!(store.resume_offset(), None);
        assert!(entries(dir.path()).is_empty());
        store.begin(MAX_BUNDLE_SIZE, [0; 32]).unwrap();
        assert_eq!(store.resume_offset(), Some(0));
    }

    #[test]
    fn chunks_past_the_end_or_after_a_gap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ModelStore::open(dir.path()).unwrap();
        let a = bundle("first");
        let size = a.len() as u64;
        let e = store.write_chunk(0, &a[..CHUNK]).unwrap_err();
        assert!(matches!(e, StoreError::NotStarted), "{e}");
        assert_eq!(e.code(), ErrorCode::FlashNotStarted);

        store.begin(size, sha(&a)).unwrap();
        store.write_chunk(0, &a[..CHUNK]).unwrap();
        let e = store.write_chunk(2 * CHUNK as u64, &a[2 * CHUNK..3 * CHUNK]).unwrap_err();
        assert!(matches!(e, StoreError::Gap { offset: 128, written: 64, .. }), "{e}");
        assert!(e.to_string().contains("incoming.part: a chunk at offset 128 would leave a gap: 64 bytes"));
        assert_eq!(e.code(), ErrorCode::FlashOffset { expected: 64 });

        let e = store.write_chunk(size - 10, &[0; 11]).unwrap_err();
        assert!(matches!(e, StoreError::PastEnd { len: 11, .. }), "{e}");
        assert!(e
            .to_string()
            .contains(&format!("at offset {} ends past the announced size of {size}", size - 10)));
        assert_eq!(e.code(), ErrorCode::FlashSize { expected: size as u32, written: size as u32 + 1 });
        let e = store.write_chunk(size + 1, &[]).unwrap_err();
        assert!(matches!(e, StoreError::PastEnd { .. }), "{e}");
        let e = store.write_chunk(u64::MAX, &[1]).unwrap_err();
        assert!(matches!(e, StoreError::PastEnd { .. }), "{e}");

        // Nothing refused was written; the flash goes on.
        assert_eq!(store.resume_offset(), Some(CHUNK as u64));
        for (i, chunk) in a.chunks(CHUNK).enumerate().skip(1) {
            store.write_chunk((i * CHUNK) as u64, chunk).unwrap();
        }
        store.commit().unwrap();
        assert_active(&store, &a, "first");
    }

    #[test]
    fn commit_of_an_incomplete_flash_is_refused_and_kept_to_finish() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ModelStore::open(dir.path()).unwrap();
        let a = bundle("first");
        // The host announced 10 bytes more than it sends.
        let announced = a.len() as u64 + 10;
        store.begin(announced, sha(&a)).unwrap();
        for (i, chunk) in a.chunks(CHUNK).enumerate() {
            store.write_chunk((i * CHUNK) as u64, chunk).unwrap();
        }
        let e = store.commit().unwrap_err();
        assert!(
            matches!(e, StoreError::Incomplete { size, written, .. }
            if size == announced && written == a.len() as u64),
            "{e}"
        );
        assert!(e.to_string().contains(&format!("{} of the announced {announced} bytes", a.len())), "{e}");
        assert_eq!(e.code(), ErrorCode::FlashSize { expected: announced as u32, written: a.len() as u32 });
        assert_eq!(store.resume_offset(), Some(a.len() as u64));
        assert_eq!(store.active(), None);

        // Begun again with the right size, the flash starts over and commits.
        flash(&mut store, &a).unwrap();
        assert_active(&store, &a, "first");
    }

    #[test]
    fn abort_drops_the_flash_and_keeps_the_active_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ModelStore::open(dir.path()).unwrap();
        let (a, b) = (bundle("first"), bundle("second"));
        flash(&mut store, &a).unwrap();
        store.begin(b.len() as u64, sha(&b)).unwrap();
        store.write_chunk(0, &b[..CHUNK]).unwrap();
        assert_eq!(entries(dir.path()), [ACTIVE, INCOMING_RECORD, INCOMING]);
        store.abort().unwrap();
        assert_eq!(store.resume_offset(), None);
        assert_eq!(entries(dir.path()), [ACTIVE]);
        assert_active(&store, &a, "first");
        assert!(matches!(store.commit().unwrap_err(), StoreError::NotStarted));
        store.abort().unwrap(); // nothing to abort is no error
    }

    #[test]
    fn a_begin_for_another_bundle_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ModelStore::open(dir.path()).unwrap();
        let (a, b) = (bundle("first"), bundle("second"));
        store.begin(a.len() as u64, sha(&a)).unwrap();
        store.write_chunk(0, &a[..2 * CHUNK]).unwrap();
        // The same bundle again keeps what is written...
        store.begin(a.len() as u64, sha(&a)).unwrap();
        assert_eq!(store.resume_offset(), Some(2 * CHUNK as u64));
        // ...another one starts from nothing.
        store.begin(b.len() as u64, sha(&b)).unwrap();
        assert_eq!(store.resume_offset(), Some(0));
        assert_eq!(fs::metadata(dir.path().join(INCOMING)).unwrap().len(), 0);
        for (i, chunk) in b.chunks(CHUNK).enumerate() {
            store.write_chunk((i * CHUNK) as u64, chunk).unwrap();
        }
        store.commit().unwrap();
        assert_active(&store, &b, "second");
    }

    #[test]
    fn a_flash_resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (bundle("first"), bundle("second"));
        let mut store = ModelStore::open(dir.path()).unwrap();
        flash(&mut store, &a).unwrap();
        store.begin(b.len() as u64, sha(&b)).unwrap();
        let cut = 3 * CHUNK;
        for offset in (0..cut).step_by(CHUNK) {
            store.write_chunk(offset as u64, &b[offset..offset + CHUNK]).unwrap();
        }
        drop(store); // the board restarts

        let mut store = ModelStore::open(dir.path()).unwrap();
        assert!(store.repairs().is_empty(), "{:?}", store.repairs());
        assert_active(&store, &a, "first");
        assert_eq!(store.resume_offset(), Some(cut as u64));
        // The host begins the same bundle again and continues where the board says.
        store.begin(b.len() as u64, sha(&b)).unwrap();
        assert_eq!(store.resume_offset(), Some(cut as u64));
        store.write_chunk(cut as u64, &b[cut..]).unwrap();
        store.commit().unwrap();
        assert_active(&store, &b, "second");
        assert_eq!(fs::read(dir.path().join(PREVIOUS)).unwrap(), a);
        assert_eq!(entries(dir.path()), [ACTIVE, PREVIOUS]);
    }

    #[test]
    fn crash_before_commit_renames_keeps_the_old_model_and_the_flash_to_commit_again() {
        let (p, a, b) = (bundle("older"), bundle("first"), bundle("second"));
        let dir = crashed(&[(ACTIVE, &a), (PREVIOUS, &p), (INCOMING, &b), (INCOMING_RECORD, &record(&b))]);
        let mut store = ModelStore::open(dir.path()).unwrap();
        assert!(store.repairs().is_empty(), "{:?}", store.repairs());
        assert_active(&store, &a, "first");
        assert_eq!(store.resume_offset(), Some(b.len() as u64));
        store.commit().unwrap();
        assert_active(&store, &b, "second");
        assert_eq!(fs::read(dir.path().join(PREVIOUS)).unwrap(), a);
    }

    #[test]
    fn crash_between_commit_renames_goes_back_to_the_old_model() {
        // Step 3 done (active → previous), step 4 not: no active.stdac.
        let (a, b) = (bundle("first"), bundle("second"));
        let dir = crashed(&[(PREVIOUS, &a), (INCOMING, &b), (INCOMING_RECORD, &record(&b))]);
        let mut store = ModelStore::open(dir.path()).unwrap();
        assert_active(&store, &a, "first");
        let repairs = store.repairs().join("\n");
        assert!(
            repairs.contains("active.stdac is missing") && repairs.contains("previous.stdac made active")
        );
        assert_eq!(entries(dir.path()), [ACTIVE, INCOMING_RECORD, INCOMING]);
        // The host was never told of the commit; committing again finishes it without resending.
        assert_eq!(store.resume_offset(), Some(b.len() as u64));
        store.commit().unwrap();
        assert_active(&store, &b, "second");
        assert_eq!(fs::read(dir.path().join(PREVIOUS)).unwrap(), a);
    }

    #[test]
    fn crash_after_commit_renames_keeps_the_new_model() {
        // Step 4 done, step 5 (remove incoming.json) not.
        let (a, b) = (bundle("first"), bundle("second"));
        let dir = crashed(&[(ACTIVE, &b), (PREVIOUS, &a), (INCOMING_RECORD, &record(&b))]);
        let store = ModelStore::open(dir.path()).unwrap();
        assert_active(&store, &b, "second");
        assert_eq!(store.resume_offset(), None);
        assert_eq!(entries(dir.path()), [ACTIVE, PREVIOUS]);
    }

    #[test]
    fn a_damaged_active_model_is_replaced_by_the_previous() {
        // What a disk that lost the active file's data would leave: a truncated active.stdac.
        let (a, b) = (bundle("first"), bundle("second"));
        let dir = crashed(&[(ACTIVE, &b[..b.len() / 2]), (PREVIOUS, &a)]);
        let store = ModelStore::open(dir.path()).unwrap();
        assert_active(&store, &a, "first");
        let repairs = store.repairs().join("\n");
        assert!(
            repairs.contains("active.stdac fails its checks") && repairs.contains("truncated"),
            "{repairs}"
        );
        assert_eq!(entries(dir.path()), [ACTIVE]);
    }

    #[test]
    fn with_no_model_that_verifies_the_board_starts_without_one_and_takes_a_flash() {
        let (a, b) = (bundle("first"), bundle("second"));
        let dir = crashed(&[(ACTIVE, &b[..100]), (PREVIOUS, &a[..a.len() - 1])]);
        let mut store = ModelStore::open(dir.path()).unwrap();
        assert_eq!(store.active(), None);
        assert!(store.load_active_engine().unwrap().is_none());
        let repairs = store.repairs().join("\n");
        assert!(
            repairs.contains("previous.stdac cannot replace") && repairs.contains("has no model"),
            "{repairs}"
        );
        // The damaged active file is replaced, not kept as a previous no rollback could use.
        flash(&mut store, &a).unwrap();
        assert_active(&store, &a, "first");
        assert_eq!(fs::read(dir.path().join(PREVIOUS)).unwrap(), &a[..a.len() - 1]);
    }

    #[test]
    fn crash_during_rollback_finishes_it() {
        let (a, b) = (bundle("first"), bundle("second"));
        // b active, a previous; rolling back to a. After step 2 (active → rollback.stdac):
        let dir = crashed(&[(PREVIOUS, &a), (ROLLBACK, &b)]);
        let store = ModelStore::open(dir.path()).unwrap();
        assert_active(&store, &a, "first");
        assert_eq!(fs::read(dir.path().join(PREVIOUS)).unwrap(), b);
        assert_eq!(entries(dir.path()), [ACTIVE, PREVIOUS]);

        // After step 3 (previous → active):
        let dir = crashed(&[(ACTIVE, &a), (ROLLBACK, &b)]);
        let store = ModelStore::open(dir.path()).unwrap();
        assert_active(&store, &a, "first");
        assert_eq!(fs::read(dir.path().join(PREVIOUS)).unwrap(), b);
        assert!(store.repairs().join("\n").contains("rollback.stdac renamed to previous.stdac"));
        assert_eq!(entries(dir.path()), [ACTIVE, PREVIOUS]);

        // After step 2, with the rollback's target since damaged: the model it displaced comes back.
        let dir = crashed(&[(PREVIOUS, &a[..80]), (ROLLBACK, &b)]);
        let store = ModelStore::open(dir.path()).unwrap();
        assert_active(&store, &b, "second");
        assert_eq!(entries(dir.path()), [ACTIVE, PREVIOUS]);
    }

    #[test]
    fn leftovers_of_an_interrupted_flash_start_are_cleaned() {
        let (a, b) = (bundle("first"), bundle("second"));
        let good_record = record(&b);
        let long_record =
            String::from_utf8(record(&b)).unwrap().replace(&b.len().to_string(), "100").into_bytes();
        type Files<'a> = Vec<(&'a str, &'a [u8])>;
        let cases: Vec<(&str, Files)> = vec![
            ("record being written", vec![(INCOMING_RECORD_TMP, b"{\"si")]),
            ("record without part", vec![(INCOMING_RECORD, &good_record[..])]),
            ("part without record", vec![(INCOMING, &b[..CHUNK])]),
            ("unreadable record", vec![(INCOMING, &b[..CHUNK]), (INCOMING_RECORD, b"{\"size\": 12")]),
            ("part longer than announced", vec![(INCOMING, &b[..]), (INCOMING_RECORD, &long_record[..])]),
        ];
        for (case, leftovers) in cases {
            let mut files: Files = vec![(ACTIVE, &a)];
            files.extend(leftovers);
            let dir = crashed(&files);
            let store = ModelStore::open(dir.path()).unwrap();
            assert_eq!(store.resume_offset(), None, "{case}");
            assert_eq!(store.repairs().len(), 1, "{case}: {:?}", store.repairs());
            assert_eq!(entries(dir.path()), [ACTIVE], "{case}");
            assert_active(&store, &a, "first");
        }
    }

    #[test]
    fn a_long_model_name_is_cut_to_the_protocols_id() {
        let model = ActiveModel {
            path: PathBuf::from("active.stdac"),
            sha256: [7; 32],
            name: format!("{}é-and-more", "x".repeat(MAX_MODEL_ID - 1)),
            size: 100,
        };
        let info = model.info();
        assert_eq!(info.id.as_str(), "x".repeat(MAX_MODEL_ID - 1));
        assert_eq!(info.sha256, [7; 32]);
    }
}
