//! Fuzzes the streaming decoder with arbitrary bytes in arbitrary chunk sizes, in both directions.
//! Beyond "never panics": every message it accepts must re-encode to a frame that decodes to the same
//! message, and the counters must add up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stdac_protocol::{Decoder, DeviceMsg, FrameEncoder, Incoming, Request};

fn check<M: Incoming + serde::Serialize + PartialEq + core::fmt::Debug>(chunk_sizes: &[u8], bytes: &[u8]) {
    let mut decoder = Decoder::<M>::new();
    let mut encoder = FrameEncoder::new();
    let (mut accepted, mut events) = (0u32, 0u32);
    let mut rest = bytes;
    let mut sizes = chunk_sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&255) as usize).clamp(1, rest.len());
        let (mut chunk, tail) = rest.split_at(n);
        rest = tail;
        while let Some((event, more)) = decoder.feed(chunk) {
            events += 1;
            if let Ok(message) = event {
                accepted += 1;
                let wire = encoder.encode(&message).expect("an accepted message fits a frame").to_vec();
                let mut again = Decoder::<M>::new();
                let (decoded, _) = again.feed(&wire).expect("a whole frame");
                assert_eq!(decoded.expect("re-encoded message decodes"), message);
            }
            chunk = more;
        }
    }
    let stats = decoder.stats();
    assert_eq!(stats.frames - stats.malformed, accepted);
    assert_eq!(stats.frames + stats.oversized + stats.truncated + stats.too_short + stats.crc, events);
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the chunk sizes; the rest is the line.
    let split = data.first().map_or(0, |&n| (n as usize % 8).min(data.len().saturating_sub(1)));
    let (sizes, line) = data.get(1..).unwrap_or(&[]).split_at(split);
    check::<Request>(sizes, line);
    check::<DeviceMsg>(sizes, line);
});
