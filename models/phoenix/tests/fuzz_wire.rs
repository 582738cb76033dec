//! Fuzzing Phoenix's two wire formats (protocol frames, `wire.rs`; overlay frames,
//! `overlay/wire.rs`) and the code that acts on what they carry, on the stable toolchain.
//!
//! Inputs: random bytes; random bodies behind a valid header; structured frames (every `Body`
//! variant, counters up to their maximum) encoded and then mutated; and the committed seed corpus
//! (`models/phoenix/fuzz/corpus/`). Every frame that decodes is fed to a live node (or overlay
//! router): counters taken from the wire (hops, sequence numbers, epochs, rounds, generations) must
//! be validated or checked, never overflow. Bounded in `cargo test`; `scripts/fuzz.sh` runs it
//! longer (`PROPTEST_CASES`).

use std::path::PathBuf;

use gridbed_phoenix::overlay::{self, Router};
use gridbed_phoenix::wire::{
    self, Body, Bootstrap, Change, CoordSnapshot, Delivery, Frame, Handoff, MemberStatus, Routed,
    RoutedKind,
};
use gridbed_phoenix::{Config, Entry, IdRange, NoData, Node, Piece, RoutingTable, Start};
use gridbed_runtime::HostId;
use proptest::prelude::*;

const SPACE: u64 = 1 << 16;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

/// Three initial machines; the node under test is the coordinator (0) or a plain member (1).
fn node(me: u32) -> Node<NoData> {
    let table = RoutingTable::even(SPACE, 3);
    Node::new(
        HostId(me),
        Config::new(SPACE),
        NoData,
        Start::Initial { table },
        7,
    )
}

/// Delivers frames between the nodes until none is left (bounded: a forged frame may start a
/// long exchange); every frame a node emits must decode back equal.
fn pump(net: &mut [Node<NoData>]) {
    let mut budget = 2000;
    loop {
        let mut frames = Vec::new();
        for n in net.iter_mut() {
            frames.extend(n.take_outgoing());
        }
        if frames.is_empty() {
            return;
        }
        for f in frames {
            let b = wire::encode(&f);
            assert_eq!(wire::decode(&b).as_ref(), Ok(&f), "node emitted {f:?}");
            if let Some(n) = net.get_mut(f.dst.0 as usize) {
                if budget == 0 {
                    return;
                }
                budget -= 1;
                n.handle(f);
            }
        }
    }
}

/// Feeds `frames` (untrusted bytes) to one node of three, lets them talk, then makes them move IDs
/// (a leave) and recover from a crash, so that whatever counters the frames planted are
/// incremented later too.
fn protocol(frames: &[&[u8]]) {
    for target in [0, 1] {
        let mut net = [node(0), node(1), node(2)];
        for bytes in frames {
            let decoded = wire::decode(bytes);
            assert_eq!(net[target].handle_bytes(bytes).is_ok(), decoded.is_ok());
            if let Ok(f) = decoded {
                assert_eq!(wire::decode(&wire::encode(&f)), Ok(f));
            }
        }
        pump(&mut net);
        for id in [0, SPACE / 2, SPACE - 1] {
            let _ = net[target].send(id, vec![9]);
        }
        pump(&mut net);
        let _ = net[2].leave();
        pump(&mut net);
        let _ = net[0].report_crash(HostId(1));
        pump(&mut net);
        let _ = net[target].leave();
        pump(&mut net);
    }
}

/// A seed file is one frame, or several as records of a 2-byte little-endian length and a frame.
fn records(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let [a, b, tail @ ..] = rest else { return None };
        let n = usize::from(u16::from_le_bytes([*a, *b]));
        if tail.len() < n {
            return None;
        }
        out.push(&tail[..n]);
        rest = &tail[n..];
    }
    Some(out)
}

