//! The coordinator leaves in the simulator, under continuous traffic: it hands its role to the
//! lowest other member, a member that asked it to leave meanwhile still gets to leave, and a
//! machine joining afterwards (through two contacts) is admitted by the new coordinator. Checks:
//! every message applied exactly once, in per-(sender, ID) order, to the data of the owner; one
//! owner per ID after settling; the departed machines own nothing and no table names them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridbed_phoenix::apps::ledger::{check_exactly_once, Ledger};
use gridbed_phoenix::{Config, Id, IdRange, Phase, Phoenix, RoutingTable, Start};
use gridbed_runtime::{ClusterRef, HostId, HostRef};

/// Initial machines; one more host joins later.
const MACHINES: u32 = 5;
const SPACE: Id = 500;
const JOINER: HostId = HostId(MACHINES);
/// The coordinator (host 0) and one ordinary member leave.
const LEAVERS: [HostId; 2] = [HostId(0), HostId(3)];

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    exited: AtomicU32,
    sent: Mutex<BTreeMap<(u32, Id), u64>>,
    results: Mutex<Vec<End>>,
    errors: Mutex<Vec<String>>,
}

/// One machine at the end of the run.
struct End {
    host: HostId,
    ledger: Ledger,
    owned: Vec<IdRange>,
    phase: Phase,
    /// The coordinator it knows.
    coordinator: HostId,
    /// Whether its table still names a leaver.
    names_leaver: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn machine(host: HostRef, sh: Arc<Shared>, start: Start) -> anyhow::Result<()> {
    let me = host.id();
    let joining = matches!(start, Start::JoinAny { .. });
    let mut ph = Phoenix::start(
        host.clone(),
        Config::new(SPACE),
        Ledger::default(),
        start,
        Arc::new(BTreeMap::new()),
    )
    .await?;
    if joining {
        ph.wait_joined().await?;
    }
    let leave_at = match me {
        HostId(0) => Some(Duration::from_millis(15)),
        HostId(3) => Some(Duration::from_millis(15) + Duration::from_micros(50)),
        _ => None,
    };
    while !sh.stop.load(Ordering::SeqCst) {
        if leave_at.is_some_and(|t| host.now() >= t) {
            let node = ph.leave().await?;
            lock(&sh.results).push(End {
                host: me,
                ledger: node.data().clone(),
                owned: node.owned().iter().map(|p| p.range).collect(),
                phase: node.phase(),
                coordinator: node.coordinator().0,
                names_leaver: false,
            });
            return Ok(());
        }
        let id = host.rng_u64() % SPACE;
        ph.send(id, vec![1; 8]).await?;
        *lock(&sh.sent).entry((me.0, id)).or_insert(0) += 1;
        ph.serve_for(Duration::from_micros(300)).await?;
        while let Some(d) = ph.try_recv() {
            ph.node_mut().data_mut().apply(&d);
        }
    }
    ph.serve_for(Duration::from_millis(50)).await?;
    while let Some(d) = ph.try_recv() {
        ph.node_mut().data_mut().apply(&d);
    }
    let n = ph.node();
    lock(&sh.results).push(End {
        host: me,
        ledger: n.data().clone(),
        owned: n.owned().iter().map(|p| p.range).collect(),
        phase: n.phase(),
        coordinator: n.coordinator().0,
        names_leaver: LEAVERS.iter().any(|l| n.table_mentions(*l)),
    });
    Ok(())
}

fn spawn(h: HostRef, sh: Arc<Shared>, start: Start) {
    let hc = h.clone();
    h.spawn(
        "phoenix",
        Box::pin(async move {
            if let Err(e) = machine(hc.clone(), sh.clone(), start).await {
                lock(&sh.errors).push(format!("{}: {e:#}", hc.id()));
            }
            sh.exited.fetch_add(1, Ordering::SeqCst);
        }),
    );
}

fn scenario(c: ClusterRef, sh: Arc<Shared>) -> gridbed_runtime::BoxFuture<'static, ()> {
    Box::pin(async move {
        let hosts = c.hosts();
        for h in hosts.iter().take(MACHINES as usize) {
            let start = Start::Initial {
                table: RoutingTable::even(SPACE, MACHINES),
            };
            spawn(h.clone(), sh.clone(), start);
        }
        c.sleep(Duration::from_millis(30)).await;
        let contacts = vec![HostId(1), HostId(2)];
        spawn(
            hosts[JOINER.0 as usize].clone(),
            sh.clone(),
            Start::JoinAny { contacts },
        );
        c.sleep(Duration::from_millis(40)).await;
        sh.stop.store(true, Ordering::SeqCst);
        while sh.exited.load(Ordering::SeqCst) < MACHINES + 1 {
            c.sleep(Duration::from_millis(1)).await;
        }
    })
}

