//! Stopping at a slice end and resuming must not change execution: a guest run in slices of
//! any length ends exactly like the uninterrupted run (instructions, cycles, interrupts, exit).
//! The interesting boundary is a slice that ends right on a `hlt`: the resumed run must still
//! idle until the next interrupt.

use gridbed_vmp::guest::{build_image, programs, UserProgram};
use gridbed_vmp::machine::{Config, Exit, Machine};
use gridbed_vmp::time::Preset;

const TIMER_HZ: u32 = 20_000;

fn boot(progs: &[UserProgram], config: Config) -> Machine {
    let image = build_image(progs, TIMER_HZ).unwrap();
    let mut m = Machine::new(config, Preset::PC_2005.cpu, &image).unwrap();
    m.set_budget(50_000_000);
    m
}

/// (exit status, retired, cycles, interrupt deliveries) of a run to power-off, first stopped
/// after `at` instructions when given.
fn end(progs: &[UserProgram], config: Config, at: Option<u64>) -> (u32, u64, u64, String) {
    let mut m = boot(progs, config);
    if let Some(at) = at {
        match m.run(Some(at)).unwrap() {
            Exit::SliceEnd | Exit::PowerOff(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let code = match m.run(None).unwrap() {
        Exit::PowerOff(c) => c,
        other => panic!("{other:?}"),
    };
    let mon = m.monitor();
    (code, mon.retired, mon.cycles(), format!("{:?}", mon.stats))
}

#[test]
fn slice_end_anywhere_resumes_identically() {
    let progs = vec![programs::getpid_loop(0, 30).unwrap()];
    for config in [Config::Native, Config::Vmp] {
        let reference = end(&progs, config, None);
        let mut bad = Vec::new();
        for at in 1..reference.1 {
            if end(&progs, config, Some(at)) != reference {
                bad.push(at);
            }
        }
        assert!(
            bad.is_empty(),
            "{config:?}: slice ends {bad:?} diverge from {reference:?}"
        );
    }
}
