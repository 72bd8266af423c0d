//! Every message survives the wire unchanged, the largest ones fit a frame, and the bytes of a few are
//! pinned so that an accidental wire change fails here (the golden frames were computed independently,
//! with Python's zlib.crc32 and a separate COBS encoder).

use heapless::{String, Vec};
use stdac_protocol::*;

fn text<const N: usize>(s: &str) -> String<N> {
    String::try_from(s).unwrap()
}

fn full_chunk() -> Vec<u8, MAX_CHUNK> {
    // Worst case for COBS too: every byte value, zeros included.
    (0..MAX_CHUNK).map(|i| (i % 256) as u8).collect()
}

/// One of each host message, worst-case sizes where a field is variable.
fn every_host_msg() -> std::vec::Vec<HostMsg> {
    let all = std::vec![
        HostMsg::Hello(HostHello {
            protocol: PROTOCOL_VERSION,
            host_version: text("0.1.0-very-long-version")
        }),
        HostMsg::Ping,
        HostMsg::FlashBegin(FlashBegin { size: u32::MAX, sha256: [0xAB; 32], bundle_version: u16::MAX }),
        HostMsg::FlashChunk(FlashChunk { offset: u32::MAX, data: full_chunk() }),
        HostMsg::FlashCommit,
        HostMsg::FlashAbort,
        HostMsg::Frame(FrameChunk {
            frame_id: u32::MAX,
            width: u16::MAX,
            height: u16::MAX,
            format: PixelFormat::Yuyv,
            offset: u32::MAX,
            data: full_chunk(),
        }),
        HostMsg::StartStream,
        HostMsg::StopStream,
        HostMsg::SetOptions(Options { report_stn: true, stats_interval_ms: u32::MAX }),
        HostMsg::FlashRollback,
    ];
    // A new variant must be added above: this match has no wildcard, so it stops compiling.
    for msg in &all {
        match msg {
            HostMsg::Hello(_)
            | HostMsg::Ping
            | HostMsg::FlashBegin(_)
            | HostMsg::FlashChunk(_)
            | HostMsg::FlashCommit
            | HostMsg::FlashAbort
            | HostMsg::Frame(_)
            | HostMsg::StartStream
            | HostMsg::StopStream
            | HostMsg::SetOptions(_)
            | HostMsg::FlashRollback => {}
        }
    }
    all
}

fn every_error_code() -> std::vec::Vec<ErrorCode> {
    use ErrorCode::*;
    std::vec![
        CorruptFrame,
        Oversized { max: u32::MAX },
        Malformed,
        ProtocolMismatch { device: u16::MAX, host: 0 },
        NoModel,
        Busy,
        Unsupported,
        FlashNotStarted,
        FlashOffset { expected: u32::MAX },
        FlashTooLarge { max: u32::MAX },
        FlashSize { expected: u32::MAX, written: 0 },
        FlashChecksum,
        FlashInvalidBundle,
        Storage,
        FrameInvalid,
        Camera,
        Internal,
        NoPrevious,
    ]
}

