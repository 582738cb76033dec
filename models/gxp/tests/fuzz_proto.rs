//! Fuzzing the GXP parent–child protocol (`proto.rs`) on the stable toolchain: random bytes,
//! random bodies behind a valid version, structured bodies of every variant (encoded, then
//! mutated), split at random points through the stream reader, and the committed seed corpus
//! (`models/gxp/fuzz/corpus/`). Bounded in `cargo test`; `scripts/fuzz.sh` runs it longer
//! (`PROPTEST_CASES`).
//!
//! Properties: decode never panics; whatever decodes re-encodes to the same bytes' meaning and
//! carries nothing after its body; every frame the encoder emits decodes back equal; the stream
//! reader yields exactly the frames written, however the bytes are split.

use std::path::PathBuf;

use gridbed_gxp::tree::proto::{
    decode, encode, encode_framed, try_encode, try_encode_framed, Body, Down, Event, ExecSpec,
    FrameReader, LoginMethod, Order, ProtoError, Selection, Status, Stream, Up, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

/// Runs `bytes` through the decoder and, as a stream, through the reader.
fn decoders(bytes: &[u8]) {
    if let Ok(b) = decode(bytes) {
        let again = encode(&b);
        assert_eq!(decode(&again), Ok(b));
        // Trailing bytes are refused, so a decoded frame was exactly one body.
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }
    let mut r = FrameReader::default();
    r.push(bytes);
    for _ in 0..=bytes.len() / 4 {
        match r.next_body() {
            Ok(Some(_)) => {}
            Ok(None) | Err(ProtoError::TooLarge(_)) => break,
            Err(_) => {}
        }
    }
    assert!(r.pending() <= bytes.len());
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9.-]{0,12}", any::<String>()]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..32)
}

fn n64() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..8, (u64::MAX - 2)..=u64::MAX, any::<u64>()]
}

fn n32() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..8, (u32::MAX - 2)..=u32::MAX, any::<u32>()]
}

fn env() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((text(), text()), 0..3)
}

fn selection() -> impl Strategy<Value = Selection> {
    prop_oneof![
        Just(Selection::All),
        bytes().prop_map(Selection::Indices),
        proptest::collection::vec(0u32..100, 0..8).prop_map(Selection::from_indices),
    ]
}

fn order() -> impl Strategy<Value = Order> {
    let method = (text(), proptest::collection::vec(text(), 0..3), env())
        .prop_map(|(name, argv, env)| LoginMethod { name, argv, env });
    let spec = (
        (n64(), text(), proptest::option::of(text()), selection()),
        (
            n32(),
            proptest::option::of(n32()),
            env(),
            any::<bool>(),
            proptest::option::of(n64()),
        ),
    )
        .prop_map(
            |((exec, cmd, cwd, selection), (num_execs, exec_idx, env, stdin_open, window))| {
                ExecSpec {
                    exec,
                    cmd,
                    cwd,
                    selection,
                    num_execs,
                    exec_idx,
                    env,
                    stdin_open,
                    output_window: window,
                }
            },
        );
    prop_oneof![
        (n32(), n32(), text(), method).prop_map(|(child, index, target, method)| Order::Login {
            child,
            index,
            target,
            method
        }),
        spec.prop_map(Order::Exec),
        (n64(), bytes()).prop_map(|(exec, data)| Order::Stdin { exec, data }),
        n64().prop_map(|exec| Order::StdinEof { exec }),
        (n64(), n64()).prop_map(|(exec, bytes)| Order::OutputAck { exec, bytes }),
        n64().prop_map(|exec| Order::Kill { exec }),
        Just(Order::Quit),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        any::<i32>().prop_map(Status::Code),
        any::<i32>().prop_map(Status::Signal),
        text().prop_map(Status::Failed),
        Just(Status::Lost),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let outcome = prop_oneof![text().prop_map(Ok), text().prop_map(Err)];
    let stream = prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)];
    prop_oneof![
        (n32(), n32(), text(), outcome).prop_map(|(child, index, target, outcome)| {
            Event::LoginDone {
                child,
                index,
                target,
                outcome,
            }
        }),
        (n64(), stream, bytes()).prop_map(|(exec, stream, data)| Event::Output {
            exec,
            stream,
            data
        }),
        (n64(), status()).prop_map(|(exec, status)| Event::Exited { exec, status }),
        (n64(), n64()).prop_map(|(exec, bytes)| Event::StdinAck { exec, bytes }),
        n32().prop_map(|child| Event::ChildLost { child }),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    let path = || proptest::collection::vec(n32(), 0..4);
    prop_oneof![
        (text(), text()).prop_map(|(name, version)| Body::Hello { name, version }),
        (path(), order()).prop_map(|(path, order)| Body::Down(Down::To { path, order })),
        order().prop_map(|order| Body::Down(Down::All { order })),
        (path(), event()).prop_map(|(route, event)| Body::Up(Up { route, event })),
        Just(Body::Ping),
        Just(Body::Pong),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn decoders_survive_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decoders(&bytes);
    }

    /// Random bodies behind the right version reach the body parser.
    #[test]
    fn decoders_survive_random_bodies(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut framed = encode(&Body::Ping)[..1].to_vec();
        framed.extend(&bytes);
        decoders(&framed);
    }

    /// Every body the encoder emits decodes back equal, alone and through the stream reader split
    /// at arbitrary points; mutations of it never panic the decoders.
    #[test]
    fn encoded_bodies_decode_equal_and_mutations_are_safe(
        bodies in proptest::collection::vec(body(), 1..4),
        split in 1usize..64,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let mut stream = Vec::new();
        for b in &bodies {
            let e = try_encode(b).expect("small bodies encode");
            prop_assert_eq!(decode(&e), Ok(b.clone()));
            prop_assert_eq!(&try_encode_framed(b).unwrap(), &encode_framed(b));
            stream.extend(encode_framed(b));
        }
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        for chunk in stream.chunks(split) {
            r.push(chunk);
            while let Some(b) = r.next_body().expect("valid stream") {
                got.push(b);
            }
        }
        prop_assert_eq!(&got, &bodies);
        prop_assert_eq!(r.pending(), 0);
        let mut bytes = encode(&bodies[0]);
        for (at, v) in edits {
            let n = bytes.len();
            bytes[at % n] ^= v | 1;
        }
        let n = bytes.len();
        bytes.truncate(n - cut % n);
        decoders(&bytes);
        decoders(&stream);
    }
}

