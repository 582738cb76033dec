//! gxp-farm: dispatch throughput and makespan of a task list on 350 and on 1000 simulated hosts
//! across 9 LANs (the slides: an NLP job on ~350 CPUs; a contest on 1000 CPUs over 9 LANs), with
//! host failures during the run.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::outcome::{ExperimentOutput, Figure, Series, TraceRecord};
use anyhow::Context;
use gridbed_runtime::{ClusterRef, HostId};
use gridbed_sim::{run, SimConfig};

use super::nat_platform;
use gridbed_gxp::farm::{FarmJournal, FarmOptions, FarmReport};
use gridbed_gxp::sim::cost::LoginCost;
use gridbed_gxp::sim::start;
use gridbed_runtime::rng::SplitMix64;

/// LANs of the farm platforms (the slides' contest: 9 LANs).
pub const LANS: usize = 9;

/// The synthetic task list: `count` tasks of `compute C` with C uniform in [20, 100] s at 1 GHz
/// (mean 60 s: a stand-in for the NLP job's many short analyses; the slides give only the total,
/// ~1000 CPU-days on ~350 CPUs).
pub fn task_list(seed: u64, count: usize) -> Vec<String> {
    let mut r = SplitMix64(seed ^ 0x7a5c);
    (0..count)
        .map(|_| format!("compute {}", (20e9 + 80e9 * r.unit()) as u64))
        .collect()
}

/// Result of one farm run.
#[derive(Clone, Debug, PartialEq)]
pub struct FarmRun {
    pub hosts: usize,
    pub tasks: usize,
    pub seconds: f64,
    pub report: FarmReport,
    pub crashed: usize,
}

/// Explores `hosts` workers over 9 LANs, then farms `tasks` out to them; crashes `crash_fraction`
/// of the workers at times uniform over `crash_window`.
pub fn farm_run(
    seed: u64,
    hosts: usize,
    tasks: Vec<String>,
    crash_fraction: f64,
    crash_window: Duration,
) -> anyhow::Result<(FarmRun, TraceRecord)> {
    let per_lan = hosts.div_ceil(LANS);
    let (platform, world, rules) = nat_platform(LANS, per_lan, LoginCost::default())?;
    let ntasks = tasks.len();
    let w = world.clone();
    let out = run(
        SimConfig::new(platform, seed),
        move |cluster: ClusterRef| {
            Box::pin(async move {
                let mut ctl = start(&cluster, w.clone());
                ctl.rules = rules;
                let targets: Vec<String> = w.names()[1..].to_vec();
                let ex = ctl.explore(&targets).await.map_err(|e| e.to_string())?;
                if !ex.failed.is_empty() {
                    return Err(format!(
                        "explore failed on {} hosts: {:?}",
                        ex.failed.len(),
                        ex.failed[0]
                    ));
                }
                // Exactly `hosts` workers: the first ones by index (the root included).
                let workers: BTreeSet<u32> = ctl.table.alive().take(hosts).collect();
                ctl.selection.set(workers.clone());
                // Crash schedule: deterministic from the seed; never the login host.
                let mut r = SplitMix64(seed ^ 0xc4a5);
                let victims: Vec<u32> = workers
                    .iter()
                    .copied()
                    .filter(|&i| i != 0)
                    .filter(|_| r.unit() < crash_fraction)
                    .collect();
                let crashed = victims.len();
                let t0 = cluster.now();
                for v in victims {
                    let at = Duration::from_secs_f64(crash_window.as_secs_f64() * r.unit());
                    let c = cluster.clone();
                    let hid = ctl
                        .table
                        .get(v)
                        .and_then(|e| w.resolve(&e.target))
                        .unwrap_or(HostId(0));
                    cluster.hosts()[0].spawn(
                        "crash-injector",
                        Box::pin(async move {
                            c.sleep(at).await;
                            c.event(&format!("crash {hid}"));
                            c.crash(hid);
                        }),
                    );
                }
                let mut journal = FarmJournal::default();
                let rep = ctl
                    .farm(&tasks, &mut journal, FarmOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let secs = (cluster.now() - t0).as_secs_f64();
                let done_ok = journal.done.values().filter(|r| r.code == Some(0)).count();
                if done_ok + rep.abandoned != ntasks {
                    return Err(format!(
                        "{done_ok} tasks ok + {} abandoned != {ntasks}",
                        rep.abandoned
                    ));
                }
                ctl.quit();
                Ok((secs, rep, crashed))
            })
        },
    );
    let (seconds, report, crashed) = out
        .value
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("gxp-farm on {hosts} hosts"))?;
    Ok((
        FarmRun {
            hosts,
            tasks: ntasks,
            seconds,
            report,
            crashed,
        },
        out.trace,
    ))
}