#[test]
fn coordinator_leaves_under_traffic() {
    for seed in 0..seeds() {
        let sh = Arc::new(Shared::default());
        let platform =
            gridbed_sim::Platform::lans(1, MACHINES as usize + 1, "gige-tcp").expect("lan");
        let shc = sh.clone();
        gridbed_sim::run(gridbed_sim::SimConfig::new(platform, seed), move |c| {
            scenario(c, shc)
        });
        assert!(
            lock(&sh.errors).is_empty(),
            "seed {seed}: {:?}",
            lock(&sh.errors)
        );
        let res = lock(&sh.results);
        assert_eq!(res.len() as u32, MACHINES + 1, "seed {seed}");
        let mut owned: Vec<IdRange> = res.iter().flat_map(|r| r.owned.clone()).collect();
        owned.sort();
        let mut next = 0;
        for r in &owned {
            assert_eq!(r.start, next, "seed {seed}: gap or overlap at {r}");
            next = r.end;
        }
        assert_eq!(next, SPACE, "seed {seed}");
        for r in res.iter() {
            let h = r.host;
            if LEAVERS.contains(&h) {
                assert_eq!(r.phase, Phase::Departed, "seed {seed}: {h}");
                assert!(r.owned.is_empty(), "seed {seed}: {h} left with IDs");
            } else {
                assert_eq!(r.phase, Phase::Active, "seed {seed}: {h}");
                assert_eq!(
                    r.coordinator,
                    HostId(1),
                    "seed {seed}: {h} follows {}",
                    r.coordinator
                );
                assert!(!r.names_leaver, "seed {seed}: {h} still routes to a leaver");
            }
        }
        let sent = lock(&sh.sent).clone();
        let bad = check_exactly_once(&sent, res.iter().map(|r| &r.ledger));
        assert!(bad.is_empty(), "seed {seed}: {bad:#?}");
        assert!(
            sent.values().sum::<u64>() > 200,
            "seed {seed}: too little traffic"
        );
    }
}

/// Seeds of the sweep; PHX_SEEDS=n widens it for stress runs.
fn seeds() -> u64 {
    std::env::var("PHX_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

/// A joiner whose first contact is a crashed host: its request vanishes, the join timer runs out
/// and it asks the next contact, which admits it (over the runtime, not only the in-memory net).
#[test]
fn joiner_with_a_dead_contact_retries_through_the_next_one() {
    let platform = gridbed_sim::Platform::lans(1, 4, "gige-tcp").expect("lan");
    let out = gridbed_sim::run(gridbed_sim::SimConfig::new(platform, 7), |c| {
        Box::pin(async move {
            let hosts = c.hosts();
            let (tx, rx) = std::sync::mpsc::channel();
            for h in hosts.iter().take(2) {
                let hc = h.clone();
                let tx = tx.clone();
                h.spawn(
                    "member",
                    Box::pin(async move {
                        let start = Start::Initial {
                            table: RoutingTable::even(SPACE, 2),
                        };
                        let cfg = Config::new(SPACE);
                        let nets = Arc::new(BTreeMap::new());
                        let r = async {
                            let mut ph =
                                Phoenix::start(hc, cfg, Ledger::default(), start, nets).await?;
                            ph.serve_for(Duration::from_secs(3)).await?;
                            anyhow::Ok(ph.node().owned().len())
                        }
                        .await;
                        let _ = tx.send(("member", r.map(|n| n as u64)));
                    }),
                );
            }
            // Host 2 never runs Phoenix: it is down when the joiner asks it.
            c.crash(HostId(2));
            c.sleep(Duration::from_millis(10)).await;
            let joiner = hosts[3].clone();
            let txj = tx.clone();
            joiner.clone().spawn(
                "joiner",
                Box::pin(async move {
                    let start = Start::JoinAny {
                        contacts: vec![HostId(2), HostId(1)],
                    };
                    let nets = Arc::new(BTreeMap::new());
                    let r = async {
                        let mut ph = Phoenix::start(
                            joiner,
                            Config::new(SPACE),
                            Ledger::default(),
                            start,
                            nets,
                        )
                        .await?;
                        ph.wait_joined().await?;
                        anyhow::ensure!(ph.node().phase() == Phase::Active, "not active");
                        anyhow::ensure!(!ph.node().owned().is_empty(), "joined without IDs");
                        Ok(ph.node().stats().join_retries)
                    }
                    .await;
                    let _ = txj.send(("joiner", r));
                }),
            );
            let mut got = Vec::new();
            while got.len() < 3 {
                match rx.try_recv() {
                    Ok((who, r)) => got.push((who, r.map_err(|e| format!("{e:#}")))),
                    Err(_) => c.sleep(Duration::from_millis(5)).await,
                }
            }
            got
        })
    });
    let got = out.value;
    for (who, r) in &got {
        assert!(r.is_ok(), "{who}: {r:?}");
    }
    let retries = got
        .iter()
        .find(|g| g.0 == "joiner")
        .expect("joiner")
        .1
        .clone();
    assert!(retries.expect("ok") >= 1, "the joiner never retried");
}
