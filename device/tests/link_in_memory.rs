//! The device link and server over an in-memory byte stream: the same code that serves a UART, with
//! the line replaced by two buffers and reads that come in awkward sizes.

use std::collections::VecDeque;

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write};
use stdac_device::{Link, LinkError, Server};
use stdac_protocol::{Decoder, DeviceMsg, ErrorCode, FrameEncoder, HostMsg, Request};

/// A line whose reads return at most `chunk` bytes, then end of stream once the input runs out.
struct MemoryLine {
    input: VecDeque<u8>,
    chunk: usize,
    output: Vec<u8>,
}

impl ErrorType for MemoryLine {
    type Error = ErrorKind;
}

impl Read for MemoryLine {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let n = self.chunk.min(buf.len()).min(self.input.len());
        for slot in &mut buf[..n] {
            *slot = self.input.pop_front().unwrap();
        }
        Ok(n) // 0 once drained: end of stream
    }
}

impl ReadReady for MemoryLine {
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        Ok(true) // a read never waits: it returns bytes or the end of stream at once
    }
}

impl Write for MemoryLine {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

fn replies(wire: &[u8]) -> Vec<DeviceMsg> {
    let mut decoder = Decoder::<DeviceMsg>::new();
    let mut input = wire;
    let mut out = Vec::new();
    while let Some((msg, rest)) = decoder.feed(input) {
        out.push(msg.expect("the device sends only valid frames"));
        input = rest;
    }
    out
}

#[test]
fn requests_split_across_reads_and_packed_into_one_read_are_all_answered() {
    let mut encoder = FrameEncoder::new();
    let mut input = Vec::new();
    for seq in 0..20 {
        input.extend(encoder.encode(&Request { seq, msg: HostMsg::Ping }).unwrap());
    }
    input.extend([0x42; 40]); // noise, closed by the next frame's leading delimiter
    input.extend(encoder.encode(&Request { seq: 99, msg: HostMsg::Ping }).unwrap());

    for chunk in [1, 3, 7, 64, 256] {
        let line = MemoryLine { input: input.iter().copied().collect(), chunk, output: Vec::new() };
        let mut link = Link::new(line);
        let result = Server::new().run(&mut link);
        assert!(matches!(result, Err(LinkError::Closed)), "the server stops at end of stream");
        let got = replies(&link.io_mut().output);
        let mut expected: Vec<DeviceMsg> = (0..20).map(|seq| DeviceMsg::Ack { seq }).collect();
        expected.push(DeviceMsg::Nack { seq: None, code: ErrorCode::CorruptFrame });
        expected.push(DeviceMsg::Ack { seq: 99 });
        assert_eq!(got, expected, "reads of {chunk} bytes");
        assert_eq!(link.stats().frames, 21);
    }
}
