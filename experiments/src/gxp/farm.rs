//! gxp-farm: dispatch throughput and makespan of a task list on 350 and on 1000 simulated hosts
//! across 9 LANs (the slides: an NLP job on ~350 CPUs; a contest on 1000 CPUs over 9 LANs), with
//! host failures during the run.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::outcome::{ExperimentOutput, Figure, Mode, Series, TraceRecord};
use anyhow::Context;
use gridbed_runtime::{ClusterRef, HostId};
use gridbed_sim::{run, SimConfig};

use super::nat_platform;
use gridbed_gxp::front::farm::{FarmJournal, FarmOptions, FarmReport};
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

/// What a researcher can change (units and sources in [`PARAM_SPECS`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub work_tasks: usize,
    pub null_tasks: usize,
    pub dispatch_hosts: usize,
    pub farm_hosts: Vec<usize>,
    pub crash_fraction: f64,
    #[serde(rename = "crash_window_s", with = "crate::params::seconds")]
    pub crash_window: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            work_tasks: 5000,
            null_tasks: 20_000,
            dispatch_hosts: 1000,
            farm_hosts: vec![350, 1000],
            crash_fraction: 0.01,
            crash_window: Duration::from_secs(600),
        }
    }
}

pub const PARAM_SPECS: &[(&str, &str, &str)] = &[
    (
        "work_tasks",
        "tasks",
        "chosen: compute tasks (mean 60 s) for the makespans",
    ),
    (
        "null_tasks",
        "tasks",
        "chosen: empty tasks for the dispatch rate",
    ),
    (
        "dispatch_hosts",
        "hosts",
        "document 2: the contest's 1000 CPUs",
    ),
    (
        "farm_hosts",
        "hosts",
        "document 2: the NLP job's ~350 CPUs and the contest's 1000 CPUs",
    ),
    (
        "crash_fraction",
        "fraction",
        "estimate: 1% of a shared grid's workers lost during a run",
    ),
    (
        "crash_window_s",
        "s",
        "estimate: crashes spread over the first 10 minutes",
    ),
];

/// Largest host count of one farm run (the platform's limit is far above; this keeps a typo
/// from building a million-host simulation).
const MAX_FARM_HOSTS: usize = 20_000;

/// The experiment with the given parameters (simulated only).
pub fn run_with(mode: Mode, seed: u64, p: &Params) -> anyhow::Result<ExperimentOutput> {
    anyhow::ensure!(
        mode == Mode::Sim,
        "experiment 'gxp-farm' has no {mode} mode"
    );
    let hosts_ok = |h: usize| (LANS..=MAX_FARM_HOSTS).contains(&h);
    anyhow::ensure!(
        hosts_ok(p.dispatch_hosts)
            && !p.farm_hosts.is_empty()
            && p.farm_hosts.iter().all(|h| hosts_ok(*h)),
        "hosts must be {LANS}..={MAX_FARM_HOSTS} (one per LAN at least) and farm_hosts not empty"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&p.crash_fraction),
        "crash_fraction must be within 0..=1"
    );
    anyhow::ensure!(
        p.work_tasks > 0
            && p.null_tasks > 0
            && p.work_tasks <= 1_000_000
            && p.null_tasks <= 1_000_000,
        "work_tasks and null_tasks must be 1..=1000000"
    );
    farm_params(seed, p)
}

pub fn farm(seed: u64) -> anyhow::Result<ExperimentOutput> {
    farm_params(seed, &Params::default())
}

/// The experiment with chosen sizes: `work_tasks` compute tasks for the makespans, `null_tasks`
/// empty tasks for the dispatch rate.
pub fn farm_with(
    seed: u64,
    work_tasks: usize,
    null_tasks: usize,
) -> anyhow::Result<ExperimentOutput> {
    let p = Params {
        work_tasks,
        null_tasks,
        ..Params::default()
    };
    farm_params(seed, &p)
}

fn farm_params(seed: u64, p: &Params) -> anyhow::Result<ExperimentOutput> {
    let (work_tasks, null_tasks) = (p.work_tasks, p.null_tasks);
    let mut out = ExperimentOutput::default();
    let mut trace = TraceRecord::default();
    // Dispatch throughput: empty tasks (`true`) on 1000 hosts, no failures.
    let nulls = vec!["true".to_string(); null_tasks];
    let (d, t) = farm_run(seed, p.dispatch_hosts, nulls, 0.0, Duration::ZERO)?;
    trace.absorb(t);
    let rate = d.tasks as f64 / d.seconds;
    out.metrics.insert("dispatch_tasks_per_s".into(), rate);
    out.notes.push(format!("dispatch: {} empty tasks on {} hosts in {:.3} s = {rate:.0} tasks/s (target >= 1000; GXP's make reached 60 tasks/s)", d.tasks, p.dispatch_hosts, d.seconds));
    let tasks = task_list(seed, work_tasks);
    let mut pts = Vec::new();
    for &hosts in &p.farm_hosts {
        let (r, t) = farm_run(seed, hosts, tasks.clone(), p.crash_fraction, p.crash_window)?;
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
        title: format!(
            "GXP task farm: makespan vs hosts (simulated, {}% host crashes)",
            p.crash_fraction * 100.0
        ),
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
    for &hosts in &p.farm_hosts {
        out.units.insert(format!("makespan_{hosts}_s"), "s".into());
        out.units.insert(format!("retried_{hosts}"), "count".into());
    }
    out.trace = Some(trace);
    Ok(out)
}
