//! `phoenix-raytrace`: a parallel ray tracer over Phoenix while machines leave and join.
//!
//! Tiles are virtual IDs; a tile's state (unrendered, or its pixels) is the ID's data. Each machine
//! renders its own unrendered tiles; an idle machine sends a "steal" message to a random tile ID and
//! its owner hands it half of its unrendered tiles (ph_release to the requester). When a machine
//! leaves, its tiles — rendered ones included — go to the owners of neighbouring IDs; a joining
//! machine is handed half of a random owner's unrendered tiles. The final image is assembled from the
//! owners' data and compared bit for bit with a sequential render.
//!
//! The machine program is `raytrace::machine`; this module picks how the machines run
//! (simulator; real mode as OS processes, `raytrace::driver`; or real mode as tasks of this
//! process, `raytrace::inproc`) and turns the run's record into metrics and the figure.

use std::sync::Arc;

use crate::outcome::{ExperimentOutput, Figure, Mode, Series};
use anyhow::{anyhow, bail, Context};

use super::series::{binned_rate, Steps};
use gridbed_phoenix::apps::raytrace::inproc;
use gridbed_phoenix::apps::raytrace::record::RunRecord;
use gridbed_phoenix::apps::raytrace::scene::Scene;
use gridbed_phoenix::apps::raytrace::tiles::{assemble, png, render_sequential, TileGrid};
use gridbed_phoenix_driver::cpuload::CpuSample;
use gridbed_phoenix_driver::raytrace as driver;

pub use gridbed_phoenix::apps::raytrace::machine::CYCLES_PER_TEST;
pub use gridbed_phoenix::apps::raytrace::params::{RaytraceParams, RealRun};

/// The defaults of `mode`. Real mode renders 16x the pixels (3200x2400, 30,000 IDs, a run of
/// seconds) with each machine process limited to a share of a core (`auto_share`), so that the
/// capacity falls and rises with the machines as in the slides' figure; a smaller image or whole
/// cores make the fixed costs (process start-ups, the dips while machines leave and join, the
/// ramp and the tail) a larger part of the run. The slides give no image size or run length.
pub fn params_for_mode(mode: Mode) -> RaytraceParams {
    match mode {
        Mode::Sim => RaytraceParams::default(),
        Mode::Real => RaytraceParams {
            width: 3200,
            height: 2400,
            // A shared host slows a run down now and then: the median of 3 is robust to one.
            repeats: 3,
            cpu_share: Some(auto_share(&RaytraceParams::default())),
            ..RaytraceParams::default()
        },
    }
}

/// What a researcher can change (`--set`; units and sources in [`PARAM_SPECS`]); the defaults
/// differ by mode ([`params_for_mode`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub width: u32,
    pub height: u32,
    pub tile: u32,
    pub initial: u32,
    pub leaving: u32,
    pub leave_at: f64,
    pub joining: u32,
    pub join_at: f64,
    pub transport: String,
    #[serde(rename = "steal_wait_s", with = "crate::params::seconds")]
    pub steal_wait: std::time::Duration,
    pub repeats: u32,
    pub cpu_share: Option<f64>,
    #[serde(rename = "deadline_s", with = "crate::params::seconds")]
    pub deadline: std::time::Duration,
    pub in_process: bool,
}

pub const PARAM_SPECS: &[(&str, &str, &str)] = &[
    ("width", "pixels", "chosen: SVGA (sim); 3200 in real mode so a run lasts seconds"),
    ("height", "pixels", "chosen: SVGA (sim); 2400 in real mode"),
    ("tile", "pixels", "chosen: one virtual ID per 16x16 tile"),
    ("initial", "machines", "chosen: a lab cluster of 8 (the slides give no count)"),
    ("leaving", "machines", "the slides' plot: machines removed, then added"),
    ("leave_at", "fraction of tiles", "chosen"),
    ("joining", "machines", "the slides' plot"),
    ("join_at", "fraction of tiles", "chosen"),
    ("transport", "preset", "chosen: gigabit Ethernet LAN, as in the lab clusters of the time (sim)"),
    ("steal_wait_s", "s", "chosen: a safety net; owners refuse at once when they have nothing"),
    ("repeats", "runs", "chosen: real mode reports the median of 3"),
    ("cpu_share", "cores", "real mode: every machine's processes fit this computer's cores (computed from its core count)"),
    ("deadline_s", "s", "chosen: generous; a hang must not block the runner (real mode)"),
    ("in_process", "bool", "real mode: tasks of this process instead of one OS process per machine"),
];

