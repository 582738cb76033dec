//! How `build_over_offline` depends on the two model inputs that are estimates or choices: the CPU
//! price per routing item and the LAN transport. Runs in CI on 100 machines (3 LANs of ~33); the
//! 400-machine numbers quoted in the notes come from `PHX_ROUTES_MACHINES=400`:
//! `cargo test -p gridbed-experiments --test phoenix_overlay_sensitivity -- --nocapture`.

use gridbed_experiments::phoenix::{routes_with, RoutesParams};

#[test]
fn ratio_sensitivity() {
    let machines: u32 = std::env::var("PHX_ROUTES_MACHINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let third = machines / 3;
    let lans = vec![machines - 2 * third, third, third];
    for (transport, cpi) in [
        ("gige-tcp", 0),
        ("gige-tcp", 200),
        ("gige-tcp", 1000),
        ("ethernet-100", 200),
    ] {
        let p = RoutesParams {
            lans: lans.clone(),
            transport: transport.into(),
            cycles_per_item: cpi,
        };
        let m = routes_with(1, &p).expect("run").metrics;
        assert_eq!(m["table_errors"], 0.0, "{transport} {cpi}");
        // The distributed build can never beat a computation that starts with the whole graph.
        assert!(
            m["build_over_offline"] > 1.0,
            "{transport} {cpi}: {}",
            m["build_over_offline"]
        );
        println!(
            "{transport} cycles/item={cpi}: build_s={:.4} offline_s={:.4} build_over_offline={:.2} messages={} bytes={}",
            m["build_s"], m["offline_s"], m["build_over_offline"], m["messages"], m["bytes"]
        );
    }
}
