//! `phoenix-routes`: routing tables built by the machines themselves on 400 simulated machines in
//! three LANs (two behind NAT), against the offline computation (Kaneda et al., CCGrid 2004: about
//! twice as long). Then one machine leaves and comes back (incremental updates).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::outcome::{ExperimentOutput, Figure, Mode, Series};
use anyhow::{anyhow, bail};
use gridbed_runtime::{BoxFuture, ClusterRef, HostId, HostRef};

use super::lock;
use gridbed_phoenix::overlay::{
    run_offline, verify, Graph, OverlayNode, Probe, Route, RouterStats,
};

/// Parameters of one run (what `--set` changes; units and sources in [`PARAM_SPECS`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesParams {
    /// Machines per LAN; LAN 0 is public, the others private behind their first host.
    pub lans: Vec<u32>,
    /// Preset transport of every LAN (`gridbed_sim::presets`).
    pub transport: String,
    /// CPU price of one routing item, both protocols ([`gridbed_phoenix::overlay::CYCLES_PER_ITEM`]).
    pub cycles_per_item: u64,
}

impl Default for RoutesParams {
    fn default() -> Self {
        // The paper's 400 nodes in three LANs; the split between LANs is not in the abstract.
        RoutesParams {
            lans: vec![134, 133, 133],
            transport: "gige-tcp".into(),
            cycles_per_item: gridbed_phoenix::overlay::CYCLES_PER_ITEM,
        }
    }
}

type Tables = BTreeMap<HostId, BTreeMap<HostId, Route>>;
/// Per machine: when its offline table was ready, and the table.
type OfflineDone = Arc<Mutex<BTreeMap<HostId, (f64, BTreeMap<HostId, Route>)>>>;

#[derive(Default)]
struct Shared {
    probe: Arc<Probe>,
    /// Each machine's table and the time it last changed.
    tables: Mutex<Tables>,
    changed_at: Mutex<BTreeMap<HostId, Duration>>,
    stats: Mutex<BTreeMap<HostId, RouterStats>>,
    leave: Mutex<Option<HostId>>,
    left_at: Mutex<Option<Duration>>,
    left: AtomicBool,
    stop: AtomicBool,
    exited: AtomicU32,
    errors: Mutex<Vec<String>>,
}

/// What one phase of the distributed run measured.
#[derive(Clone, Debug, Default)]
struct Phase {
    start_s: f64,
    /// Last table change in the phase, from its start.
    settle_s: f64,
    frames: u64,
    bytes: u64,
    errors: Vec<String>,
}

/// The experiment with the paper's sizes.
/// The registry's name for this module's parameters.
pub type Params = RoutesParams;

pub const PARAM_SPECS: &[(&str, &str, &str)] = &[
    ("lans", "machines per LAN", "Kaneda et al. CCGrid'04: 400 nodes in 3 LANs (the split is not in the abstract: chosen even)"),
    ("transport", "preset", "chosen: gigabit Ethernet LANs (gridbed_sim::presets)"),
    ("cycles_per_item", "cycles", "gridbed_phoenix::overlay::CYCLES_PER_ITEM (chosen, see there)"),
];

/// The experiment with the given parameters (simulated only).
pub fn run_with(mode: Mode, seed: u64, p: &Params) -> anyhow::Result<ExperimentOutput> {
    anyhow::ensure!(
        mode == Mode::Sim,
        "experiment 'phoenix-routes' has no {mode} mode"
    );
    routes_with(seed, p)
}

pub fn routes(seed: u64) -> anyhow::Result<ExperimentOutput> {
    routes_with(seed, &RoutesParams::default())
}

fn platform(p: &RoutesParams) -> anyhow::Result<gridbed_sim::Platform> {
    if p.lans.is_empty() || p.lans.iter().any(|n| *n < 2) {
        bail!("invalid routes parameters: every LAN needs at least 2 machines: {p:?}");
    }
    let mut pl = gridbed_sim::Platform::lans(p.lans.len(), 2, &p.transport)
        .map_err(|e| anyhow!("platform: {e}"))?;
    for (lan, n) in pl.lans.iter_mut().zip(&p.lans) {
        lan.hosts = *n;
    }
    let private: Vec<usize> = (1..p.lans.len()).collect();
    Ok(pl.with_private_lans(&private))
}