impl Params {
    /// The defaults of `mode`.
    pub fn of(mode: Mode) -> Self {
        let r = params_for_mode(mode);
        Params {
            width: r.width,
            height: r.height,
            tile: r.tile,
            initial: r.initial,
            leaving: r.leaving,
            leave_at: r.leave_at,
            joining: r.joining,
            join_at: r.join_at,
            transport: r.transport,
            steal_wait: r.steal_wait,
            repeats: r.repeats,
            cpu_share: r.cpu_share,
            deadline: r.deadline,
            in_process: r.real_run == RealRun::InProcess,
        }
    }

    fn to_raytrace(&self) -> anyhow::Result<RaytraceParams> {
        anyhow::ensure!(
            u64::from(self.width) * u64::from(self.height) <= 1 << 26,
            "width x height must be at most 2^26 pixels"
        );
        anyhow::ensure!(
            self.initial + self.joining <= 256 && (1..=20).contains(&self.repeats),
            "at most 256 machines and 1..=20 repeats"
        );
        anyhow::ensure!(
            self.cpu_share.is_none_or(|c| c > 0.0 && c <= 1.0),
            "cpu_share must be within (0, 1] (or null: whole cores)"
        );
        Ok(RaytraceParams {
            width: self.width,
            height: self.height,
            tile: self.tile,
            initial: self.initial,
            leaving: self.leaving,
            leave_at: self.leave_at,
            joining: self.joining,
            join_at: self.join_at,
            transport: self.transport.clone(),
            steal_wait: self.steal_wait,
            real_run: if self.in_process {
                RealRun::InProcess
            } else {
                RealRun::Processes
            },
            machine_exe: None,
            deadline: self.deadline,
            repeats: self.repeats,
            cpu_share: self.cpu_share,
        })
    }
}

/// The experiment with the given parameters.
pub fn run_with(mode: Mode, seed: u64, p: &Params) -> anyhow::Result<ExperimentOutput> {
    raytrace_with(mode, seed, &p.to_raytrace()?)
}

/// The registry's parameter definition (mode-dependent defaults).
pub fn params_def() -> crate::params::ParamsDef {
    crate::params::ParamsDef {
        specs: PARAM_SPECS,
        defaults: |mode| {
            serde_json::to_value(Params::of(mode)).expect("plain parameters serialize")
        },
        check: |v| {
            serde_json::from_value::<Params>(v.clone())
                .map(|_| ())
                .map_err(Into::into)
        },
        run: |mode, seed, v| run_with(mode, seed, &serde_json::from_value(v.clone())?),
    }
}

/// Each machine's share of a core when every machine of a run, at the most present at once plus
/// one for the driver and the protocol, must fit on this computer's cores: then no machine waits
/// for a core, so the ideal — the sum of the present machines' speeds — rises and falls with the
/// machines as on a cluster (with whole cores, 9 processes on 2 cores keep the ideal flat at 2).
fn auto_share(p: &RaytraceParams) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let most = f64::from(p.initial.max(p.initial - p.leaving + p.joining));
    (cores / (most + 1.0)).min(1.0)
}

/// The experiment with the defaults of `mode`.
pub fn raytrace(mode: Mode, seed: u64) -> anyhow::Result<ExperimentOutput> {
    raytrace_with(mode, seed, &params_for_mode(mode))
}

