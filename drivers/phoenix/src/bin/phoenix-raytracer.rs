//! One ray-tracing machine in its own OS process, over genuine TCP (the `gridbed-real` host): the
//! same machine program as the simulated and in-process runs (`raytrace::machine`).
//!
//! Every process of a run gets the same `--peers` list (index = host ID). Machines `0..initial`
//! start with the even layout of the tile IDs; a process with a higher `--host` joins through
//! `--contact` and is handed tiles. Commands on stdin and events on stdout are described in
//! `raytrace::events` (`leave`, `report`, `dump FILE`, `quit`; one JSON event per line, with
//! wall-clock timestamps). End of stdin means the driver is gone: the process exits.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use gridbed_phoenix::apps::raytrace::events::{Cmd, Counters, Dump, Event, TileDone};
use gridbed_phoenix::apps::raytrace::machine::{start_machine, work, Control, Directive, Outcome};
use gridbed_phoenix::apps::raytrace::scene::Scene;
use gridbed_phoenix::apps::raytrace::tiles::{TileGrid, TileState, Tiles};
use gridbed_phoenix::{Phoenix, RoutingTable, Start};
use gridbed_phoenix_driver::unix_now;
use gridbed_real::{ClusterSecret, RealHost};
use gridbed_runtime::{HostId, HostRef};

#[derive(Parser, Debug)]
#[command(
    name = "phoenix-raytracer",
    about = "Runs one Phoenix ray-tracing machine over TCP"
)]
struct Args {
    /// This machine's index in `--peers` (its host ID).
    #[arg(long)]
    host: u32,
    /// Listening address of every machine of the run, comma-separated, in host-ID order.
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<SocketAddr>,
    /// Machines that start with the even layout of the tiles (hosts 0..initial).
    #[arg(long)]
    initial: u32,
    /// The member a joining machine asks.
    #[arg(long, default_value_t = 0)]
    contact: u32,
    #[arg(long)]
    width: u32,
    #[arg(long)]
    height: u32,
    /// Tile side in pixels (one virtual ID per tile).
    #[arg(long)]
    tile: u32,
    /// How long an idle machine waits for stolen work before asking another owner (ms).
    #[arg(long, default_value_t = 5)]
    steal_wait_ms: u64,
    /// The fraction of one core this machine may use (0 < share <= 1): it rests after a tile
    /// whenever its CPU time runs ahead of share x wall time — a slower machine, so that many
    /// machines can share few cores without any of them waiting for a core.
    #[arg(long, default_value_t = 1.0)]
    cpu_share: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phoenix-raytracer: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> anyhow::Result<()> {
    let n = a.peers.len() as u32;
    if a.host >= n {
        bail!("--host {} is not an index of the {n} peers", a.host);
    }
    if a.width == 0 || a.height == 0 || a.tile == 0 || a.width > 1 << 15 || a.height > 1 << 15 {
        bail!(
            "image {}x{} with {}-pixel tiles is not renderable",
            a.width,
            a.height,
            a.tile
        );
    }
    let grid = TileGrid {
        width: a.width,
        height: a.height,
        tile: a.tile,
    };
    if a.initial == 0 || a.initial > n || grid.count() < u64::from(a.initial) {
        bail!(
            "--initial {} must be in 1..={n} and at most the {} tiles",
            a.initial,
            grid.count()
        );
    }
    if !(a.cpu_share > 0.0 && a.cpu_share <= 1.0) {
        bail!("--cpu-share {} is not in (0, 1]", a.cpu_share);
    }
    if a.host >= a.initial && a.contact >= a.initial {
        bail!("--contact {} is not an initial machine", a.contact);
    }
    // One thread: rendering, the protocol and the sockets share it, as a single-CPU machine.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(serve(a, grid))
}

/// Reads commands on a plain thread (stdin is blocking). End of input: the driver is gone, so this
/// machine stops too — at once if it is stuck where commands are not read.
fn stdin_commands() -> mpsc::Receiver<Cmd> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match Cmd::parse(&line) {
                Ok(c) => {
                    if tx.send(c).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("phoenix-raytracer: {e}"),
            }
        }
        let _ = tx.send(Cmd::Quit);
        std::thread::sleep(Duration::from_secs(2));
        std::process::exit(2);
    });
    rx
}

/// Events to the driver on stdout. Rendered tiles go out in batches, one `tiles` line at most
/// every `BATCH`: a line per tile cost a `write` and a wake-up of the driver per tile (thousands
/// per second), and those context switches slowed the rendering itself. Every other event goes
/// out at once, after the tiles before it.
struct Output {
    host: u32,
    tiles: Vec<TileDone>,
    since: Instant,
}

impl Output {
    /// Longest a rendered tile waits to be reported: the driver's leave and join triggers lag by
    /// at most this; the plotted times are the ones inside the lines.
    const BATCH: Duration = Duration::from_millis(10);

