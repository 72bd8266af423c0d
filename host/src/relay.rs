//! A serial line between two pseudo-terminals, for tests and benchmarks: the board opens one end, the
//! host the other, and the relay copies bytes between them, paced to a baud rate if asked and damaged on
//! purpose if asked (bits flipped, bytes dropped or duplicated, stalls), as a long or noisy cable would.
//! Faults are drawn from a seeded generator, so a failing run can be replayed.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serialport::{SerialPort, TTYPort};

/// What the line does to the bytes crossing it, each direction alike.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub seed: u64,
    /// Chance per byte of one bit flipped.
    pub flip: f64,
    /// Chance per byte of it being lost.
    pub drop: f64,
    /// Chance per byte of it arriving twice.
    pub duplicate: f64,
    /// After this many bytes (0: never), the line goes quiet for `stall`.
    pub stall_every: u64,
    pub stall: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct RelayConfig {
    /// Pace each direction to what a UART at this speed carries (8N1: ten bits a byte); `None` copies as
    /// fast as the pseudo-terminals go.
    pub baud: Option<u32>,
    pub faults: Faults,
}

/// What the relay has done so far, both directions together.
#[derive(Debug, Default)]
pub struct RelayCounts {
    pub bytes: AtomicU64,
    pub flipped: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub stalls: AtomicU64,
}

impl RelayCounts {
    /// Faults injected so far.
    pub fn faults(&self) -> u64 {
        self.flipped.load(Ordering::Relaxed)
            + self.dropped.load(Ordering::Relaxed)
            + self.duplicated.load(Ordering::Relaxed)
            + self.stalls.load(Ordering::Relaxed)
    }
}

pub struct Relay {
    /// The tty the board (firmware) opens.
    pub device_port: String,
    /// The tty the host opens.
    pub host_port: String,
    pub counts: Arc<RelayCounts>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Held open so each side can be opened, closed and opened again (a restarted board) without the
    /// line going away.
    _slaves: [TTYPort; 2],
}

impl Relay {
    pub fn start(config: RelayConfig) -> anyhow::Result<Relay> {
        let (device_master, device_slave) =
            TTYPort::pair().context("cannot create a pseudo-terminal pair")?;
        let (host_master, host_slave) = TTYPort::pair().context("cannot create a pseudo-terminal pair")?;
        let device_port = device_slave.name().context("the pseudo-terminal has no name")?;
        let host_port = host_slave.name().context("the pseudo-terminal has no name")?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(RelayCounts::default());
        let mut threads = Vec::new();
        let ends = [
            (host_master.try_clone_native()?, device_master.try_clone_native()?, 0),
            (device_master, host_master, 1),
        ];
        for (from, to, direction) in ends {
            let mut pipe = Pipe::new(&config, direction, counts.clone());
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || pipe.run(from, to, &stop)));
        }
        Ok(Relay { device_port, host_port, counts, stop, threads, _slaves: [device_slave, host_slave] })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One direction of the line.
struct Pipe {
    baud: Option<u32>,
    faults: Faults,
    rng: ChaCha8Rng,
    counts: Arc<RelayCounts>,
    /// When the paced line is free to carry the next byte.
    line_free_at: Instant,
    since_stall: u64,
}

impl Pipe {
    fn new(config: &RelayConfig, direction: u64, counts: Arc<RelayCounts>) -> Pipe {
        Pipe {
            baud: config.baud,
            faults: config.faults.clone(),
            rng: ChaCha8Rng::seed_from_u64(config.faults.seed.wrapping_mul(2).wrapping_add(direction)),
            counts,
            line_free_at: Instant::now(),
            since_stall: 0,
        }
    }

    fn run(&mut self, mut from: TTYPort, mut to: TTYPort, stop: &AtomicBool) {
        let _ = from.set_timeout(Duration::from_millis(20));
        let mut buf = [0u8; 4096];
        let mut out = Vec::with_capacity(2 * buf.len());
        while !stop.load(Ordering::Relaxed) {
            let n = match from.read(&mut buf) {
                Ok(n) => n,
                // Timed out, or (EIO) no one has this end open: try again.
                Err(e) if e.kind() == io::ErrorKind::TimedOut || e.raw_os_error() == Some(EIO) => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(_) => return,
            };
            out.clear();
            self.damage(&buf[..n], &mut out);
            self.pace(out.len());
            if to.write_all(&out).is_err() {
                // The other side is not open (a board restarting): what was in flight is lost, as on a
                // real line.
                continue;
            }
            self.counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn damage(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let f = &self.faults;
        for &byte in bytes {
            if f.stall_every > 0 {
                self.since_stall += 1;
                if self.since_stall >= f.stall_every {
                    self.since_stall = 0;
                    self.counts.stalls.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(f.stall);
                }
            }
            if f.drop > 0.0 && self.rng.random_bool(f.drop) {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut byte = byte;
            if f.flip > 0.0 && self.rng.random_bool(f.flip) {
                byte ^= 1 << self.rng.random_range(0..8);
                self.counts.flipped.fetch_add(1, Ordering::Relaxed);
            }
            out.push(byte);
            if f.duplicate > 0.0 && self.rng.random_bool(f.duplicate) {
                out.push(byte);
                self.counts.duplicated.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until a UART at the configured speed would have sent `n` more bytes.
    fn pace(&mut self, n: usize) {
        let Some(baud) = self.baud else { return };
        let now = Instant::now();
        let start = self.line_free_at.max(now);
        self.line_free_at = start + Duration::from_secs_f64(n as f64 * 10.0 / f64::from(baud));
        if let Some(wait) = self.line_free_at.checked_duration_since(now) {
            std::thread::sleep(wait);
        }
    }
}

/// What reading a pseudo-terminal's master returns while its slave side is closed.
const EIO: i32 = 5;
