//! gxp-scale: time to explore and to run `hostname` on 10 → 10,000 simulated hosts, GXP's tree
//! against a flat fan-out of 32 (pdsh/pssh style); depth and per-parent load of the tree.

use std::sync::Arc;
use std::time::Duration;

use crate::outcome::{ExperimentOutput, Figure, Series, TraceRecord};
use anyhow::{bail, Context};
use gridbed_runtime::{ClusterRef, HostId};
use gridbed_sim::{run, SimConfig};

use gridbed_sim::Platform;
use serde::{Deserialize, Serialize};

use super::{nat_platform, platform_world};
use gridbed_gxp::front::controller::ExecOptions;
use gridbed_gxp::lang::rules::RuleSet;
use gridbed_gxp::sim::cost::LoginCost;
use gridbed_gxp::sim::world::World;
use gridbed_gxp::sim::{flat_exec, start};
use gridbed_gxp::tree::proto::Status;

/// pdsh's default fan-out is 32 (`pdsh -f`), as the issue asks.
pub const FLAT_FANOUT: usize = 32;

/// One platform size.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalePoint {
    pub hosts: usize,
    pub lans: usize,
    pub private_lans: usize,
    pub explore_s: f64,
    pub e_hostname_s: f64,
    pub flat_e_hostname_s: f64,
    pub depth: usize,
    pub max_children: usize,
    pub rounds: usize,
    pub installed: usize,
}

/// Hosts per LAN in the sweep: 100 (a departmental cluster behind one NAT gateway), fewer when the
/// whole platform is smaller.
const PER_LAN: usize = 100;

/// Runs one platform of `lans` NAT'd LANs of `per_lan` hosts: explore everything, `e hostname`
/// on the tree, then the flat baseline.
pub fn scale_point(
    seed: u64,
    lans: usize,
    per_lan: usize,
    cost: LoginCost,
    with_flat: bool,
) -> anyhow::Result<(ScalePoint, TraceRecord)> {
    let built = nat_platform(lans, per_lan, cost)?;
    scale_point_on(seed, built, with_flat, FLAT_FANOUT)
}

/// [`scale_point`] on a given platform, its world and login rules.
pub fn scale_point_on(
    seed: u64,
    (platform, world, rules): (Platform, Arc<World>, RuleSet),
    with_flat: bool,
    flat_fanout: usize,
) -> anyhow::Result<(ScalePoint, TraceRecord)> {
    let n = platform.host_count();
    let lans = platform.lans.len();
    let private_lans = platform.lans.iter().filter(|l| l.private).count();
    let w = world.clone();
    let out = run(
        SimConfig::new(platform, seed),
        move |cluster: ClusterRef| {
            Box::pin(async move {
                let mut ctl = start(&cluster, w.clone());
                ctl.rules = rules;
                let targets: Vec<String> = w.names()[1..].to_vec();
                let t0 = cluster.now();
                let ex = ctl.explore(&targets).await.map_err(|e| e.to_string())?;
                let explore_s = (cluster.now() - t0).as_secs_f64();
                if !ex.failed.is_empty() {
                    return Err(format!(
                        "explore left {} hosts unreached, first: {:?}",
                        ex.failed.len(),
                        ex.failed[0]
                    ));
                }
                cluster.event(&format!(
                    "explored {} hosts in {explore_s:.3} s",
                    ctl.table.alive_count()
                ));
                let t1 = cluster.now();
                let rep = ctl
                    .exec("hostname", ExecOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let e_s = (cluster.now() - t1).as_secs_f64();
                for r in &rep.results {
                    if r.status != Status::Code(0)
                        || r.stdout != format!("{}\n", r.name).into_bytes()
                    {
                        return Err(format!(
                            "hostname on {} gave {:?} {:?}",
                            r.name,
                            r.status,
                            String::from_utf8_lossy(&r.stdout)
                        ));
                    }
                }
                let (depth, maxc, rounds) =
                    (ctl.table.depth(), ctl.table.max_children(), ex.rounds);
                ctl.quit();
                let mut flat_s = f64::NAN;
                if with_flat {
                    cluster.sleep(Duration::from_secs(1)).await;
                    let hosts = cluster.hosts();
                    let targets: Vec<HostId> = (1..hosts.len() as u32).map(HostId).collect();
                    let t2 = cluster.now();
                    let res = flat_exec(
                        hosts[0].clone(),
                        w.clone(),
                        targets,
                        "hostname".into(),
                        flat_fanout,
                    )
                    .await;
                    flat_s = (cluster.now() - t2).as_secs_f64();
                    let ok = res.iter().filter(|(_, r)| matches!(r, Ok((_, 0)))).count();
                    if ok != hosts.len() - 1 {
                        let bad = res.iter().find(|(_, r)| !matches!(r, Ok((_, 0))));
                        return Err(format!(
                            "flat hostname: {ok} of {} ok, e.g. {bad:?}",
                            hosts.len() - 1
                        ));
                    }
                }
                Ok((
                    explore_s,
                    e_s,
                    flat_s,
                    depth,
                    maxc,
                    rounds,
                    rep.results.len(),
                ))
            })
        },
    );
    let (explore_s, e_s, flat_s, depth, maxc, rounds, answered) = out
        .value
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("gxp-scale at {n} hosts"))?;
    if answered != n {
        bail!("e hostname answered on {answered} of {n} hosts");
    }
    let point = ScalePoint {
        hosts: n,
        lans,
        private_lans,
        explore_s,
        e_hostname_s: e_s,
        flat_e_hostname_s: flat_s,
        depth,
        max_children: maxc,
        rounds,
        installed: world.installed_count(),
    };
    Ok((point, out.trace))
}

