//! Determinism: every registered experiment, run twice with one seed, gives one trace digest; the
//! simulator is exercised over many seeds. The same runs check that every metric declares a unit.

use gridbed_experiments::outcome::Mode;
use gridbed_experiments::registry;

#[test]
fn each_experiment_same_seed_same_digest() {
    for exp in registry::all() {
        if !exp.modes.contains(&Mode::Sim) {
            continue;
        }
        let go = || match exp.quick {
            Some(quick) => quick(42),
            None => (exp.run)(Mode::Sim, 42),
        };
        let first = go().unwrap();
        let missing = first.metrics_without_unit();
        assert!(
            missing.is_empty(),
            "{}: metrics without a unit: {missing:?}",
            exp.name
        );
        let a = first.trace.expect("sim runs have a trace");
        let b = go().unwrap().trace.expect("sim runs have a trace");
        assert_eq!(a.digest, b.digest, "{} is not deterministic", exp.name);
        assert_eq!(a.events, b.events);
    }
}

#[test]
fn figure_3_holds_for_many_seeds() {
    for seed in 0..16 {
        let out = gridbed_experiments::migration::bandwidth_sim::simulate(seed).unwrap();
        for (k, paper) in &out.paper {
            let ratio = out.metrics[k] / paper;
            assert!(
                (ratio - 1.0).abs() <= out.tolerance[k],
                "seed {seed}: {k} ratio {ratio}"
            );
        }
    }
}