    fn new(host: u32) -> Output {
        Output {
            host,
            tiles: Vec::new(),
            since: Instant::now(),
        }
    }
    fn tile(&mut self, t: TileDone) {
        self.tiles.push(t);
        self.tick();
    }
    fn emit(&mut self, e: &Event) {
        self.write_tiles();
        write_line(&e.line());
    }
    /// Writes the batch if it is old enough.
    fn tick(&mut self) {
        if !self.tiles.is_empty() && self.since.elapsed() >= Self::BATCH {
            self.write_tiles();
        }
    }
    fn write_tiles(&mut self) {
        if !self.tiles.is_empty() {
            let e = Event::Tiles {
                host: self.host,
                tiles: std::mem::take(&mut self.tiles),
            };
            write_line(&e.line());
        }
        self.since = Instant::now();
    }
}

fn write_line(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the driver is gone; the stdin thread ends the process.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

async fn serve(a: Args, grid: TileGrid) -> anyhow::Result<()> {
    let me = a.host;
    let secret = ClusterSecret::from_env()?;
    let listener = tokio::net::TcpListener::bind(a.peers[me as usize])
        .await
        .with_context(|| format!("listening on {}", a.peers[me as usize]))?;
    let host: HostRef = RealHost::start(
        HostId(me),
        listener,
        Arc::new(a.peers.clone()),
        Instant::now(),
        tokio::runtime::Handle::current(),
        secret,
    );
    let start = if me >= a.initial {
        Start::join_via(HostId(a.contact), a.initial)
    } else {
        Start::Initial {
            table: RoutingTable::even(grid.count(), a.initial),
        }
    };
    let mut ctl = Commands {
        share: Share::new(a.cpu_share),
        host: me,
        out: Output::new(me),
        cmds: stdin_commands(),
        directive: Directive::Work,
        dump: None,
        quit: false,
        steals: Counters::default(),
    };
    let scene = Scene::standard(a.width, a.height);
    let (ph, joined) = start_machine(host, start, grid).await?;
    ctl.out.emit(&match joined {
        Some(secs) => Event::Joined {
            host: me,
            t: unix_now(),
            secs,
        },
        None => Event::Ready {
            host: me,
            t: unix_now(),
        },
    });
    let steal_wait = Duration::from_millis(a.steal_wait_ms);
    let mut ph = match work(ph, &scene, steal_wait, &mut ctl).await? {
        Outcome::Left(node, secs) => return left(&mut ctl, &node, secs).await,
        Outcome::Stopped(ph) => ph,
    };
    // Stopped: serve the protocol (others may still be working) and answer commands.
    loop {
        if let Some(file) = ctl.dump.take() {
            // Let hand-offs already on the wire land before the tiles are written.
            ph.serve_for(Duration::from_millis(20)).await?;
            let tiles = dump(&ph, &file)?;
            ctl.out.emit(&Event::Dumped {
                host: me,
                tiles,
                counters: counters(ph.node().stats(), &ctl.steals),
            });
        }
        if ctl.quit {
            return Ok(());
        }
        if ctl.directive == Directive::Leave {
            let t = ph.host().now();
            let h = ph.host().clone();
            let node = ph.leave().await?;
            return left(&mut ctl, &node, (h.now() - t).as_secs_f64()).await;
        }
        ph.step(Duration::from_millis(2)).await?;
        ctl.directive(&ph);
    }
}

async fn left(
    ctl: &mut Commands,
    node: &gridbed_phoenix::Node<Tiles>,
    secs: f64,
) -> anyhow::Result<()> {
    ctl.out.emit(&Event::Left {
        host: ctl.host,
        t: unix_now(),
        secs,
        counters: counters(node.stats(), &ctl.steals),
    });
    // Let the kernel deliver our last frames (`Gone`) before the sockets close.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// Writes the owned tiles to `file`; returns how many were rendered.
fn dump(ph: &Phoenix<Tiles>, file: &PathBuf) -> anyhow::Result<u64> {
    let n = ph.node();
    let mut d = Dump {
        host: n.id().0,
        owned: n.owned().iter().map(|p| p.range).collect(),
        tiles: Vec::new(),
        todo: Vec::new(),
    };
    for (&id, s) in n.data().tiles() {
        match s {
            TileState::Done(px) => d.tiles.push((id, px.clone())),
            TileState::Todo => d.todo.push(id),
        }
    }
    std::fs::write(file, d.encode()).with_context(|| format!("writing {}", file.display()))?;
    Ok(d.tiles.len() as u64)
}

/// A machine limited to a fraction of a core: the CPU time of its thread may not run ahead of
/// `fraction` x the wall time since it started. The balance is checked after each tile; the
/// rest it asks for is measured against the wall clock, so a timer that sleeps too long or a
/// preemption is made up at the next check. Credit (time it could not run) is capped, so a
/// machine that waited for a core does not then run above its share for long.
struct Share {
    fraction: f64,
    cpu0: Duration,
    wall0: Instant,
    /// When the balance was last checked: reading the thread's CPU clock is a system call, so it
    /// is read at most once per `CHECK_EVERY` of wall time, not after every tile.
    checked: Instant,
}

impl Share {
    /// Unused credit beyond this is forgotten.
    const MAX_CREDIT: Duration = Duration::from_millis(100);
    /// Shorter rests wait for the next check. Each rest is a sleep and a wake-up (a context
    /// switch, cold caches after); measured with 9 machines at 0.2 core, 3 runs each: rests of
    /// ≥ 5 ms (credit 50 ms) 0.93-0.95, ≥ 10 ms (credit 100 ms) 0.95-0.955. That was before
    /// resting machines answered steal requests. Since then, medians: ≥ 10 ms 0.956-0.968,
    /// ≥ 20 ms (credit 200 ms) 0.961-0.965 — no longer the lever; non-render CPU stayed ~5.5 %.
    const MIN_REST: Duration = Duration::from_millis(10);
    /// A tenth of the shortest rest: the share overshoots by at most this much CPU time.
    const CHECK_EVERY: Duration = Duration::from_millis(1);

    fn new(fraction: f64) -> Share {
        Share {
            fraction,
            cpu0: thread_cpu_time().unwrap_or_default(),
            wall0: Instant::now(),
            checked: Instant::now(),
        }
    }

    /// How long to rest now to stay within the share (zero for a whole core).
    fn rest(&mut self) -> Duration {
        if self.fraction >= 1.0 || self.checked.elapsed() < Self::CHECK_EVERY {
            return Duration::ZERO;
        }
        self.checked = Instant::now();
        let Some(cpu) = thread_cpu_time() else {
            return Duration::ZERO;
        };
        let used = cpu.saturating_sub(self.cpu0).as_secs_f64();
        let allowed = self.wall0.elapsed().as_secs_f64() * self.fraction;
        let credit = (allowed - used) / self.fraction;
        if credit > Self::MAX_CREDIT.as_secs_f64() {
            // Forget the excess: move the start so that exactly MAX_CREDIT remains.
            let excess = credit - Self::MAX_CREDIT.as_secs_f64();
            self.wall0 += Duration::from_secs_f64(excess);
        }
        let owed = Duration::from_secs_f64((-credit).max(0.0));
        if owed >= Self::MIN_REST {
            owed
        } else {
            Duration::ZERO
        }
    }
}

/// The protocol counters and this machine's CPU so far, for the driver.
fn counters(stats: &gridbed_phoenix::Stats, steals: &Counters) -> Counters {
    Counters {
        thread_cpu_us: thread_cpu_time().map_or(0, |d| d.as_micros() as u64),
        steals: steals.steals,
        steals_answered: steals.steals_answered,
        steal_wait_us: steals.steal_wait_us,
        ..Counters::from(stats)
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`: a system call, ~1 µs, so read on
/// sampled tiles and share checks only). The machine runs on this one thread (current-thread
/// runtime); the stdin reader thread is not counted.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The driver's commands as the machine program's [`Control`].
struct Commands {
    share: Share,
    host: u32,
    out: Output,
    cmds: mpsc::Receiver<Cmd>,
    /// Sticky: once leave or stop is asked for, every later call says so.
    directive: Directive,
    dump: Option<PathBuf>,
    quit: bool,
    /// This machine's steal requests (the steal fields of `Counters`).
    steals: Counters,
}

impl Control for Commands {
    fn directive(&mut self, ph: &Phoenix<Tiles>) -> Directive {
        // Called between work items and while idle: a batch of tile events does not wait long.
        self.out.tick();
        while let Ok(c) = self.cmds.try_recv() {
            match c {
                Cmd::Report => {
                    let n = ph.node();
                    let todo = n.data().todo().len() as u64;
                    self.out.emit(&Event::Report {
                        host: self.host,
                        phase: format!("{:?}", n.phase()),
                        owned: n.owned().iter().map(|p| p.range).collect(),
                        todo,
                        done: n.data().tiles().len() as u64 - todo,
                        counters: counters(n.stats(), &self.steals),
                    });
                }
                Cmd::Leave => self.directive = Directive::Leave,
                Cmd::Dump(f) => {
                    self.dump = Some(f);
                    if self.directive == Directive::Work {
                        self.directive = Directive::Stop;
                    }
                }
                Cmd::Quit => {
                    self.quit = true;
                    self.directive = Directive::Stop;
                }
            }
        }
        self.directive
    }

    fn rendered(
        &mut self,
        _now: Duration,
        id: u64,
        tests: u64,
        pixels: u64,
        cpu: Option<Duration>,
    ) {
        self.out.tile(TileDone {
            id,
            t: unix_now(),
            tests,
            pixels,
            cpu_s: cpu.map(|c| c.as_secs_f64()),
        });
    }

    fn rest(&mut self) -> Duration {
        self.share.rest()
    }

    fn cpu_now(&mut self) -> Option<Duration> {
        thread_cpu_time()
    }

    fn stole(&mut self, waited: Duration, answered: bool) {
        self.steals.stole(waited, answered);
    }
}
