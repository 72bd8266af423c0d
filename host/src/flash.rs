//! `stdac flash`: writes a model bundle onto a board over the serial line.
//!
//! The bundle is checked here first (a file that would not load is not sent), then sent in chunks. A
//! board that already holds part of this very bundle (an earlier flash cut short) resumes where it
//! stopped: after `FlashBegin`, an empty chunk at the bundle's end asks the board how much it has — it
//! acks if it has everything, else it nacks with `FlashOffset { expected }`. A chunk that gets no reply
//! is resent by the client; a line that stays dead longer than that is resumed the same way, up to
//! [`FlashOptions::resumes`] times. Last, the board must report the new bundle's SHA-256 as its model.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use stdac_device::bundle::{self, Bundle};
use stdac_protocol::{
    Capabilities, DeviceMsg, ErrorCode, FlashBegin, FlashChunk, HostMsg, ModelInfo, MAX_CHUNK,
};

use crate::transport::{DeviceClient, LinkError};

#[derive(Debug, Clone)]
pub struct FlashOptions {
    /// Send the bundle even when the board already runs it.
    pub force: bool,
    /// How long the board may take to verify and load the bundle at commit.
    pub commit_timeout: Duration,
    /// Times a flash whose line went dead is picked up again where the board stopped.
    pub resumes: u32,
}

impl Default for FlashOptions {
    fn default() -> Self {
        FlashOptions { force: false, commit_timeout: Duration::from_secs(120), resumes: 3 }
    }
}

/// What a flash did.
#[derive(Debug, Clone)]
pub struct FlashReport {
    pub bundle: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The board already ran this bundle: nothing was sent.
    pub already_active: bool,
    /// Bytes the board already had when the flash started (a resumed flash), else 0.
    pub resumed_from: u64,
    /// Bytes sent in chunks.
    pub sent: u64,
    /// Times the flash was picked up again after the line went dead.
    pub resumes: u32,
    /// Requests resent by the client (timeouts, damaged frames).
    pub resends: u32,
    pub elapsed: Duration,
    /// The board's model after the flash.
    pub model: ModelInfo,
}

impl FlashReport {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "bundle": self.bundle,
            "size": self.size,
            "sha256": hex(&self.sha256),
            "model": self.model.id.as_str(),
            "already_active": self.already_active,
            "resumed_from": self.resumed_from,
            "sent": self.sent,
            "resumes": self.resumes,
            "resends": self.resends,
            "seconds": self.elapsed.as_secs_f64(),
            "bytes_per_s": self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9),
        })
    }
}

/// Flashes the bundle at `path`; `progress(done, total)` is called as bytes are acknowledged.
pub fn flash(
    client: &mut DeviceClient,
    path: &Path,
    options: &FlashOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<FlashReport> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the bundle {}", path.display()))?;
    let origin = path.display().to_string();
    Bundle::from_bytes(&bytes, &origin).with_context(|| format!("{origin} is not a valid bundle"))?;
    let size = u32::try_from(bytes.len())
        .with_context(|| format!("{origin} is {} bytes: the protocol carries at most 4 GiB", bytes.len()))?;
    let sha256 = sha256(&bytes);
    let started = Instant::now();
    let resends_before = client.stats().resends;
    let port = client.port_name().to_string();

    let hello = client.hello()?;
    if !hello.capabilities.has(Capabilities::FLASH) {
        bail!("the device on {port} cannot be flashed (its firmware was started without a model store)");
    }
    let mut report = FlashReport {
        bundle: origin.clone(),
        size: size.into(),
        sha256,
        already_active: false,
        resumed_from: 0,
        sent: 0,
        resumes: 0,
        resends: 0,
        elapsed: Duration::ZERO,
        model: ModelInfo { id: heapless::String::new(), sha256: [0; 32] },
    };
    if !options.force && hello.model.as_ref().is_some_and(|m| m.sha256 == sha256) {
        report.already_active = true;
        report.model = hello.model.expect("checked above");
        progress(size.into(), size.into());
        report.elapsed = started.elapsed();
        return Ok(report);
    }

    let mut offset = begin(client, size, sha256)?;
    report.resumed_from = offset.into();
    progress(offset.into(), size.into());
    while offset < size {
        let end = (offset as usize + MAX_CHUNK).min(bytes.len());
        let chunk = FlashChunk {
            offset,
            data: heapless::Vec::from_slice(&bytes[offset as usize..end]).expect("at most MAX_CHUNK bytes"),
        };
        match client.request(HostMsg::FlashChunk(chunk)) {
            Ok(_) => {
                report.sent += (end - offset as usize) as u64;
                offset = end as u32;
            }
            // The board has less (or more) than we thought: go on from where it is.
            Err(LinkError::Rejected { code: ErrorCode::FlashOffset { expected }, .. }) => offset = expected,
            // The line went quiet for longer than the client's resends: once it answers again, pick up
            // the flash where the board stopped.
            Err(error @ LinkError::NoReply { .. }) if report.resumes < options.resumes => {
                report.resumes += 1;
                eprintln!("stdac: {error}; resuming the flash ({} of {})", report.resumes, options.resumes);
                offset = begin(client, size, sha256)?;
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                "flashing {origin} stopped at byte {offset} of {size}; run the same command again to resume"
            )))
            }
        }
        progress(offset.into(), size.into());
    }
    match client.request_within(HostMsg::FlashCommit, options.commit_timeout) {
        Ok(_) => {}
        Err(LinkError::Rejected { code, .. }) => {
            bail!("the device on {port} refused {origin} at commit: {code}; its previous model stays active")
        }
        Err(error) => return Err(error.into()),
    }

    let hello = client.hello()?;
    let model =
        hello.model.with_context(|| format!("after the flash, the device on {port} reports no model"))?;
    if model.sha256 != sha256 {
        bail!(
            "after the flash, the device on {port} reports model {} with SHA-256 {}, not {origin}'s {}",
            model.id,
            hex(&model.sha256),
            hex(&sha256)
        );
    }
    report.model = model;
    report.resends = client.stats().resends - resends_before;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Makes the board's previous model active again; returns the model it now runs.
pub fn rollback(client: &mut DeviceClient) -> anyhow::Result<ModelInfo> {
    let port = client.port_name().to_string();
    let hello = client.hello()?;
    if !hello.capabilities.has(Capabilities::ROLLBACK) {
        bail!("the device on {port} keeps no previous model (no ROLLBACK capability)");
    }
    client.request_within(HostMsg::FlashRollback, FlashOptions::default().commit_timeout)?;
    client
        .hello()?
        .model
        .with_context(|| format!("after the rollback, the device on {port} reports no model"))
}

/// Announces the bundle and returns the offset to send from: 0 for a new flash, more when the board
/// holds part of this bundle already.
fn begin(client: &mut DeviceClient, size: u32, sha256: [u8; 32]) -> Result<u32, LinkError> {
    let begin = FlashBegin { size, sha256, bundle_version: bundle::FORMAT_VERSION };
    client.request(HostMsg::FlashBegin(begin))?;
    let probe = FlashChunk { offset: size, data: heapless::Vec::new() };
    match client.request(HostMsg::FlashChunk(probe)) {
        Ok(DeviceMsg::Ack { .. }) => Ok(size),
        Err(LinkError::Rejected { code: ErrorCode::FlashOffset { expected }, .. }) => Ok(expected.min(size)),
        Ok(reply) => Err(LinkError::Unexpected {
            port: client.port_name().to_string(),
            request: "flash-chunk",
            reply: Box::new(reply),
        }),
        Err(error) => Err(error),
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
