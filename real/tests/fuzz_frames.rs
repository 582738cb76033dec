//! Fuzzing the real transport's decoders on the stable toolchain: proptest drives the frame reader
//! and the handshake decoders with random bytes, with mutations of valid messages, and with the
//! committed seed corpus (`real/fuzz/corpus/`). Bounded in `cargo test`; `scripts/fuzz-real.sh`
//! runs it longer (`PROPTEST_CASES`).
//!
//! Each input must end in a value or an error, never a panic, and never a payload longer than the
//! limit the header was checked against.

use std::path::PathBuf;

use gridbed_real::frame::{read_frame, Header, HEADER_LEN, MAX_PAYLOAD};
use gridbed_real::handshake::{
    proof, verify_proof, ClusterSecret, Hello, Reply, Resume, HELLO_LEN, PROOF_LEN, REPLY_LEN,
    RESUME_LEN,
};
use proptest::prelude::*;

const LIMIT: usize = 4096;

fn limit(port: u16) -> usize {
    if port == 7 {
        16
    } else {
        LIMIT
    }
}

/// Reads frames off `bytes` until an error; checks what the reader promises.
fn read_all(bytes: &[u8]) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut r = bytes;
        let mut frames = 0;
        while let Ok((h, payload)) = read_frame(&mut r, limit).await {
            assert_eq!(payload.len(), h.len as usize);
            assert!(payload.len() <= limit(h.to_port));
            frames += 1;
        }
        frames
    })
}

/// Runs the handshake decoders on `bytes` as each message in turn.
fn handshake_decoders(bytes: &[u8]) {
    let secret = ClusterSecret::new(*b"fuzzing secret, 32 bytes long..!").unwrap();
    let hello_bytes: [u8; HELLO_LEN] = pad(bytes);
    if let Ok(h) = Hello::decode(&hello_bytes, 1, 4) {
        assert_eq!(h.encode(), hello_bytes);
        assert!(h.dialer < 4 && h.listener == 1);
    }
    let reply = Reply(pad::<REPLY_LEN>(bytes));
    let good_hello = Hello::new(0, 1, 9).encode();
    // A random reply must not verify (its MAC is random): 2^-256 odds.
    assert!(reply.verify(&secret, &good_hello, 1).is_err());
    let p: [u8; PROOF_LEN] = pad(bytes);
    assert!(
        verify_proof(&secret, &good_hello, &reply, &p).is_err()
            || p == proof(&secret, &good_hello, &reply)
    );
    if let Ok(r) = Resume::decode(&pad::<RESUME_LEN>(bytes)) {
        assert_eq!(Resume::decode(&r.encode()), Ok(r));
    }
}

fn pad<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    let n = bytes.len().min(N);
    b[..n].copy_from_slice(&bytes[..n]);
    b
}

/// A valid stream of `n` data frames with small payloads and an ack.
fn valid_stream(sizes: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &s) in sizes.iter().enumerate() {
        let len = s as usize % LIMIT;
        out.extend_from_slice(&Header::data(1, 2, 0, i as u64 + 1, len as u32).encode());
        out.extend(std::iter::repeat_n(i as u8, len));
    }
    out.extend_from_slice(&Header::ack(1, 5).encode());
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn frame_reader_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        read_all(&bytes);
    }

    /// Valid frames with bytes flipped, inserted or cut: the header checks still hold.
    #[test]
    fn frame_reader_survives_mutated_valid_streams(
        sizes in proptest::collection::vec(any::<u16>(), 1..8),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut s = valid_stream(&sizes);
        let whole = read_all(&s);
        prop_assert_eq!(whole, sizes.len() + 1);
        for (at, v) in flips {
            let n = s.len();
            s[at % n] ^= v | 1;
        }
        let n = s.len();
        s.truncate(cut % (n + 1));
        read_all(&s);
    }

    #[test]
    fn handshake_decoders_survive_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        handshake_decoders(&bytes);
    }

    /// A valid hello with one byte changed: decodes to the changed value or is refused.
    #[test]
    fn mutated_hellos_are_decoded_or_refused(at in 0..HELLO_LEN, v in 1u8..) {
        let mut h = Hello::new(2, 1, 77).encode();
        h[at] ^= v;
        if let Ok(d) = Hello::decode(&h, 1, 4) {
            prop_assert_eq!(d.encode(), h);
        }
    }
}

/// Every file of the committed seed corpus goes through every decoder.
#[test]
fn seed_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("seed corpus directory") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("seed file");
        read_all(&bytes);
        handshake_decoders(&bytes);
        n += 1;
    }
    assert!(n >= 5, "only {n} seeds in {}", dir.display());
}

/// Writes the seed corpus (run once with `GRIDBED_WRITE_SEEDS=1`; the files are committed).
#[test]
fn write_seed_corpus() {
    if std::env::var_os("GRIDBED_WRITE_SEEDS").is_none() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let mut oversize = Header::data(1, 7, 0, 1, 17).encode().to_vec();
    oversize.extend_from_slice(&[0; 17]);
    let mut max = Header::data(1, 2, 0, 1, 0).encode();
    max[20..24].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("valid-stream", valid_stream(&[0, 1, 100, 4095])),
        ("oversize-for-port-7", oversize),
        ("over-max-payload", max.to_vec()),
        ("ack-with-payload", {
            let mut a = Header::ack(1, 1).encode();
            a[23] = 1;
            a.to_vec()
        }),
        (
            "truncated-header",
            valid_stream(&[3])[..HEADER_LEN - 1].to_vec(),
        ),
        ("hello", Hello::new(0, 1, 1).encode().to_vec()),
        ("http-get", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("resume-bad-status", vec![9; RESUME_LEN]),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}
