//! Property suite in the simulator: random join/leave schedules under continuous traffic, many
//! seeds. Checks: never two owners of an ID at any observed instant, exactly one owner after
//! settling, every message applied exactly once in per-(sender, ID) order to the data held by the
//! owner, and hop counts within the documented bound.

use std::time::Duration;

use gridbed_experiments::phoenix::{scale_with, ScaleParams};

fn small(seed: u64) -> ScaleParams {
    // Small enough for many seeds in the test profile; large enough for stale tables and forwarding.
    let machines = 8 + (seed % 13) as u32;
    ScaleParams {
        machines,
        space: 200 + seed * 37 % 3000,
        initial: 3 + (seed % 3) as u32,
        churn: 1 + (seed % 2) as u32,
        messages_per_machine: 40,
        send_gap: Duration::from_micros(300),
        ..ScaleParams::default()
    }
}

fn check(seed: u64, p: &ScaleParams) {
    let out = scale_with(seed, p).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    let m = &out.metrics;
    for (k, want) in [
        ("exactly_once_violations", 0.0),
        ("duplicates", 0.0),
        ("hop_bound_violations", 0.0),
        ("multi_owner_instants", 0.0),
        ("unowned_ids_after_settle", 0.0),
    ] {
        assert_eq!(m[k], want, "seed {seed}: {k} = {} ({:?})", m[k], out.notes);
    }
    assert_eq!(m["messages_sent"], m["messages_delivered"], "seed {seed}");
    assert!(m["messages_sent"] > 0.0);
}

#[test]
fn churn_under_traffic_many_seeds() {
    for seed in 0..100 {
        check(seed, &small(seed));
    }
}

#[test]
fn churn_behind_nat_relays() {
    for seed in 0..6 {
        let p = ScaleParams {
            lans: 3,
            nat: true,
            machines: 12,
            initial: 6,
            ..small(seed)
        };
        let out = scale_with(seed, &p).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        assert_eq!(out.metrics["exactly_once_violations"], 0.0, "seed {seed}");
        assert!(
            out.metrics["relayed"] > 0.0,
            "seed {seed}: private LANs must relay"
        );
    }
}

#[test]
fn same_seed_same_trace() {
    let p = small(3);
    let a = scale_with(3, &p).unwrap();
    let b = scale_with(3, &p).unwrap();
    assert_eq!(a.trace.unwrap().digest, b.trace.unwrap().digest);
}

/// The size: 1000 machines, 10^6 IDs, churn under traffic.
#[test]
fn full_scale_keeps_guarantees() {
    let out = scale_with(1, &ScaleParams::default()).expect("run");
    let m = &out.metrics;
    assert_eq!(m["exactly_once_violations"], 0.0);
    assert_eq!(m["hop_bound_violations"], 0.0);
    assert_eq!(m["multi_owner_instants"], 0.0);
    assert_eq!(m["unowned_ids_after_settle"], 0.0);
    assert_eq!(m["messages_sent"], m["messages_delivered"]);
    assert!(
        m["messages_per_join"] < 10.0,
        "joins must not broadcast: {}",
        m["messages_per_join"]
    );
}