fn every_device_msg() -> std::vec::Vec<DeviceMsg> {
    let mut all = std::vec![
        DeviceMsg::Hello {
            seq: u16::MAX,
            hello: DeviceHello {
                protocol: PROTOCOL_VERSION,
                firmware_version: text("0.1.0-very-long-version"),
                model: Some(ModelInfo { id: text("mnist-st-dac-2stn-int8-012345678"), sha256: [0xCD; 32] }),
                capabilities: Capabilities(u32::MAX),
            },
        },
        DeviceMsg::Hello {
            seq: 0,
            hello: DeviceHello {
                protocol: PROTOCOL_VERSION,
                firmware_version: text("0.1.0"),
                model: None,
                capabilities: Capabilities::default(),
            },
        },
        DeviceMsg::Ack { seq: u16::MAX },
        DeviceMsg::Assignment(Assignment {
            frame_id: u32::MAX,
            cluster: u16::MAX,
            distance: f32::MAX,
            margin: -0.0,
            novel: true,
            inference_us: u32::MAX,
            stn: Some([1.0, -0.5, 0.25, f32::MIN_POSITIVE, 1.0, f32::MAX]),
        }),
        DeviceMsg::Stats(Stats {
            uptime_ms: u64::MAX,
            frames_received: u32::MAX,
            assignments_sent: u32::MAX,
            frames_dropped: u32::MAX,
            rx_errors: u32::MAX,
        }),
        DeviceMsg::Log(LogLine { level: LogLevel::Debug, text: text(&"é".repeat(MAX_LOG / 2)) }),
        DeviceMsg::Error { code: ErrorCode::Camera, detail: text(&"x".repeat(MAX_DETAIL)) },
    ];
    for code in every_error_code() {
        all.push(DeviceMsg::Nack { seq: Some(7), code });
        all.push(DeviceMsg::Nack { seq: None, code });
    }
    for level in [LogLevel::Error, LogLevel::Warn, LogLevel::Info] {
        all.push(DeviceMsg::Log(LogLine { level, text: text("") }));
    }
    for msg in &all {
        match msg {
            DeviceMsg::Hello { .. }
            | DeviceMsg::Ack { .. }
            | DeviceMsg::Nack { .. }
            | DeviceMsg::Assignment(_)
            | DeviceMsg::Stats(_)
            | DeviceMsg::Log(_)
            | DeviceMsg::Error { .. } => {}
        }
    }
    all
}

/// Encodes `msg` into a frame and decodes it back with a fresh decoder.
fn through_the_wire<M: serde::Serialize + Incoming>(msg: &M) -> M {
    let mut encoder = FrameEncoder::new();
    let wire = encoder.encode(msg).expect("every message fits a frame");
    assert!(wire.len() <= MAX_WIRE, "{} wire bytes exceed MAX_WIRE", wire.len());
    let mut decoder = Decoder::<M>::new();
    let (decoded, rest) = decoder.feed(wire).expect("a whole frame yields an event");
    assert!(rest.is_empty(), "one frame, one event");
    decoded.expect("an intact frame decodes")
}

#[test]
fn every_host_message_round_trips() {
    for (seq, msg) in every_host_msg().into_iter().enumerate() {
        let request = Request { seq: seq as u16 * 4099, msg };
        assert_eq!(through_the_wire(&request), request);
    }
}

#[test]
fn every_device_message_round_trips() {
    for msg in every_device_msg() {
        assert_eq!(through_the_wire(&msg), msg);
    }
}

#[test]
fn every_pixel_format_round_trips_and_knows_its_size() {
    for (format, bpp) in [(PixelFormat::Gray8, 1), (PixelFormat::Rgb888, 3), (PixelFormat::Yuyv, 2)] {
        assert_eq!(format.frame_bytes(28, 28), 784 * bpp);
        let request = Request {
            seq: 1,
            msg: HostMsg::Frame(FrameChunk {
                frame_id: 1,
                width: 28,
                height: 28,
                format,
                offset: 0,
                data: Vec::new(),
            }),
        };
        assert_eq!(through_the_wire(&request), request);
    }
}

#[test]
fn a_whole_28x28_frame_fits_one_chunk() {
    assert!(PixelFormat::Gray8.frame_bytes(28, 28) <= MAX_CHUNK, "a model input frame must need one message");
}

fn assert_golden<M: serde::Serialize + Incoming + PartialEq + core::fmt::Debug>(msg: M, hex: &str) {
    let mut encoder = FrameEncoder::new();
    let wire = encoder.encode(&msg).unwrap();
    let got: std::string::String = wire.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(got, hex, "wire bytes of {msg:?} changed: bump PROTOCOL_VERSION if that was meant");
    assert_eq!(through_the_wire(&msg), msg);
}

#[test]
fn golden_bytes_of_a_host_hello() {
    let hello = Request { seq: 1, msg: HostMsg::Hello(HostHello { protocol: 1, host_version: text("x") }) };
    assert_golden(hello, "00020108010178d57c45bd00");
}

#[test]
fn golden_bytes_of_a_ping_with_a_two_byte_seq() {
    assert_golden(Request { seq: 300, msg: HostMsg::Ping }, "0008ac0201022f126a00");
}

