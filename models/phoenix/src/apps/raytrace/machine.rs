//! One ray-tracing machine's program, shared by every way of running it: tasks of the simulator,
//! tasks of one real process (`gridbed_real::run_local`), or one OS process per machine
//! (`phoenix-raytracer`). What differs between them — how the driver says "leave" or "stop", and
//! where progress goes — is behind [`Control`].
//!
//! The program: render own unrendered tiles; when idle, send a "steal" message to a random tile ID,
//! whose owner hands the requester half of its unrendered tiles (ph_release to the requester) or
//! refuses at once; on a leave, hand every tile (rendered or not) to others with its ID.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use gridbed_runtime::{HostId, HostRef};

use super::scene::Scene;
use super::tiles::{render_tile_row, TileGrid, Tiles};
use crate::driver::{yield_now, Phoenix};
use crate::protocol::ids::Id;
use crate::protocol::node::{Config, Node, Start};

/// CPU cycles charged per ray–object intersection test in the simulator. A ray–sphere test is ~30
/// floating-point operations (dot products, a square root); at ~0.5 flop/cycle on a mid-2000s x86
/// that is ~60 cycles. Shading is a few tests' worth and is folded into this figure.
pub const CYCLES_PER_TEST: u64 = 60;

/// A rendering machine serves protocol frames once per this much of its clock (virtual time in
/// sim, wall time in real mode), not after every row. In real mode a serve is a yield to the
/// runtime — an `epoll_wait`, the timer wheel, the socket readers — ~5 µs here: after every
/// 16-pixel row (~20 µs) that was a fifth of the CPU, every 250 µs still ~2 %, every 1 ms ~0.5 %
/// (real-mode ray-tracing efficiency, 3 runs each: 250 µs 0.94-0.95, 500 µs 0.93-0.97, 1 ms
/// 0.96-0.97). 1 ms is within one tile of the simulated 2005 machines (1-5 ms), so a hand-off or
/// a steal request waits less than a tile — but the simulator charges nothing for a serve, so
/// there serving less only delays frames: its efficiency went 0.969 → 0.957, rebalance 2.4 → 4.3 ms.
/// Owners answer steal requests at every serve, not only between tiles: the mean wait of an idle
/// asker fell from half a tile to half of this (sim 0.94 → 0.46 ms), efficiency 0.957 → 0.970.
pub const POLL_EVERY: Duration = Duration::from_millis(1);

/// Where the control can read CPU time (`Control::cpu_now`), every this many tiles a machine
/// renders is timed: reading a thread's CPU clock is a system call (~1 µs on this VM), and doing
/// it around every tile and every serve was ~2 % of the CPU. An eighth of thousands of tiles
/// measures the speed as well.
pub const CPU_SAMPLE_EVERY: u64 = 8;

/// What the driver wants a machine to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directive {
    /// Keep rendering (and stealing when idle).
    Work,
    /// Hand every ID and its data to others, then stop.
    Leave,
    /// Stop working; the caller gets the endpoint back (to collect tiles, keep serving, exit).
    Stop,
}

/// The driver's side of a machine: asked between work items, told about progress.
pub trait Control {
    /// Called between rows, tiles and steal attempts: cheap, never blocks.
    fn directive(&mut self, ph: &Phoenix<Tiles>) -> Directive;
    /// A tile was rendered here; `tests` intersection tests, `now` the host's clock, `cpu` the
    /// CPU time the rendering took if `cpu_now` measures it and this tile was sampled
    /// (`CPU_SAMPLE_EVERY`).
    fn rendered(&mut self, now: Duration, id: Id, tests: u64, pixels: u64, cpu: Option<Duration>);
    /// CPU time used so far by the thread running this machine, where that can be read (real
    /// mode in a process of its own): it measures the machine's speed while the run goes on.
    fn cpu_now(&mut self) -> Option<Duration> {
        None
    }
    /// How long the machine should rest (serving frames) after a tile: a machine limited to a
    /// share of a core in real mode. Zero by default.
    fn rest(&mut self) -> Duration {
        Duration::ZERO
    }
    /// A steal request waited `waited` for its answer (tiles or a refusal), or timed out
    /// (`answered` false) after the steal wait or a new directive.
    fn stole(&mut self, waited: Duration, answered: bool);
}

/// How a machine's run ended.
pub enum Outcome {
    /// It left: its IDs and data are with others. The seconds from the leave request to departure.
    Left(Box<Node<Tiles>>, f64),
    /// It was told to stop, still owning its tiles.
    Stopped(Box<Phoenix<Tiles>>),
}

/// Starts a machine (an initial member with its share of the even layout in `start`, or a joiner)
/// and returns once it has joined; `joined` gets the seconds joining took.
pub async fn start_machine(
    host: HostRef,
    start: Start,
    grid: TileGrid,
) -> anyhow::Result<(Phoenix<Tiles>, Option<f64>)> {
    let me = host.id();
    let mut tiles = Tiles::new(grid);
    let joining = start.is_join();
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
        Arc::new(Default::default()),
    )
    .await?;
    if !joining {
        return Ok((ph, None));
    }
    ph.wait_joined().await?;
    Ok((ph, Some((host.now() - t0).as_secs_f64())))
}

