//! The `stdac-device` binary as a board runs it, serving a real pseudo-terminal; spoken to with the
//! protocol crate alone.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use stdac_protocol::{
    Decoder, DeviceMsg, ErrorCode, FrameEncoder, HostHello, HostMsg, Request, PROTOCOL_VERSION,
};

struct Firmware {
    child: Child,
    line: TTYPort,
    decoder: Decoder<DeviceMsg>,
    encoder: FrameEncoder,
}

impl Drop for Firmware {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Firmware {
    fn start() -> Firmware {
        let (mut line, slave) = TTYPort::pair().unwrap();
        let tty = slave.name().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stdac-device"))
            .args(["--port", &tty])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        line.set_timeout(Duration::from_millis(100)).unwrap();
        let mut firmware = Firmware { child, line, decoder: Decoder::new(), encoder: FrameEncoder::new() };
        // The hello waits in the tty until the firmware opens it; then it answers.
        let hello = HostMsg::Hello(HostHello {
            protocol: PROTOCOL_VERSION,
            host_version: heapless::String::try_from("test").unwrap(),
        });
        firmware.send(0, hello);
        drop(slave);
        assert!(matches!(firmware.reply(), DeviceMsg::Hello { seq: 0, .. }));
        firmware
    }

    fn send(&mut self, seq: u16, msg: HostMsg) {
        let wire = self.encoder.encode(&Request { seq, msg }).unwrap();
        self.line.write_all(wire).unwrap();
    }

    fn reply(&mut self) -> DeviceMsg {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 1];
        while Instant::now() < deadline {
            // One byte at a time, so no byte after the reply is read and lost.
            if let Ok(1) = self.line.read(&mut buf) {
                if let Some((msg, _)) = self.decoder.feed(&buf) {
                    return msg.expect("the firmware sends valid frames");
                }
            }
        }
        panic!("the firmware did not reply within 10 s")
    }
}

#[test]
fn the_firmware_answers_pings_and_survives_garbage_and_oversized_frames() {
    let mut firmware = Firmware::start();
    firmware.send(1, HostMsg::Ping);
    assert_eq!(firmware.reply(), DeviceMsg::Ack { seq: 1 });

    let mut flood = vec![0u8];
    flood.extend(std::iter::repeat_n(0xC3u8, 20_000)); // no delimiter for ~18 frames' worth
    flood.push(0);
    firmware.line.write_all(&flood).unwrap();
    let max = stdac_protocol::MAX_FRAME as u32;
    assert_eq!(firmware.reply(), DeviceMsg::Nack { seq: None, code: ErrorCode::Oversized { max } });

    firmware.line.write_all(&[0xFF, 0x13, 0x00]).unwrap();
    assert_eq!(firmware.reply(), DeviceMsg::Nack { seq: None, code: ErrorCode::CorruptFrame });

    firmware.send(2, HostMsg::Ping);
    assert_eq!(firmware.reply(), DeviceMsg::Ack { seq: 2 }, "still serving after the garbage");
    assert!(firmware.child.try_wait().unwrap().is_none(), "and still running");
}

#[test]
fn the_firmware_refuses_what_it_cannot_do_yet() {
    let mut firmware = Firmware::start();
    firmware.send(3, HostMsg::FlashCommit);
    assert_eq!(firmware.reply(), DeviceMsg::Nack { seq: Some(3), code: ErrorCode::Unsupported });
    firmware.send(4, HostMsg::StartStream);
    assert_eq!(firmware.reply(), DeviceMsg::Nack { seq: Some(4), code: ErrorCode::Unsupported });
}

#[test]
fn a_missing_port_is_an_error_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_stdac-device"))
        .args(["--port", "/dev/stdac-no-such-tty"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open serial port /dev/stdac-no-such-tty"), "{stderr}");
}
