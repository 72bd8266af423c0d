//! `stdac selftest`: checks a serial link end to end. Hello (protocol versions), round trips, recovery
//! from line noise and a corrupted frame, device-side error counters, and the refusal of frames by a
//! board without a model.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::json;
use stdac_protocol::{
    Capabilities, DeviceHello, DeviceMsg, ErrorCode, FrameChunk, FrameEncoder, HostMsg, Options, PixelFormat,
    Request,
};

use crate::transport::{DeviceClient, LinkError};

/// What a self-test measured.
#[derive(Debug)]
pub struct SelfTestReport {
    pub hello: DeviceHello,
    pub round_trips: Vec<Duration>,
    /// Damaged frames the device counted (the test sends two on purpose).
    pub device_rx_errors: u32,
    pub resends: u32,
}

impl SelfTestReport {
    pub fn to_json(&self, port: &str) -> serde_json::Value {
        let mut us: Vec<u128> = self.round_trips.iter().map(Duration::as_micros).collect();
        us.sort_unstable();
        json!({
            "ok": true,
            "port": port,
            "device": hello_json(&self.hello),
            "pings": us.len(),
            "rtt_us_median": us.get(us.len() / 2),
            "rtt_us_max": us.last(),
            "device_rx_errors": self.device_rx_errors,
            "resends": self.resends,
        })
    }
}

pub fn run(client: &mut DeviceClient, pings: u32) -> anyhow::Result<SelfTestReport> {
    let hello = client.hello().context("hello")?;

    let mut round_trips = Vec::with_capacity(pings as usize);
    for _ in 0..pings {
        round_trips.push(client.ping().context("ping")?);
    }

    // Line noise with no delimiter, then noise that looks like frames, then a frame with one bit flipped:
    // the device must drop them all, say so, and go on answering.
    let mut noise: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1).collect();
    noise.extend([0, 0x05, 0x11, 0x22, 0, 0x02, 0x01, 0]);
    client.send_raw(&noise)?;
    let mut damaged = FrameEncoder::new().encode(&Request { seq: 0, msg: HostMsg::Ping })?.to_vec();
    damaged[2] ^= 0x10;
    client.send_raw(&damaged)?;
    client.ping().context("ping after line noise")?;

    // The device's own count of what it dropped arrives in its stats.
    client.set_options(Options { report_stn: false, stats_interval_ms: 20 })?;
    let device_rx_errors = wait_for_stats(client, Duration::from_secs(2))?.rx_errors;
    client.set_options(Options::default())?;
    ensure!(
        device_rx_errors >= 3,
        "the device counted {device_rx_errors} damaged frames, expected at least 3"
    );

    if hello.model.is_none() {
        let frame = FrameChunk {
            frame_id: 0,
            width: 28,
            height: 28,
            format: PixelFormat::Gray8,
            offset: 0,
            data: heapless::Vec::from_slice(&[0u8; 784]).expect("784 bytes fit a chunk"),
        };
        match client.request(HostMsg::Frame(frame)) {
            Err(LinkError::Rejected { code: ErrorCode::NoModel, .. }) => {}
            other => bail!("a device without a model must refuse frames with NoModel, got {other:?}"),
        }
    }

    Ok(SelfTestReport { hello, round_trips, device_rx_errors, resends: client.stats().resends })
}

fn wait_for_stats(client: &mut DeviceClient, within: Duration) -> anyhow::Result<stdac_protocol::Stats> {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(DeviceMsg::Stats(stats)) = client.next_event(left)? {
            return Ok(stats);
        }
    }
    bail!("no stats from the device within {within:?} of asking for them")
}

/// A device's hello as people and scripts read it.
pub fn hello_json(hello: &DeviceHello) -> serde_json::Value {
    let capabilities: Vec<&str> = [
        (Capabilities::FLASH, "flash"),
        (Capabilities::FRAMES, "frames"),
        (Capabilities::CAMERA, "camera"),
        (Capabilities::STN, "stn"),
        (Capabilities::ROLLBACK, "rollback"),
    ]
    .into_iter()
    .filter(|(flag, _)| hello.capabilities.has(*flag))
    .map(|(_, name)| name)
    .collect();
    json!({
        "protocol": hello.protocol,
        "firmware": hello.firmware_version.as_str(),
        "model": hello.model.as_ref().map(|m| json!({
            "id": m.id.as_str(),
            "sha256": m.sha256.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        })),
        "capabilities": capabilities,
    })
}
