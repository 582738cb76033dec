//! Fuzzing platform files (`platform.rs`, TOML) on the stable toolchain: random text, structured
//! platforms (every field, values from plausible to absurd) written as TOML and then mutated, and
//! the committed seed corpus (`sim/fuzz/corpus/`). Bounded in `cargo test`; `scripts/fuzz.sh`
//! runs it longer (`PROPTEST_CASES`).
//!
//! A file is refused with a one-line error or accepted; an accepted platform resolves its hosts
//! and gives every LAN finite, non-negative costs whose times fit virtual time, and survives a
//! round trip through TOML.

use std::path::PathBuf;
use std::time::Duration;

use gridbed_sim::platform::{HostOverride, MAX_BACKGROUND_JOBS};
use gridbed_sim::transport::Transport;
use gridbed_sim::{Backbone, Lan, Platform};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

/// Parses `text`; checks what an accepted platform promises.
fn parse(text: &str) {
    let p = match Platform::from_toml(text) {
        Ok(p) => p,
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "multi-line error: {m}");
            return;
        }
    };
    let specs = p.host_specs();
    assert_eq!(specs.len(), p.host_count());
    // The largest message a model sends (a 64 MiB block) and the longest compute call (u64 cycles
    // at the smallest share) must be representable as virtual time.
    for s in &specs {
        assert!(s.cpu_hz.is_finite() && s.cpu_hz > 0.0);
        let slowest = u64::MAX as f64 / (s.cpu_hz / f64::from(MAX_BACKGROUND_JOBS + 1));
        assert!(Duration::try_from_secs_f64(slowest).is_ok(), "{}", s.cpu_hz);
    }
    for lan in 0..p.lans.len() {
        let c = p.transport_of(lan).cost();
        for v in [c.alpha_s, c.beta_s, c.cycle_s, c.packet_rtt_s] {
            assert!(v.is_finite() && v >= 0.0, "{c:?}");
        }
        assert!(
            Duration::try_from_secs_f64(c.transfer_time(64 << 20)).is_ok(),
            "{c:?}"
        );
    }
    let _ = p.lan_of(gridbed_runtime::HostId(p.host_count() as u32 - 1));
    let again = Platform::from_toml(&toml::to_string(&p).expect("a platform serialises"));
    assert_eq!(again.as_ref().ok(), Some(&p));
}

/// Floats: plausible, tiny, huge, negative, NaN and infinities.
fn float() -> impl Strategy<Value = f64> {
    // Mostly plausible, so that many platforms are accepted and go on to the cost checks.
    prop_oneof![
        60 => 0.5f64..2000.0,
        1 => Just(0.0),
        1 => Just(1e-300),
        1 => Just(1e300),
        1 => Just(-1.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => any::<f64>(),
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![
        40 => 1u32..20,
        1 => Just(0),
        1 => Just(u32::MAX),
        1 => Just(u32::MAX - 1),
        1 => any::<u32>(),
    ]
}

fn hz() -> impl Strategy<Value = f64> {
    prop_oneof![3 => 1e6f64..1e11, 1 => float()]
}

fn transport() -> impl Strategy<Value = Transport> {
    (
        (
            float(),
            float(),
            count(),
            count(),
            count(),
            float(),
            float(),
            float(),
        ),
        (
            any::<bool>(),
            proptest::option::of(prop_oneof![8 => 0u64..100_000, 1 => any::<u64>()]),
            float(),
            proptest::option::of(prop_oneof![8 => 0u64..100_000, 1 => any::<u64>()]),
            any::<bool>(),
            count(),
            count(),
        ),
    )
        .prop_map(
            |(
                (link, lat, mtu, hdr, framing, ppkt, copy, copies),
                (cksum, maxw, pcall, window, acks, ppa, ackb),
            )| Transport {
                link_mbit_s: link,
                latency_us: lat,
                mtu_bytes: mtu.saturating_add(hdr % 2000),
                header_bytes: hdr,
                framing_bytes: framing,
                per_packet_us: ppkt,
                copy_mb_s: copy,
                copies,
                software_checksum: cksum,
                max_write_bytes: maxw,
                per_call_us: pcall,
                window_bytes: window,
                acks_share_link: acks,
                packets_per_ack: ppa,
                ack_frame_bytes: ackb,
            },
        )
}

fn lan() -> impl Strategy<Value = Lan> {
    (
        prop_oneof![
            8 => "[a-z]{1,6}",
            1 => Just("a".to_string()),
            1 => Just(String::new())
        ],
        count(),
        proptest::option::of(prop_oneof![
            4 => Just("gige-tcp".to_string()),
            1 => "[a-z-]{1,8}"
        ]),
        proptest::option::of(transport()),
        any::<bool>(),
    )
        .prop_map(|(name, hosts, preset, transport, private)| Lan {
            name,
            hosts,
            preset,
            transport,
            private,
        })
}

fn platform() -> impl Strategy<Value = Platform> {
    let host = (count(), proptest::option::of(hz()), count()).prop_map(
        |(host, cpu_hz, background_jobs)| HostOverride {
            host,
            cpu_hz,
            background_jobs,
        },
    );
    (
        proptest::collection::vec(lan(), 1..4),
        (float(), float()),
        hz(),
        proptest::collection::vec(host, 0..2),
    )
        .prop_map(|(lans, (uplink, latency), cpu_hz, hosts)| Platform {
            lans,
            backbone: Backbone {
                uplink_mbit_s: uplink,
                latency_us: latency,
            },
            cpu_hz,
            hosts,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn parser_survives_random_text(text in "[\\[\\]a-z_0-9=\". \n-]{0,200}") {
        parse(&text);
    }

    /// Structured platforms with absurd values, as TOML, then with bytes of the text changed.
    #[test]
    fn parser_survives_structured_and_mutated_platforms(
        p in platform(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
    ) {
        // Some floats (NaN) have no TOML spelling the serializer accepts: then there is no file.
        let Ok(text) = toml::to_string(&p) else { return Ok(()) };
        parse(&text);
        let mut bytes = text.into_bytes();
        for (at, v) in edits {
            if !bytes.is_empty() {
                let n = bytes.len();
                bytes[at % n] = b"0123456789.e-+\n=[]\"x"[v as usize % 20];
            }
        }
        parse(&String::from_utf8_lossy(&bytes));
    }
}

/// The generator is not all rejects: a fixed sample of structured platforms includes accepted
/// ones (which then go through the cost checks above).
#[test]
fn structured_platforms_are_often_accepted() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = platform();
    let accepted = (0..1000)
        .filter(|_| {
            let p = strategy.new_tree(&mut runner).unwrap().current();
            toml::to_string(&p).is_ok_and(|t| Platform::from_toml(&t).is_ok())
        })
        .count();
    assert!(accepted >= 50, "only {accepted} of 1000 accepted");
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn seed_corpus() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus_dir()).expect("seed corpus directory") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("seed file");
        parse(&String::from_utf8_lossy(&bytes));
        n += 1;
    }
    assert!(n >= 5, "only {n} seeds in {}", corpus_dir().display());
}
