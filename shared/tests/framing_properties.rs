//! Property tests of the framing on a hostile line: random corruption, dropped bytes, splits at every
//! position and garbage between frames. What must always hold:
//! - nothing panics;
//! - no damaged frame is ever delivered as a valid message (what comes out is exactly a subsequence of
//!   what went in);
//! - resynchronisation within one frame: every frame whose own bytes arrived intact is delivered.

use proptest::prelude::*;
use stdac_protocol::*;

fn chunk_data(max: usize) -> impl Strategy<Value = heapless::Vec<u8, MAX_CHUNK>> {
    // Zero-heavy bytes exercise COBS; full-range bytes exercise long blocks.
    prop_oneof![
        prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..=max),
        prop::collection::vec(1u8..=255, 0..=max),
    ]
    .prop_map(|v| heapless::Vec::from_slice(&v).unwrap())
}

fn host_msg() -> impl Strategy<Value = HostMsg> {
    prop_oneof![
        (any::<u16>(), "[a-z0-9.]{0,24}").prop_map(|(protocol, v)| HostMsg::Hello(HostHello {
            protocol,
            host_version: heapless::String::try_from(v.as_str()).unwrap(),
        })),
        Just(HostMsg::Ping),
        (any::<u32>(), any::<[u8; 32]>(), any::<u16>()).prop_map(|(size, sha256, bundle_version)| {
            HostMsg::FlashBegin(FlashBegin { size, sha256, bundle_version })
        }),
        (any::<u32>(), chunk_data(MAX_CHUNK))
            .prop_map(|(offset, data)| HostMsg::FlashChunk(FlashChunk { offset, data })),
        Just(HostMsg::FlashCommit),
        (any::<u32>(), any::<u32>(), chunk_data(MAX_CHUNK)).prop_map(|(frame_id, offset, data)| {
            HostMsg::Frame(FrameChunk {
                frame_id,
                width: 28,
                height: 28,
                format: PixelFormat::Gray8,
                offset,
                data,
            })
        }),
        (any::<bool>(), any::<u32>()).prop_map(|(report_stn, stats_interval_ms)| {
            HostMsg::SetOptions(Options { report_stn, stats_interval_ms })
        }),
    ]
}

fn requests(max: usize) -> impl Strategy<Value = Vec<Request>> {
    prop::collection::vec((any::<u16>(), host_msg()).prop_map(|(seq, msg)| Request { seq, msg }), 1..max)
}

/// The wire bytes of each request, one frame each.
fn frames_of(requests: &[Request]) -> Vec<Vec<u8>> {
    let mut encoder = FrameEncoder::new();
    requests.iter().map(|r| encoder.encode(r).unwrap().to_vec()).collect()
}

/// Feeds `wire` to a fresh decoder in chunks whose sizes cycle through `splits`; returns the messages
/// delivered as valid and the number of errors reported.
fn decode(wire: &[u8], splits: &[usize]) -> (Vec<Request>, usize) {
    let mut decoder = Decoder::<Request>::new();
    let (mut ok, mut errors) = (Vec::new(), 0);
    let mut rest = wire;
    let mut sizes = splits.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        let (mut chunk, tail) = rest.split_at(n);
        rest = tail;
        while let Some((event, more)) = decoder.feed(chunk) {
            match event {
                Ok(request) => ok.push(request),
                Err(_) => errors += 1,
            }
            chunk = more;
        }
    }
    assert_eq!(decoder.stats().frames as usize, ok.len() + decoder.stats().malformed as usize);
    (ok, errors)
}

/// `sub` appears in `all` in order (possibly with gaps).
fn is_subsequence(sub: &[Request], all: &[Request]) -> bool {
    let mut it = all.iter();
    sub.iter().all(|s| it.any(|a| a == s))
}

