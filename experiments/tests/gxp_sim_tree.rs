//! The simulated tree: explore through login rules and NAT gateways with fan-out limits and
//! self-installation, `e` with output collection, network pipes, failed logins, lost hosts and the
//! task farm with retry and resume — and determinism (same seed, same trace).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use gridbed_experiments::gxp::nat_platform;
use gridbed_gxp::front::controller::{ExecOptions, ExploreReport};
use gridbed_gxp::front::farm::{FarmJournal, FarmOptions};
use gridbed_gxp::front::pipe;
use gridbed_gxp::sim::cost::LoginCost;
use gridbed_gxp::sim::world::World;
use gridbed_gxp::sim::{start, SimLocal};
use gridbed_gxp::tree::proto::Status;
use gridbed_runtime::{ClusterRef, HostId};
use gridbed_sim::{run, SimConfig};
use proptest::prelude::*;

/// Explores a NAT'd platform and runs a few commands; returns facts to check.
#[derive(Debug, PartialEq)]
struct Facts {
    report: ExploreReport,
    alive: usize,
    depth: usize,
    max_children: usize,
    hostnames_ok: usize,
    idx: BTreeSet<String>,
    pipe_out: String,
    copies: usize,
    trace: String,
    installed: usize,
}

fn explore_and_run(seed: u64, lans: usize, per_lan: usize, denied: &[u32]) -> Facts {
    let (platform, world, rules) = nat_platform(lans, per_lan, LoginCost::default()).unwrap();
    let world = Arc::new(
        Arc::try_unwrap(world)
            .ok()
            .unwrap()
            .with_denied(denied.iter().map(|&h| HostId(h))),
    );
    let w = world.clone();
    let out = run(
        SimConfig::new(platform, seed),
        move |cluster: ClusterRef| {
            Box::pin(async move {
                let mut ctl = start(&cluster, w.clone());
                ctl.rules = rules;
                let mut targets: Vec<String> = w.names()[1..].to_vec();
                targets.push("nosuchhost".into());
                let report = ctl.explore(&targets).await.unwrap();
                let rep = ctl.exec("hostname", ExecOptions::default()).await.unwrap();
                let hostnames_ok = rep
                    .results
                    .iter()
                    .filter(|r| {
                        r.status == Status::Code(0)
                            && r.stdout == format!("{}\n", r.name).into_bytes()
                    })
                    .count();
                let idx_rep = ctl
                    .exec("echo $GXP_EXEC_IDX/$GXP_NUM_EXECS", ExecOptions::default())
                    .await
                    .unwrap();
                let idx = idx_rep
                    .results
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.stdout).trim().to_string())
                    .collect();
                // A file made on the login host, copied to every host: cat X {{ cat > Y }}.
                w.write(HostId(0), "X", Arc::new(b"data\n".to_vec()));
                let local = SimLocal {
                    host: cluster.hosts()[0].clone(),
                    world: w.clone(),
                };
                pipe::parse("cat X {{ cat > Y }}").map(|_| ()).unwrap();
                ctl.pipe(&pipe::parse("cat X {{ cat > Y }}").unwrap(), &local, None)
                    .await
                    .unwrap();
                let copies = (0..w.names().len() as u32)
                    .filter(|&h| {
                        w.read(HostId(h), "Y")
                            .is_some_and(|y| y.as_slice() == b"data\n")
                    })
                    .count();
                let p = ctl
                    .pipe(
                        &pipe::parse("echo b {{ cat }} wc -l").unwrap(),
                        &local,
                        None,
                    )
                    .await
                    .unwrap();
                let pipe_out = String::from_utf8_lossy(&p.output).into_owned();
                let facts = (
                    report,
                    ctl.table.alive_count(),
                    ctl.table.depth(),
                    ctl.table.max_children(),
                    hostnames_ok,
                    idx,
                    pipe_out,
                    copies,
                );
                ctl.quit();
                facts
            })
        },
    );
    let (report, alive, depth, max_children, hostnames_ok, idx, pipe_out, copies) = out.value;
    Facts {
        report,
        alive,
        depth,
        max_children,
        hostnames_ok,
        idx,
        pipe_out,
        copies,
        trace: out.trace.digest,
        installed: world.installed_count(),
    }
}

#[test]
fn explore_reaches_every_host_through_gateways_and_e_collects_all_outputs() {
    let f = explore_and_run(1, 3, 30, &[]);
    assert_eq!(f.alive, 90);
    assert_eq!(
        f.report.failed,
        vec![(
            "nosuchhost".to_string(),
            "no login rule leads to this host".to_string()
        )]
    );
    assert_eq!(f.hostnames_ok, 90);
    assert_eq!(
        f.installed, 90,
        "every host got the program by self-installation"
    );
    assert!(f.max_children <= 40, "hard fan-out limit");
    assert!(
        f.depth >= 2,
        "private LANs are one hop below their gateway at least"
    );
    let want: BTreeSet<String> = (0..90).map(|i| format!("{i}/90")).collect();
    assert_eq!(f.idx, want, "GXP_EXEC_IDX is a permutation of 0..N");
    assert_eq!(
        f.copies, 90,
        "cat X {{{{ cat > Y }}}} copied X to every host"
    );
    assert_eq!(
        f.pipe_out, "90\n",
        "cmd1's output reached every cmd2; their merged output fed cmd3"
    );
}