/// A body one byte over the limit is refused by the encoder, not sent for the peer to reject; the
/// infallible encoders then emit a frame the reader skips instead of one whose length kills the
/// stream.
#[test]
fn oversized_bodies_are_not_emitted() {
    let big = Body::Down(Down::All {
        order: Order::Stdin {
            exec: 1,
            data: vec![0; MAX_FRAME_BYTES],
        },
    });
    assert!(matches!(try_encode(&big), Err(ProtoError::TooLarge(_))));
    assert!(matches!(
        try_encode_framed(&big),
        Err(ProtoError::TooLarge(_))
    ));
    let mut r = FrameReader::default();
    r.push(&encode_framed(&big));
    r.push(&encode_framed(&Body::Ping));
    assert!(matches!(r.next_body(), Err(ProtoError::Malformed(_))));
    assert_eq!(r.next_body(), Ok(Some(Body::Ping)));
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut b = encode(&Body::Pong);
    assert_eq!(decode(&b), Ok(Body::Pong));
    b.push(0);
    assert!(matches!(decode(&b), Err(ProtoError::Malformed(m)) if m.contains("trailing")));
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn seed_corpus() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus_dir()).expect("seed corpus directory") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("seed file");
        decoders(&bytes);
        n += 1;
    }
    assert!(n >= 6, "only {n} seeds in {}", corpus_dir().display());
}

/// Writes the seed corpus (run once with `GRIDBED_WRITE_SEEDS=1`; the files are committed).
#[test]
fn write_seed_corpus() {
    if std::env::var_os("GRIDBED_WRITE_SEEDS").is_none() {
        return;
    }
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let exec = Body::Down(Down::To {
        path: vec![0, 2],
        order: Order::Exec(ExecSpec {
            exec: 4,
            cmd: "hostname".into(),
            cwd: None,
            selection: Selection::from_indices([0, 3]),
            num_execs: 2,
            exec_idx: None,
            env: vec![("A".into(), "b".into())],
            stdin_open: false,
            output_window: Some(65536),
        }),
    });
    let output = Body::Up(Up {
        route: vec![1],
        event: Event::Output {
            exec: 4,
            stream: Stream::Stdout,
            data: b"h1\n".to_vec(),
        },
    });
    let mut trailing = encode(&Body::Ping);
    trailing.push(0);
    let mut newer = encode(&Body::Ping);
    newer[0] = PROTOCOL_VERSION as u8 + 1;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "hello",
            encode(&Body::Hello {
                name: "h1".into(),
                version: "0.1".into(),
            }),
        ),
        ("exec", encode(&exec)),
        ("output", encode(&output)),
        (
            "stream",
            [encode_framed(&exec), encode_framed(&output)].concat(),
        ),
        // Regression: a frame with bytes after its body used to decode.
        ("trailing-byte", trailing),
        ("newer-version", newer),
        ("huge-length", u32::MAX.to_le_bytes().to_vec()),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}