/// Sequential renders of the scene, one per core the machines share and all at once, timed:
/// one machine's speed while every core is busy, as during the run. (On this VM a render alone
/// ran up to ~10 % faster than two at once, depending on where the hypervisor put the two
/// virtual CPUs, so a lone render overstated the cores' joint speed.)
struct Reference {
    image: Vec<u8>,
    /// Mean wall seconds of one render.
    wall_s: f64,
    /// Mean CPU seconds of one render (`None` where `/proc` is unreadable).
    cpu_s: Option<f64>,
}

impl Reference {
    fn render(p: &RaytraceParams, parallel: usize) -> Reference {
        let before = CpuSample::now();
        let runs: Vec<(Vec<u8>, f64)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..parallel.max(1))
                .map(|_| {
                    s.spawn(|| {
                        let start = std::time::Instant::now();
                        let image = render_sequential(&Scene::standard(p.width, p.height));
                        (image, start.elapsed().as_secs_f64())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a reference render panicked"))
                .collect()
        });
        let n = runs.len() as f64;
        let wall_s = runs.iter().map(|r| r.1).sum::<f64>() / n;
        let cpu_s = before
            .zip(CpuSample::now())
            .map(|(b, a)| a.own_s_since(&b) / n);
        let image = runs.into_iter().next().map(|r| r.0).unwrap_or_default();
        Reference {
            image,
            wall_s,
            cpu_s,
        }
    }
}

/// Where the machines ran: decides what "ideal" means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sim,
    Real(RealRun),
}

/// The experiment with explicit parameters.
pub fn raytrace_with(
    mode: Mode,
    seed: u64,
    p: &RaytraceParams,
) -> anyhow::Result<ExperimentOutput> {
    let fraction = |f: f64| (0.0..=1.0).contains(&f);
    if p.initial < 1
        || p.leaving >= p.initial
        || p.tile == 0
        || p.width == 0
        || p.height == 0
        || !fraction(p.leave_at)
        || !fraction(p.join_at)
    {
        bail!("invalid ray-tracing parameters: {p:?}");
    }
    let hosts = (p.initial + p.joining) as usize;
    let scene = Arc::new(Scene::standard(p.width, p.height));
    let grid = TileGrid {
        width: p.width,
        height: p.height,
        tile: p.tile,
    };
    let backend = match mode {
        Mode::Sim => Backend::Sim,
        Mode::Real => Backend::Real(p.real_run),
    };
    // Real mode: one machine's speed is measured by sequential renders just before and just
    // after each run. This computer's speed drifts by several per cent from one second to the next
    // (a shared host), so a measurement on one side of the run only makes the efficiency noisier.
    let parallel = match backend {
        Backend::Real(_) => real_cores(backend) as usize,
        Backend::Sim => 1,
    };
    let mut before = match backend {
        Backend::Real(_) => Some(Reference::render(p, parallel)),
        Backend::Sim => None,
    };
    // A simulated run is reproducible: once is enough.
    let repeats = match backend {
        Backend::Real(_) => p.repeats.max(1),
        Backend::Sim => 1,
    };
    let mut runs = Vec::new();
    for _ in 0..repeats {
        let mut out = ExperimentOutput::default();
        // Other programs on this computer take cores from the machines: say how busy it was.
        let load_before = loadavg();
        let cpu_before = CpuSample::now();
        let record = match backend {
            Backend::Sim => {
                let platform = gridbed_sim::Platform::lans(1, hosts, &p.transport)
                    .map_err(|e| anyhow!("platform: {e}"))?;
                let cfg = gridbed_sim::SimConfig::new(platform, seed);
                let (params, scene) = (p.clone(), scene.clone());
                let o = gridbed_sim::run(cfg, move |c| inproc::scenario(c, params, scene, grid));
                out.trace = Some(o.trace);
                o.value?
            }
            Backend::Real(RealRun::InProcess) => {
                let (params, scene) = (p.clone(), scene.clone());
                gridbed_real::run_local(hosts, p.deadline, move |c| {
                    inproc::scenario(c, params, scene, grid)
                })??
            }
            Backend::Real(RealRun::Processes) => driver::run(p)?,
        };
        let cpu = cpu_before.zip(CpuSample::now());
        // The machines have stopped by now, so this render has the computer to itself; it is
        // also the image check, and the next run's "before".
        let after = Reference::render(p, parallel);
        let refs: Vec<&Reference> = before.iter().chain([&after]).collect();
        report(&mut out, p, grid, backend, &record, cpu, &refs)?;
        if let (Backend::Real(_), Some(b), Some(a)) = (backend, load_before, loadavg()) {
            out.notes.push(format!(
                "Load average of this computer (/proc/loadavg, 1/5/15 min) before the run: {b}; after: {a}."
            ));
        }
        runs.push(out);
        before = Some(after);
    }
    Ok(median_run(runs))
}