#[test]
fn failed_logins_are_listed_and_never_block_the_rest() {
    // Host 35 (a private host of LAN 1) refuses the login; host 60 (LAN 2's gateway) too, which
    // cuts off its whole private LAN.
    let f = explore_and_run(3, 3, 30, &[35, 60]);
    let failed: BTreeSet<&str> = f.report.failed.iter().map(|(t, _)| t.as_str()).collect();
    assert!(
        failed.contains("l01h0005") && failed.contains("l02h0000") && failed.contains("nosuchhost"),
        "{failed:?}"
    );
    assert!(
        f.report
            .failed
            .iter()
            .any(|(t, why)| t == "l01h0005" && why.contains("permission denied")),
        "{:?}",
        f.report.failed
    );
    assert_eq!(f.alive, 90 - 1 - 30);
    assert_eq!(f.hostnames_ok, f.alive);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    /// Over seeds and shapes: everything reachable is reached, within the fan-out limit, every
    /// host answers `e` with its own name, and the run is deterministic.
    #[test]
    fn explore_invariants_hold_over_seeds(seed in 0u64..1000, lans in 1usize..4, per_lan in 2usize..25) {
        let f = explore_and_run(seed, lans, per_lan, &[]);
        prop_assert_eq!(f.alive, lans * per_lan);
        prop_assert_eq!(f.hostnames_ok, lans * per_lan);
        prop_assert!(f.max_children <= 40);
        prop_assert_eq!(f.copies, lans * per_lan);
        let again = explore_and_run(seed, lans, per_lan, &[]);
        prop_assert_eq!(f.trace, again.trace, "same seed, same trace");
    }
}

#[test]
fn farm_retries_tasks_of_crashed_hosts_and_resumes_from_its_journal() {
    let (platform, world, rules) = nat_platform(2, 10, LoginCost::default()).unwrap();
    let w: Arc<World> = world.clone();
    let out = run(SimConfig::new(platform, 7), move |cluster: ClusterRef| {
        Box::pin(async move {
            let mut ctl = start(&cluster, w.clone());
            ctl.rules = rules;
            ctl.explore(&w.names()[1..]).await.unwrap();
            let tasks: Vec<String> = (0..60)
                .map(|i| {
                    if i == 5 {
                        "exit 4".to_string()
                    } else {
                        format!("compute {}", 2_000_000_000u64 + i * 10_000_000)
                    }
                })
                .collect();
            // Interrupted run: stop after 15 tasks.
            let mut journal = FarmJournal::default();
            let r1 = ctl
                .farm(
                    &tasks,
                    &mut journal,
                    FarmOptions {
                        stop_after: Some(15),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert!(r1.interrupted && journal.done.len() >= 15);
            let first: BTreeSet<usize> = journal.done.keys().copied().collect();
            // Crash a private host (no subtree) while the resumed run works.
            let victim = (11..20u32)
                .find(|&h| {
                    ctl.table
                        .by_target(&w.name(HostId(h)))
                        .is_some_and(|i| ctl.table.get(i).is_some_and(|e| e.children == 0))
                })
                .unwrap();
            let c = cluster.clone();
            cluster.hosts()[0].spawn(
                "crash",
                Box::pin(async move {
                    c.sleep(Duration::from_secs(1)).await;
                    c.crash(HostId(victim));
                }),
            );
            let mut seen_again = Vec::new();
            let mut on_done = |r: &gridbed_gxp::front::farm::TaskRecord| {
                seen_again.push(r.idx);
                Ok(())
            };
            let r2 = ctl
                .farm(
                    &tasks,
                    &mut journal,
                    FarmOptions {
                        on_done: Some(&mut on_done),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            (first, seen_again, r2, journal)
        })
    });
    let (first, seen_again, r2, journal) = out.value;
    assert_eq!(journal.done.len(), 60, "every task finished");
    assert_eq!(
        r2.skipped,
        first.len(),
        "resume skipped the journal's tasks"
    );
    assert!(
        seen_again.iter().all(|i| !first.contains(i)),
        "no finished task ran twice"
    );
    assert!(
        r2.retried >= 1,
        "the crashed host's task was retried: {r2:?}"
    );
    assert_eq!(journal.done[&5].code, Some(4), "exit codes collected");
    assert!(journal
        .done
        .values()
        .filter(|r| r.idx != 5)
        .all(|r| r.code == Some(0)));
}

/// A file planted under the install name (right name, wrong content) is re-hashed at login and
/// replaced by the tree's program, in the simulator as in real mode.
#[test]
fn a_planted_program_under_the_install_name_is_not_trusted() {
    use gridbed_gxp::sim::world::install_path;
    let (platform, world, rules) = nat_platform(1, 4, LoginCost::default()).unwrap();
    let (binary, sha) = world.binary();
    let path = install_path(sha);
    world.write(
        HostId(2),
        &path,
        Arc::new(b"#!/bin/sh\necho planted\n".to_vec()),
    );
    let w = world.clone();
    let out = run(SimConfig::new(platform, 5), move |cluster: ClusterRef| {
        Box::pin(async move {
            let mut ctl = start(&cluster, w.clone());
            ctl.rules = rules;
            let r = ctl.explore(&w.names()[1..]).await.unwrap();
            ctl.quit();
            r
        })
    });
    assert_eq!(out.value.reached.len(), 3, "{:?}", out.value);
    assert_eq!(
        world.read(HostId(2), &path).unwrap(),
        binary,
        "the planted copy was replaced"
    );
    assert!(world.verified_copy(HostId(2), sha));
}
