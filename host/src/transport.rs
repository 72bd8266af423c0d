//! The host's end of the serial line: a client of a board's `stdac-device` over the `serialport` crate.
//!
//! Requests are stop-and-wait: each is resent on a timeout or when the device reports a damaged frame,
//! up to a retry limit; the device answers a resent request without doing it twice. Messages the device
//! sends on its own (assignments, stats, log lines) that arrive while a reply is awaited are queued for
//! [`DeviceClient::next_event`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use serialport::SerialPort;
use stdac_protocol::{
    Decoder, DeviceHello, DeviceMsg, ErrorCode, FrameEncoder, FrameError, FrameStats, HostHello, HostMsg,
    Options, Request, Seq, TooLarge, PROTOCOL_VERSION,
};

/// How the host talks to a port.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub baud: u32,
    /// How long to wait for each reply before resending.
    pub timeout: Duration,
    /// Resends after the first attempt.
    pub retries: u32,
    /// Drive DTR to this level on open; `None` leaves it alone, since toggling it resets some boards.
    pub dtr: Option<bool>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig { baud: 115_200, timeout: Duration::from_millis(1000), retries: 3, dtr: None }
    }
}

/// Unsolicited messages kept while waiting for replies; beyond this the oldest are dropped and counted.
const MAX_QUEUED_EVENTS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open serial port {port}")]
    Open {
        port: String,
        #[source]
        source: serialport::Error,
    },
    #[error("I/O error on serial port {port}")]
    Io {
        port: String,
        #[source]
        source: io::Error,
    },
    #[error("serial port {port} was closed at the other end (device stopped or cable pulled)")]
    Closed { port: String },
    #[error("no reply from the device on {port} to {request} after {attempts} attempts of {timeout:?} each")]
    NoReply { port: String, request: &'static str, attempts: u32, timeout: Duration },
    #[error("the device on {port} refused {request}: {code}")]
    Rejected { port: String, request: &'static str, code: ErrorCode },
    #[error(
        "the device on {port} speaks protocol version {device}, this stdac speaks version {host}: \
         use an stdac and a firmware of the same protocol version"
    )]
    ProtocolMismatch { port: String, device: u16, host: u16 },
    #[error("unexpected reply to {request} from the device on {port}: {reply:?}")]
    Unexpected { port: String, request: &'static str, reply: Box<DeviceMsg> },
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

/// Counters of one client's session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent again after a timeout or a nack of a damaged frame.
    pub resends: u32,
    /// What arrived from the device, damaged frames included.
    pub frames: FrameStats,
    /// Unsolicited messages dropped because nobody read them.
    pub events_dropped: u32,
}

pub struct DeviceClient {
    port: Box<dyn SerialPort>,
    name: String,
    config: LinkConfig,
    encoder: FrameEncoder,
    decoder: Decoder<DeviceMsg>,
    /// Bytes read but not yet decoded: one read may carry several frames.
    rx: [u8; 512],
    rx_start: usize,
    rx_end: usize,
    next_seq: Seq,
    /// With the time each was read, so that a latency counts from when it came, not when it was asked for.
    events: VecDeque<(DeviceMsg, Instant)>,
    stats: ClientStats,
}

impl DeviceClient {
    /// Opens `path` exclusively, raw, at `config.baud`.
    pub fn open(path: &str, config: LinkConfig) -> Result<Self, LinkError> {
        let mut builder =
            serialport::new(path, config.baud).timeout(config.timeout).exclusive(true).preserve_dtr_on_open();
        if let Some(level) = config.dtr {
            builder = builder.dtr_on_open(level);
        }
        let port = builder.open().map_err(|source| LinkError::Open { port: path.to_string(), source })?;
        Ok(Self::new(port, path, config))
    }

    /// A client over a port that is already open (a pseudo-terminal's master side, say). `name` is how
    /// errors refer to it.
    pub fn new(port: Box<dyn SerialPort>, name: &str, config: LinkConfig) -> Self {
        DeviceClient {
            port,
            name: name.to_string(),
            config,
            encoder: FrameEncoder::new(),
            decoder: Decoder::new(),
            rx: [0; 512],
            rx_start: 0,
            rx_end: 0,
            // Start where a previous session on this port is unlikely to have left off, so that a reply
            // still in flight from it is not taken for ours.
            next_seq: initial_seq(),
            events: VecDeque::new(),
            stats: ClientStats::default(),
        }
    }

