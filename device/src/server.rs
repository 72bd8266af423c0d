//! The device's side of the protocol: answers each request, reports damaged frames so the host resends,
//! and sends periodic stats. Transport-agnostic: it only sees a [`Link`].

use std::time::{Duration, Instant};

use embedded_io::{Read, Write};
use stdac_protocol::{
    Capabilities, DeviceHello, DeviceMsg, ErrorCode, FrameError, HostMsg, ModelInfo, Options, Request, Stats,
    MAX_FRAME, PROTOCOL_VERSION,
};

use crate::link::{Incoming, Link, LinkError};

/// The firmware's version, as reported in its hello.
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct Server {
    capabilities: Capabilities,
    model: Option<ModelInfo>,
    options: Options,
    stats: Stats,
    started: Instant,
    last_stats: Instant,
    /// The protocol of a host whose hello did not match ours; its requests are refused until a hello
    /// that matches.
    mismatched_host: Option<u16>,
    /// The last request and its reply: a resent request (its reply was lost on the line) gets the same
    /// reply again instead of being carried out twice.
    last: Option<(Request, DeviceMsg)>,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A device with no model, no camera and no store: it answers hellos and pings, and refuses frames
    /// with [`ErrorCode::NoModel`].
    pub fn new() -> Self {
        let now = Instant::now();
        Server {
            capabilities: Capabilities::default(),
            model: None,
            options: Options::default(),
            stats: Stats::default(),
            started: now,
            last_stats: now,
            mismatched_host: None,
            last: None,
        }
    }

    pub fn hello(&self) -> DeviceHello {
        DeviceHello {
            protocol: PROTOCOL_VERSION,
            firmware_version: heapless::String::try_from(FIRMWARE_VERSION).unwrap_or_default(),
            model: self.model.clone(),
            capabilities: self.capabilities,
        }
    }

    /// Serves the link until it fails (the line closed, an I/O error).
    pub fn run<T: Read + Write>(&mut self, link: &mut Link<T>) -> Result<(), LinkError<T::Error>> {
        loop {
            if let Some(incoming) = link.poll()? {
                self.stats.rx_errors = link.stats().errors();
                if let Some(reply) = self.handle(incoming) {
                    link.send(&reply)?;
                }
            }
            if let Some(stats) = self.stats_due(Instant::now()) {
                self.stats.rx_errors = link.stats().errors();
                link.send(&DeviceMsg::Stats(stats))?;
            }
        }
    }

    /// The reply to one incoming request or framing error, if it gets one.
    pub fn handle(&mut self, incoming: Incoming) -> Option<DeviceMsg> {
        let request = match incoming {
            Ok(request) => request,
            Err(FrameError::VersionMismatch { seq, protocol }) => return Some(self.greet(seq, protocol)),
            Err(error) => {
                let code = match error {
                    FrameError::Oversized => ErrorCode::Oversized { max: MAX_FRAME as u32 },
                    FrameError::Malformed => ErrorCode::Malformed,
                    _ => ErrorCode::CorruptFrame,
                };
                return Some(DeviceMsg::Nack { seq: None, code });
            }
        };
        if let Some((last_request, last_reply)) = &self.last {
            if *last_request == request {
                return Some(last_reply.clone());
            }
        }
        let reply = self.answer(&request);
        self.last = Some((request, reply.clone()));
        Some(reply)
    }

    fn answer(&mut self, request: &Request) -> DeviceMsg {
        let seq = request.seq;
        let nack = |code| DeviceMsg::Nack { seq: Some(seq), code };
        if let HostMsg::Hello(hello) = &request.msg {
            return self.greet(seq, hello.protocol);
        }
        if let Some(host) = self.mismatched_host {
            return nack(ErrorCode::ProtocolMismatch { device: PROTOCOL_VERSION, host });
        }
        match &request.msg {
            HostMsg::Hello(_) => unreachable!("answered above"),
            HostMsg::Ping => DeviceMsg::Ack { seq },
            HostMsg::SetOptions(options) => {
                self.options = *options;
                DeviceMsg::Ack { seq }
            }
            HostMsg::Frame(_) => {
                self.stats.frames_received += 1;
                nack(ErrorCode::NoModel)
            }
            HostMsg::FlashBegin(_)
            | HostMsg::FlashChunk(_)
            | HostMsg::FlashCommit
            | HostMsg::FlashAbort
            | HostMsg::StartStream
            | HostMsg::StopStream => nack(ErrorCode::Unsupported),
        }
    }

    /// Replies to a hello with ours, whatever the host's version, so that the host can name both
    /// versions; a mismatch is also said here, on the device's side.
    fn greet(&mut self, seq: u16, host_protocol: u16) -> DeviceMsg {
        if host_protocol == PROTOCOL_VERSION {
            self.mismatched_host = None;
        } else {
            eprintln!(
                "stdac-device: protocol mismatch: the host speaks version {host_protocol}, this firmware \
                 version {PROTOCOL_VERSION}; its requests will be refused until it says hello in version \
                 {PROTOCOL_VERSION}"
            );
            self.mismatched_host = Some(host_protocol);
        }
        DeviceMsg::Hello { seq, hello: self.hello() }
    }

    /// Stats to send now, if the host asked for them and the interval has passed.
    fn stats_due(&mut self, now: Instant) -> Option<Stats> {
        let interval = self.options.stats_interval_ms;
        if interval == 0 || now.duration_since(self.last_stats) < Duration::from_millis(interval.into()) {
            return None;
        }
        self.last_stats = now;
        self.stats.uptime_ms = now.duration_since(self.started).as_millis() as u64;
        Some(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stdac_protocol::{FrameChunk, HostHello, PixelFormat};

    fn request(seq: u16, msg: HostMsg) -> Incoming {
        Ok(Request { seq, msg })
    }

    fn host_hello(protocol: u16) -> HostMsg {
        HostMsg::Hello(HostHello { protocol, host_version: heapless::String::try_from("test").unwrap() })
    }

    #[test]
    fn hello_reports_versions_and_no_model() {
        let mut server = Server::new();
        let Some(DeviceMsg::Hello { seq: 3, hello }) =
            server.handle(request(3, host_hello(PROTOCOL_VERSION)))
        else {
            panic!("a hello is answered with a hello echoing its seq")
        };
        assert_eq!(hello.protocol, PROTOCOL_VERSION);
        assert_eq!(hello.firmware_version.as_str(), FIRMWARE_VERSION);
        assert_eq!(hello.model, None, "a board never flashed says so");
    }

    #[test]
    fn ping_is_acked_with_its_seq() {
        assert_eq!(Server::new().handle(request(41, HostMsg::Ping)), Some(DeviceMsg::Ack { seq: 41 }));
    }

    #[test]
    fn frames_without_a_model_are_refused_clearly() {
        let frame = FrameChunk {
            frame_id: 1,
            width: 28,
            height: 28,
            format: PixelFormat::Gray8,
            offset: 0,
            data: heapless::Vec::new(),
        };
        let reply = Server::new().handle(request(2, HostMsg::Frame(frame)));
        assert_eq!(reply, Some(DeviceMsg::Nack { seq: Some(2), code: ErrorCode::NoModel }));
    }

    #[test]
    fn damaged_frames_get_a_nack_without_seq_so_the_host_resends() {
        let mut server = Server::new();
        for (error, code) in [
            (FrameError::Crc, ErrorCode::CorruptFrame),
            (FrameError::Truncated, ErrorCode::CorruptFrame),
            (FrameError::TooShort, ErrorCode::CorruptFrame),
            (FrameError::Oversized, ErrorCode::Oversized { max: MAX_FRAME as u32 }),
            (FrameError::Malformed, ErrorCode::Malformed),
        ] {
            assert_eq!(server.handle(Err(error)), Some(DeviceMsg::Nack { seq: None, code }));
        }
    }

    #[test]
    fn a_mismatched_hello_is_answered_and_later_requests_refused_until_a_matching_hello() {
        let mut server = Server::new();
        let other = PROTOCOL_VERSION + 1;
        let Some(DeviceMsg::Hello { hello, .. }) = server.handle(request(1, host_hello(other))) else {
            panic!("the device still says which version it speaks")
        };
        assert_eq!(hello.protocol, PROTOCOL_VERSION);
        let refused = DeviceMsg::Nack {
            seq: Some(2),
            code: ErrorCode::ProtocolMismatch { device: PROTOCOL_VERSION, host: other },
        };
        assert_eq!(server.handle(request(2, HostMsg::Ping)), Some(refused));
        server.handle(request(3, host_hello(PROTOCOL_VERSION)));
        assert_eq!(server.handle(request(4, HostMsg::Ping)), Some(DeviceMsg::Ack { seq: 4 }));
    }

    #[test]
    fn an_undecodable_hello_from_another_version_is_answered_with_ours() {
        let mut server = Server::new();
        let reply = server.handle(Err(FrameError::VersionMismatch { seq: 8, protocol: 9 }));
        assert!(matches!(reply, Some(DeviceMsg::Hello { seq: 8, .. })));
        assert!(matches!(
            server.handle(request(9, HostMsg::Ping)),
            Some(DeviceMsg::Nack {
                code: ErrorCode::ProtocolMismatch { device: PROTOCOL_VERSION, host: 9 },
                ..
            })
        ));
    }

    #[test]
    fn a_resent_request_gets_the_same_reply_without_being_done_twice() {
        let mut server = Server::new();
        let frame = HostMsg::Frame(FrameChunk {
            frame_id: 5,
            width: 1,
            height: 1,
            format: PixelFormat::Gray8,
            offset: 0,
            data: heapless::Vec::from_slice(&[7]).unwrap(),
        });
        let first = server.handle(request(6, frame.clone()));
        let again = server.handle(request(6, frame));
        assert_eq!(first, again);
        assert_eq!(server.stats.frames_received, 1, "the resent frame is not counted twice");
    }

    #[test]
    fn stats_are_sent_only_when_asked_for_and_due() {
        let mut server = Server::new();
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(server.stats_due(later), None, "off by default");
        let options = Options { report_stn: false, stats_interval_ms: 1000 };
        server.handle(request(1, HostMsg::SetOptions(options)));
        let stats = server.stats_due(later).expect("five seconds is past a one-second interval");
        assert!(stats.uptime_ms >= 5000);
        assert_eq!(server.stats_due(later), None, "not again until another interval has passed");
    }
}