/// The experiment with explicit sizes.
pub fn routes_with(seed: u64, p: &RoutesParams) -> anyhow::Result<ExperimentOutput> {
    let pl = platform(p)?;
    let machines: u32 = p.lans.iter().sum();
    // The churn machine: the last machine of the last LAN (private, not a gateway).
    let churner = HostId(machines - 1);

    let cpi = p.cycles_per_item;
    let off = gridbed_sim::run(gridbed_sim::SimConfig::new(pl.clone(), seed), move |c| {
        offline(c, cpi)
    });
    let (offline_done, offline_errors) = off.value?;
    let on = gridbed_sim::run(gridbed_sim::SimConfig::new(pl, seed), move |c| {
        distributed(c, machines, churner, cpi)
    });
    let (phases, sh, graph, curve) = on.value?;
    if let Some(e) = lock(&sh.errors).first() {
        bail!("a machine failed: {e}");
    }
    let mut trace = off.trace;
    trace.absorb(on.trace);
    let mut out = ExperimentOutput {
        trace: Some(trace),
        ..Default::default()
    };
    let offline_s = offline_done.iter().copied().fold(0.0, f64::max);
    let [build, leave, join] = [&phases[0], &phases[1], &phases[2]];
    let tables = lock(&sh.tables);
    let sizes: Vec<usize> = tables.values().map(BTreeMap::len).collect();
    let stats = lock(&sh.stats);
    let replies: u64 = stats.values().map(|s| s.corrective_replies).sum();
    let links = graph.arcs() / 2;
    let m = &mut out.metrics;
    m.insert("build_over_offline".into(), build.settle_s / offline_s);
    m.insert("build_s".into(), build.settle_s);
    m.insert("offline_s".into(), offline_s);
    m.insert("messages".into(), build.frames as f64);
    m.insert("bytes".into(), build.bytes as f64);
    m.insert(
        "messages_per_link".into(),
        build.frames as f64 / links.max(1) as f64,
    );
    m.insert("offline_messages".into(), graph.arcs() as f64);
    m.insert(
        "table_entries_max".into(),
        sizes.iter().copied().max().unwrap_or(0) as f64,
    );
    m.insert(
        "table_entries_min".into(),
        sizes.iter().copied().min().unwrap_or(0) as f64,
    );
    m.insert(
        "hops_max".into(),
        tables
            .values()
            .flat_map(|t| t.values().map(|r| r.hops))
            .max()
            .unwrap_or(0) as f64,
    );
    m.insert("leave_settle_s".into(), leave.settle_s);
    m.insert("leave_messages".into(), leave.frames as f64);
    m.insert("join_settle_s".into(), join.settle_s);
    m.insert("join_messages".into(), join.frames as f64);
    m.insert("corrective_replies".into(), replies as f64);
    let wrong = build.errors.len() + leave.errors.len() + join.errors.len() + offline_errors.len();
    m.insert("table_errors".into(), wrong as f64);
    m.insert(
        "bad_frames".into(),
        sh.probe.bad_frames.load(Ordering::SeqCst) as f64,
    );
    m.insert("machines".into(), f64::from(machines));
    m.insert("links".into(), links as f64);
    out.set_units(&[
        ("build_over_offline", "x"),
        ("build_s", "s"),
        ("offline_s", "s"),
        ("messages", "count"),
        ("bytes", "B"),
        ("messages_per_link", "messages"),
        ("offline_messages", "count"),
        ("table_entries_max", "entries"),
        ("table_entries_min", "entries"),
        ("hops_max", "hops"),
        ("leave_settle_s", "s"),
        ("leave_messages", "count"),
        ("join_settle_s", "s"),
        ("join_messages", "count"),
        ("corrective_replies", "count"),
        ("table_errors", "count"),
        ("bad_frames", "count"),
        ("machines", "count"),
        ("links", "count"),
    ]);
    out.paper.insert("build_over_offline".into(), 2.0);
    out.tolerance.insert("build_over_offline".into(), 0.5);
    let mut offline_curve: Vec<f64> = offline_done.clone();
    offline_curve.sort_by(f64::total_cmp);
    out.figures.push(Figure {
        id: "tables-complete".into(),
        title: "Machines whose routing table is final, over time".into(),
        x_label: "time (ms)".into(),
        y_label: "machines".into(),
        series: vec![
            Series {
                name: "distributed (distance vector)".into(),
                points: curve,
            },
            Series {
                name: "offline (full configuration)".into(),
                points: cdf(&offline_curve),
            },
        ],
        ..Default::default()
    });
    out.notes.push(format!(
        "{machines} machines in LANs of {:?} ({} transport, simulator presets; backbone 1 Gbit/s uplinks, 1 ms between LANs: gridbed_sim::Backbone::default); LANs 1.. are private: only their first host connects across LANs. {links} allowed links. All machines start at t=0.",
        p.lans, p.transport
    ));
    out.notes.push(format!(
        "Offline (after Kaneda et al.: 'offline route calculation that just connects nodes based on a fully given configuration'): every machine knows the graph, sends one hello per link, waits for its neighbours' hellos and runs one BFS ({} cycles per machine and per arc on the 1 GHz default host, an estimate, see overlay::CYCLES_PER_ITEM). Distributed: distance vector with poisoned reverse and corrective replies, triggered and batched updates (overlay/mod.rs), same CPU price per advert.",
        p.cycles_per_item
    ));
    out.notes.push(format!(
        "build_s = time of the last table change of any machine (every table then equals BFS over the reachability graph: {} problems found). Leave/rejoin of {churner} (private LAN, not a gateway): settle times and frames from the moment it starts leaving / starts again.",
        build.errors.len()
    ));
    out.notes.push(format!(
        "Where the time goes: the first exchange sends each neighbour every table entry as it is learned (~{:.0} frames and {:.1} KB per link), against 2 hellos per link offline; the build is bounded by NIC occupancy and per-frame host costs in the dense intra-LAN cliques and by the CPU price of adverts. Machines of the private LANs finish last: every route out of their LAN goes through the gateway, which must learn all outside destinations and re-advertise them to its whole LAN. The ratio depends on the CPU estimate and the transport (tests/overlay_sensitivity.rs sweeps both; nothing here is fitted to the paper). The paper's algorithm (known to us only by its abstract) also discovered peers and opened connections, costs this runtime does not model. Leave and rejoin cost about one frame per link direction: the departure's tombstone, or the new destination, reaches every machine from each of its neighbours.",
        build.frames as f64 / links.max(1) as f64,
        build.bytes as f64 / links.max(1) as f64 / 1e3
    ));
    for e in build
        .errors
        .iter()
        .chain(&leave.errors)
        .chain(&join.errors)
        .chain(&offline_errors)
        .take(10)
    {
        out.notes.push(format!("TABLE ERROR: {e}"));
    }
    let _ = (build.start_s, leave.start_s, join.start_s);
    Ok(out)
}

