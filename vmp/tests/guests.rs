//! Whole guests (kernel + user programs) give the same results in both configurations, down to
//! the number of retired guest instructions.

use gridbed_vmp::guest::{programs, UserProgram};
use gridbed_vmp::run::{run_programs, RunOptions, RunReport};
use gridbed_vmp::time::Preset;
use gridbed_vmp::Config;

fn both(progs: &[UserProgram], timer_hz: u32) -> (RunReport, RunReport) {
    let run = |c| {
        let mut o = RunOptions::new(c, Preset::PC_2005.cpu);
        o.timer_hz = timer_hz;
        run_programs(progs, o).unwrap()
    };
    (run(Config::Native), run(Config::Vmp))
}

fn same_output(n: &RunReport, v: &RunReport) {
    assert_eq!(n.exit_status, v.exit_status);
    assert_eq!(n.console, v.console);
}

fn same(n: &RunReport, v: &RunReport) {
    same_output(n, v);
    assert_eq!(n.retired, v.retired, "retired instructions differ");
    assert_eq!(n.guest_cycles, v.guest_cycles);
    assert_eq!(
        n.stats.deliveries, v.stats.deliveries,
        "interrupt deliveries differ"
    );
}

#[test]
fn getpid_loop_runs_in_both_configs() {
    for calls in [0, 1, 1000] {
        let (n, v) = both(&[programs::getpid_loop(0, calls).unwrap()], 100);
        assert_eq!(n.exit_status, 0);
        assert_eq!(n.console, format!("getpid x{calls} done\n"));
        same(&n, &v);
        assert!(n.stats.total() == 0 && v.stats.total() > 2 * calls as u64);
    }
}

/// Timer interrupts land on the first translation-block boundary after the deadline, and the
/// block boundaries of the two configurations differ (the monitor's hooks split blocks), so under
/// preemption the configurations agree on results, not on the exact instruction of each tick.
#[test]
fn two_fibonacci_processes_are_preempted_in_both_configs() {
    // A fast timer forces many preemptions in the middle of user code.
    let progs = [programs::fib(0, 18).unwrap(), programs::fib(1, 18).unwrap()];
    let (n, v) = both(&progs, 300_000);
    assert_eq!(n.console, "fib(18) = 2584\nfib(18) = 2584\n");
    assert!(
        v.stats
            .by_kind
            .get(&gridbed_vmp::vcpu::TrapKind::Irq)
            .copied()
            .unwrap_or(0)
            > 10
    );
    assert!(n.stats.deliveries > 10);
    same_output(&n, &v);
}

#[test]
fn processes_round_robin_on_yield() {
    let progs: Vec<_> = (0..3)
        .map(|i| programs::chatter(i, b'A' + i as u8, 3).unwrap())
        .collect();
    let (n, v) = both(&progs, 100);
    assert_eq!(n.console, "[A] hi\n[B] hi\n[C] hi\n".repeat(3));
    same(&n, &v);
}