/// The sweep sizes of the experiment.
pub const SIZES: &[usize] = &[10, 100, 1000, 10_000];

/// What a researcher can change.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Platform sizes of the sweep.
    pub sizes: Vec<usize>,
    /// Hosts per LAN in the sweep (fewer when the whole platform is smaller).
    pub per_lan: usize,
    /// Concurrent logins of the flat baseline.
    pub flat_fanout: usize,
    /// A TOML platform (the text; `--platform FILE` reads it in) to run instead of the sweep
    /// ("" = the sweep's NAT layouts). The text, not a path, so a replay runs the same platform.
    pub platform: String,
    /// Where `--platform` read it: a label for the report only.
    pub platform_file: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            sizes: SIZES.to_vec(),
            per_lan: PER_LAN,
            flat_fanout: FLAT_FANOUT,
            platform: String::new(),
            platform_file: String::new(),
        }
    }
}

pub const PARAM_SPECS: &[(&str, &str, &str)] = &[
    (
        "sizes",
        "hosts",
        "10 to 10,000 hosts: the GXP targets are stated at 1000 hosts, the slides' clusters have 300+",
    ),
    (
        "per_lan",
        "hosts",
        "a departmental cluster of about 100 hosts behind one NAT gateway (estimate)",
    ),
    (
        "flat_fanout",
        "logins",
        "pdsh's default fan-out (`pdsh -f 32`)",
    ),
    (
        "platform",
        "TOML",
        "none: LAN 0 public, the others behind NAT, ethernet-100 (`--platform FILE` sets the file's text)",
    ),
    (
        "platform_file",
        "path",
        "where --platform read the platform (label only; the run uses the recorded text)",
    ),
];

pub fn scale(seed: u64) -> anyhow::Result<ExperimentOutput> {
    run_with(crate::outcome::Mode::Sim, seed, &Params::default())
}

/// The experiment over chosen sizes (tests use small ones).
pub fn scale_with(seed: u64, sizes: &[usize]) -> anyhow::Result<ExperimentOutput> {
    let p = Params {
        sizes: sizes.to_vec(),
        ..Params::default()
    };
    run_with(crate::outcome::Mode::Sim, seed, &p)
}

