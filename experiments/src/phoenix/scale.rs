//! `phoenix-scale`: many simulated machines, a large ID space, joins and leaves under traffic.
//!
//! Phases: `initial` machines share the space evenly; the others join (growth); then every machine
//! sends messages to random IDs while `churn` machines leave and `churn` new ones join. Every
//! message is applied to a [`Ledger`] held with its ID, so the run also checks exactly-once, FIFO
//! delivery into the owner's data at scale.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::outcome::{ExperimentOutput, Figure, Mode, Series};
use anyhow::{anyhow, bail};
use gridbed_runtime::{BoxFuture, ClusterRef, HostId, HostRef};

use super::lock;
use gridbed_phoenix::apps::ledger::{check_exactly_once, Ledger};
use gridbed_phoenix::driver::Phoenix;
use gridbed_phoenix::protocol::ids::{Id, IdRange};
use gridbed_phoenix::protocol::node::{Config, Phase, Start, Stats};
use gridbed_phoenix::protocol::table::RoutingTable;

/// Parameters of one run (what `--set` changes; units and sources in [`PARAM_SPECS`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleParams {
    /// Machines at the end of the growth phase (the issue: 1000).
    pub machines: u32,
    /// Size of the ID space (the issue: 10^6).
    pub space: Id,
    /// Machines that start with the initial even layout; the rest join one by one.
    pub initial: u32,
    /// Leaves, and as many joins, during the traffic phase.
    pub churn: u32,
    /// Messages each machine sends during the traffic phase.
    pub messages_per_machine: u32,
    /// Mean gap between one machine's sends.
    #[serde(rename = "send_gap_s", with = "crate::params::seconds")]
    pub send_gap: Duration,
    pub transport: String,
    /// LANs; LANs other than the first are private (behind their first host) when `nat` is set.
    pub lans: usize,
    pub nat: bool,
}

impl Default for ScaleParams {
    fn default() -> Self {
        ScaleParams {
            machines: 1000,
            space: 1_000_000,
            initial: 100,
            churn: 20,
            messages_per_machine: 20,
            send_gap: Duration::from_millis(5),
            transport: "gige-tcp".into(),
            lans: 1,
            nat: false,
        }
    }
}

struct Shared {
    stop: AtomicBool,
    joined: AtomicU32,
    left: AtomicU32,
    sent: AtomicU64,
    applied: AtomicU64,
    sent_map: Mutex<BTreeMap<(u32, Id), u64>>,
    ledgers: Mutex<Vec<Ledger>>,
    stats: Mutex<Vec<Stats>>,
    table_sizes: Mutex<Vec<usize>>,
    errors: Mutex<Vec<String>>,
    /// Earliest time each machine may start sending (the traffic phase).
    traffic_from: Mutex<Option<Duration>>,
    leave_now: Mutex<Vec<HostId>>,
    exited: AtomicU32,
    /// Machines that have sent their quota or left.
    quiet: AtomicU32,
    relayed: AtomicU64,
    /// Each machine's owned ranges, refreshed after every step it takes (for the one-owner check).
    owners: Arc<Mutex<BTreeMap<HostId, Vec<IdRange>>>>,
    /// Instants at which some ID had two owners (must stay 0).
    multi_owner: AtomicU64,
}

struct Timeline {
    grown_s: f64,
    churn_requested_s: f64,
    settled_s: f64,
    end_s: f64,
    size_curve: Vec<(f64, f64)>,
}

/// The experiment with the sizes.
/// The registry's name for this module's parameters.
pub type Params = ScaleParams;

pub const PARAM_SPECS: &[(&str, &str, &str)] = &[
    (
        "machines",
        "machines",
        "issue: 1000 machines at the end of the growth phase",
    ),
    ("space", "IDs", "issue: 10^6 virtual IDs"),
    (
        "initial",
        "machines",
        "chosen: the even initial layout; the rest join one by one",
    ),
    (
        "churn",
        "machines",
        "chosen: leaves (and as many joins) during the traffic phase",
    ),
    (
        "messages_per_machine",
        "messages",
        "chosen: traffic per machine during churn",
    ),
    (
        "send_gap_s",
        "s",
        "chosen: mean gap between one machine's sends",
    ),
    (
        "transport",
        "preset",
        "chosen: gigabit Ethernet LAN (gridbed_sim::presets)",
    ),
    (
        "lans",
        "LANs",
        "chosen: one LAN (more: the others private when nat is set)",
    ),
    ("nat", "bool", "chosen: off"),
];

