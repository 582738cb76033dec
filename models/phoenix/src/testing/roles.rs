//! Targeted in-memory scenarios for the movable coordinator role, join retries and the floor
//! after a crash (the random sweeps live in `testnet.rs`).

use gridbed_runtime::HostId;

use crate::protocol::node::{Node, Phase, Start};
use crate::testing::testnet::{test_config, LogData, Net, TEST_JOIN_TIMEOUT};

/// Some traffic from every active machine.
fn traffic(net: &mut Net, n: u32) {
    for _ in 0..n {
        net.send_random();
        net.deliver_one();
    }
}

fn assert_clean(net: &Net, what: &str) {
    assert!(
        net.violations.is_empty(),
        "{what}: {:#?}",
        &net.violations[..net.violations.len().min(10)]
    );
}

/// "handoff-join" frames sent by every machine: one per admission.
fn admissions(net: &Net) -> u64 {
    net.nodes
        .values()
        .map(|n| n.stats().sent.get("handoff-join").copied().unwrap_or(0))
        .sum()
}

/// The coordinator leaves: the role moves to the lowest other member, a leave request that was
/// sent to the old coordinator meanwhile is forwarded, not lost, and nothing is lost or doubled.
#[test]
fn coordinator_leave_moves_the_role() {
    for seed in 0..40 {
        let mut net = Net::new(120, 4, seed);
        traffic(&mut net, 30);
        net.nodes.get_mut(&HostId(0)).unwrap().leave().unwrap();
        net.collect_now();
        // Member 3 asks the coordinator it knows (h0) to leave before hearing of the move.
        net.nodes.get_mut(&HostId(3)).unwrap().leave().unwrap();
        net.collect_now();
        traffic(&mut net, 60);
        net.quiesce();
        net.check_settled();
        assert_clean(&net, &format!("seed {seed}"));
        assert_eq!(
            net.nodes[&HostId(0)].phase(),
            Phase::Departed,
            "seed {seed}"
        );
        assert_eq!(
            net.nodes[&HostId(3)].phase(),
            Phase::Departed,
            "seed {seed}"
        );
        assert_eq!(net.coordinators(), vec![HostId(1)], "seed {seed}");
        assert_eq!(net.nodes[&HostId(2)].coordinator().0, HostId(1));
    }
}

/// The coordinator crashes under traffic: the lowest live member takes over (from its replica),
/// reclaims the IDs, and joins and leaves keep working afterwards.
#[test]
fn coordinator_crash_is_recovered_by_the_successor() {
    for seed in 0..40 {
        let mut net = Net::new(200, 4, seed);
        traffic(&mut net, 40);
        net.crash_host(HostId(0));
        traffic(&mut net, 40);
        net.quiesce();
        assert_eq!(net.coordinators(), vec![HostId(1)], "seed {seed}");
        assert_eq!(net.nodes[&HostId(1)].stats().takeovers, 1, "seed {seed}");
        // Membership changes still work under the successor.
        let node = Node::new(
            HostId(4),
            test_config(200),
            LogData::default(),
            Start::JoinAny {
                contacts: vec![HostId(3), HostId(1)],
            },
            seed,
        );
        net.nodes.insert(HostId(4), node);
        net.nodes.get_mut(&HostId(2)).unwrap().leave().unwrap();
        net.collect_now();
        traffic(&mut net, 40);
        net.quiesce();
        net.check_settled();
        assert_clean(&net, &format!("seed {seed}"));
        assert_eq!(
            net.nodes[&HostId(2)].phase(),
            Phase::Departed,
            "seed {seed}"
        );
        assert_eq!(net.nodes[&HostId(4)].phase(), Phase::Active, "seed {seed}");
    }
}

/// The coordinator crashes while a join is in progress (at any point of it): the successor
/// completes or restarts it, so the joiner ends up a member (its donor may have crashed with the
/// coordinator, so a second donation is allowed; it only gives the joiner more IDs).
#[test]
fn join_in_progress_survives_a_coordinator_crash() {
    let mut completed = 0;
    for seed in 0..60 {
        let mut net = Net::new(150, 3, seed);
        let node = Node::new(
            HostId(3),
            test_config(150),
            LogData::default(),
            Start::JoinAny {
                contacts: vec![HostId(0), HostId(2)],
            },
            seed,
        );
        net.nodes.insert(HostId(3), node);
        net.collect_now();
        // Let the join run for a random number of frames, then crash the coordinator.
        let steps = net.rand() % 12;
        for _ in 0..steps {
            net.deliver_one();
        }
        net.crash_host(HostId(0));
        net.quiesce();
        net.check_settled();
        assert_clean(&net, &format!("seed {seed}"));
        let joiner = &net.nodes[&HostId(3)];
        assert_eq!(joiner.phase(), Phase::Active, "seed {seed}");
        completed += 1;
    }
    assert_eq!(completed, 60);
}

/// A joiner whose first contact crashes before forwarding the request retries with its next
/// contact after `join_timeout`; re-sent requests never admit it twice.
#[test]
fn joiner_retries_when_its_contact_crashes() {
    for seed in 0..30 {
        let mut net = Net::new(100, 4, seed);
        let j = HostId(50);
        let node = Node::new(
            j,
            test_config(100),
            LogData::default(),
            Start::JoinAny {
                contacts: vec![HostId(2), HostId(1)],
            },
            seed,
        );
        net.nodes.insert(j, node);
        net.collect_now();
        // The contact dies with the request on its way to it.
        net.crash_host(HostId(2));
        net.quiesce();
        net.check_settled();
        assert_clean(&net, &format!("seed {seed}"));
        assert_eq!(net.nodes[&j].phase(), Phase::Active, "seed {seed}");
        assert!(net.nodes[&j].stats().join_retries >= 1, "seed {seed}");
    }
}

/// Duplicate join requests (retries that overtake a slow admission) are idempotent.
#[test]
fn duplicate_join_requests_admit_once() {
    let mut net = Net::new(100, 3, 9);
    let j = HostId(40);
    let node = Node::new(
        j,
        test_config(100),
        LogData::default(),
        Start::JoinAny {
            contacts: vec![HostId(1), HostId(2)],
        },
        3,
    );
    net.nodes.insert(j, node);
    net.collect_now();
    // Fire several retries before anything is delivered.
    for k in 1..6u32 {
        net.tick(TEST_JOIN_TIMEOUT * 8 * k);
    }
    assert!(net.nodes[&j].stats().join_retries >= 3);
    net.quiesce();
    net.check_settled();
    assert_clean(&net, "duplicates");
    assert_eq!(net.nodes[&j].phase(), Phase::Active);
    assert_eq!(admissions(&net), 1, "one admission only");
}

/// After crashes, no owner keeps messages waiting behind a lost sequence number, and floors
/// do get used (the sweep would be blind otherwise).
#[test]
fn no_message_waits_behind_a_lost_one() {
    let (mut skipped, mut crashes) = (0, 0);
    for seed in 0..120 {
        let mut net = Net::new(40 + seed % 60, 3 + (seed % 3) as u32, seed);
        net.crash_per_mille = 40;
        net.churn(500);
        assert_clean(&net, &format!("seed {seed}"));
        for n in net.nodes.values() {
            assert!(
                n.early.is_empty() || n.phase() == Phase::Departed,
                "seed {seed}: {} holds {} messages behind a gap",
                n.id(),
                n.early.len()
            );
            skipped += n.stats().floor_skipped;
        }
        crashes += net.crashed.len();
    }
    assert!(crashes > 50, "{crashes} crashes");
    assert!(skipped > 0, "no floor ever skipped a lost message");
}
