//! The real mode of `phoenix-raytrace` as OS processes: one `phoenix-raytracer` process per
//! machine over loopback TCP. Joining is starting a process; leaving is the `leave` command, after
//! which the process hands off its tiles and exits. The driver watches the processes' progress
//! lines, asks them to leave and starts joiners at the configured fractions of the image, detects
//! completion (tiles rendered, summed over all processes), has every live process dump the tiles it
//! owns, and checks that the owned ranges cover the ID space exactly once.
//!
//! Every wait is bounded by the run's deadline; the children are killed on every exit path (a drop
//! guard), and a child whose stdin closes exits by itself, so none outlives the driver.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};

use crate::unix_now;
use gridbed_phoenix::apps::raytrace::events::{Cmd, Dump, Event};
use gridbed_phoenix::apps::raytrace::machine::CYCLES_PER_TEST;
use gridbed_phoenix::apps::raytrace::params::RaytraceParams;
use gridbed_phoenix::apps::raytrace::record::RunRecord;
use gridbed_phoenix::apps::raytrace::tiles::TileGrid;

/// Environment variable naming the machine program, if it is not next to the running executable.
pub const EXE_ENV: &str = "GRIDBED_PHOENIX_RAYTRACER";

/// Finds the `phoenix-raytracer` program: `explicit`, else `$GRIDBED_PHOENIX_RAYTRACER`, else next
/// to the running executable (or one directory up, where test executables live in `deps/`).
pub fn find_machine_exe(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let given = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(EXE_ENV).map(PathBuf::from));
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p);
        }
        bail!("machine program {} not found", p.display());
    }
    let name = format!("phoenix-raytracer{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        if d.join(&name).is_file() {
            return Ok(d.join(&name));
        }
    }
    let release = if dir.ends_with("release") {
        " --release"
    } else {
        ""
    };
    bail!(
        "{name} not found next to {}: build it with `cargo build{release} -p gridbed-phoenix-driver --bin phoenix-raytracer`, or set {EXE_ENV}",
        exe.display()
    )
}

/// Runs the experiment's machines as OS processes.
pub fn run(p: &RaytraceParams) -> anyhow::Result<RunRecord> {
    let exe = find_machine_exe(p.machine_exe.as_deref())?;
    let grid = TileGrid {
        width: p.width,
        height: p.height,
        tile: p.tile,
    };
    let mut fleet = Fleet::new(exe, p, free_addrs((p.initial + p.joining) as usize)?)?;
    let deadline = Instant::now() + p.deadline;
    let mut run = RunRecord {
        cpu_sample: Some((0, 0.0)),
        ..RunRecord::default()
    };
    let t0 = unix_now();
    for h in 0..p.initial {
        fleet.spawn(h)?;
        run.membership.push((unix_now() - t0, 1.0));
    }
    let total = grid.count();
    let mut done = 0u64;
    let (mut asked_leave, mut started_join) = (false, false);
    // Machines whose leave or join has not completed: (host, wall-clock start of the change).
    let mut changing: BTreeMap<u32, f64> = BTreeMap::new();
    let mut gone = BTreeSet::new();
    while done < total || !changing.is_empty() {
        let (h, line) = fleet.next_line(deadline).with_context(|| {
            format!(
                "{done} of {total} tiles rendered, {} changes pending",
                changing.len()
            )
        })?;
        match Event::parse(&line).map_err(|e| anyhow!("machine h{h}: {e}"))? {
            Event::Tiles { tiles, .. } => {
                for x in tiles {
                    done += 1;
                    run.progress
                        .push((x.t - t0, x.tests * CYCLES_PER_TEST, x.pixels));
                    run.end = run.end.max(x.t - t0);
                    if let (Some((work, cpu)), Some(c)) = (run.cpu_sample.as_mut(), x.cpu_s) {
                        *work += x.tests * CYCLES_PER_TEST;
                        *cpu += c;
                    }
                }
            }
            Event::Joined { secs, .. } => {
                let since = changing.remove(&h).unwrap_or(t0);
                run.rebalance
                    .push((format!("join h{h}"), unix_now() - since));
                run.rebalance_self.push((format!("join h{h}"), secs));
            }
            Event::Left { secs, counters, .. } => {
                let since = changing.remove(&h).unwrap_or(t0);
                run.rebalance
                    .push((format!("leave h{h}"), unix_now() - since));
                run.rebalance_self.push((format!("leave h{h}"), secs));
                run.counters.add(&counters);
                gone.insert(h);
                fleet.finished(h);
            }
            _ => {}
        }
        let frac = done as f64 / total as f64;
        if !asked_leave && frac >= p.leave_at {
            asked_leave = true;
            for h in p.initial - p.leaving..p.initial {
                fleet.cmd(h, &Cmd::Leave)?;
                changing.insert(h, unix_now());
                run.membership.push((unix_now() - t0, -1.0));
            }
        }
        if !started_join && frac >= p.join_at {
            started_join = true;
            for h in p.initial..p.initial + p.joining {
                changing.insert(h, unix_now());
                fleet.spawn(h)?;
                run.membership.push((unix_now() - t0, 1.0));
            }
        }
    }
    collect(&mut fleet, &mut run, &gone, total, deadline)?;
    Ok(run)
}