/// `FlashRollback` was appended after the first release of the wire format: it takes the next tag and
/// leaves every earlier variant's tag (and so its bytes) as it was.
#[test]
fn appended_variants_take_new_tags_and_move_no_old_one() {
    let payload = |msg| postcard::to_allocvec(&Request { seq: 1, msg }).unwrap();
    assert_eq!(payload(HostMsg::SetOptions(Options::default())), [0x01, 0x09, 0x00, 0x00]);
    assert_eq!(payload(HostMsg::FlashRollback), [0x01, 0x0a]);
    let nack = |code| postcard::to_allocvec(&DeviceMsg::Nack { seq: None, code }).unwrap();
    assert_eq!(nack(ErrorCode::Internal), [0x02, 0x00, 0x10]);
    assert_eq!(nack(ErrorCode::NoPrevious), [0x02, 0x00, 0x11]);
}

#[test]
fn golden_bytes_of_an_ack_and_a_nack() {
    assert_golden(DeviceMsg::Ack { seq: 0x1234 }, "000801b424483c294200");
    assert_golden(DeviceMsg::Nack { seq: None, code: ErrorCode::CorruptFrame }, "00020201057c0dc5fc00");
}

#[test]
fn golden_bytes_of_an_assignment() {
    let assignment = DeviceMsg::Assignment(Assignment {
        frame_id: 7,
        cluster: 3,
        distance: 0.5,
        margin: 0.25,
        novel: false,
        inference_us: 1000,
        stn: None,
    });
    assert_golden(assignment, "00040307030101023f0103803e03e8070573a5300700");
}

#[test]
fn a_hello_from_another_protocol_version_is_reported_as_a_mismatch() {
    // A future host whose hello carries fields this version does not know.
    #[derive(serde::Serialize)]
    struct FutureHello {
        seq: u16,
        tag: u32,
        protocol: u16,
        something_new: [u64; 3],
    }
    let future = FutureHello { seq: 9, tag: 0, protocol: 7, something_new: [u64::MAX; 3] };
    let mut encoder = FrameEncoder::new();
    let wire = encoder.encode(&future).unwrap().to_vec();
    let mut decoder = Decoder::<Request>::new();
    let (event, _) = decoder.feed(&wire).unwrap();
    assert_eq!(event, Err(FrameError::VersionMismatch { seq: 9, protocol: 7 }));

    // And the device's side of it, read by a host.
    let future = (0u32, 5u16, 7u16, [u64::MAX; 3]);
    let wire = encoder.encode(&future).unwrap().to_vec();
    let mut decoder = Decoder::<DeviceMsg>::new();
    let (event, _) = decoder.feed(&wire).unwrap();
    assert_eq!(event, Err(FrameError::VersionMismatch { seq: 5, protocol: 7 }));
    assert_eq!(decoder.stats().malformed, 1);
}

#[test]
fn a_valid_frame_holding_no_known_message_is_malformed() {
    let mut encoder = FrameEncoder::new();
    // Variant 200 of HostMsg does not exist.
    let wire = encoder.encode(&(1u16, 200u32)).unwrap().to_vec();
    let mut decoder = Decoder::<Request>::new();
    assert_eq!(decoder.feed(&wire).unwrap().0, Err(FrameError::Malformed));
    // Trailing bytes after a whole message are not accepted either.
    let wire = encoder.encode(&(1u16, 1u32, 99u8)).unwrap().to_vec();
    assert_eq!(decoder.feed(&wire).unwrap().0, Err(FrameError::Malformed));
}

#[test]
fn capabilities_are_bit_flags() {
    let caps = Capabilities(Capabilities::FLASH | Capabilities::FRAMES);
    assert!(caps.has(Capabilities::FLASH) && caps.has(Capabilities::FRAMES));
    assert!(!caps.has(Capabilities::CAMERA) && !caps.has(Capabilities::STN));
}

#[test]
fn error_codes_explain_themselves() {
    for code in every_error_code() {
        let text = std::format!("{code}");
        assert!(text.len() > 10, "{code:?} needs a message a person understands, got {text:?}");
    }
    assert_eq!(
        std::format!("{}", ErrorCode::ProtocolMismatch { device: 2, host: 1 }),
        "protocol mismatch: the device speaks version 2, the host version 1"
    );
}
