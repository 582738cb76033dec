//! The policy's decisions on hand-made load pictures: each test states a situation where a wrong
//! rule (missing cost check, herd, no residence bound) gives a different answer.

use std::time::Duration;

use gridbed_migration::controller::{Controller, Managed, Policy};
use gridbed_migration::cost::TransferCost;
use gridbed_migration::load::LoadSample;
use gridbed_runtime::{Addr, HostId};

fn policy() -> Policy {
    Policy {
        period_s: 0.5,
        smoothing: 1.0,
        threshold_jobs: 1.0,
        hysteresis_jobs: 1.0,
        min_residence_s: 2.0,
    }
}

/// LAPI-like: 55 MB/s, 10 ms restart.
fn lapi() -> TransferCost {
    TransferCost::from_bandwidth(55.4e6, 0.0002, 0.01)
}

fn sample(c: &mut Controller, host: u32, runnable: f64) {
    c.observe(&LoadSample {
        host: HostId(host),
        at: Duration::ZERO,
        runnable,
    });
}

fn proc_on(id: u32, host: u32, image_bytes: u64, remaining_s: f64) -> Managed {
    Managed {
        id,
        host: HostId(host),
        control: Addr::new(HostId(host), 100 + id as u16),
        image_bytes,
        remaining_s: Some(remaining_s),
        started: Duration::ZERO,
        resident_since: Duration::ZERO,
        moving_to: None,
    }
}

const T10: Duration = Duration::from_secs(10);

#[test]
fn heavy_job_arrival_triggers_a_move_to_the_idle_host() {
    let mut c = Controller::new(policy());
    c.report(Duration::ZERO, proc_on(0, 1, 40_000_000, 20.0));
    sample(&mut c, 1, 3.0); // probe + process + one other user's job
    sample(&mut c, 2, 1.0); // idle
    sample(&mut c, 3, 2.0); // one other user's job
    let d = c.decide(T10, &lapi());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].from, d[0].to), (HostId(1), HostId(2)));
    assert!(d[0].gain_s > d[0].cost_s);
    // In flight: no second order for the same process.
    assert!(c.decide(T10, &lapi()).is_empty());
}

#[test]
fn no_move_when_the_gain_is_below_the_cost() {
    let mut c = Controller::new(policy());
    // 0.5 s of work left gains 0.5 s; moving 40 MB at 55 MB/s costs 0.73 s.
    c.report(Duration::ZERO, proc_on(0, 1, 40_000_000, 0.5));
    sample(&mut c, 1, 3.0);
    sample(&mut c, 2, 1.0);
    assert!(c.decide(T10, &lapi()).is_empty());
    // The same process with more work left does move: the refusal above was the cost rule.
    c.report(Duration::ZERO, proc_on(0, 1, 40_000_000, 5.0));
    assert_eq!(c.decide(T10, &lapi()).len(), 1);
}

#[test]
fn no_move_below_threshold_or_when_no_host_is_lighter() {
    let mut c = Controller::new(policy());
    c.report(Duration::ZERO, proc_on(0, 1, 1_000, 100.0));
    sample(&mut c, 1, 2.0); // the process alone
    sample(&mut c, 2, 1.0);
    assert!(c.decide(T10, &lapi()).is_empty(), "not overloaded");
    sample(&mut c, 1, 3.0);
    sample(&mut c, 2, 2.0); // as loaded as the source would be after the move
    assert!(
        c.decide(T10, &lapi()).is_empty(),
        "a move would swap the imbalance"
    );
}

#[test]
fn two_overloaded_hosts_do_not_both_pile_onto_one_idle_host() {
    let mut c = Controller::new(policy());
    c.report(Duration::ZERO, proc_on(0, 1, 1_000_000, 50.0));
    c.report(Duration::ZERO, proc_on(1, 2, 1_000_000, 50.0));
    sample(&mut c, 1, 3.0);
    sample(&mut c, 2, 3.0);
    sample(&mut c, 3, 1.0);
    let d = c.decide(T10, &lapi());
    assert_eq!(d.len(), 1, "one idle host takes one process: {d:?}");
    assert_eq!(d[0].to, HostId(3));
}

#[test]
fn residence_bound_stops_ping_pong_under_an_oscillating_load() {
    // Another user's job hops between hosts 1 and 2 every second; the process follows the quiet
    // host. Count its moves over 60 s with and without the residence bound.
    let moves = |min_residence_s: f64| {
        let mut c = Controller::new(Policy {
            min_residence_s,
            ..policy()
        });
        let mut at = 1u32;
        c.report(Duration::ZERO, proc_on(0, at, 1_000_000, 1000.0));
        let mut moves = 0;
        for t in 1..=60u64 {
            let now = Duration::from_secs(t);
            let busy = if t % 2 == 0 { 1 } else { 2 };
            for h in [1u32, 2] {
                let others = if h == busy { 1.0 } else { 0.0 };
                let mine = if h == at { 1.0 } else { 0.0 };
                sample(&mut c, h, 1.0 + others + mine);
            }
            for d in c.decide(now, &lapi()) {
                moves += 1;
                at = d.to.0;
                let mut p = proc_on(0, at, 1_000_000, 1000.0);
                p.resident_since = now;
                c.report(now, p);
            }
        }
        moves
    };
    let unbounded = moves(0.0);
    let bounded = moves(10.0);
    assert!(
        unbounded >= 25,
        "without the bound it chases the load: {unbounded}"
    );
    assert!(bounded <= 6, "at most one move per 10 s: {bounded}");
}

#[test]
fn a_lost_order_is_given_up_and_the_process_managed_again() {
    let mut c = Controller::new(policy());
    c.report(Duration::ZERO, proc_on(0, 1, 40_000_000, 20.0));
    sample(&mut c, 1, 3.0);
    sample(&mut c, 2, 1.0);
    assert_eq!(c.decide(T10, &lapi()).len(), 1);
    // Still reporting from host 1 shortly after: the move may be under way.
    c.report(
        T10 + Duration::from_millis(500),
        proc_on(0, 1, 40_000_000, 19.0),
    );
    assert!(c
        .decide(T10 + Duration::from_millis(500), &lapi())
        .is_empty());
    // Long after the move should have ended: the order is given up and issued again.
    let late = T10 + Duration::from_secs(5);
    c.report(late, proc_on(0, 1, 40_000_000, 15.0));
    assert_eq!(c.decide(late, &lapi()).len(), 1);
}