/// The experiment with the given parameters (simulated only).
pub fn run_with(mode: Mode, seed: u64, p: &Params) -> anyhow::Result<ExperimentOutput> {
    anyhow::ensure!(
        mode == Mode::Sim,
        "experiment 'phoenix-scale' has no {mode} mode"
    );
    scale_with(seed, p)
}

pub fn scale(seed: u64) -> anyhow::Result<ExperimentOutput> {
    scale_with(seed, &ScaleParams::default())
}

/// The experiment with explicit sizes.
pub fn scale_with(seed: u64, p: &ScaleParams) -> anyhow::Result<ExperimentOutput> {
    let hosts = (p.machines + p.churn) as usize;
    if p.initial < 2
        || p.initial > p.machines
        || p.churn >= p.initial
        || p.space < u64::from(p.machines) * 2
        || p.lans == 0
    {
        bail!("invalid scale parameters: {p:?}");
    }
    let per_lan = hosts.div_ceil(p.lans);
    let mut platform = gridbed_sim::Platform::lans(p.lans, per_lan, &p.transport)
        .map_err(|e| anyhow!("platform: {e}"))?;
    let mut gateways = BTreeMap::new();
    if p.nat && p.lans > 1 {
        let private: Vec<usize> = (1..p.lans).collect();
        platform = platform.with_private_lans(&private);
        for h in 0..platform.host_count() as u32 {
            let lan = platform.lan_of(HostId(h));
            if lan > 0 {
                gateways.insert(HostId(h), HostId((lan * per_lan) as u32));
            }
        }
    }
    let cfg = gridbed_sim::SimConfig::new(platform, seed);
    let params = p.clone();
    let gateways = Arc::new(gateways);
    let o = gridbed_sim::run(cfg, move |c| scenario(c, params, gateways));
    let (tl, sh) = o.value?;
    let mut out = ExperimentOutput {
        trace: Some(o.trace),
        ..Default::default()
    };
    if let Some(e) = lock(&sh.errors).first() {
        bail!("a machine failed: {e}");
    }
    let stats = lock(&sh.stats).clone();
    let sum = |f: fn(&Stats) -> u64| stats.iter().map(f).sum::<u64>();
    let kind = |k: &str| {
        stats
            .iter()
            .map(|s| s.sent.get(k).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let joins = u64::from(p.machines - p.initial + p.churn);
    let delivered = sum(|s| s.delivered);
    let bad = check_exactly_once(&lock(&sh.sent_map), lock(&sh.ledgers).iter());
    let sizes = lock(&sh.table_sizes).clone();
    let m = &mut out.metrics;
    m.insert(
        "hops_mean".into(),
        sum(|s| s.hops_sum) as f64 / delivered.max(1) as f64,
    );
    m.insert(
        "hops_max".into(),
        stats.iter().map(|s| s.hops_max).max().unwrap_or(0) as f64,
    );
    m.insert("settle_s".into(), tl.settled_s - tl.churn_requested_s);
    // The coordinator replicates its state to its deputy after every membership change (so a
    // deputy can take over if it crashes): one state frame and one ack, charged to each change.
    let changes = joins + u64::from(p.churn);
    let replication = (kind("coord-state") + kind("coord-ack")) as f64 / changes.max(1) as f64;
    m.insert("replication_per_change".into(), replication);
    m.insert(
        "messages_per_join".into(),
        (kind("join-req")
            + kind("donate")
            + kind("handoff-join")
            + kind("join-done")
            + kind("new-coordinator")) as f64
            / joins.max(1) as f64
            + replication,
    );
    let leave_kinds = [
        "leave-req",
        "leave-go",
        "handoff",
        "departing",
        "farewell",
        "gone",
        "leave-complete",
    ];
    m.insert(
        "messages_per_leave".into(),
        leave_kinds.iter().map(|k| kind(k)).sum::<u64>() as f64 / f64::from(p.churn.max(1))
            + replication,
    );
    m.insert("grow_s".into(), tl.grown_s);
    m.insert("run_s".into(), tl.end_s);
    m.insert(
        "messages_sent".into(),
        sh.sent.load(Ordering::SeqCst) as f64,
    );
    m.insert("messages_delivered".into(), delivered as f64);
    m.insert("exactly_once_violations".into(), bad.len() as f64);
    m.insert("duplicates".into(), sum(|s| s.duplicates) as f64);
    m.insert(
        "multi_owner_instants".into(),
        sh.multi_owner.load(Ordering::SeqCst) as f64,
    );
    m.insert(
        "unowned_ids_after_settle".into(),
        unowned(&sh, p.space) as f64,
    );
    m.insert(
        "hop_bound_violations".into(),
        sum(|s| s.bound_violations) as f64,
    );
    m.insert("forwarded".into(), sum(|s| s.forwarded) as f64);
    m.insert("relayed".into(), sh.relayed.load(Ordering::SeqCst) as f64);
    m.insert(
        "table_entries_mean".into(),
        sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64,
    );
    m.insert(
        "table_entries_max".into(),
        sizes.iter().copied().max().unwrap_or(0) as f64,
    );
    m.insert("machines".into(), f64::from(p.machines));
    m.insert("ids".into(), p.space as f64);
    out.set_units(&[
        ("hops_mean", "hops"),
        ("hops_max", "hops"),
        ("settle_s", "s"),
        ("replication_per_change", "messages"),
        ("messages_per_join", "messages"),
        ("messages_per_leave", "messages"),
        ("grow_s", "s"),
        ("run_s", "s"),
        ("messages_sent", "count"),
        ("messages_delivered", "count"),
        ("exactly_once_violations", "count"),
        ("duplicates", "count"),
        ("multi_owner_instants", "count"),
        ("unowned_ids_after_settle", "count"),
        ("hop_bound_violations", "count"),
        ("forwarded", "count"),
        ("relayed", "count"),
        ("table_entries_mean", "entries"),
        ("table_entries_max", "entries"),
        ("machines", "count"),
        ("ids", "count"),
    ]);
    out.figures.push(Figure {
        id: "growth".into(),
        title: "Machines holding IDs during growth and churn".into(),
        x_label: "time (s)".into(),
        y_label: "machines".into(),
        series: vec![Series {
            name: "members".into(),
            points: tl.size_curve,
        }],
        ..Default::default()
    });
    out.notes.push(format!(
        "{} machines ({} initial, {} joined one by one), {} IDs, then {} leaves and {} joins under traffic of {} messages per machine (mean gap {:?}); {} LAN(s){}, {} transport.",
        p.machines, p.initial, p.machines - p.initial, p.space, p.churn, p.churn, p.messages_per_machine, p.send_gap, p.lans,
        if p.nat { ", all but the first private behind their first host" } else { "" }, p.transport
    ));
    out.notes.push("settle_s: from the last churn request to every join and leave completed (membership changes are serialised by the coordinator). messages_per_join counts join-req, donate (per routing hop), the hand-off with the routing snapshot, join-done, the member list sent to the joiner (new-coordinator) and the per-change replication of the coordinator's state to its deputy (coord-state + coord-ack, also in messages_per_leave).".into());
    out.notes.push("Hop bound: a message takes at most 1 + (number of times its ID changed hands since the fact its sender used) machine-to-machine hops; hop_bound_violations counts deliveries beyond it.".into());
    if !bad.is_empty() {
        out.notes.push(format!("EXACTLY-ONCE VIOLATIONS: {bad:?}"));
    }
    Ok(out)
}

/// Counts an instant at which two machines own the same ID.
fn check_owners(sh: &Shared) {
    let owners = lock(&sh.owners);
    let mut all: Vec<IdRange> = owners.values().flatten().copied().collect();
    all.sort();
    if all.windows(2).any(|w| w[1].start < w[0].end) {
        sh.multi_owner.fetch_add(1, Ordering::SeqCst);
    }
}

/// IDs owned by nobody once everything has settled (must be 0).
fn unowned(sh: &Shared, space: Id) -> u64 {
    let owned: u64 = lock(&sh.owners).values().flatten().map(IdRange::len).sum();
    space.saturating_sub(owned)
}

fn scenario(
    cluster: ClusterRef,
    p: ScaleParams,
    gateways: Arc<BTreeMap<HostId, HostId>>,
) -> BoxFuture<'static, anyhow::Result<(Timeline, Arc<Shared>)>> {
    Box::pin(async move {
        let hosts = cluster.hosts();
        let sh = Arc::new(Shared {
            stop: AtomicBool::new(false),
            joined: AtomicU32::new(0),
            left: AtomicU32::new(0),
            sent: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            sent_map: Mutex::new(BTreeMap::new()),
            ledgers: Mutex::new(Vec::new()),
            stats: Mutex::new(Vec::new()),
            table_sizes: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            traffic_from: Mutex::new(None),
            leave_now: Mutex::new(Vec::new()),
            exited: AtomicU32::new(0),
            quiet: AtomicU32::new(0),
            relayed: AtomicU64::new(0),
            owners: Arc::new(Mutex::new(BTreeMap::new())),
            multi_owner: AtomicU64::new(0),
        });
        let now = |c: &ClusterRef| c.now().as_secs_f64();
        let table = RoutingTable::even(p.space, p.initial);
        let spawn = |h: &HostRef, start: Start| {
            let t = node_task(h.clone(), start, p.clone(), gateways.clone(), sh.clone());
            h.spawn("phoenix-scale", Box::pin(t));
        };
        for h in hosts.iter().take(p.initial as usize) {
            spawn(
                h,
                Start::Initial {
                    table: table.clone(),
                },
            );
        }
        let mut curve = vec![(0.0, f64::from(p.initial))];
        // Growth: every other machine asks to join; the coordinator serves them one at a time.
        for h in hosts
            .iter()
            .take(p.machines as usize)
            .skip(p.initial as usize)
        {
            spawn(h, Start::Join { contact: HostId(0) });
        }
        let grow_joins = p.machines - p.initial;
        while sh.joined.load(Ordering::SeqCst) < grow_joins {
            cluster.sleep(Duration::from_millis(5)).await;
            check_owners(&sh);
            curve.push((
                now(&cluster),
                f64::from(p.initial + sh.joined.load(Ordering::SeqCst)),
            ));
        }
        let grown = now(&cluster);
        cluster.event("phoenix-scale: grown");
        // Traffic and churn. Leavers: the lowest non-coordinator machines that are not gateways.
        *lock(&sh.traffic_from) = Some(cluster.now());
        let leavers: Vec<HostId> = (1..p.initial)
            .map(HostId)
            .filter(|h| !gateways.values().any(|g| g == h))
            .take(p.churn as usize)
            .collect();
        let gap = p
            .send_gap
            .mul_f64(f64::from(p.messages_per_machine) / f64::from(p.churn.max(1)) / 2.0);
        for (i, h) in leavers.iter().enumerate() {
            cluster.sleep(gap).await;
            check_owners(&sh);
            lock(&sh.leave_now).push(*h);
            let j = &hosts[p.machines as usize + i];
            spawn(j, Start::Join { contact: HostId(0) });
        }
        let churn_requested = now(&cluster);
        let churn_n = leavers.len() as u32;
        while sh.joined.load(Ordering::SeqCst) < grow_joins + churn_n
            || sh.left.load(Ordering::SeqCst) < churn_n
        {
            cluster.sleep(Duration::from_millis(1)).await;
            check_owners(&sh);
            let members =
                p.initial + sh.joined.load(Ordering::SeqCst) - sh.left.load(Ordering::SeqCst);
            curve.push((now(&cluster), f64::from(members)));
        }
        let settled = now(&cluster);
        // Let traffic finish and every message reach its owner's data.
        let tasks = p.machines + churn_n;
        loop {
            cluster.sleep(Duration::from_millis(5)).await;
            check_owners(&sh);
            let sent = sh.sent.load(Ordering::SeqCst);
            if sh.quiet.load(Ordering::SeqCst) >= tasks && sh.applied.load(Ordering::SeqCst) >= sent
            {
                break;
            }
            if now(&cluster) > settled + 600.0 {
                lock(&sh.errors).push("traffic did not drain within 600 s".into());
                break;
            }
        }
        sh.stop.store(true, Ordering::SeqCst);
        while sh.exited.load(Ordering::SeqCst) < tasks {
            cluster.sleep(Duration::from_millis(5)).await;
        }
        check_owners(&sh);
        let end = now(&cluster);
        Ok((
            Timeline {
                grown_s: grown,
                churn_requested_s: churn_requested,
                settled_s: settled,
                end_s: end,
                size_curve: curve,
            },
            sh,
        ))
    })
}

async fn node_task(
    host: HostRef,
    start: Start,
    p: ScaleParams,
    gateways: Arc<BTreeMap<HostId, HostId>>,
    sh: Arc<Shared>,
) {
    if let Err(e) = run_node(&host, start, &p, gateways, &sh).await {
        lock(&sh.errors).push(format!("{}: {e:#}", host.id()));
    }
    sh.exited.fetch_add(1, Ordering::SeqCst);
}

async fn run_node(
    host: &HostRef,
    start: Start,
    p: &ScaleParams,
    gateways: Arc<BTreeMap<HostId, HostId>>,
    sh: &Shared,
) -> anyhow::Result<()> {
    let me = host.id();
    let joining = start.is_join();
    let mut ph = Phoenix::start(
        host.clone(),
        Config::new(p.space),
        Ledger::default(),
        start,
        gateways,
    )
    .await?;
    if joining {
        ph.wait_joined().await?;
        sh.joined.fetch_add(1, Ordering::SeqCst);
    }
    let mut sent = 0u32;
    let mut next_send: Option<Duration> = None;
    let owners = sh.owners.clone();
    ph.set_observer(Box::new(move |n| {
        lock(&owners).insert(n.id(), n.owned().iter().map(|p| p.range).collect());
    }));
    loop {
        while let Some(d) = ph.try_recv() {
            ph.node_mut().data_mut().apply(&d);
            sh.applied.fetch_add(1, Ordering::SeqCst);
        }
        if sh.stop.load(Ordering::SeqCst) {
            break;
        }
        if lock(&sh.leave_now).contains(&me) && ph.node().phase() == Phase::Active {
            let node = ph.leave().await?;
            sh.left.fetch_add(1, Ordering::SeqCst);
            if sent < p.messages_per_machine {
                sh.quiet.fetch_add(1, Ordering::SeqCst);
            }
            lock(&sh.stats).push(node.stats().clone());
            lock(&sh.ledgers).push(node.data().clone());
            return Ok(());
        }
        let traffic_from = *lock(&sh.traffic_from);
        let now = host.now();
        if let Some(from) = traffic_from {
            let at = *next_send.get_or_insert_with(|| from.max(now) + jitter(host, p.send_gap));
            if sent < p.messages_per_machine && now >= at {
                let id = host.rng_u64() % p.space;
                ph.send(id, vec![0; 16]).await?;
                *lock(&sh.sent_map).entry((me.0, id)).or_insert(0) += 1;
                sh.sent.fetch_add(1, Ordering::SeqCst);
                sent += 1;
                if sent == p.messages_per_machine {
                    sh.quiet.fetch_add(1, Ordering::SeqCst);
                }
                next_send = Some(now + jitter(host, p.send_gap));
                continue;
            }
        }
        let wait = match next_send {
            Some(at) if sent < p.messages_per_machine => {
                at.saturating_sub(now).max(Duration::from_micros(10))
            }
            _ => Duration::from_millis(5),
        };
        ph.step(wait).await?;
    }
    sh.relayed.fetch_add(ph.relayed, Ordering::SeqCst);
    lock(&sh.table_sizes).push(ph.node().table().len());
    lock(&sh.stats).push(ph.node().stats().clone());
    lock(&sh.ledgers).push(ph.node().data().clone());
    Ok(())
}

/// A uniformly random gap in [0.5, 1.5) × `mean`.
fn jitter(host: &HostRef, mean: Duration) -> Duration {
    let u = (host.rng_u64() % 1_000_000) as f64 / 1_000_000.0;
    mean.mul_f64(0.5 + u)
}
