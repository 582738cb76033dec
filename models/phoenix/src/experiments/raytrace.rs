//! `phoenix-raytrace`: a parallel ray tracer over Phoenix while machines leave and join.
//!
//! Tiles are virtual IDs; a tile's state (unrendered, or its pixels) is the ID's data. Each machine
//! renders its own unrendered tiles; an idle machine sends a "steal" message to a random tile ID and
//! its owner hands it half of its unrendered tiles (ph_release to the requester). When a machine
//! leaves, its tiles — rendered ones included — go to the owners of neighbouring IDs; a joining
//! machine is handed half of a random owner's unrendered tiles. The final image is assembled from the
//! owners' data and compared bit for bit with a sequential render.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use gridbed_runtime::outcome::{ExperimentOutput, Figure, Mode, Series};
use gridbed_runtime::{BoxFuture, ClusterRef, HostId, HostRef};

use super::lock;
use super::series::{binned_rate, Steps};
use crate::ids::Id;
use crate::node::{Config, Start, Stats};
use crate::raytrace::scene::Scene;
use crate::raytrace::tiles::{
    assemble, png, render_sequential, render_tile_rows, TileGrid, TileState, Tiles,
};
use crate::runtime::{yield_now, Phoenix};
use crate::table::RoutingTable;

/// CPU cycles charged per ray–object intersection test in the simulator. A ray–sphere test is ~30
/// floating-point operations (dot products, a square root); at ~0.5 flop/cycle on a mid-2000s x86
/// that is ~60 cycles. Shading is a few tests' worth and is folded into this figure.
pub const CYCLES_PER_TEST: u64 = 60;

/// Parameters of one run.
#[derive(Clone, Debug)]
pub struct RaytraceParams {
    pub width: u32,
    pub height: u32,
    /// Tile side in pixels: one virtual ID per tile.
    pub tile: u32,
    /// Machines rendering from the start (h0 is the membership coordinator and stays).
    pub initial: u32,
    /// Machines removed once `leave_at` of the tiles are done (the highest-numbered initial ones).
    pub leaving: u32,
    pub leave_at: f64,
    /// Machines added once `join_at` of the tiles are done.
    pub joining: u32,
    pub join_at: f64,
    /// Transport preset of the simulated LAN.
    pub transport: String,
    /// How long an idle machine waits for stolen work before asking another owner.
    pub steal_wait: Duration,
}

impl Default for RaytraceParams {
    fn default() -> Self {
        RaytraceParams {
            // SVGA with 2×2 supersampling and 16-pixel tiles: 1900 IDs of ~1-5 ms of 1 GHz CPU each,
            // a run of about half a second of 8-9 machines.
            width: 800,
            height: 600,
            tile: 16,
            // The slides' plot shows machines removed, then added; 8 machines is a lab cluster.
            initial: 8,
            leaving: 3,
            leave_at: 0.25,
            joining: 4,
            join_at: 0.55,
            // Gigabit Ethernet LAN, as in the lab clusters of the time.
            transport: "gige-tcp".into(),
            // A safety net only: owners refuse at once when they have nothing to give; a request
            // reaches a busy owner after its current tile (~1-4 ms here).
            steal_wait: Duration::from_millis(5),
        }
    }
}

/// What the machines share with the driver: measurement only, never protocol state.
struct Shared {
    total: u64,
    done: AtomicU64,
    finished: AtomicBool,
    exited: AtomicU32,
    /// (time s, cycles, pixels) per rendered tile.
    progress: Mutex<Vec<(f64, u64, u64)>>,
    leave_now: Mutex<BTreeSet<HostId>>,
    /// (what, seconds) per membership change.
    rebalance: Mutex<Vec<(String, f64)>>,
    results: Mutex<BTreeMap<Id, Vec<u8>>>,
    stats: Mutex<Vec<Stats>>,
    errors: Mutex<Vec<String>>,
}

/// What one run produced.
struct RunResult {
    end: f64,
    capacity_hz: Steps,
    /// Number of machines present over time.
    present: Steps,
    shared: Arc<Shared>,
}