/// Has every live machine dump its tiles, checks single ownership, and stops the processes.
fn collect(
    fleet: &mut Fleet,
    run: &mut RunRecord,
    gone: &BTreeSet<u32>,
    total: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    let live: Vec<u32> = fleet
        .live()
        .into_iter()
        .filter(|h| !gone.contains(h))
        .collect();
    for &h in &live {
        fleet.cmd(h, &Cmd::Dump(fleet.dump_file(h)))?;
    }
    let mut waiting: BTreeSet<u32> = live.iter().copied().collect();
    while !waiting.is_empty() {
        let (h, line) = fleet
            .next_line(deadline)
            .context("waiting for the tile dumps")?;
        if let Event::Dumped { counters, .. } = Event::parse(&line).map_err(|e| anyhow!("{e}"))? {
            waiting.remove(&h);
            run.counters.add(&counters);
        }
    }
    let mut owned = Vec::new();
    for &h in &live {
        let file = fleet.dump_file(h);
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let d = Dump::decode(&bytes).map_err(|e| anyhow!("machine h{h}: {e}"))?;
        if let Some(id) = d.todo.first() {
            bail!("machine h{h} still owns unrendered tile {id} at the end");
        }
        for (id, px) in d.tiles {
            if run.tiles.insert(id, px).is_some() {
                bail!("tile {id} is held by two machines");
            }
        }
        owned.extend(d.owned);
    }
    owned.sort();
    let mut next = 0;
    for r in owned.iter().filter(|r| !r.is_empty()) {
        if r.start != next {
            bail!(
                "ownership after the run has a gap or overlap at ID {}",
                r.start.min(next)
            );
        }
        next = r.end;
    }
    if next != total {
        bail!("ownership after the run ends at ID {next}, not {total}");
    }
    for &h in &live {
        fleet.cmd(h, &Cmd::Quit)?;
    }
    fleet.wait_all(deadline)
}

/// `n` free loopback addresses (bound, then released for the processes to bind again).
fn free_addrs(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let ls = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free loopback ports")?;
    ls.iter()
        .map(|l| l.local_addr().context("local address"))
        .collect()
}

/// A line (`Some`) or end of output (`None`) from a machine's stdout; or a line of its stderr.
enum Out {
    Stdout(u32, Option<String>),
    Stderr(u32, String),
}

struct Machine {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its stdout ended (it exited, or is about to).
    closed: bool,
    /// It was expected to exit (left, or told to quit).
    finished: bool,
    last_err: String,
}

/// The run's processes; dropping it kills whichever are still running and removes the dumps.
struct Fleet {
    exe: PathBuf,
    args: Vec<String>,
    peers: String,
    /// This run's cluster secret, handed to each machine in its environment.
    secret: String,
    machines: BTreeMap<u32, Machine>,
    tx: mpsc::Sender<Out>,
    rx: mpsc::Receiver<Out>,
    dir: PathBuf,
}