/// Of repeated real runs, the one with the median efficiency, with the spread of all of them in
/// its metrics and notes. (A run in which the shared host slowed down is reported, not hidden:
/// its figure is in the minimum and in the notes.)
fn median_run(mut runs: Vec<ExperimentOutput>) -> ExperimentOutput {
    const KEY: &str = "efficiency_vs_ideal";
    if runs.len() < 2 {
        return runs.pop().unwrap_or_default();
    }
    let eff = |o: &ExperimentOutput| o.metrics.get(KEY).copied().unwrap_or(f64::NAN);
    runs.sort_by(|a, b| eff(a).total_cmp(&eff(b)));
    let all: Vec<String> = runs
        .iter()
        .map(|o| {
            let run_s = o.metrics.get("run_s").copied().unwrap_or(f64::NAN);
            format!("{:.3} ({run_s:.2} s)", eff(o))
        })
        .collect();
    let (lo, hi, n) = (eff(&runs[0]), eff(&runs[runs.len() - 1]), runs.len());
    let mut out = runs.swap_remove(n / 2);
    out.metrics.insert(format!("{KEY}_min"), lo);
    out.metrics.insert(format!("{KEY}_max"), hi);
    out.metrics.insert("repeats".into(), n as f64);
    out.units.insert(format!("{KEY}_min"), "fraction".into());
    out.units.insert(format!("{KEY}_max"), "fraction".into());
    out.units.insert("repeats".into(), "count".into());
    out.notes.insert(
        0,
        format!(
            "Real mode ran {n} times; shown: the run with the median efficiency_vs_ideal. All runs, lowest first: {}.",
            all.join(", ")
        ),
    );
    out
}

