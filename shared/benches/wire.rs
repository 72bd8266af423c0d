//! Wire benchmark: cost of encoding + framing and of decoding the two messages that dominate traffic, an
//! assignment (device → host) and a 28×28 frame (host → device), against postcard's own COBS framing
//! (`to_slice_cobs` / `CobsAccumulator`, no CRC, no leading delimiter) measured in the same run; then
//! what those wire sizes allow at common baud rates against the raw line rate.
//!
//! Run: `cargo bench -p stdac-protocol --bench wire`

use std::hint::black_box;
use std::time::{Duration, Instant};

use postcard::accumulator::{CobsAccumulator, FeedResult};
use stdac_protocol::*;

/// Runs `f` repeatedly for about `budget` and returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f(); // warm-up
    }
    let mut calls = 0u64;
    let started = Instant::now();
    while started.elapsed() < budget {
        for _ in 0..256 {
            f();
        }
        calls += 256;
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

struct Case {
    name: &'static str,
    payload: usize,
    wire: usize,
    peer_wire: usize,
    encode: f64,
    peer_encode: f64,
    decode: f64,
    peer_decode: f64,
}

fn measure<M>(name: &'static str, msg: &M, budget: Duration) -> Case
where
    M: serde::Serialize + Incoming + PartialEq,
{
    let payload = postcard::to_allocvec(msg).unwrap().len();
    let mut encoder = FrameEncoder::new();
    let wire = encoder.encode(msg).unwrap().to_vec();
    let mut peer_buf = [0u8; MAX_WIRE];
    let peer_wire = postcard::to_slice_cobs(msg, &mut peer_buf).unwrap().to_vec();

    let encode = rate(budget, || {
        black_box(encoder.encode(black_box(msg)).unwrap());
    });
    let peer_encode = rate(budget, || {
        black_box(postcard::to_slice_cobs(black_box(msg), &mut peer_buf).unwrap());
    });

    let mut decoder = Decoder::<M>::new();
    let decode = rate(budget, || {
        let (decoded, _) = decoder.feed(black_box(&wire)).unwrap();
        assert!(decoded.unwrap() == *msg);
    });
    let mut accumulator = CobsAccumulator::<MAX_WIRE>::new();
    let peer_decode = rate(budget, || match accumulator.feed::<M>(black_box(&peer_wire)) {
        FeedResult::Success { data, .. } => assert!(data == *msg),
        _ => panic!("postcard's accumulator must decode its own frame"),
    });
    Case {
        name,
        payload,
        wire: wire.len(),
        peer_wire: peer_wire.len(),
        encode,
        peer_encode,
        decode,
        peer_decode,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a quick run for `cargo test --benches` passes nothing.
    let full = std::env::args().any(|a| a == "--bench");
    let budget = Duration::from_millis(if full { 1000 } else { 20 });

    let assignment = DeviceMsg::Assignment(Assignment {
        frame_id: 123_456,
        cluster: 7,
        distance: 0.3141,
        margin: 0.2718,
        novel: false,
        inference_us: 1_850,
        stn: None,
    });
    let assignment_stn = DeviceMsg::Assignment(Assignment {
        stn: Some([0.98, 0.02, -0.01, -0.03, 1.01, 0.05]),
        ..match &assignment {
            DeviceMsg::Assignment(a) => a.clone(),
            _ => unreachable!(),
        }
    });
    // A real-looking 28×28 digit: mostly zero background, a bright stroke.
    let pixels: heapless::Vec<u8, MAX_CHUNK> = (0..784usize)
        .map(|i| if (i % 28).abs_diff(14) < 3 && (4..24).contains(&(i / 28)) { 250 } else { 0 })
        .collect();
    let frame = Request {
        seq: 4321,
        msg: HostMsg::Frame(FrameChunk {
            frame_id: 123_456,
            width: 28,
            height: 28,
            format: PixelFormat::Gray8,
            offset: 0,
            data: pixels,
        }),
    };

    let cases = [
        measure("assignment", &assignment, budget),
        measure("assignment + STN θ", &assignment_stn, budget),
        measure("28×28 frame", &frame, budget),
    ];

    println!("## Framing cost (stdac: COBS + CRC-32 + leading delimiter; peer: postcard to_slice_cobs)\n");
    println!("| message | payload B | wire B | overhead | peer wire B | encode msg/s | vs peer | decode msg/s | vs peer |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for c in &cases {
        println!(
            "| {} | {} | {} | {:.1} % | {} | {:.2e} | {:.2}× | {:.2e} | {:.2}× |",
            c.name,
            c.payload,
            c.wire,
            100.0 * (c.wire - c.payload) as f64 / c.payload as f64,
            c.peer_wire,
            c.encode,
            c.encode / c.peer_encode,
            c.decode,
            c.decode / c.peer_decode,
        );
    }

    println!("\n## What a line allows (8N1: 10 bits per byte)\n");
    println!("| baud | assignments/s | 28×28 frames/s | raw bound, 784 B/frame | vs raw |");
    println!("|---|---|---|---|---|");
    let (assign, frame) = (&cases[0], &cases[2]);
    for baud in [115_200.0, 921_600.0] {
        let bytes_per_s = baud / 10.0;
        let frames = bytes_per_s / frame.wire as f64;
        let raw = bytes_per_s / 784.0;
        println!(
            "| {baud} | {:.0} | {:.1} | {:.1} | {:.3}× |",
            bytes_per_s / assign.wire as f64,
            frames,
            raw,
            frames / raw,
        );
    }
}