/// The experiment with explicit parameters (simulation only).
pub fn run_with(
    mode: crate::outcome::Mode,
    seed: u64,
    params: &Params,
) -> anyhow::Result<ExperimentOutput> {
    anyhow::ensure!(
        mode == crate::outcome::Mode::Sim,
        "experiment 'gxp-scale' has no {mode} mode"
    );
    let max = gridbed_sim::platform::MAX_HOSTS;
    anyhow::ensure!(
        !params.platform.is_empty() || !params.sizes.is_empty(),
        "sizes: at least one platform size"
    );
    if let Some(&n) = params.sizes.iter().find(|&&n| !(2..=max).contains(&n)) {
        bail!("sizes: {n} hosts, expected 2 to {max}");
    }
    anyhow::ensure!(params.per_lan >= 1, "per_lan must be at least 1");
    anyhow::ensure!(params.flat_fanout >= 1, "flat_fanout must be at least 1");
    let cost = LoginCost::default();
    let mut out = ExperimentOutput::default();
    let mut trace = TraceRecord::default();
    let mut points = Vec::new();
    if params.platform.is_empty() {
        for &n in &params.sizes {
            let per_lan = n.min(params.per_lan);
            let lans = n.div_ceil(per_lan);
            let built = nat_platform(lans, per_lan, cost.clone())?;
            let (point, t) = scale_point_on(seed, built, true, params.flat_fanout)?;
            trace.absorb(t);
            points.push(point);
        }
    } else {
        let label = if params.platform_file.is_empty() {
            "platform"
        } else {
            params.platform_file.as_str()
        };
        let file =
            Platform::from_toml(&params.platform).map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        anyhow::ensure!(file.host_count() >= 2, "{label}: at least 2 hosts");
        let (file_hosts, file_lans) = (file.host_count(), file.lans.len());
        let built = platform_world(file, cost.clone())?;
        let (point, t) = scale_point_on(seed, built, true, params.flat_fanout)?;
        trace.absorb(t);
        points.push(point);
        out.notes.push(format!(
            "platform file: {label} ({} hosts in {} LANs; its text is recorded in result.json)",
            file_hosts, file_lans
        ));
    }
    // The published point: 300+ nodes on 5 LANs (here 320 = 5 x 64), tree only.
    let (p5, t5) = scale_point(seed, 5, 64, cost.clone(), false)?;
    trace.absorb(t5);
    for p in &points {
        let n = p.hosts;
        out.metrics.insert(format!("explore_{n}_s"), p.explore_s);
        out.metrics
            .insert(format!("e_hostname_{n}_s"), p.e_hostname_s);
        out.metrics
            .insert(format!("flat_e_hostname_{n}_s"), p.flat_e_hostname_s);
        out.metrics
            .insert(format!("tree_depth_{n}"), p.depth as f64);
        out.metrics
            .insert(format!("max_children_{n}"), p.max_children as f64);
        out.metrics
            .insert(format!("explore_rounds_{n}"), p.rounds as f64);
        out.notes.push(format!(
            "{n} hosts ({} LANs, {} behind NAT): explore {:.3} s in {} rounds, depth {}, max {} children/parent, GXP installed on {} hosts; e hostname {:.3} s (tree) vs {:.3} s (flat, fan-out {})",
            p.lans,
            p.private_lans,
            p.explore_s,
            p.rounds,
            p.depth,
            p.max_children,
            p.installed,
            p.e_hostname_s,
            p.flat_e_hostname_s,
            params.flat_fanout
        ));
    }
    for p in &points {
        let n = p.hosts;
        for (metric, unit) in [
            (format!("explore_{n}_s"), "s"),
            (format!("e_hostname_{n}_s"), "s"),
            (format!("flat_e_hostname_{n}_s"), "s"),
            (format!("tree_depth_{n}"), "count"),
            (format!("max_children_{n}"), "count"),
            (format!("explore_rounds_{n}"), "count"),
        ] {
            out.units.insert(metric, unit.into());
        }
    }
    out.set_units(&[("e_hostname_320_5lan_s", "s")]);
    out.metrics
        .insert("e_hostname_320_5lan_s".into(), p5.e_hostname_s);
    // The published figure is a rough one ("about 0.6 s"); the tolerance says so. It is shown, not
    // fitted: the login/message cost model is documented independently of it.
    out.paper.insert("e_hostname_320_5lan_s".into(), 0.6);
    out.tolerance.insert("e_hostname_320_5lan_s".into(), 0.5);
    out.explained.insert(
        "e_hostname_320_5lan_s".into(),
        "the model charges 40 us of daemon CPU per message hop and nothing for starting the front-end process (the original GXP, in Python, started one per command); not tuned to the published figure".into(),
    );
    out.notes.push("e_hostname_320_5lan_s comes out about 20x below the published ~0.6 s: the model charges 40 us of daemon CPU per message hop and nothing for starting the front-end process (the original GXP was Python, front end started per command); it is not tuned to the published figure".into());
    out.notes.push(format!(
        "published elsewhere: a GXP command reached 300+ nodes on 5 LANs in about 0.6 s; here 320 hosts on 5 LANs: e hostname {:.3} s (explore {:.3} s, depth {})",
        p5.e_hostname_s, p5.explore_s, p5.depth
    ));
    out.notes.push(cost.describe());
    out.notes.push(format!(
        "platform: LANs of up to {} hosts on the simulator's {} preset; LAN 0 (login host) public, the others behind NAT (only their first host talks across LANs); fan-out 10 soft / 40 hard (GXP defaults); flat baseline = one ssh login per host, {} at a time, through the LAN gateway (ProxyJump) for NAT'd hosts",
        params.per_lan,
        super::LAN_TRANSPORT,
        params.flat_fanout
    ));
    out.notes.push(
        "targets (the project's GXP goals): e hostname on 1000 hosts <= 0.5 s, explore of 1000 hosts <= 15 s"
            .into(),
    );
    let series = |name: &str, f: &dyn Fn(&ScalePoint) -> f64| Series {
        name: name.into(),
        points: points.iter().map(|p| (p.hosts as f64, f(p))).collect(),
    };
    out.figures.push(Figure {
        id: "gxp-scale".into(),
        title: "GXP: time vs number of hosts (simulated, 2005-era login model)".into(),
        x_label: "hosts".into(),
        y_label: "time (s)".into(),
        log_x: true,
        log_y: true,
        series: vec![
            series("explore (tree)", &|p| p.explore_s),
            series("e hostname (tree)", &|p| p.e_hostname_s),
            series(
                &format!("hostname, flat fan-out {}", params.flat_fanout),
                &|p| p.flat_e_hostname_s,
            ),
        ],
        ..Default::default()
    });
    out.figures.push(Figure {
        id: "gxp-tree-shape".into(),
        title: "GXP tree: depth and largest fan-out".into(),
        x_label: "hosts".into(),
        y_label: "count".into(),
        log_x: true,
        log_y: false,
        series: vec![
            series("depth", &|p| p.depth as f64),
            series("max children per parent", &|p| p.max_children as f64),
        ],
        ..Default::default()
    });
    out.trace = Some(trace);
    Ok(out)
}
