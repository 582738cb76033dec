//! Fuzzing `run.json` parsing (`experiment replay`, `replay::parse`) on the stable toolchain:
//! random text, structured run files (every registered experiment, recorded parameters with
//! values of every JSON kind, trace counts and digests from valid to absurd) and byte mutations
//! of them, and the committed seed corpus (`experiments/fuzz/corpus/`). Bounded in `cargo test`;
//! `scripts/fuzz.sh` runs it longer (`PROPTEST_CASES`).
//!
//! A file is refused with an error or accepted; an accepted one names a registered experiment,
//! keeps no more events than it counts, and records parameters the experiment accepts.

use std::path::PathBuf;

use gridbed_experiments::outcome::{Mode, TraceRecord};
use gridbed_experiments::params::ParamRecord;
use gridbed_experiments::registry;
use gridbed_experiments::replay::parse;
use gridbed_experiments::report::{RunFile, RUN_FORMAT};
use gridbed_sim::trace::TRACE_EVENTS_KEPT;
use proptest::prelude::*;
use serde_json::{json, Value};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

fn check(text: &str) {
    let Ok(run) = parse(text) else { return };
    let exp = registry::find(&run.experiment).expect("accepted a run of an unknown experiment");
    assert!(run.trace.events.len() as u64 <= run.trace.count);
    assert!(run.trace.events.len() <= TRACE_EVENTS_KEPT);
    assert_eq!(run.trace.digest.len(), 64);
    if let Some(def) = exp.params {
        def.from_records(Mode::Sim, &run.params)
            .expect("accepted parameters the experiment refuses");
    } else {
        assert!(run.params.is_empty());
    }
}

fn names() -> Vec<&'static str> {
    registry::all().iter().map(|e| e.name).collect()
}

/// A parameter name of some experiment (or a made-up one).
fn param_names() -> Vec<String> {
    let mut v: Vec<String> = registry::all()
        .iter()
        .filter_map(|e| e.params)
        .flat_map(|d| d.names().into_iter().map(String::from).collect::<Vec<_>>())
        .collect();
    v.push("no_such_parameter".into());
    v
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..100).prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        "[a-z0-9/.-]{0,12}".prop_map(|s| json!(s)),
        Just(json!([])),
        Just(json!({})),
    ]
}

fn runfile() -> impl Strategy<Value = String> {
    let exps = names();
    let params = param_names();
    (
        (
            prop_oneof![Just(RUN_FORMAT), any::<u32>()],
            prop_oneof![
                proptest::sample::select(exps).prop_map(String::from),
                "[a-z-]{0,12}"
            ],
            any::<u64>(),
        ),
        proptest::collection::vec("[a-z0-9 =]{0,10}", 0..5),
        prop_oneof![Just(None), Just(Some(0u64)), any::<u64>().prop_map(Some)],
        prop_oneof![Just(None), "[0-9a-fA-F]{0,70}".prop_map(Some)],
        proptest::collection::vec((proptest::sample::select(params), value()), 0..3),
    )
        .prop_map(
            |((format, experiment, seed), events, count, digest, params)| {
                let mut trace = TraceRecord::from_events(events);
                if let Some(c) = count {
                    trace.count = c;
                }
                if let Some(d) = digest {
                    trace.digest = d;
                }
                let run = RunFile {
                    format,
                    experiment,
                    seed,
                    trace,
                    params: params
                        .into_iter()
                        .map(|(name, value)| ParamRecord {
                            name,
                            value,
                            default: Value::Null,
                            unit: String::new(),
                            source: String::new(),
                        })
                        .collect(),
                };
                serde_json::to_string(&run).expect("run files serialise")
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn parser_survives_random_text(text in "[{}\\[\\]\":,a-z0-9. -]{0,200}") {
        check(&text);
    }

    #[test]
    fn parser_survives_structured_and_mutated_run_files(
        text in runfile(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
    ) {
        check(&text);
        let mut bytes = text.into_bytes();
        for (at, v) in edits {
            let n = bytes.len();
            bytes[at % n] = b"0123456789-.e\"{}[],:ntf"[v as usize % 23];
        }
        check(&String::from_utf8_lossy(&bytes));
    }
}

/// A trace that keeps more events than it counts was accepted before `parse` checked it.
#[test]
fn inconsistent_traces_and_parameters_are_refused() {
    let refused = |text: String| match parse(&text) {
        Ok(_) => panic!("accepted {text}"),
        Err(e) => format!("{e:#}"),
    };
    let run = |count: u64, params: Value| {
        json!({
            "format": RUN_FORMAT,
            "experiment": "migration-bandwidth",
            "seed": 1,
            "trace": {"digest": "0".repeat(64), "count": count, "events": ["a", "b"]},
            "params": params,
        })
        .to_string()
    };
    assert!(parse(&run(2, json!([]))).is_ok());
    let e = refused(run(1, json!([])));
    assert!(e.contains("counts 1"), "{e}");
    let p = json!({"name": "socket_buffer_bytes", "value": 4096});
    let e = refused(run(2, json!([p, p])));
    assert!(e.contains("twice"), "{e}");
    let e = refused(run(
        2,
        json!([{"name": "socket_buffer_bytes", "value": "big"}]),
    ));
    assert!(e.contains("recorded parameters"), "{e}");
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn seed_corpus() {
    let mut n = 0;
    let mut accepted = 0;
    for e in std::fs::read_dir(corpus_dir()).expect("seed corpus directory") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("seed file");
        let text = String::from_utf8_lossy(&bytes);
        check(&text);
        accepted += usize::from(parse(&text).is_ok());
        n += 1;
    }
    assert!(n >= 5, "only {n} seeds in {}", corpus_dir().display());
    assert!(accepted >= 1, "no seed is a valid run file");
}