/// The experiment with default parameters.
pub fn raytrace(mode: Mode, seed: u64) -> anyhow::Result<ExperimentOutput> {
    raytrace_with(mode, seed, &RaytraceParams::default())
}

/// The experiment with explicit parameters.
pub fn raytrace_with(
    mode: Mode,
    seed: u64,
    p: &RaytraceParams,
) -> anyhow::Result<ExperimentOutput> {
    if p.initial < 1 || p.leaving >= p.initial || p.tile == 0 || p.width == 0 || p.height == 0 {
        bail!("invalid ray-tracing parameters: {p:?}");
    }
    let hosts = (p.initial + p.joining) as usize;
    let scene = Arc::new(Scene::standard(p.width, p.height));
    let grid = TileGrid {
        width: p.width,
        height: p.height,
        tile: p.tile,
    };
    let mut out = ExperimentOutput::default();
    let (result, real) = match mode {
        Mode::Sim => {
            let platform = gridbed_sim::Platform::lans(1, hosts, &p.transport)
                .map_err(|e| anyhow!("platform: {e}"))?;
            let cfg = gridbed_sim::SimConfig::new(platform, seed);
            let params = p.clone();
            let o = gridbed_sim::run(cfg, move |c| scenario(c, params, scene, grid));
            out.trace = Some(o.trace);
            (o.value?, false)
        }
        Mode::Real => {
            let params = p.clone();
            // Generous: the whole image takes seconds on this machine; a hang must not block the runner.
            let deadline = Duration::from_secs(600);
            let r = gridbed_real::run_local(hosts, deadline, move |c| {
                scenario(c, params, scene, grid)
            })??;
            (r, true)
        }
    };
    let sh = &result.shared;
    if let Some(e) = lock(&sh.errors).first() {
        bail!("a machine failed: {e}");
    }
    let image =
        assemble(&grid, &lock(&sh.results)).context("tiles missing from the final image")?;
    // Real mode: the sequential render is also the measurement of one machine's speed.
    let seq_start = std::time::Instant::now();
    let reference = render_sequential(&Scene::standard(p.width, p.height));
    let seq_s = seq_start.elapsed().as_secs_f64();
    let identical = image == reference;
    out.artifacts.push((
        "phoenix-raytrace.png".into(),
        png(p.width, p.height, &image)?,
    ));

    let progress = lock(&sh.progress).clone();
    let cycles: u64 = progress.iter().map(|x| x.1).sum();
    let pixels: u64 = progress.iter().map(|x| x.2).sum();
    let end = result.end.max(1e-9);
    let cycles_per_pixel = cycles as f64 / pixels.max(1) as f64;
    // Ideal = the sum of the present machines' speeds. In sim a machine's speed is its clock. In
    // real mode the machines are tasks sharing this computer's cores: at most `cores` of them run
    // at once, each at the speed measured by the sequential render (work units per second).
    let ideal_hz = if real {
        let cores = real_cores();
        let speed = cycles as f64 / seq_s.max(1e-9);
        result.present.map_level(|n| n.min(cores) * speed)
    } else {
        result.capacity_hz.clone()
    };
    let efficiency = cycles as f64 / ideal_hz.integral(end);
    let reb = lock(&sh.rebalance).clone();
    let rebalance = reb.iter().map(|r| r.1).sum::<f64>() / reb.len().max(1) as f64;
    let stats = lock(&sh.stats).clone();
    let m = &mut out.metrics;
    if efficiency.is_finite() {
        m.insert("efficiency_vs_ideal".into(), efficiency);
    }
    m.insert("rebalance_s".into(), rebalance);
    m.insert("image_bit_identical".into(), f64::from(u8::from(identical)));
    m.insert("run_s".into(), end);
    m.insert("pixels".into(), pixels as f64);
    m.insert("tiles".into(), grid.count() as f64);
    m.insert("membership_changes".into(), reb.len() as f64);
    m.insert(
        "duplicates".into(),
        stats.iter().map(|s| s.duplicates).sum::<u64>() as f64,
    );
    m.insert(
        "hop_bound_violations".into(),
        stats.iter().map(|s| s.bound_violations).sum::<u64>() as f64,
    );
    // Work done, in pixels of the image's mean cost: tiles differ in cost (sky vs. mirrored floor),
    // so raw pixels/s would rise and fall with the region being rendered rather than with capacity.
    let samples: Vec<(f64, f64)> = progress
        .iter()
        .map(|&(t, c, _)| (t, c as f64 / cycles_per_pixel))
        .collect();
    let actual = binned_rate(&samples, end, 40);
    let ideal = actual
        .iter()
        .map(|&(t, _)| (t, ideal_hz.at(t) / cycles_per_pixel))
        .collect();
    out.figures.push(Figure {
        id: "throughput".into(),
        title: "Ray tracing while machines leave and join".into(),
        x_label: "time (s)".into(),
        y_label: "pixels / s (at the image's mean cost per pixel)".into(),
        series: vec![
            Series {
                name: "measured".into(),
                points: actual,
            },
            Series {
                name: "ideal (sum of present machines' speeds)".into(),
                points: ideal,
            },
        ],
        ..Default::default()
    });
    out.notes.push(format!(
        "{}x{} image, 2x2 supersampling, {}-pixel tiles = {} virtual IDs; {} machines at start, {} leave at {:.0}% done, {} join at {:.0}% done; {} LAN; {CYCLES_PER_TEST} cycles per intersection test (estimate, see source); 1 GHz CPUs (simulator default).",
        p.width, p.height, p.tile, grid.count(), p.initial, p.leaving, p.leave_at * 100.0, p.joining, p.join_at * 100.0, p.transport
    ));
    out.notes.push("efficiency_vs_ideal = rendering cycles done / integral of the present machines' clock rates from start to the last tile; a leaving machine stops counting when its leave is requested, a joining one counts from when it is started.".into());
    out.notes.push(format!("rebalance_s: per change, leave = request to departure (IDs and data handed off, every member acknowledged), join = start to owning its first IDs: {reb:?}"));
    if identical {
        out.notes
            .push("Final image is bit-identical to a sequential render of the same scene.".into());
    } else {
        out.notes
            .push("FINAL IMAGE DIFFERS from the sequential render.".into());
    }
    if real {
        out.notes.push(format!("Real mode: the machines are tasks of one process on {} worker threads sharing this computer's cores, so the ideal at time t is min(present machines, {}) x one machine's speed, measured by the sequential reference render ({seq_s:.3} s for the image). Other load on the computer lowers the measured efficiency.", real_cores(), real_cores()));
    }
    Ok(out)
}