    pub fn port_name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    pub fn stats(&self) -> ClientStats {
        ClientStats { frames: self.decoder.stats(), ..self.stats }
    }

    /// Opens the session: checks that both sides speak the same protocol version and returns the
    /// device's hello.
    pub fn hello(&mut self) -> Result<DeviceHello, LinkError> {
        let host_version = heapless::String::try_from(env!("CARGO_PKG_VERSION")).unwrap_or_default();
        let reply = self.request(HostMsg::Hello(HostHello { protocol: PROTOCOL_VERSION, host_version }))?;
        match reply {
            DeviceMsg::Hello { hello, .. } if hello.protocol == PROTOCOL_VERSION => Ok(hello),
            DeviceMsg::Hello { hello, .. } => Err(self.mismatch(hello.protocol)),
            reply => Err(self.unexpected("hello", reply)),
        }
    }

    /// One round trip; returns its duration.
    pub fn ping(&mut self) -> Result<Duration, LinkError> {
        let started = Instant::now();
        match self.request(HostMsg::Ping)? {
            DeviceMsg::Ack { .. } => Ok(started.elapsed()),
            reply => Err(self.unexpected("ping", reply)),
        }
    }

    pub fn set_options(&mut self, options: Options) -> Result<(), LinkError> {
        match self.request(HostMsg::SetOptions(options))? {
            DeviceMsg::Ack { .. } => Ok(()),
            reply => Err(self.unexpected("set-options", reply)),
        }
    }

    /// Sends `msg` and waits for its reply (a hello or an ack), resending on timeouts and on nacks of
    /// damaged frames. A nack of the request itself is [`LinkError::Rejected`].
    pub fn request(&mut self, msg: HostMsg) -> Result<DeviceMsg, LinkError> {
        self.request_within(msg, self.config.timeout)
    }