/// Points (t in ms, machines done by t) of a sorted list of completion times in seconds.
fn cdf(sorted: &[f64]) -> Vec<(f64, f64)> {
    sorted
        .iter()
        .enumerate()
        .map(|(i, t)| (t * 1e3, (i + 1) as f64))
        .collect()
}

/// The reachability graph as the hosts see it.
fn reach_graph(hosts: &[HostRef]) -> Graph {
    let ids: Vec<HostId> = hosts.iter().map(|h| h.id()).collect();
    Graph::from_reach(&ids, |a, b| hosts[a.0 as usize].can_reach(b))
}

type OfflineResult = anyhow::Result<(Vec<f64>, Vec<String>)>;

fn offline(cluster: ClusterRef, cpi: u64) -> BoxFuture<'static, OfflineResult> {
    Box::pin(async move {
        let hosts = cluster.hosts();
        let graph = Arc::new(reach_graph(&hosts));
        let probe = Arc::new(Probe::default());
        let done: OfflineDone = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        for h in &hosts {
            let (h2, g, pr, d, e) = (
                h.clone(),
                graph.clone(),
                probe.clone(),
                done.clone(),
                errors.clone(),
            );
            h.spawn(
                "overlay-offline",
                Box::pin(async move {
                    match run_offline(h2.clone(), g, pr, cpi).await {
                        Ok(t) => {
                            lock(&d).insert(h2.id(), (h2.now().as_secs_f64(), t));
                        }
                        Err(err) => lock(&e).push(format!("{}: {err}", h2.id())),
                    }
                }),
            );
        }
        while lock(&done).len() + lock(&errors).len() < hosts.len() {
            cluster.sleep(Duration::from_millis(1)).await;
        }
        if let Some(e) = lock(&errors).first() {
            bail!("offline: {e}");
        }
        cluster.event("overlay-offline: all tables computed");
        let done = lock(&done);
        let tables: Tables = done.iter().map(|(h, (_, t))| (*h, t.clone())).collect();
        let bad = verify(&graph, &tables, 10);
        Ok((done.values().map(|(t, _)| *t).collect(), bad))
    })
}

type Distributed = anyhow::Result<(Vec<Phase>, Arc<Shared>, Graph, Vec<(f64, f64)>)>;

