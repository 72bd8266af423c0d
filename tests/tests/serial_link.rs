//! The host client (`stdac::transport`) against the device firmware (`stdac_device`) over a real
//! pseudo-terminal pair: the kernel's tty layer sits between them, exactly where a UART driver would.

use std::io::Read;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use stdac::transport::{DeviceClient, LinkConfig, LinkError};
use stdac_device::{serial, Link, Server};
use stdac_protocol::{
    DeviceHello, DeviceMsg, ErrorCode, FrameChunk, FrameEncoder, HostMsg, Options, PixelFormat, Request,
    PROTOCOL_VERSION,
};

fn quick() -> LinkConfig {
    LinkConfig { timeout: Duration::from_millis(300), retries: 3, ..LinkConfig::default() }
}

/// The firmware serving the slave side of a new pseudo-terminal on a thread; a client on the master side.
/// The thread ends when the client (and so the master) is dropped.
fn device_on_pty() -> (DeviceClient, String, JoinHandle<String>) {
    let (master, slave) = TTYPort::pair().expect("pseudo-terminal pair");
    let tty = slave.name().expect("slave name");
    let path = tty.clone();
    let device = std::thread::spawn(move || {
        let stream = serial::open(&path, 115_200).expect("the firmware opens the tty");
        drop(slave);
        let error =
            Server::new().run(&mut Link::new(stream)).expect_err("serving ends only when the line fails");
        error.to_string()
    });
    (DeviceClient::new(Box::new(master), &tty, quick()), tty, device)
}

#[test]
fn hello_negotiates_the_protocol_and_reports_a_board_without_model() {
    let (mut client, _, _) = device_on_pty();
    let hello = client.hello().expect("hello");
    assert_eq!(hello.protocol, PROTOCOL_VERSION);
    assert_eq!(hello.firmware_version.as_str(), env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.model, None, "a board never flashed says so in its hello");
}

#[test]
fn a_thousand_round_trips_need_no_resend_on_a_clean_line() {
    let (mut client, _, _) = device_on_pty();
    client.hello().unwrap();
    for i in 0..1000 {
        client.ping().unwrap_or_else(|e| panic!("ping {i}: {e}"));
    }
    assert_eq!(client.stats().resends, 0);
    assert_eq!(client.stats().frames.errors(), 0);
}

#[test]
fn garbage_and_a_corrupt_request_are_nacked_and_the_session_goes_on() {
    let (mut client, _, _) = device_on_pty();
    client.hello().unwrap();
    // Delimiter-free noise longer than any frame, short junk frames, and a request with a flipped bit.
    client.send_raw(&[0x5A; 5000]).unwrap();
    client.send_raw(&[0, 0x05, 0x11, 0, 0x01, 0]).unwrap();
    let mut damaged = FrameEncoder::new().encode(&Request { seq: 1, msg: HostMsg::Ping }).unwrap().to_vec();
    damaged[3] ^= 0x40; // a flip that makes no zero, so the frame stays one frame
    client.send_raw(&damaged).unwrap();

    client.set_options(Options { report_stn: false, stats_interval_ms: 10 }).expect("the session goes on");
    let stats = loop {
        match client.next_event(Duration::from_secs(2)).unwrap() {
            Some(DeviceMsg::Stats(stats)) => break stats,
            Some(_) => continue,
            None => panic!("stats were asked for"),
        }
    };
    assert_eq!(stats.rx_errors, 4, "oversized noise, truncated, too short and CRC: four frames dropped");
    client.ping().expect("still answering");
}

#[test]
fn replies_are_matched_while_stats_stream_in_between() {
    let (mut client, _, _) = device_on_pty();
    client.hello().unwrap();
    client.set_options(Options { report_stn: false, stats_interval_ms: 1 }).unwrap();
    for _ in 0..300 {
        client.ping().expect("each ping gets its own ack among the stats");
    }
    // 300 round trips take well over a millisecond: stats arrived among the acks and were kept.
    let mut stats_seen = 0;
    while let Some(DeviceMsg::Stats(_)) = client.next_event(Duration::from_millis(1)).unwrap() {
        stats_seen += 1;
    }
    assert!(stats_seen > 0, "stats that arrived while waiting for acks were queued for the reader");
    assert_eq!(client.stats().frames.errors(), 0);
}

