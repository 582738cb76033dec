//! Crash recovery in the simulator: a machine is crashed with `Cluster::crash` under continuous
//! traffic (no leave, no warning). Checks: its IDs are reclaimed (exactly one owner per ID after
//! recovery, never two at once), the loss of its data is reported to the application exactly for
//! its IDs, messages parked for it are rerouted, nothing is applied twice or out of order, every
//! message sent after the sender saw the recovery end is applied exactly once, and no table names
//! the crashed machine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridbed_phoenix::apps::ledger::{check_at_most_once, Ledger};
use gridbed_phoenix::{Config, Id, IdRange, Phoenix, RoutingTable, Start};
use gridbed_runtime::{ClusterRef, HostId, HostRef};

const MACHINES: u32 = 6;
const SPACE: Id = 600;
/// The member acting as failure detector (it is told of the crash by the driver).
const DETECTOR: HostId = HostId(1);

#[derive(Default)]
struct Shared {
    /// The machine that crashes (a host number): an ordinary member, or the coordinator (0).
    victim_host: AtomicU32,
    crashed: AtomicBool,
    stop: AtomicBool,
    exited: AtomicU32,
    /// Each machine's owned ranges after its last step (for the one-owner check and the victim).
    owners: Mutex<BTreeMap<HostId, Vec<IdRange>>>,
    two_owners: AtomicU32,
    /// Messages sent per (sender, ID), the victim's included.
    sent: Mutex<BTreeMap<(u32, Id), u64>>,
    /// Per machine at the end: ledger, sent per ID, sent per ID when it saw recovery end, lost
    /// ranges, whether its table names the victim, protocol counters.
    results: Mutex<Vec<NodeEnd>>,
    errors: Mutex<Vec<String>>,
}

struct NodeEnd {
    host: HostId,
    ledger: Ledger,
    owned: Vec<IdRange>,
    sent: BTreeMap<Id, u64>,
    cut: BTreeMap<Id, u64>,
    lost: Vec<IdRange>,
    names_victim: bool,
    duplicates: u64,
}