fn record_file(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&(f.len() as u16).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// The same for overlay frames, fed to a router that knows the sender.
fn overlay_frame(bytes: &[u8]) {
    let Ok(f) = overlay::wire::decode(bytes) else {
        return;
    };
    assert_eq!(
        overlay::wire::decode(&overlay::wire::encode(&f)).as_ref(),
        Ok(&f)
    );
    for max in [2, 64, u32::MAX] {
        let mut r = Router::new(HostId(0), 1, max);
        r.start([HostId(1), HostId(2)]);
        let from = f.src;
        let _ = r.handle(from, f.clone());
        let _ = r.handle(from, f.clone());
        for (_, out) in r.take_outgoing() {
            let b = overlay::wire::encode(&out);
            assert_eq!(overlay::wire::decode(&b).as_ref(), Ok(&out));
        }
    }
}

fn host() -> impl Strategy<Value = HostId> {
    prop_oneof![0u32..4, any::<u32>()].prop_map(HostId)
}

/// Counters: small values, values near the top of their type, anything.
fn c64() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..8, (u64::MAX - 4)..=u64::MAX, any::<u64>()]
}

fn c32() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..8,
        (u32::MAX - 4)..=u32::MAX,
        (1u32 << 15)..(1u32 << 17),
        any::<u32>()
    ]
}

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![0..SPACE, any::<u64>()]
}

fn range() -> impl Strategy<Value = IdRange> {
    prop_oneof![
        (0..SPACE, 1..SPACE).prop_map(|(s, l)| IdRange::new(s, (s + l).min(SPACE))),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| IdRange::new(a, b)),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (range(), host(), c64()).prop_map(|(range, owner, epoch)| Entry {
        range,
        owner,
        epoch,
    })
}

fn piece() -> impl Strategy<Value = Piece> {
    (range(), c64()).prop_map(|(range, epoch)| Piece { range, epoch })
}

fn hosts() -> impl Strategy<Value = Vec<HostId>> {
    proptest::collection::vec(host(), 0..4)
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        host().prop_map(Change::Join),
        host().prop_map(Change::Leave)
    ]
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (
        id(),
        host(),
        c64(),
        c32(),
        proptest::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(id, from, seq, hops, payload)| Delivery {
            id,
            from,
            seq,
            hops,
            payload,
        })
}

fn routed() -> impl Strategy<Value = Routed> {
    let kind = prop_oneof![
        (c64(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(seq, payload)| RoutedKind::App { seq, payload }),
        (host(), c32()).prop_map(|(joiner, tries)| RoutedKind::Donate { joiner, tries }),
        (range(), host()).prop_map(|(range, requester)| RoutedKind::Assume { range, requester }),
        c64().prop_map(|upto| RoutedKind::Floor { upto }),
    ];
    (id(), host(), c64(), c64(), c32(), kind).prop_map(|(id, origin, e0, believed, hops, kind)| {
        Routed {
            id,
            origin,
            e0,
            believed,
            hops,
            kind,
        }
    })
}

fn handoff() -> impl Strategy<Value = Handoff> {
    let bootstrap = proptest::option::of(
        (
            proptest::collection::vec(entry(), 0..4),
            host(),
            c32(),
            hosts(),
            hosts(),
            hosts(),
        )
            .prop_map(
                |(table, coordinator, gen, members, departed, crashed)| Bootstrap {
                    table,
                    coordinator,
                    gen,
                    members,
                    departed,
                    crashed,
                },
            ),
    );
    (
        proptest::collection::vec(piece(), 0..3),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3), 0..3),
        proptest::collection::vec(delivery(), 0..3),
        proptest::collection::vec(delivery(), 0..3),
        proptest::collection::vec((id(), host(), c64()), 0..3),
        bootstrap,
        proptest::collection::vec(range(), 0..2),
        proptest::collection::vec((id(), host()), 0..2),
    )
        .prop_map(
            |(pieces, data, inbox, early, next_seq, bootstrap, resync, floored)| Handoff {
                pieces,
                data,
                inbox,
                early,
                next_seq,
                bootstrap,
                resync,
                floored,
            },
        )
}

