//! Random sweeps over the in-memory network (`testnet.rs`): churn, adversarial delivery orders
//! and crashes over many seeds, checking every guarantee; bad input to the API and the decoder.

use crate::protocol::ids::{Id, IdRange};
use crate::protocol::node::{Config, Node, Phase, Start};
use crate::testing::testnet::*;
use crate::wire;
use gridbed_runtime::HostId;
use proptest::prelude::*;

fn run(seed: u64, space: Id, initial: u32, steps: u32) -> Net {
    let mut net = Net::new(space, initial, seed);
    net.churn(steps);
    net
}

#[test]
fn churn_over_many_seeds_keeps_every_guarantee() {
    for seed in std::env::var("PHX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(0..200, |s: u64| s..s + 1)
    {
        let net = run(seed, 64, 3, 600);
        assert!(
            net.violations.is_empty(),
            "seed {seed}: {:#?}",
            &net.violations[..net.violations.len().min(10)]
        );
    }
}

#[test]
fn joins_and_leaves_actually_happen() {
    let net = run(7, 256, 2, 3000);
    let departed = net.live(&[Phase::Departed]).len();
    assert!(
        net.nodes.len() > 4 && departed > 1,
        "{} nodes, {departed} departed",
        net.nodes.len()
    );
    let delivered: u64 = net.nodes.values().map(|n| n.stats().delivered).sum();
    assert_eq!(delivered, net.sent.values().sum::<u64>());
    let forwarded: u64 = net.nodes.values().map(|n| n.stats().forwarded).sum();
    assert!(forwarded > 0, "churn should make some senders stale");
    assert!(net.violations.is_empty(), "{:#?}", net.violations);
}

#[test]
fn api_rejects_bad_input_without_panicking() {
    use crate::protocol::node::PhoenixError;
    let mut net = Net::new(100, 2, 1);
    let n = net.nodes.get_mut(&HostId(1)).unwrap();
    assert_eq!(
        n.send(100, vec![]),
        Err(PhoenixError::OutOfSpace {
            id: 100,
            space: 100
        })
    );
    assert_eq!(
        n.assume(IdRange::new(5, 5)),
        Err(PhoenixError::BadRange(IdRange::new(5, 5)))
    );
    assert_eq!(
        n.release_to(IdRange::new(0, 200), HostId(0)),
        Err(PhoenixError::BadRange(IdRange::new(0, 200)))
    );
    assert_eq!(
        n.release_to(IdRange::new(0, 10), HostId(1)),
        Err(PhoenixError::NotMember(HostId(1)))
    );
    assert!(n.handle_bytes(&[1, 2, 3]).is_err());
    assert_eq!(n.stats().rejected, 1);
    let coord = net.nodes.get_mut(&HostId(0)).unwrap();
    assert_eq!(
        coord.report_crash(HostId(0)),
        Err(PhoenixError::CannotReclaim(HostId(0)))
    );
    let joiner = Node::new(
        HostId(9),
        Config::new(100),
        LogData::default(),
        Start::Join { contact: HostId(0) },
        0,
    );
    let mut joiner = joiner;
    assert_eq!(joiner.send(1, vec![]), Err(PhoenixError::NotJoined));
}

/// A frame that decodes but lies (IDs outside the space) is rejected, not trusted.
#[test]
fn semantically_invalid_frames_are_rejected() {
    use crate::wire::{Body, Frame};
    let mut net = Net::new(100, 2, 1);
    let n = net.nodes.get_mut(&HostId(1)).unwrap();
    let bad = Frame {
        src: HostId(0),
        dst: HostId(1),
        body: Body::Facts(vec![crate::protocol::table::Entry {
            range: IdRange::new(50, 500),
            owner: HostId(0),
            epoch: 9,
        }]),
    };
    n.handle_bytes(&wire::encode(&bad)).unwrap();
    assert_eq!(n.stats().rejected, 1);
    assert_eq!(
        n.lookup(60).owner,
        HostId(1),
        "the lie did not enter the table"
    );
}

fn run_crashy(seed: u64, space: Id, initial: u32, steps: u32) -> Net {
    let mut net = Net::new(space, initial, seed);
    net.crash_per_mille = 40;
    net.churn(steps);
    net
}

/// Crashes under traffic, joins, leaves and rebalancing: the crashed machines' IDs are
/// reclaimed (exactly one owner after settling, never two at any instant), their loss is
/// reported once, no table names them, nothing is applied twice or out of order.
#[test]
fn crashes_are_recovered_over_many_seeds() {
    let (mut crashes, mut lost) = (0, 0);
    let seeds = std::env::var("PHX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(0..150, |s: u64| s..s + 1);
    // PHX_SEEDS=n widens the sweep for stress runs.
    let seeds = std::env::var("PHX_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(seeds, |n: u64| 0..n);
    let all = seeds.end - seeds.start;
    for seed in seeds {
        // Spaces from tiny (many machines own nothing) to roomy; 2 to 5 initial machines.
        let net = run_crashy(seed, 16 + seed * 7 % 500, 2 + (seed % 4) as u32, 600);
        assert!(
            net.violations.is_empty(),
            "seed {seed}: {:#?}",
            &net.violations[..net.violations.len().min(10)]
        );
        crashes += net.crashed.len();
        lost += net.lost.len();
    }
    if all > 1 {
        assert!(
            crashes > 50,
            "only {crashes} crashes: the schedule is too tame"
        );
        assert!(lost > 0, "no reclaimed range was ever reported lost");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn crash_property(seed in any::<u64>(), space in 8u64..2000, initial in 2u32..6) {
        let net = run_crashy(seed, space, initial, 800);
        prop_assert!(net.violations.is_empty(), "{:#?}", &net.violations[..net.violations.len().min(10)]);
    }

    #[test]
    fn churn_property(seed in any::<u64>(), space in 8u64..2000, initial in 1u32..6) {
        let net = run(seed, space, initial, 800);
        prop_assert!(net.violations.is_empty(), "{:#?}", &net.violations[..net.violations.len().min(10)]);
    }
}