impl Shared {
    fn victim(&self) -> HostId {
        HostId(self.victim_host.load(Ordering::SeqCst))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn machine(host: HostRef, sh: Arc<Shared>) -> anyhow::Result<()> {
    let me = host.id();
    let start = Start::Initial {
        table: RoutingTable::even(SPACE, MACHINES),
    };
    let mut ph = Phoenix::start(
        host.clone(),
        Config::new(SPACE),
        Ledger::default(),
        start,
        Arc::new(BTreeMap::new()),
    )
    .await?;
    let shc = sh.clone();
    ph.set_observer(Box::new(move |n| {
        let mut owners = lock(&shc.owners);
        owners.insert(n.id(), n.owned().iter().map(|p| p.range).collect());
        let mut all: Vec<(Id, Id)> = owners
            .iter()
            .filter(|(h, _)| **h != shc.victim() || !shc.crashed.load(Ordering::SeqCst))
            .flat_map(|(_, v)| v.iter().map(|r| (r.start, r.end)))
            .collect();
        all.sort();
        if all.windows(2).any(|w| w[1].0 < w[0].1) {
            shc.two_owners.fetch_add(1, Ordering::SeqCst);
        }
    }));
    let (mut sent, mut cut): (BTreeMap<Id, u64>, Option<BTreeMap<Id, u64>>) = Default::default();
    let mut reported = false;
    while !sh.stop.load(Ordering::SeqCst) {
        if me == DETECTOR && !reported && sh.crashed.load(Ordering::SeqCst) {
            ph.report_crash(sh.victim()).await?;
            reported = true;
        }
        let n = ph.node();
        if cut.is_none() && n.crashed().contains(&sh.victim()) && !n.recovering() {
            cut = Some(sent.clone());
        }
        let id = host.rng_u64() % SPACE;
        ph.send(id, vec![7; 16]).await?;
        *sent.entry(id).or_insert(0) += 1;
        *lock(&sh.sent).entry((me.0, id)).or_insert(0) += 1;
        ph.serve_for(Duration::from_micros(300)).await?;
        while let Some(d) = ph.try_recv() {
            ph.node_mut().data_mut().apply(&d);
        }
    }
    // Let the last messages and hand-offs land.
    ph.serve_for(Duration::from_millis(50)).await?;
    while let Some(d) = ph.try_recv() {
        ph.node_mut().data_mut().apply(&d);
    }
    let n = ph.node_mut();
    let lost = n.take_lost().into_iter().map(|(_, r)| r).collect();
    lock(&sh.results).push(NodeEnd {
        host: me,
        ledger: n.data().clone(),
        owned: n.owned().iter().map(|p| p.range).collect(),
        sent,
        cut: cut.unwrap_or_default(),
        lost,
        names_victim: n.table_mentions(sh.victim()),
        duplicates: n.stats().duplicates,
    });
    Ok(())
}

fn scenario(c: ClusterRef, sh: Arc<Shared>) -> gridbed_runtime::BoxFuture<'static, ()> {
    Box::pin(async move {
        for h in c.hosts() {
            let (shc, hc) = (sh.clone(), h.clone());
            h.spawn(
                "phoenix",
                Box::pin(async move {
                    if let Err(e) = machine(hc.clone(), shc.clone()).await {
                        lock(&shc.errors).push(format!("{}: {e:#}", hc.id()));
                    }
                    shc.exited.fetch_add(1, Ordering::SeqCst);
                }),
            );
        }
        c.sleep(Duration::from_millis(20)).await;
        c.crash(sh.victim());
        sh.crashed.store(true, Ordering::SeqCst);
        c.sleep(Duration::from_millis(60)).await;
        sh.stop.store(true, Ordering::SeqCst);
        while sh.exited.load(Ordering::SeqCst) < MACHINES - 1 {
            c.sleep(Duration::from_millis(1)).await;
        }
    })
}

#[test]
fn crashed_machine_ids_are_reclaimed_and_traffic_continues() {
    run_victim(HostId(3));
}

/// The same with the coordinator as the victim: the detector (host 1, its deputy) takes over the
/// role and runs the recovery.
#[test]
fn crashed_coordinator_is_replaced_and_traffic_continues() {
    run_victim(HostId(0));
}

fn run_victim(victim_host: HostId) {
    // PHX_SEEDS=n widens the sweep for stress runs.
    let seeds = std::env::var("PHX_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8u64);
    for seed in 0..seeds {
        let sh = Arc::new(Shared::default());
        sh.victim_host.store(victim_host.0, Ordering::SeqCst);
        let platform = gridbed_sim::Platform::lans(1, MACHINES as usize, "gige-tcp").expect("lan");
        let shc = sh.clone();
        gridbed_sim::run(gridbed_sim::SimConfig::new(platform, seed), move |c| {
            scenario(c, shc)
        });
        assert!(
            lock(&sh.errors).is_empty(),
            "seed {seed}: {:?}",
            lock(&sh.errors)
        );
        assert_eq!(sh.two_owners.load(Ordering::SeqCst), 0, "seed {seed}");
        let res = lock(&sh.results);
        assert_eq!(res.len() as u32, MACHINES - 1, "seed {seed}");
        // Exactly one owner per ID among the survivors.
        let mut owned: Vec<IdRange> = res.iter().flat_map(|r| r.owned.clone()).collect();
        owned.sort();
        let mut next = 0;
        for r in &owned {
            assert_eq!(r.start, next, "seed {seed}: gap or overlap at {r}");
            next = r.end;
        }
        assert_eq!(next, SPACE, "seed {seed}");
        // The loss reported is exactly the victim's IDs (no rebalancing in this run).
        let victim = RoutingTable::even(SPACE, MACHINES)
            .entries()
            .into_iter()
            .find(|e| e.owner == victim_host)
            .expect("victim owns IDs")
            .range;
        let lost: Vec<IdRange> = res.iter().flat_map(|r| r.lost.clone()).collect();
        assert_eq!(lost, vec![victim], "seed {seed}");
        let sent = lock(&sh.sent).clone();
        for r in res.iter() {
            assert!(
                !r.names_victim,
                "seed {seed}: {} still routes to the victim",
                r.host
            );
            assert_eq!(r.duplicates, 0, "seed {seed}");
            assert!(
                !r.cut.is_empty() || r.sent.is_empty(),
                "seed {seed}: {} never saw recovery end",
                r.host
            );
        }
        let bad = check_at_most_once(&sent, res.iter().map(|r| &r.ledger));
        assert!(bad.is_empty(), "seed {seed}: {bad:#?}");
        // Everything sent after the sender saw the recovery end is applied, in order.
        let mut applied: BTreeMap<(u32, Id), Vec<u64>> = BTreeMap::new();
        for r in res.iter() {
            for (&id, log) in &r.ledger.log {
                for &(from, seq) in log {
                    applied.entry((from, id)).or_default().push(seq);
                }
            }
        }
        let mut after = 0;
        for r in res.iter() {
            for (&id, &n) in &r.sent {
                let from = r.cut.get(&id).copied().unwrap_or(0);
                let got = applied.get(&(r.host.0, id)).cloned().unwrap_or_default();
                for s in from..n {
                    after += 1;
                    assert!(
                        got.contains(&s),
                        "seed {seed}: ({}, {id}) seq {s} lost after recovery",
                        r.host
                    );
                }
            }
        }
        assert!(
            after > 100,
            "seed {seed}: only {after} messages after recovery"
        );
    }
}