fn status() -> impl Strategy<Value = MemberStatus> {
    prop_oneof![
        Just(MemberStatus::Joining),
        Just(MemberStatus::Active),
        Just(MemberStatus::LeaveRequested),
        Just(MemberStatus::Draining),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    let entries = || proptest::collection::vec(entry(), 0..4);
    let snapshot = (
        c32(),
        hosts(),
        proptest::collection::vec(change(), 0..3),
        proptest::option::of(change()),
        c32(),
        hosts(),
    )
        .prop_map(
            |(gen, members, queue, busy, rounds, crashed)| CoordSnapshot {
                gen,
                members,
                queue,
                busy,
                rounds,
                crashed,
            },
        );
    prop_oneof![
        routed().prop_map(Body::Routed),
        entries().prop_map(Body::Facts),
        handoff().prop_map(Body::Handoff),
        host().prop_map(|joiner| Body::JoinReq { joiner }),
        host().prop_map(|joiner| Body::JoinDone { joiner }),
        host().prop_map(|leaver| Body::LeaveReq { leaver }),
        hosts().prop_map(|members| Body::LeaveGo { members }),
        (c32(), entries()).prop_map(|(round, table)| Body::Departing { round, table }),
        c32().prop_map(|round| Body::Farewell { round }),
        host().prop_map(|leaver| Body::LeaveComplete { leaver }),
        Just(Body::Gone),
        host().prop_map(|host| Body::Suspect { host }),
        (snapshot, any::<bool>())
            .prop_map(|(state, take_over)| Body::CoordState { state, take_over }),
        proptest::option::of(change()).prop_map(|busy| Body::CoordAck { busy }),
        (c32(), host(), hosts()).prop_map(|(gen, coordinator, members)| Body::NewCoordinator {
            gen,
            coordinator,
            members
        }),
        (c32(), c32(), proptest::option::of(host()), hosts()).prop_map(
            |(gen, round, crashed, members)| Body::CrashBegin {
                gen,
                round,
                crashed,
                members
            }
        ),
        c32().prop_map(|round| Body::CrashFlush { round }),
        (
            c32(),
            proptest::collection::vec(piece(), 0..3),
            c64(),
            status(),
            hosts()
        )
            .prop_map(|(round, owned, max_epoch, status, known)| Body::Census {
                round,
                owned,
                max_epoch,
                status,
                known
            }),
        (c32(), entries(), proptest::collection::vec(range(), 0..3)).prop_map(
            |(round, map, reclaimed)| Body::Reclaim {
                round,
                map,
                reclaimed
            }
        ),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (host(), host(), body()).prop_map(|(src, dst, body)| Frame { src, dst, body })
}

fn overlay_frame_strategy() -> impl Strategy<Value = overlay::wire::Frame> {
    use overlay::wire::{Advert, Body as OBody, Frame as OFrame, Tomb};
    let advert = (host(), c32(), c32()).prop_map(|(dest, inc, hops)| Advert { dest, inc, hops });
    let tomb = (host(), c32()).prop_map(|(host, inc)| Tomb { host, inc });
    let body = prop_oneof![
        Just(OBody::Hello),
        (
            proptest::collection::vec(advert, 0..6),
            proptest::collection::vec(tomb, 0..3)
        )
            .prop_map(|(adverts, gone)| OBody::Update { adverts, gone }),
        Just(OBody::Bye),
        Just(OBody::ByeAck),
    ];
    (host(), c32(), body).prop_map(|(src, inc, body)| OFrame { src, inc, body })
}

/// Flips, overwrites, inserts and cuts bytes of `bytes`, keeping the 2-byte header intact.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)], cut: usize) -> Vec<u8> {
    for &(at, v, op) in edits {
        let n = bytes.len();
        let at = 2 + at % (n - 1).max(1);
        match op % 3 {
            0 if at < n => bytes[at] ^= v | 1,
            1 if at < n => bytes[at] = v,
            _ => bytes.insert(at.min(n), v),
        }
    }
    let n = bytes.len();
    bytes.truncate(n - cut % (n - 1).max(1));
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn protocol_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        protocol(&[&bytes]);
    }

    /// Bodies of random bytes behind a valid header reach the postcard parser and the node.
    #[test]
    fn protocol_survives_random_bodies(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut framed = vec![wire::MAGIC, wire::VERSION];
        framed.extend(bytes);
        protocol(&[&framed]);
    }

    /// Sequences of structured frames round-trip and are acted on without a panic; so are
    /// mutations of the first.
    #[test]
    fn protocol_survives_structured_and_mutated_frames(
        fs in proptest::collection::vec(frame(), 1..4),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let bytes: Vec<Vec<u8>> = fs.iter().map(wire::encode).collect();
        for (b, f) in bytes.iter().zip(fs) {
            prop_assert_eq!(wire::decode(b), Ok(f));
        }
        let all: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        protocol(&all);
        protocol(&[&mutate(bytes[0].clone(), &edits, cut)]);
    }

    #[test]
    fn overlay_survives_random_bodies(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut framed = vec![overlay::wire::MAGIC, overlay::wire::VERSION];
        framed.extend(&bytes);
        overlay_frame(&framed);
        overlay_frame(&bytes);
    }

    #[test]
    fn overlay_survives_structured_and_mutated_frames(
        f in overlay_frame_strategy(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let bytes = overlay::wire::encode(&f);
        prop_assert_eq!(overlay::wire::decode(&bytes), Ok(f));
        overlay_frame(&bytes);
        overlay_frame(&mutate(bytes, &edits, cut));
    }
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// Every file of the committed seed corpus goes through both decoders and their receivers.
#[test]
fn seed_corpus() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus_dir()).expect("seed corpus directory") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("seed file");
        protocol(&[&bytes]);
        if let Some(frames) = records(&bytes) {
            protocol(&frames);
        }
        overlay_frame(&bytes);
        n += 1;
    }
    assert!(n >= 10, "only {n} seeds in {}", corpus_dir().display());
}