    /// [`DeviceClient::request`] waiting `timeout` for each reply instead of the configured timeout: for
    /// requests that take the device long (a flash commit loads the new model).
    pub fn request_within(&mut self, msg: HostMsg, timeout: Duration) -> Result<DeviceMsg, LinkError> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let what = request_name(&msg);
        let wire = self.encoder.encode(&Request { seq, msg })?.to_vec();
        let attempts = self.config.retries + 1;
        let mut early_resends = 0;
        for attempt in 0..attempts {
            if attempt > 0 {
                self.stats.resends += 1;
            }
            self.write(&wire)?;
            let deadline = Instant::now() + timeout;
            while let Some(incoming) = self.next_incoming(deadline)? {
                match incoming {
                    Ok(DeviceMsg::Hello { seq: s, hello }) if s == seq => {
                        return Ok(DeviceMsg::Hello { seq, hello });
                    }
                    Ok(DeviceMsg::Ack { seq: s }) if s == seq => return Ok(DeviceMsg::Ack { seq }),
                    Ok(DeviceMsg::Nack { seq: Some(s), code }) if s == seq => {
                        return Err(match code {
                            ErrorCode::ProtocolMismatch { device, .. } => self.mismatch(device),
                            code => LinkError::Rejected { port: self.name.clone(), request: what, code },
                        });
                    }
                    // The device could not read a frame, maybe ours: send it again now, and keep waiting,
                    // since the nack may be an old one and the reply to this copy on its way.
                    Ok(DeviceMsg::Nack {
                        seq: None,
                        code: ErrorCode::CorruptFrame | ErrorCode::Oversized { .. },
                    }) => {
                        if early_resends < self.config.retries {
                            early_resends += 1;
                            self.stats.resends += 1;
                            self.write(&wire)?;
                        }
                    }
                    // A frame with a good CRC it does not understand: resending will not help.
                    Ok(DeviceMsg::Nack { seq: None, code }) => {
                        return Err(LinkError::Rejected { port: self.name.clone(), request: what, code });
                    }
                    Ok(event) if is_unsolicited(&event) => self.queue_event(event),
                    Err(FrameError::VersionMismatch { seq: s, protocol }) if s == seq => {
                        return Err(self.mismatch(protocol));
                    }
                    // A reply to an earlier request (or an earlier copy of this one), or a damaged frame
                    // (already counted): keep waiting.
                    Ok(_) | Err(_) => {}
                }
            }
        }
        Err(LinkError::NoReply { port: self.name.clone(), request: what, attempts, timeout })
    }

    /// The next message the device sent on its own, waiting up to `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<DeviceMsg>, LinkError> {
        Ok(self.next_event_read_at(timeout)?.map(|(event, _)| event))
    }

    /// [`DeviceClient::next_event`] with the time it was read off the port (earlier than now when it
    /// arrived while a reply was awaited).
    pub fn next_event_read_at(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(DeviceMsg, Instant)>, LinkError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        let deadline = Instant::now() + timeout;
        while let Some(incoming) = self.next_incoming(deadline)? {
            // Late replies and damaged frames are skipped.
            if let Ok(event) = incoming {
                if is_unsolicited(&event) {
                    return Ok(Some((event, Instant::now())));
                }
            }
        }
        Ok(None)
    }

    /// Writes bytes as they are, bypassing framing: for line tests that inject noise.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.write(bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.port.write_all(bytes).and_then(|()| self.port.flush()).map_err(|e| self.io_error(e))
    }

    /// The next decoded frame (or framing error), or `None` once `deadline` passes. Reads only what the
    /// port has, and never past the end of a frame: what follows stays for the next call.
    fn next_incoming(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<Result<DeviceMsg, FrameError>>, LinkError> {
        loop {
            if self.rx_start < self.rx_end {
                let pending = &self.rx[self.rx_start..self.rx_end];
                match self.decoder.feed(pending) {
                    Some((incoming, rest)) => {
                        self.rx_start = self.rx_end - rest.len();
                        return Ok(Some(incoming));
                    }
                    None => self.rx_start = self.rx_end,
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if let Err(e) = self.port.set_timeout(deadline - now) {
                return Err(self.io_error(e.into()));
            }
            match self.port.read(&mut self.rx) {
                Ok(0) => return Err(LinkError::Closed { port: self.name.clone() }),
                Ok(n) => (self.rx_start, self.rx_end) = (0, n),
                Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    fn queue_event(&mut self, event: DeviceMsg) {
        if self.events.len() == MAX_QUEUED_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back((event, Instant::now()));
    }

    fn io_error(&self, source: io::Error) -> LinkError {
        // What a pseudo-terminal or USB serial port reports once its other end is gone: EIO, or EPIPE
        // as `serialport` words it.
        if source.raw_os_error() == Some(5) || source.kind() == io::ErrorKind::BrokenPipe {
            return LinkError::Closed { port: self.name.clone() };
        }
        LinkError::Io { port: self.name.clone(), source }
    }

    fn mismatch(&self, device: u16) -> LinkError {
        LinkError::ProtocolMismatch { port: self.name.clone(), device, host: PROTOCOL_VERSION }
    }

    fn unexpected(&self, request: &'static str, reply: DeviceMsg) -> LinkError {
        LinkError::Unexpected { port: self.name.clone(), request, reply: Box::new(reply) }
    }
}

fn initial_seq() -> Seq {
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (clock.subsec_nanos() ^ std::process::id()) as Seq
}

/// Messages the device sends on its own rather than in reply to a request.
fn is_unsolicited(msg: &DeviceMsg) -> bool {
    matches!(
        msg,
        DeviceMsg::Assignment(_) | DeviceMsg::Stats(_) | DeviceMsg::Log(_) | DeviceMsg::Error { .. }
    )
}

/// How errors name a request.
fn request_name(msg: &HostMsg) -> &'static str {
    match msg {
        HostMsg::Hello(_) => "hello",
        HostMsg::Ping => "ping",
        HostMsg::FlashBegin(_) => "flash-begin",
        HostMsg::FlashChunk(_) => "flash-chunk",
        HostMsg::FlashCommit => "flash-commit",
        HostMsg::FlashAbort => "flash-abort",
        HostMsg::FlashRollback => "flash-rollback",
        HostMsg::Frame(_) => "frame",
        HostMsg::StartStream => "start-stream",
        HostMsg::StopStream => "stop-stream",
        HostMsg::SetOptions(_) => "set-options",
    }
}