/// The machine's work loop: render own tiles, answer steal requests, steal when idle, until the
/// control says leave or stop.
pub async fn work(
    mut ph: Phoenix<Tiles>,
    scene: &Scene,
    steal_wait: Duration,
    ctl: &mut impl Control,
) -> anyhow::Result<Outcome> {
    let grid = ph.node().data().grid;
    let mut last_poll = ph.host().now();
    let mut rendered = 0u64;
    loop {
        ph.poll().await;
        answer_steals(&mut ph).await;
        match ctl.directive(&ph) {
            Directive::Work => {}
            Directive::Stop => return Ok(Outcome::Stopped(Box::new(ph))),
            Directive::Leave => {
                let t = ph.host().now();
                let host = ph.host().clone();
                let node = ph.leave().await?;
                return Ok(Outcome::Left(
                    Box::new(node),
                    (host.now() - t).as_secs_f64(),
                ));
            }
        }
        let Some(&id) = ph.node().data().todo().first() else {
            steal(&mut ph, grid, steal_wait, ctl).await?;
            continue;
        };
        ph.node_mut().data_mut().busy = Some(id);
        let sample = rendered.is_multiple_of(CPU_SAMPLE_EVERY);
        rendered += 1;
        let (px, tests_sum, cpu) =
            render_tile(&mut ph, scene, id, sample, &mut last_poll, ctl).await;
        let data = ph.node_mut().data_mut();
        data.busy = None;
        if !data.set_done(id, px) {
            // Cannot happen (the busy tile is never given away); guard the data anyway.
            bail!("tile {id} changed hands while being rendered");
        }
        ctl.rendered(ph.host().now(), id, tests_sum, grid.pixels(id), cpu);
        let rest = ctl.rest();
        if !rest.is_zero() {
            rest_serving(&mut ph, rest).await?;
        }
    }
}

/// Renders tile `id` row by row, charging each row and serving protocol frames every
/// `POLL_EVERY`: its pixels, its intersection tests, and — if `sample` and the control reads CPU
/// time — the CPU the rendering took, less what serving took in between.
async fn render_tile(
    ph: &mut Phoenix<Tiles>,
    scene: &Scene,
    id: Id,
    sample: bool,
    last_poll: &mut Duration,
    ctl: &mut impl Control,
) -> (Vec<u8>, u64, Option<Duration>) {
    let grid = ph.node().data().grid;
    let (_, _, w, h) = grid.rect(id);
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    let mut tests_sum = 0;
    let cpu_start = if sample { ctl.cpu_now() } else { None };
    let mut cpu_serving = Duration::ZERO;
    for row in 0..h {
        let tests = render_tile_row(scene, &grid, id, row, &mut px);
        // Charge the row's CPU time (sim: the clock advances; real: the work was just done),
        // then serve protocol frames (forwarding, hand-offs, join and leave steps) if
        // `POLL_EVERY` has passed, so a busy machine delays them by a fraction of a tile.
        // Steal requests are answered here too (an idle asker should not wait for the end of
        // the tile): `half_of_todo` never includes the busy tile.
        ph.host().compute(tests * CYCLES_PER_TEST).await;
        tests_sum += tests;
        let now = ph.host().now();
        if now.saturating_sub(*last_poll) >= POLL_EVERY {
            *last_poll = now;
            let before = cpu_start.and_then(|_| ctl.cpu_now());
            // Let the other tasks (in real mode the socket readers) run, then take their frames.
            yield_now().await;
            ph.poll().await;
            answer_steals(ph).await;
            if let (Some(a), Some(b)) = (before, ctl.cpu_now()) {
                cpu_serving += b.saturating_sub(a);
            }
        }
    }
    let cpu = cpu_start.and_then(|a| {
        ctl.cpu_now()
            .map(|b| b.saturating_sub(a).saturating_sub(cpu_serving))
    });
    (px, tests_sum, cpu)
}

/// Rests for `d` (a machine held to a share of a core), serving frames and answering steal
/// requests as they come: a resting owner must not keep an idle asker waiting for the rest.
async fn rest_serving(ph: &mut Phoenix<Tiles>, d: Duration) -> anyhow::Result<()> {
    let end = ph.host().now() + d;
    while ph.host().now() < end {
        let left = end.saturating_sub(ph.host().now());
        ph.step(left).await?;
        answer_steals(ph).await;
    }
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
                let give = ph.node().data().half_of_todo();
                if !give.is_empty() && requester != ph.host().id() {
                    for r in give {
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
    grid: TileGrid,
    steal_wait: Duration,
    ctl: &mut impl Control,
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
    let sent = ph.host().now();
    let deadline = sent + steal_wait;
    let mut refused = false;
    while ph.host().now() < deadline
        && ph.node().data().todo().is_empty()
        && ctl.directive(ph) == Directive::Work
    {
        let left = deadline.saturating_sub(ph.host().now());
        ph.step(left).await?;
        if answer_steals(ph).await > 0 {
            refused = true;
            break;
        }
    }
    if target.is_some() {
        let answered = refused || !ph.node().data().todo().is_empty();
        ctl.stole(ph.host().now() - sent, answered);
    }
    Ok(())
}
