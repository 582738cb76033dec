//! The runner's experiments at reduced size: every metric the issue names is produced by the
//! mechanism, and the issue's targets hold (simulated time).

use gridbed_experiments::gxp::{farm_with, scale_with};

#[test]
fn gxp_scale_meets_the_issue_targets_and_the_tree_beats_flat() {
    let out = scale_with(1, &[10, 1000]).unwrap();
    let m = &out.metrics;
    for k in [
        "e_hostname_1000_s",
        "explore_1000_s",
        "flat_e_hostname_1000_s",
        "tree_depth_1000",
        "e_hostname_320_5lan_s",
    ] {
        assert!(
            m.get(k).is_some_and(|v| v.is_finite() && *v > 0.0),
            "{k} missing or not positive: {m:?}"
        );
    }
    assert!(
        m["e_hostname_1000_s"] <= 0.5,
        "target: e hostname on 1000 hosts <= 0.5 s, got {}",
        m["e_hostname_1000_s"]
    );
    assert!(
        m["explore_1000_s"] <= 15.0,
        "target: explore 1000 hosts <= 15 s, got {}",
        m["explore_1000_s"]
    );
    assert!(
        m["flat_e_hostname_1000_s"] > 10.0 * m["e_hostname_1000_s"],
        "a persistent tree beats one login per host"
    );
    assert!(
        m["e_hostname_10_s"] < m["e_hostname_1000_s"],
        "more hosts, more time"
    );
    assert!(m["tree_depth_1000"] >= 2.0 && m["max_children_1000"] <= 40.0);
    assert_eq!(out.figures[0].series.len(), 3);
    assert!(out.trace.as_ref().is_some_and(|t| t.count > 0));
}

#[test]
fn gxp_farm_dispatches_over_a_thousand_tasks_per_second_and_finishes_everything() {
    let out = farm_with(2, 1200, 3000).unwrap();
    let m = &out.metrics;
    assert!(
        m["dispatch_tasks_per_s"] >= 1000.0,
        "target >= 1000 tasks/s, got {}",
        m["dispatch_tasks_per_s"]
    );
    // Lower bound: total work spread perfectly (mean 60 s per task) — the makespan cannot beat it.
    assert!(m["makespan_350_s"] > 1200.0 * 20.0 / 350.0);
    assert!(
        m["makespan_1000_s"] < m["makespan_350_s"],
        "more hosts, shorter makespan"
    );
}