fn scenario(
    cluster: ClusterRef,
    p: RaytraceParams,
    scene: Arc<Scene>,
    grid: TileGrid,
) -> BoxFuture<'static, anyhow::Result<RunResult>> {
    Box::pin(async move {
        let hosts = cluster.hosts();
        let space = grid.count();
        let sh = Arc::new(Shared {
            total: space,
            done: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            exited: AtomicU32::new(0),
            progress: Mutex::new(Vec::new()),
            leave_now: Mutex::new(BTreeSet::new()),
            rebalance: Mutex::new(Vec::new()),
            results: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
        });
        let table = RoutingTable::even(space, p.initial);
        let mut capacity = Steps::default();
        let mut present = Steps::default();
        let secs = |d: Duration| d.as_secs_f64();
        for h in hosts.iter().take(p.initial as usize) {
            capacity.change(secs(cluster.now()), h.cpu_hz());
            present.change(secs(cluster.now()), 1.0);
            let w = worker(
                h.clone(),
                Start::Initial {
                    table: table.clone(),
                },
                p.clone(),
                scene.clone(),
                grid,
                sh.clone(),
            );
            h.spawn("phoenix-raytrace", Box::pin(w));
        }
        let mut started = p.initial;
        let (mut left, mut joined) = (false, false);
        while !sh.finished.load(Ordering::SeqCst) {
            cluster.sleep(Duration::from_micros(200)).await;
            let frac = sh.done.load(Ordering::SeqCst) as f64 / space as f64;
            if !left && frac >= p.leave_at {
                left = true;
                for i in (p.initial - p.leaving)..p.initial {
                    let h = &hosts[i as usize];
                    capacity.change(secs(cluster.now()), -h.cpu_hz());
                    present.change(secs(cluster.now()), -1.0);
                    lock(&sh.leave_now).insert(h.id());
                    cluster.event(&format!("phoenix: {} asked to leave", h.id()));
                }
            }
            if !joined && frac >= p.join_at {
                joined = true;
                for i in p.initial..p.initial + p.joining {
                    let h = &hosts[i as usize];
                    capacity.change(secs(cluster.now()), h.cpu_hz());
                    present.change(secs(cluster.now()), 1.0);
                    cluster.event(&format!("phoenix: {} joins", h.id()));
                    let w = worker(
                        h.clone(),
                        Start::Join { contact: HostId(0) },
                        p.clone(),
                        scene.clone(),
                        grid,
                        sh.clone(),
                    );
                    h.spawn("phoenix-raytrace", Box::pin(w));
                    started += 1;
                }
            }
        }
        let end = secs(cluster.now());
        while sh.exited.load(Ordering::SeqCst) < started {
            cluster.sleep(Duration::from_millis(1)).await;
        }
        Ok(RunResult {
            end,
            capacity_hz: capacity,
            present,
            shared: sh,
        })
    })
}