impl Fleet {
    fn new(exe: PathBuf, p: &RaytraceParams, peers: Vec<SocketAddr>) -> anyhow::Result<Fleet> {
        let dir = std::env::temp_dir().join(format!(
            "gridbed-phoenix-raytrace-{}-{}",
            std::process::id(),
            (unix_now() * 1e6) as u64
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (tx, rx) = mpsc::channel();
        let peers = peers
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let args = [
            ("--width", p.width.to_string()),
            ("--height", p.height.to_string()),
            ("--tile", p.tile.to_string()),
            ("--initial", p.initial.to_string()),
            (
                "--steal-wait-ms",
                p.steal_wait.as_millis().max(1).to_string(),
            ),
        ]
        .into_iter()
        .chain(p.cpu_share.map(|f| ("--cpu-share", f.to_string())))
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect();
        Ok(Fleet {
            exe,
            args,
            peers,
            secret: gridbed_real::ClusterSecret::random_env_value(),
            machines: BTreeMap::new(),
            tx,
            rx,
            dir,
        })
    }

    fn dump_file(&self, h: u32) -> PathBuf {
        self.dir.join(format!("tiles-h{h}.bin"))
    }

    fn spawn(&mut self, h: u32) -> anyhow::Result<()> {
        let mut child = Command::new(&self.exe)
            .args(["--host", &h.to_string(), "--peers", &self.peers])
            .args(&self.args)
            .env(gridbed_real::SECRET_ENV, &self.secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in out
                .into_iter()
                .flat_map(|o| BufReader::new(o).lines().map_while(Result::ok))
            {
                if tx.send(Out::Stdout(h, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send(Out::Stdout(h, None));
        });
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in err
                .into_iter()
                .flat_map(|e| BufReader::new(e).lines().map_while(Result::ok))
            {
                if tx.send(Out::Stderr(h, line)).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        self.machines.insert(
            h,
            Machine {
                child,
                stdin,
                closed: false,
                finished: false,
                last_err: String::new(),
            },
        );
        Ok(())
    }

    fn live(&self) -> Vec<u32> {
        self.machines
            .iter()
            .filter(|(_, m)| !m.closed && !m.finished)
            .map(|(&h, _)| h)
            .collect()
    }

    /// `h` is expected to exit now.
    fn finished(&mut self, h: u32) {
        if let Some(m) = self.machines.get_mut(&h) {
            m.finished = true;
        }
    }

    fn cmd(&mut self, h: u32, c: &Cmd) -> anyhow::Result<()> {
        let m = self
            .machines
            .get_mut(&h)
            .ok_or_else(|| anyhow!("machine h{h} was never started"))?;
        if *c == Cmd::Quit {
            m.finished = true;
        }
        let stdin = m
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("machine h{h}: stdin closed"))?;
        writeln!(stdin, "{}", c.line())
            .and_then(|()| stdin.flush())
            .with_context(|| format!("machine h{h}: sending '{}'", c.line()))
    }

    /// The next stdout line of any machine. A machine whose output ends without having been
    /// expected to exit is an error, with its last stderr line.
    fn next_line(&mut self, deadline: Instant) -> anyhow::Result<(u32, String)> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out = self
                .rx
                .recv_timeout(left)
                .map_err(|_| anyhow!("ray-tracing processes timed out"))?;
            match out {
                Out::Stdout(h, Some(line)) => return Ok((h, line)),
                Out::Stderr(h, line) => {
                    if let Some(m) = self.machines.get_mut(&h) {
                        m.last_err = line;
                    }
                }
                Out::Stdout(h, None) => {
                    let Some(m) = self.machines.get_mut(&h) else {
                        continue;
                    };
                    m.closed = true;
                    if !m.finished {
                        // Give its stderr a moment to arrive: that line says why.
                        while let Ok(Out::Stderr(e, l)) =
                            self.rx.recv_timeout(std::time::Duration::from_millis(200))
                        {
                            if e == h {
                                m.last_err = l;
                            }
                        }
                        bail!("machine h{h} exited unexpectedly: {}", m.last_err);
                    }
                }
            }
        }
    }

    /// Waits (bounded) for every process to exit; all must succeed.
    fn wait_all(&mut self, deadline: Instant) -> anyhow::Result<()> {
        for (h, m) in &mut self.machines {
            m.stdin = None;
            loop {
                if let Some(status) = m.child.try_wait().context("waiting for a machine")? {
                    if !status.success() {
                        bail!("machine h{h} exited with {status}: {}", m.last_err);
                    }
                    break;
                }
                if Instant::now() > deadline {
                    bail!("machine h{h} did not exit before the deadline");
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for m in self.machines.values_mut() {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
