//! The `phoenix-routes` experiment on a reduced platform: tables correct after build, leave and
//! rejoin, the offline baseline faster, and the same seed giving the same trace.

use gridbed_experiments::phoenix::{routes_with, RoutesParams};

fn small() -> RoutesParams {
    RoutesParams {
        lans: vec![9, 7, 7],
        ..Default::default()
    }
}

#[test]
fn small_platform_builds_correct_tables_deterministically() {
    let a = routes_with(11, &small()).expect("run");
    let m = &a.metrics;
    assert_eq!(m["table_errors"], 0.0, "notes: {:?}", a.notes);
    assert_eq!(m["bad_frames"], 0.0);
    // Every machine reaches the 22 others; across a NAT a path takes up to 3 links.
    assert_eq!(m["table_entries_max"], 22.0);
    assert_eq!(m["table_entries_min"], 22.0);
    assert_eq!(m["hops_max"], 3.0);
    assert!(
        m["offline_s"] > 0.0 && m["build_s"] > m["offline_s"],
        "{m:?}"
    );
    assert!(
        m["leave_messages"] > 0.0 && m["join_messages"] > 0.0,
        "{m:?}"
    );
    let b = routes_with(11, &small()).expect("replay");
    assert_eq!(
        a.trace.as_ref().unwrap().digest,
        b.trace.as_ref().unwrap().digest
    );
    assert_eq!(a.metrics, b.metrics);
    let c = routes_with(12, &small()).expect("other seed");
    assert_eq!(c.metrics["table_errors"], 0.0);
}

#[test]
fn bad_parameters_are_an_error() {
    let p = RoutesParams {
        lans: vec![5, 1],
        ..Default::default()
    };
    assert!(routes_with(1, &p).is_err());
    let p = RoutesParams {
        transport: "carrier-pigeon".into(),
        ..Default::default()
    };
    assert!(routes_with(1, &p).is_err());
}