/// One machine: render own tiles, answer steal requests, steal when idle, leave when asked.
async fn worker(
    host: HostRef,
    start: Start,
    p: RaytraceParams,
    scene: Arc<Scene>,
    grid: TileGrid,
    sh: Arc<Shared>,
) {
    if let Err(e) = work(&host, start, &p, &scene, grid, &sh).await {
        lock(&sh.errors).push(format!("{}: {e:#}", host.id()));
        sh.finished.store(true, Ordering::SeqCst);
    }
    sh.exited.fetch_add(1, Ordering::SeqCst);
}

async fn work(
    host: &HostRef,
    start: Start,
    p: &RaytraceParams,
    scene: &Scene,
    grid: TileGrid,
    sh: &Shared,
) -> anyhow::Result<()> {
    let me = host.id();
    let mut tiles = Tiles::new(grid);
    let joining = matches!(start, Start::Join { .. });
    if let Start::Initial { table } = &start {
        for e in table.entries().iter().filter(|e| e.owner == me) {
            tiles.add_todo(e.range);
        }
    }
    let t0 = host.now();
    let mut ph = Phoenix::start(
        host.clone(),
        Config::new(grid.count()),
        tiles,
        start,
        Arc::new(BTreeMap::new()),
    )
    .await?;
    if joining {
        ph.wait_joined().await?;
        lock(&sh.rebalance).push((format!("join {me}"), (host.now() - t0).as_secs_f64()));
    }
    loop {
        ph.poll().await;
        answer_steals(&mut ph).await;
        if sh.finished.load(Ordering::SeqCst) {
            break;
        }
        if lock(&sh.leave_now).contains(&me) {
            let t = host.now();
            let node = ph.leave().await?;
            lock(&sh.rebalance).push((format!("leave {me}"), (host.now() - t).as_secs_f64()));
            lock(&sh.stats).push(node.stats().clone());
            return Ok(());
        }
        if let Some(&id) = ph.node().data().todo().first() {
            ph.node_mut().data_mut().busy = Some(id);
            let (px, rows) = render_tile_rows(scene, &grid, id);
            let mut cycles = 0;
            for tests in rows {
                // Charge the row's CPU time, then serve protocol frames (forwarding, hand-offs,
                // join and leave steps) so a busy machine delays them by one row, not one tile.
                // Steal requests wait for the tile to finish: this tile must not be given away.
                host.compute(tests * CYCLES_PER_TEST).await;
                cycles += tests * CYCLES_PER_TEST;
                // In real mode compute() returns at once: yield so other machines' tasks and the
                // sockets get the executor's threads.
                yield_now().await;
                ph.poll().await;
            }
            let data = ph.node_mut().data_mut();
            data.busy = None;
            if data.tiles.get(&id) != Some(&TileState::Todo) {
                // Cannot happen (the busy tile is never given away); guard the data anyway.
                bail!("tile {id} changed hands while being rendered");
            }
            data.tiles.insert(id, TileState::Done(px));
            lock(&sh.progress).push((host.now().as_secs_f64(), cycles, grid.pixels(id)));
            if sh.done.fetch_add(1, Ordering::SeqCst) + 1 == sh.total {
                sh.finished.store(true, Ordering::SeqCst);
            }
            continue;
        }
        steal(&mut ph, p, grid, sh).await?;
    }
    // Serve a little longer so hand-offs still in flight land before the tiles are collected.
    ph.serve_for(Duration::from_millis(20)).await?;
    let mut results = lock(&sh.results);
    for (&id, s) in &ph.node().data().tiles {
        if let TileState::Done(px) = s {
            results.insert(id, px.clone());
        }
    }
    lock(&sh.stats).push(ph.node().stats().clone());
    Ok(())
}