#[test]
fn frames_sent_to_a_board_without_a_model_are_refused_with_a_clear_error() {
    let (mut client, tty, _) = device_on_pty();
    client.hello().unwrap();
    let frame = FrameChunk {
        frame_id: 1,
        width: 28,
        height: 28,
        format: PixelFormat::Gray8,
        offset: 0,
        data: heapless::Vec::from_slice(&[128u8; 784]).unwrap(),
    };
    let error = client.request(HostMsg::Frame(frame)).expect_err("no model yet");
    assert!(matches!(error, LinkError::Rejected { code: ErrorCode::NoModel, .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&tty) && text.contains("flash"), "the error names the port and the fix: {text}");
}

#[test]
fn the_host_sees_the_device_hang_up() {
    let (mut client, _, device) = device_on_pty();
    client.hello().unwrap();
    drop(client);
    let device_error = device.join().unwrap();
    assert!(device_error.contains("I/O") || device_error.contains("closed"), "{device_error}");

    // And the other way round: the firmware's end goes away while the host waits.
    let (master, slave) = TTYPort::pair().unwrap();
    let name = slave.name().unwrap();
    let mut client = DeviceClient::new(Box::new(master), &name, quick());
    drop(slave);
    let error = client.ping().expect_err("nobody on the line");
    assert!(matches!(error, LinkError::Closed { .. }), "{error:?}");
    assert!(error.to_string().contains(&name), "{error}");
}

#[test]
fn a_silent_device_is_retried_then_reported_with_the_port_name() {
    let (master, slave) = TTYPort::pair().unwrap();
    let name = slave.name().unwrap();
    let config = LinkConfig { timeout: Duration::from_millis(50), retries: 2, ..LinkConfig::default() };
    let mut client = DeviceClient::new(Box::new(master), &name, config);
    let started = Instant::now();
    let error = client.ping().expect_err("no firmware on the line");
    assert!(
        matches!(error, LinkError::NoReply { attempts: 3, .. }),
        "one attempt and two retries: {error:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(error.to_string().contains(&name));

    // The three copies really went out, whole and identical.
    let mut slave = slave;
    slave.set_timeout(Duration::from_millis(200)).unwrap();
    let mut bytes = vec![0u8; 256];
    let mut got: Vec<u8> = Vec::new();
    while let Ok(n) = slave.read(&mut bytes) {
        got.extend(&bytes[..n]);
    }
    let frame_len = got.len() / 3;
    assert_eq!(got.len(), 3 * frame_len);
    assert_eq!(got[..frame_len], got[frame_len..2 * frame_len]);
}

#[test]
fn a_port_is_opened_exclusively() {
    let (_master, slave) = TTYPort::pair().unwrap();
    let name = slave.name().unwrap();
    let _first = DeviceClient::open(&name, quick()).expect("first opener");
    let error = DeviceClient::open(&name, quick()).err().expect("a second opener must be refused");
    assert!(matches!(error, LinkError::Open { .. }));
    assert!(error.to_string().contains(&name), "{error}");
}

#[test]
fn a_missing_port_is_an_error_naming_it() {
    let error = DeviceClient::open("/dev/stdac-no-such-port", quick()).err().unwrap();
    assert_eq!(error.to_string(), "cannot open serial port /dev/stdac-no-such-port");
}

/// A firmware of another protocol version, as far as its hello goes.
fn foreign_device_on_pty(device_protocol: u16) -> DeviceClient {
    let (master, slave) = TTYPort::pair().unwrap();
    let name = slave.name().unwrap();
    std::thread::spawn(move || {
        let mut port = slave;
        let mut decoder = stdac_protocol::Decoder::<Request>::new();
        let mut encoder = FrameEncoder::new();
        let mut buf = [0u8; 256];
        loop {
            let n = match port.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => return,
            };
            let mut input = &buf[..n];
            while let Some((request, rest)) = decoder.feed(input) {
                input = rest;
                if let Ok(Request { seq, msg: HostMsg::Hello(_) }) = request {
                    let hello = DeviceHello {
                        protocol: device_protocol,
                        firmware_version: heapless::String::try_from("9.9.9").unwrap(),
                        model: None,
                        capabilities: Default::default(),
                    };
                    let _ = std::io::Write::write_all(
                        &mut port,
                        encoder.encode(&DeviceMsg::Hello { seq, hello }).unwrap(),
                    );
                }
            }
        }
    });
    DeviceClient::new(Box::new(master), &name, quick())
}

#[test]
fn a_protocol_mismatch_is_a_clear_error_on_the_host() {
    let mut client = foreign_device_on_pty(PROTOCOL_VERSION + 1);
    let error = client.hello().expect_err("versions differ");
    let text = error.to_string();
    assert!(
        matches!(error, LinkError::ProtocolMismatch { device, host, .. } if device == PROTOCOL_VERSION + 1 && host == PROTOCOL_VERSION),
        "{error:?}"
    );
    assert!(text.contains(&format!("version {}", PROTOCOL_VERSION + 1)), "{text}");
}

#[test]
fn a_protocol_mismatch_is_refused_by_the_device() {
    let (mut client, _, _) = device_on_pty();
    let future_hello = HostMsg::Hello(stdac_protocol::HostHello {
        protocol: PROTOCOL_VERSION + 1,
        host_version: heapless::String::try_from("9.9.9").unwrap(),
    });
    let DeviceMsg::Hello { hello, .. } = client.request(future_hello).unwrap() else { panic!("a hello") };
    assert_eq!(hello.protocol, PROTOCOL_VERSION, "the device still names its own version");
    let error = client.ping().expect_err("refused until the versions match");
    assert!(matches!(error, LinkError::ProtocolMismatch { .. }), "{error:?}");
    client.hello().expect("a hello in the device's version reopens the session");
    client.ping().unwrap();
}