pub fn farm(seed: u64) -> anyhow::Result<ExperimentOutput> {
    farm_with(seed, 5000, 20_000)
}

/// The experiment with chosen sizes: `work_tasks` compute tasks for the makespans, `null_tasks`
/// empty tasks for the dispatch rate.
pub fn farm_with(
    seed: u64,
    work_tasks: usize,
    null_tasks: usize,
) -> anyhow::Result<ExperimentOutput> {
    let mut out = ExperimentOutput::default();
    let mut trace = TraceRecord::default();
    // Dispatch throughput: empty tasks (`true`) on 1000 hosts, no failures.
    let nulls = vec!["true".to_string(); null_tasks];
    let (d, t) = farm_run(seed, 1000, nulls, 0.0, Duration::ZERO)?;
    trace.absorb(t);
    let rate = d.tasks as f64 / d.seconds;
    out.metrics.insert("dispatch_tasks_per_s".into(), rate);
    out.notes.push(format!("dispatch: {} empty tasks on 1000 hosts in {:.3} s = {rate:.0} tasks/s (target >= 1000; GXP's make reached 60 tasks/s)", d.tasks, d.seconds));
    let tasks = task_list(seed, work_tasks);
    let mut pts = Vec::new();
    for hosts in [350usize, 1000] {
        // 1% of the workers crash during the first 10 minutes (an estimate of a shared grid's churn).
        let (r, t) = farm_run(seed, hosts, tasks.clone(), 0.01, Duration::from_secs(600))?;
        trace.absorb(t);
        out.metrics.insert(format!("makespan_{hosts}_s"), r.seconds);
        out.metrics
            .insert(format!("retried_{hosts}"), r.report.retried as f64);
        out.notes.push(format!(
            "{hosts} hosts over {LANS} LANs: {} tasks (mean 60 s) in {:.1} s; {} hosts crashed, {} tasks retried elsewhere, {} abandoned",
            r.tasks, r.seconds, r.crashed, r.report.retried, r.report.abandoned
        ));
        pts.push((hosts as f64, r.seconds));
    }
    let ideal: Vec<(f64, f64)> = {
        let work: f64 = tasks
            .iter()
            .filter_map(|t| t.strip_prefix("compute ")?.parse::<f64>().ok())
            .sum::<f64>()
            / 1e9;
        pts.iter().map(|(h, _)| (*h, work / h)).collect()
    };
    out.figures.push(Figure {
        id: "gxp-farm-makespan".into(),
        title: "GXP task farm: makespan vs hosts (simulated, 1% host crashes)".into(),
        x_label: "hosts".into(),
        y_label: "time (s)".into(),
        log_x: false,
        log_y: false,
        series: vec![
            Series {
                name: "makespan".into(),
                points: pts,
            },
            Series {
                name: "total work / hosts".into(),
                points: ideal,
            },
        ],
        ..Default::default()
    });
    out.notes.push(LoginCost::default().describe());
    out.notes.push("task list synthetic (seeded): compute tasks uniform 20-100 s at 1 GHz; one task per host at a time; a lost host is detected by keepalive (30 s x 3) and its task re-dispatched".into());
    out.set_units(&[("dispatch_tasks_per_s", "tasks/s")]);
    for hosts in [350usize, 1000] {
        out.units.insert(format!("makespan_{hosts}_s"), "s".into());
        out.units.insert(format!("retried_{hosts}"), "count".into());
    }
    out.trace = Some(trace);
    Ok(out)
}