fn routed_frame(hops: u32, e0: u64, believed: u64, kind: RoutedKind) -> Frame {
    Frame {
        src: HostId(2),
        dst: HostId(0),
        body: Body::Routed(Routed {
            id: SPACE - 1,
            origin: HostId(2),
            e0,
            believed,
            hops,
            kind,
        }),
    }
}

/// The seeds: one valid frame of each common kind, and the counter extremes that once panicked.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let app = |seq| RoutedKind::App {
        seq,
        payload: vec![1, 2],
    };
    let mut v = vec![
        ("routed-app", wire::encode(&routed_frame(1, 0, 0, app(0)))),
        (
            "facts",
            wire::encode(&Frame {
                src: HostId(1),
                dst: HostId(0),
                body: Body::Facts(RoutingTable::even(SPACE, 3).entries()),
            }),
        ),
        (
            "join-req",
            wire::encode(&Frame {
                src: HostId(3),
                dst: HostId(0),
                body: Body::JoinReq { joiner: HostId(3) },
            }),
        ),
        (
            "overlay-update",
            overlay::wire::encode(&overlay::wire::Frame {
                src: HostId(1),
                inc: 0,
                body: overlay::wire::Body::Update {
                    adverts: vec![overlay::wire::Advert {
                        dest: HostId(5),
                        inc: 0,
                        hops: 3,
                    }],
                    gone: vec![],
                },
            }),
        ),
        // Regressions: counters at the top of their type, each of which overflowed on receipt.
        (
            "routed-hops-max",
            wire::encode(&Frame {
                dst: HostId(1),
                ..routed_frame(u32::MAX, 0, 0, app(0))
            }),
        ),
        (
            "routed-seq-max",
            wire::encode(&routed_frame(1, 0, 0, app(u64::MAX))),
        ),
        (
            "routed-floor-max",
            wire::encode(&routed_frame(1, 0, 0, RoutedKind::Floor { upto: u64::MAX })),
        ),
        (
            "handoff-epoch-max",
            wire::encode(&Frame {
                src: HostId(2),
                dst: HostId(0),
                body: Body::Handoff(Handoff {
                    pieces: vec![Piece {
                        range: IdRange::new(0, 1),
                        epoch: u64::MAX,
                    }],
                    data: vec![vec![]],
                    inbox: vec![],
                    early: vec![],
                    next_seq: vec![(0, HostId(2), u64::MAX)],
                    bootstrap: None,
                    resync: vec![],
                    floored: vec![],
                }),
            }),
        ),
        (
            "facts-epoch-max",
            wire::encode(&Frame {
                src: HostId(1),
                dst: HostId(0),
                body: Body::Facts(vec![Entry {
                    range: IdRange::new(0, SPACE),
                    owner: HostId(1),
                    epoch: u64::MAX,
                }]),
            }),
        ),
        (
            "crash-begin-round-max",
            wire::encode(&Frame {
                src: HostId(0),
                dst: HostId(1),
                body: Body::CrashBegin {
                    gen: u32::MAX,
                    round: u32::MAX,
                    crashed: Some(HostId(2)),
                    members: vec![HostId(0), HostId(1)],
                },
            }),
        ),
        (
            "new-coordinator-gen-max",
            wire::encode(&Frame {
                src: HostId(0),
                dst: HostId(1),
                body: Body::NewCoordinator {
                    gen: u32::MAX,
                    coordinator: HostId(1),
                    members: vec![HostId(1), HostId(2)],
                },
            }),
        ),
        (
            "census-epoch-max",
            wire::encode(&Frame {
                src: HostId(1),
                dst: HostId(0),
                body: Body::Census {
                    round: 1,
                    owned: vec![],
                    max_epoch: u64::MAX,
                    status: MemberStatus::Active,
                    known: vec![HostId(1)],
                },
            }),
        ),
        (
            "overlay-poison",
            overlay::wire::encode(&overlay::wire::Frame {
                src: HostId(1),
                inc: u32::MAX,
                body: overlay::wire::Body::Update {
                    adverts: vec![overlay::wire::Advert {
                        dest: HostId(5),
                        inc: u32::MAX,
                        hops: u32::MAX - 1,
                    }],
                    gone: vec![overlay::wire::Tomb {
                        host: HostId(6),
                        inc: u32::MAX,
                    }],
                },
            }),
        ),
    ];
    v.push(("header-only", vec![wire::MAGIC, wire::VERSION]));
    // Regression: a poisoned reverse overflowed a router whose machine bound is u32::MAX.
    v.push((
        "overlay-poisoned-reverse",
        overlay::wire::encode(&overlay::wire::Frame {
            src: HostId(1),
            inc: 0,
            body: overlay::wire::Body::Update {
                adverts: vec![overlay::wire::Advert {
                    dest: HostId(5),
                    inc: 0,
                    hops: overlay::wire::POISON,
                }],
                gone: vec![],
            },
        }),
    ));
    // Sequences: a floor to the last sequence number, then a message numbered there.
    v.push((
        "floor-then-app-seq-max",
        record_file(&[
            wire::encode(&routed_frame(1, 0, 0, RoutedKind::Floor { upto: u64::MAX })),
            wire::encode(&routed_frame(1, 0, 0, app(u64::MAX))),
        ]),
    ));
    v.push((
        "floor-then-app-seq-max-1",
        record_file(&[
            wire::encode(&routed_frame(
                1,
                0,
                0,
                RoutedKind::Floor { upto: u64::MAX - 1 },
            )),
            wire::encode(&routed_frame(1, 0, 0, app(u64::MAX - 1))),
        ]),
    ));
    v
}

/// Writes the seed corpus (run once with `GRIDBED_WRITE_SEEDS=1`; the files are committed).
#[test]
fn write_seed_corpus() {
    if std::env::var_os("GRIDBED_WRITE_SEEDS").is_none() {
        return;
    }
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}