/// The requests whose frames (laid end to end on the wire) contain none of the damaged byte positions.
fn untouched(frames: &[Vec<u8>], reqs: &[Request], damaged: &[usize]) -> Vec<Request> {
    let mut start = 0;
    let mut intact = Vec::new();
    for (frame, req) in frames.iter().zip(reqs) {
        let range = start..start + frame.len();
        start += frame.len();
        if !damaged.iter().any(|p| range.contains(p)) {
            intact.push(req.clone());
        }
    }
    intact
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_split_of_a_clean_stream_decodes_every_message(
        reqs in requests(8),
        splits in prop::collection::vec(1usize..300, 1..8),
    ) {
        let wire = frames_of(&reqs).concat();
        let (ok, errors) = decode(&wire, &splits);
        prop_assert_eq!(errors, 0);
        prop_assert_eq!(ok, reqs);
    }

    #[test]
    fn garbage_between_frames_never_costs_a_good_frame(
        reqs in requests(6),
        garbage in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1500), 6),
        splits in prop::collection::vec(1usize..64, 1..6),
    ) {
        let mut wire = Vec::new();
        for (frame, noise) in frames_of(&reqs).iter().zip(&garbage) {
            wire.extend(noise);
            wire.extend(frame);
        }
        wire.extend(garbage.last().unwrap());
        let (ok, _) = decode(&wire, &splits);
        prop_assert_eq!(ok, reqs, "the leading delimiter closes the garbage before each frame");
    }

    #[test]
    fn corrupted_bytes_lose_only_the_frames_they_hit(
        reqs in requests(8),
        hits in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
        splits in prop::collection::vec(1usize..200, 1..6),
    ) {
        let frames = frames_of(&reqs);
        let mut wire = frames.concat();
        let mut hit_positions = Vec::new();
        for (index, mask) in &hits {
            let at = index.index(wire.len());
            wire[at] ^= mask; // never a no-op
            hit_positions.push(at);
        }
        let (ok, _) = decode(&wire, &splits);
        prop_assert!(is_subsequence(&ok, &reqs), "a damaged frame was delivered as valid");

        // Every frame none of whose bytes was hit must come through.
        let intact = untouched(&frames, &reqs, &hit_positions);
        prop_assert!(is_subsequence(&intact, &ok), "an intact frame was lost: resync took more than one frame");
    }

    #[test]
    fn dropped_bytes_lose_only_the_frames_they_hit(
        reqs in requests(8),
        drops in prop::collection::vec(any::<prop::sample::Index>(), 1..6),
        splits in prop::collection::vec(1usize..200, 1..6),
    ) {
        let frames = frames_of(&reqs);
        let wire = frames.concat();
        let dropped: Vec<usize> = drops.iter().map(|d| d.index(wire.len())).collect();
        let kept: Vec<u8> = wire.iter().enumerate()
            .filter(|(i, _)| !dropped.contains(i)).map(|(_, b)| *b).collect();
        let (ok, _) = decode(&kept, &splits);
        prop_assert!(is_subsequence(&ok, &reqs), "a damaged frame was delivered as valid");

        let intact = untouched(&frames, &reqs, &dropped);
        prop_assert!(is_subsequence(&intact, &ok), "an intact frame was lost: resync took more than one frame");
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_decode(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        // Random bytes pass a CRC-32 with probability 2^-32 per frame: none may decode here.
        let (ok, _) = decode(&bytes, &[97]);
        prop_assert!(ok.is_empty());
    }
}

#[test]
fn a_frame_split_at_every_position_decodes() {
    let reqs = vec![
        Request { seq: 1, msg: HostMsg::Ping },
        Request {
            seq: 2,
            msg: HostMsg::FlashChunk(FlashChunk {
                offset: 512,
                data: (0..600).map(|i| (i % 7) as u8).collect(),
            }),
        },
    ];
    let wire = frames_of(&reqs).concat();
    for at in 1..wire.len() {
        let (ok, errors) = decode(&wire, &[at, wire.len()]);
        assert_eq!((ok.as_slice(), errors), (reqs.as_slice(), 0), "split at byte {at}");
    }
}

#[test]
fn an_oversized_flood_is_dropped_and_the_next_frame_decodes() {
    let req = Request { seq: 5, msg: HostMsg::Ping };
    let mut wire = vec![0xEEu8; MAX_WIRE * 10]; // no delimiter for ten frames' worth
    wire.extend(frames_of(std::slice::from_ref(&req)).concat());
    let (ok, errors) = decode(&wire, &[333]);
    assert_eq!(ok, vec![req]);
    assert_eq!(errors, 1, "the flood is one oversized frame");
}
