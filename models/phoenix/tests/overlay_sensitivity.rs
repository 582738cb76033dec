//! How `build_over_offline` depends on the two model inputs that are estimates or choices: the CPU
//! price per routing item and the LAN transport. Ignored by default (each run simulates 400
//! machines, ~10 s); run with `cargo test -p gridbed-phoenix --test overlay_sensitivity -- --ignored --nocapture`.

use gridbed_phoenix::experiments::{routes_with, RoutesParams};

#[test]
#[ignore]
fn ratio_sensitivity() {
    for (transport, cpi) in [
        ("gige-tcp", 0),
        ("gige-tcp", 200),
        ("gige-tcp", 1000),
        ("ethernet-100", 200),
    ] {
        let p = RoutesParams {
            transport: transport.into(),
            cycles_per_item: cpi,
            ..Default::default()
        };
        let m = routes_with(1, &p).expect("run").metrics;
        assert_eq!(m["table_errors"], 0.0);
        println!(
            "{transport} cycles/item={cpi}: build_s={:.4} offline_s={:.4} build_over_offline={:.2} messages={} bytes={}",
            m["build_s"], m["offline_s"], m["build_over_offline"], m["messages"], m["bytes"]
        );
    }
}
