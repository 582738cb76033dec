//! The ray-tracing run with every machine a task of one scenario: on the simulator, or on
//! `gridbed_real::run_local` (tasks of this process over loopback TCP). The machines share only
//! measurement with the driver (an `Arc<Shared>`), never protocol state.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gridbed_runtime::{BoxFuture, ClusterRef, HostId, HostRef};

use super::events::Counters;
use super::machine::{start_machine, work, Control, Directive, Outcome, CYCLES_PER_TEST};
use super::params::RaytraceParams;
use super::record::RunRecord;
use super::scene::Scene;
use super::tiles::{TileGrid, TileState, Tiles};
use crate::driver::Phoenix;
use crate::protocol::ids::Id;
use crate::protocol::node::Start;
use crate::protocol::table::RoutingTable;

/// Locks shared measurement; a panicked task must not hide the rest of the results.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Shared {
    total: u64,
    done: AtomicU64,
    finished: AtomicBool,
    exited: AtomicU32,
    leave_now: Mutex<BTreeSet<HostId>>,
    record: Mutex<RunRecord>,
    errors: Mutex<Vec<String>>,
}

/// Runs the scenario on `cluster` (hosts `0..initial` start, the next `joining` join).
pub fn scenario(
    cluster: ClusterRef,
    p: RaytraceParams,
    scene: Arc<Scene>,
    grid: TileGrid,
) -> BoxFuture<'static, anyhow::Result<RunRecord>> {
    Box::pin(async move {
        let hosts = cluster.hosts();
        let space = grid.count();
        let sh = Arc::new(Shared {
            total: space,
            done: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            exited: AtomicU32::new(0),
            leave_now: Mutex::new(BTreeSet::new()),
            record: Mutex::new(RunRecord::default()),
            errors: Mutex::new(Vec::new()),
        });
        let table = RoutingTable::even(space, p.initial);
        let now = |c: &ClusterRef| c.now().as_secs_f64();
        let change = |t: f64, h: &HostRef, sign: f64| {
            let mut r = lock(&sh.record);
            r.membership.push((t, sign));
            r.capacity.push((t, sign * h.cpu_hz()));
        };
        let spawn = |h: &HostRef, start: Start| {
            let w = machine(h.clone(), start, p.clone(), scene.clone(), grid, sh.clone());
            h.spawn("phoenix-raytrace", Box::pin(w));
        };
        for h in hosts.iter().take(p.initial as usize) {
            change(now(&cluster), h, 1.0);
            spawn(
                h,
                Start::Initial {
                    table: table.clone(),
                },
            );
        }
        let mut started = p.initial;
        let (mut left, mut joined) = (false, false);
        while !sh.finished.load(Ordering::SeqCst) {
            cluster.sleep(Duration::from_micros(200)).await;
            let frac = sh.done.load(Ordering::SeqCst) as f64 / space as f64;
            if !left && frac >= p.leave_at {
                left = true;
                for h in &hosts[(p.initial - p.leaving) as usize..p.initial as usize] {
                    change(now(&cluster), h, -1.0);
                    lock(&sh.leave_now).insert(h.id());
                    cluster.event(&format!("phoenix: {} asked to leave", h.id()));
                }
            }
            if !joined && frac >= p.join_at {
                joined = true;
                for h in &hosts[p.initial as usize..(p.initial + p.joining) as usize] {
                    change(now(&cluster), h, 1.0);
                    cluster.event(&format!("phoenix: {} joins", h.id()));
                    spawn(h, Start::Join { contact: HostId(0) });
                    started += 1;
                }
            }
        }
        let end = now(&cluster);
        while sh.exited.load(Ordering::SeqCst) < started {
            cluster.sleep(Duration::from_millis(1)).await;
        }
        if let Some(e) = lock(&sh.errors).first() {
            anyhow::bail!("a machine failed: {e}");
        }
        let mut r = std::mem::take(&mut *lock(&sh.record));
        r.end = end;
        Ok(r)
    })
}

/// One machine task: run the shared machine program, then hand its results to the driver.
async fn machine(
    host: HostRef,
    start: Start,
    p: RaytraceParams,
    scene: Arc<Scene>,
    grid: TileGrid,
    sh: Arc<Shared>,
) {
    if let Err(e) = run_machine(&host, start, &p, &scene, grid, &sh).await {
        lock(&sh.errors).push(format!("{}: {e:#}", host.id()));
        sh.finished.store(true, Ordering::SeqCst);
    }
    sh.exited.fetch_add(1, Ordering::SeqCst);
}

async fn run_machine(
    host: &HostRef,
    start: Start,
    p: &RaytraceParams,
    scene: &Scene,
    grid: TileGrid,
    sh: &Shared,
) -> anyhow::Result<()> {
    let me = host.id();
    let (ph, joined) = start_machine(host.clone(), start, grid).await?;
    if let Some(secs) = joined {
        lock(&sh.record)
            .rebalance
            .push((format!("join {me}"), secs));
    }
    let mut ctl = InProcess { me, sh };
    match work(ph, scene, p.steal_wait, &mut ctl).await? {
        Outcome::Left(node, secs) => {
            let mut r = lock(&sh.record);
            r.rebalance.push((format!("leave {me}"), secs));
            r.counters.add(&Counters::from(node.stats()));
        }
        Outcome::Stopped(mut ph) => {
            // Serve a little longer so hand-offs still in flight land before the tiles are collected.
            ph.serve_for(Duration::from_millis(20)).await?;
            let mut r = lock(&sh.record);
            for (&id, s) in ph.node().data().tiles() {
                if let TileState::Done(px) = s {
                    r.tiles.insert(id, px.clone());
                }
            }
            r.counters.add(&Counters::from(ph.node().stats()));
        }
    }
    Ok(())
}

/// The driver's flags as the machine program's [`Control`].
struct InProcess<'a> {
    me: HostId,
    sh: &'a Shared,
}

impl Control for InProcess<'_> {
    fn directive(&mut self, _ph: &Phoenix<Tiles>) -> Directive {
        if self.sh.finished.load(Ordering::SeqCst) {
            Directive::Stop
        } else if lock(&self.sh.leave_now).contains(&self.me) {
            Directive::Leave
        } else {
            Directive::Work
        }
    }

    fn rendered(&mut self, now: Duration, _id: Id, tests: u64, pixels: u64, _: Option<Duration>) {
        lock(&self.sh.record)
            .progress
            .push((now.as_secs_f64(), tests * CYCLES_PER_TEST, pixels));
        if self.sh.done.fetch_add(1, Ordering::SeqCst) + 1 == self.sh.total {
            self.sh.finished.store(true, Ordering::SeqCst);
        }
    }

    fn stole(&mut self, waited: Duration, answered: bool) {
        lock(&self.sh.record).counters.stole(waited, answered);
    }
}