fn distributed(
    cluster: ClusterRef,
    machines: u32,
    churner: HostId,
    cpi: u64,
) -> BoxFuture<'static, Distributed> {
    Box::pin(async move {
        let hosts = cluster.hosts();
        let graph = reach_graph(&hosts);
        let sh = Arc::new(Shared::default());
        for h in &hosts {
            spawn_node(h.clone(), 0, machines, cpi, sh.clone());
        }
        let build = settle(&cluster, &sh, 0.0, (0, 0), &graph).await;
        // The final-table time of each machine, for the figure.
        let mut done: Vec<f64> = lock(&sh.changed_at)
            .values()
            .map(Duration::as_secs_f64)
            .collect();
        done.sort_by(f64::total_cmp);
        let curve = cdf(&done);
        cluster.event("overlay: build settled");

        // A machine leaves.
        let base = baseline(&sh);
        *lock(&sh.leave) = Some(churner);
        while !sh.left.load(Ordering::SeqCst) {
            cluster.sleep(Duration::from_millis(1)).await;
            if !lock(&sh.errors).is_empty() {
                bail!("leave failed: {:?}", lock(&sh.errors));
            }
        }
        let left_at = lock(&sh.left_at).map_or(0.0, |d| d.as_secs_f64());
        lock(&sh.tables).remove(&churner);
        let without = graph.without(churner);
        let leave = settle(&cluster, &sh, left_at, base, &without).await;
        cluster.event("overlay: leave settled");

        // It comes back as a new incarnation.
        let back = cluster.now().as_secs_f64();
        let base = baseline(&sh);
        spawn_node(
            hosts[churner.0 as usize].clone(),
            1,
            machines,
            cpi,
            sh.clone(),
        );
        let join = settle(&cluster, &sh, back, base, &graph).await;
        cluster.event("overlay: rejoin settled");

        sh.stop.store(true, Ordering::SeqCst);
        while sh.exited.load(Ordering::SeqCst) < machines + 1 {
            cluster.sleep(Duration::from_millis(5)).await;
        }
        Ok((vec![build, leave, join], sh, graph, curve))
    })
}

/// Frames handled and bytes sent so far.
fn baseline(sh: &Shared) -> (u64, u64) {
    (
        sh.probe.handled.load(Ordering::SeqCst),
        sh.probe.bytes.load(Ordering::SeqCst),
    )
}

/// Waits until nothing is in flight, then measures the phase (from `start_s` and the counters in
/// `base`) and checks every table.
async fn settle(
    cluster: &ClusterRef,
    sh: &Shared,
    start_s: f64,
    (frames0, bytes0): (u64, u64),
    g: &Graph,
) -> Phase {
    loop {
        cluster.sleep(Duration::from_millis(1)).await;
        let sent = sh.probe.sent.load(Ordering::SeqCst);
        let handled = sh.probe.handled.load(Ordering::SeqCst);
        if sent == handled && handled > frames0 {
            break;
        }
    }
    let start = Duration::from_secs_f64(start_s);
    let last = lock(&sh.changed_at)
        .values()
        .filter(|t| **t >= start)
        .max()
        .copied()
        .unwrap_or(start);
    Phase {
        start_s,
        settle_s: (last - start).as_secs_f64(),
        frames: sh.probe.handled.load(Ordering::SeqCst) - frames0,
        bytes: sh.probe.bytes.load(Ordering::SeqCst) - bytes0,
        errors: verify(g, &lock(&sh.tables), 10),
    }
}

fn spawn_node(h: HostRef, inc: u32, machines: u32, cpi: u64, sh: Arc<Shared>) {
    let h2 = h.clone();
    h.spawn(
        "overlay-node",
        Box::pin(async move {
            if let Err(e) = run_node(&h2, inc, machines, cpi, &sh).await {
                lock(&sh.errors).push(format!("{}: {e:#}", h2.id()));
            }
            sh.exited.fetch_add(1, Ordering::SeqCst);
        }),
    );
}

async fn run_node(
    host: &HostRef,
    inc: u32,
    machines: u32,
    cpi: u64,
    sh: &Arc<Shared>,
) -> anyhow::Result<()> {
    let me = host.id();
    let obs_sh = sh.clone();
    let observer = Box::new(move |r: &gridbed_phoenix::overlay::Router, now: Duration| {
        lock(&obs_sh.tables).insert(r.me(), r.table());
        lock(&obs_sh.changed_at).insert(r.me(), now);
    });
    let mut node = OverlayNode::start(
        host.clone(),
        inc,
        machines,
        sh.probe.clone(),
        Some(observer),
    )
    .await?;
    node.set_cycles_per_item(cpi);
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            break;
        }
        if *lock(&sh.leave) == Some(me) && inc == 0 {
            *lock(&sh.left_at) = Some(host.now());
            let r = node.leave().await?;
            lock(&sh.stats).insert(me, r.stats().clone());
            sh.left.store(true, Ordering::SeqCst);
            return Ok(());
        }
        node.step(Duration::from_millis(5)).await?;
    }
    lock(&sh.stats).insert(me, node.router().stats().clone());
    Ok(())
}