/// Metrics, figure, PNG and notes of one run.
fn report(
    out: &mut ExperimentOutput,
    p: &RaytraceParams,
    grid: TileGrid,
    backend: Backend,
    r: &RunRecord,
    cpu: Option<(CpuSample, CpuSample)>,
    refs: &[&Reference],
) -> anyhow::Result<()> {
    let image = assemble(&grid, &r.tiles).context("tiles missing from the final image")?;
    let identical = refs.iter().all(|x| x.image == image);
    // One machine's time for the whole image: the mean of the reference renders.
    let seq_s = refs.iter().map(|x| x.wall_s).sum::<f64>() / refs.len() as f64;
    let seq_cpu_s = refs
        .iter()
        .map(|x| x.cpu_s)
        .sum::<Option<f64>>()
        .map(|c| c / refs.len() as f64);
    out.artifacts.push((
        "phoenix-raytrace.png".into(),
        png(p.width, p.height, &image)?,
    ));

    let cycles: u64 = r.progress.iter().map(|x| x.1).sum();
    let pixels: u64 = r.progress.iter().map(|x| x.2).sum();
    let end = r.end.max(1e-9);
    let cycles_per_pixel = cycles as f64 / pixels.max(1) as f64;
    let steps = |changes: &[(f64, f64)]| {
        let mut s = Steps::default();
        for &(t, d) in changes {
            s.change(t, d);
        }
        s
    };
    // Ideal = the sum of the present machines' speeds. In sim a machine's speed is its clock. In
    // real mode at most `cores` machines compute at once, each at the speed measured below.
    let cores = real_cores(backend);
    // Real mode: one machine's speed (work units per second of rendering), from the reference
    // renders, and — where the machines measured their render CPU time — from the run itself.
    let reference_speed = cycles as f64 / seq_s.max(1e-9);
    let in_run_speed = r
        .cpu_sample
        .filter(|&(w, c)| w > 0 && c > 0.0)
        .map(|(w, c)| w as f64 / c);
    // A machine limited to a share of a core runs at that fraction of the measured speed; the
    // present machines together use at most `usable` cores.
    let share = match backend {
        Backend::Real(RealRun::Processes) => p.cpu_share.unwrap_or(1.0),
        _ => 1.0,
    };
    let present = |speed: f64, usable: f64| {
        steps(&r.membership).map_level(|n| (n * share).min(usable) * speed)
    };
    let ideal_hz = match backend {
        Backend::Sim => steps(&r.capacity),
        Backend::Real(_) => present(in_run_speed.unwrap_or(reference_speed), cores),
    };
    let efficiency = cycles as f64 / ideal_hz.integral(end);
    let rebalance = r.rebalance.iter().map(|x| x.1).sum::<f64>() / r.rebalance.len().max(1) as f64;
    let m = &mut out.metrics;
    if efficiency.is_finite() {
        m.insert("efficiency_vs_ideal".into(), efficiency);
    }
    if let (Backend::Real(_), Some(speed)) = (backend, in_run_speed) {
        // The same work against speeds measured apart from the run (noisier on a shared host).
        let e = cycles as f64 / present(reference_speed, cores).integral(end);
        m.insert("efficiency_vs_reference".into(), e);
        m.insert(
            "speed_in_run_over_reference".into(),
            speed / reference_speed,
        );
    }
    // Real mode on a shared computer: the same ratio against the cores other programs left us.
    if let (Backend::Real(_), Some((before, after))) = (backend, cpu) {
        let others = after.others_cores_since(&before);
        m.insert("others_cores".into(), others);
        // Where the cores went: the machine processes' CPU against their render CPU.
        if backend == Backend::Real(RealRun::Processes) {
            let machines = after.children_s_since(&before);
            m.insert("machines_cpu_s".into(), machines);
            m.insert("driver_cpu_s".into(), after.own_s_since(&before) - machines);
            if let Some(speed) = in_run_speed {
                m.insert("render_cpu_s".into(), cycles as f64 / speed);
                // The machines' own thread clocks (exact, unlike the /proc ticks above).
                m.insert(
                    "machines_thread_cpu_s".into(),
                    r.counters.thread_cpu_us as f64 / 1e6,
                );
            }
        }
        // One machine's speed per CPU second: measured in the run, else by the references.
        let speed = in_run_speed.or(seq_cpu_s.map(|c| cycles as f64 / c.max(0.01)));
        if let Some(speed) = speed {
            let e = cycles as f64 / present(speed, (cores - others).max(0.1)).integral(end);
            if e.is_finite() {
                m.insert("efficiency_vs_available".into(), e);
            }
        }
    }
    if backend != Backend::Sim {
        for (k, x) in ["reference_s_before", "reference_s_after"].iter().zip(refs) {
            m.insert(k.to_string(), x.wall_s);
        }
    }
    m.insert("rebalance_s".into(), rebalance);
    m.insert("image_bit_identical".into(), f64::from(u8::from(identical)));
    m.insert("run_s".into(), end);
    m.insert("pixels".into(), pixels as f64);
    m.insert("tiles".into(), grid.count() as f64);
    m.insert("membership_changes".into(), r.rebalance.len() as f64);
    m.insert("duplicates".into(), r.counters.duplicates as f64);
    m.insert(
        "hop_bound_violations".into(),
        r.counters.bound_violations as f64,
    );
    // Work stealing: how long an idle machine waited for an owner's answer.
    let c = &r.counters;
    m.insert("steals".into(), c.steals as f64);
    m.insert(
        "steals_unanswered".into(),
        (c.steals - c.steals_answered) as f64,
    );
    if c.steals_answered > 0 {
        m.insert(
            "steal_wait_ms".into(),
            c.steal_wait_us as f64 / 1e3 / c.steals_answered as f64,
        );
    }
    out.set_units(&[
        ("efficiency_vs_ideal", "fraction"),
        ("efficiency_vs_reference", "fraction"),
        ("speed_in_run_over_reference", "x"),
        ("others_cores", "cores"),
        ("machines_cpu_s", "s"),
        ("driver_cpu_s", "s"),
        ("render_cpu_s", "s"),
        ("machines_thread_cpu_s", "s"),
        ("efficiency_vs_available", "fraction"),
        ("reference_s_before", "s"),
        ("reference_s_after", "s"),
        ("rebalance_s", "s"),
        ("image_bit_identical", "bool"),
        ("run_s", "s"),
        ("pixels", "count"),
        ("tiles", "count"),
        ("membership_changes", "count"),
        ("duplicates", "count"),
        ("hop_bound_violations", "count"),
        ("steals", "count"),
        ("steals_unanswered", "count"),
        ("steal_wait_ms", "ms"),
    ]);
    // Work done, in pixels of the image's mean cost: tiles differ in cost (sky vs. mirrored floor),
    // so raw pixels/s would rise and fall with the region being rendered rather than with capacity.
    let samples: Vec<(f64, f64)> = r
        .progress
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
    notes(out, p, grid, backend, r, identical, seq_s, cores);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn notes(
    out: &mut ExperimentOutput,
    p: &RaytraceParams,
    grid: TileGrid,
    backend: Backend,
    r: &RunRecord,
    identical: bool,
    seq_s: f64,
    cores: f64,
) {
    let n = &mut out.notes;
    n.push(format!(
        "{}x{} image, 2x2 supersampling, {}-pixel tiles = {} virtual IDs; {} machines at start, {} leave at {:.0}% done, {} join at {:.0}% done.",
        p.width, p.height, p.tile, grid.count(), p.initial, p.leaving, p.leave_at * 100.0, p.joining, p.join_at * 100.0
    ));
    n.push("steals: requests idle machines sent to the owner of a random tile ID; steal_wait_ms: mean time from a request to its answer (half the owner's unrendered tiles, or a refusal); owners answer whenever they serve frames (every POLL_EVERY of rendering, and while resting), not only between tiles; steals_unanswered: no answer within the steal wait (or the run ended).".into());
    n.push(format!("rebalance_s: per change, leave = request to departure (IDs and data handed off, every member acknowledged), join = start to owning its first IDs: {:?}", r.rebalance));
    n.push(if identical {
        "Final image is bit-identical to a sequential render of the same scene.".into()
    } else {
        "FINAL IMAGE DIFFERS from the sequential render.".into()
    });
    match backend {
        Backend::Sim => {
            n.push(format!("{} LAN; {CYCLES_PER_TEST} cycles per intersection test (estimate, see source); 1 GHz CPUs (simulator default).", p.transport));
            n.push("efficiency_vs_ideal = rendering cycles done / integral of the present machines' clock rates from start to the last tile; a leaving machine stops counting when its leave is requested, a joining one counts from when it is started.".into());
        }
        Backend::Real(RealRun::InProcess) => n.push(format!("Real mode, in-process: the machines are tasks of one process on {cores} worker threads sharing this computer's cores over loopback TCP, so the ideal at time t is min(present machines, {cores}) x one machine's speed, measured by sequential reference renders before and after the run (mean {seq_s:.3} s for the image). Other load on the computer lowers the measured efficiency.")),
        Backend::Real(RealRun::Processes) => {
            let share_text = match p.cpu_share {
                Some(f) => format!("{f:.3} of a core"),
                None => "a whole core".into(),
            };
            n.push(format!("Real mode: one phoenix-raytracer OS process per machine (single-threaded runtime each) over loopback TCP; joining = starting a process, leaving = the process hands off its tiles and exits. Each machine may use {share_text} (it rests, serving frames, whenever its thread's CPU time runs ahead of that share of the wall time). The ideal at time t is min(present processes x share, {cores} cores) x one core's speed, where the speed is measured in the run: work / CPU seconds of rendering, over every 8th tile of each machine (the process reads its thread CPU clock around the tile, less the protocol work served in between). So efficiency_vs_ideal = rendering CPU time (all work at that speed) / the CPU time the present machines were allowed: everything else the machines and the driver did, idle cores, start-ups, hand-offs and the tail count as loss, while this shared computer's speed drifts cancel out. A process counts from the moment it is started (its start-up included) until its leave is requested. Timestamps are wall-clock (SystemTime) lines from the processes."));
            n.push(format!("efficiency_vs_reference: the same work against the speed of sequential reference renders, one per core at once, just before and just after the run (mean {seq_s:.3} s; reference_s_before/after): a check on the in-run speed (speed_in_run_over_reference), noisier because this computer's speed drifts by several per cent from one second to the next. machines_cpu_s / driver_cpu_s: CPU of the machine processes and of this driver during the run (/proc ticks, 10 ms); render_cpu_s: the machines' rendering CPU (all work at the in-run speed); machines_thread_cpu_s: the machine threads' own CPU clocks at exit, so machines_thread_cpu_s - render_cpu_s is what everything but rendering cost them."));
            n.push("Reading the plot: work is counted in intersection tests (the simulator's cost model), but on this computer the CPU time per test drifts by about 5 % from one second to the next and tiles with few tests cost more per test (fixed per-pixel work), so the measured curve wanders a few per cent above and below the ideal from phase to phase even though each machine's render CPU stays flat at its share (measured per machine from the sampled tiles). efficiency_vs_ideal uses the run's average speed, so the wander cancels out over the run.".into());
            n.push(format!("rebalance as measured inside the machines (leave request seen to departure; runtime start to owning IDs): {:?}", r.rebalance_self));
            n.push(format!("protocol counters over all processes: {:?}", r.counters));
            n.push("Why these defaults (measured while choosing them, on a 2-core VM, machines on whole cores, so the ideal was flat at 2 cores): efficiency_vs_ideal 0.84-0.89 at 800x600 (a 0.3 s run), 0.91-0.98 at 1600x1200 (1 s), 0.96-0.97 at 3200x2400 (4-5 s); with shares of 0.2 core at 3200x2400, 0.93-0.95 while owners answered steal requests between tiles only, 0.948-0.970 once they answered at every serve and while resting. The machines lose about 5.5 % of their CPU to the OS on that nested VM.".into());
        }
    }
    if backend != Backend::Sim {
        n.push("others_cores: cores other programs kept busy on average during the run (/proc/stat busy time minus this process's and its children's CPU time); efficiency_vs_available: the same work against min(present processes, cores - others_cores) x one process's speed per CPU second (in the run where measured, else of the reference renders). It corrects for other programs on a shared computer; efficiency_vs_ideal is the uncorrected figure.".into());
    }
}

/// The first three fields of `/proc/loadavg` (Linux), if readable.
fn loadavg() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// How many machines can compute at once in real mode: `gridbed_real::run_local` runs every host on
/// its tokio runtime's worker threads; processes are limited by this computer's cores only.
fn real_cores(backend: Backend) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match backend {
        Backend::Real(RealRun::InProcess) => cores.min(gridbed_real::WORKER_THREADS) as f64,
        _ => cores as f64,
    }
}