/// Application messages of the ray tracer (sent to tile IDs).
#[derive(serde::Serialize, serde::Deserialize)]
enum Ask {
    /// "Give me work": from `requester`; a refusal goes to `reply_to`, an ID the requester owns.
    Steal {
        requester: HostId,
        reply_to: Option<Id>,
    },
    /// "No work here": the asker may try another owner at once.
    Nothing,
}

/// Owners asked for work give half of their unrendered tiles to the asker, or refuse at once.
/// Returns the number of refusals received (answers to our own requests).
async fn answer_steals(ph: &mut Phoenix<Tiles>) -> u32 {
    let mut refusals = 0;
    while let Some(d) = ph.try_recv() {
        match postcard::from_bytes::<Ask>(&d.payload) {
            Ok(Ask::Nothing) => refusals += 1,
            Ok(Ask::Steal {
                requester,
                reply_to,
            }) => {
                if !ph.node().data().half_of_todo().is_empty() && requester != ph.host().id() {
                    for r in ph.node().data().half_of_todo() {
                        // NotMember: the asker has left meanwhile; keep the tiles.
                        if ph.release_to(r, requester).await.is_err() {
                            break;
                        }
                    }
                } else if let Some(id) = reply_to {
                    let no = postcard::to_allocvec(&Ask::Nothing).expect("plain data");
                    let _ = ph.send(id, no).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "malformed ray-tracer message ignored"),
        }
    }
    refusals
}

/// Asks the owner of a random tile for work and waits a little for it.
async fn steal(
    ph: &mut Phoenix<Tiles>,
    p: &RaytraceParams,
    grid: TileGrid,
    sh: &Shared,
) -> anyhow::Result<()> {
    let me = ph.host().id();
    let mut target = None;
    for _ in 0..8 {
        let id = ph.host().rng_u64() % grid.count();
        if !ph.node().owns(id) {
            target = Some(id);
            break;
        }
    }
    let reply_to = ph.node().owned().first().map(|p| p.range.start);
    if let Some(id) = target {
        let ask = postcard::to_allocvec(&Ask::Steal {
            requester: me,
            reply_to,
        })
        .expect("plain data");
        ph.send(id, ask).await?;
    }
    let deadline = ph.host().now() + p.steal_wait;
    while ph.host().now() < deadline
        && ph.node().data().todo().is_empty()
        && !sh.finished.load(Ordering::SeqCst)
    {
        let left = deadline.saturating_sub(ph.host().now());
        ph.step(left).await?;
        if answer_steals(ph).await > 0 {
            break;
        }
    }
    Ok(())
}

/// How many machines can compute at once in real mode: `gridbed_real::run_local` runs every host on
/// a 2-worker tokio runtime (real/src/lib.rs), and never more than this computer's cores.
fn real_cores() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(2) as f64
}
