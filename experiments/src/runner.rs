//! `experiment run`: runs the selected experiments in their modes, repeats real-mode runs, shows
//! progress (a live line on a terminal, plain lines otherwise) and writes the report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::outcome::{ExperimentOutput, Mode};
use anyhow::Context;

use crate::catalogue::Verdict;
use crate::registry::{self, Experiment};
use crate::report::{self, ResultFile, RunExtra};

/// Which modes to run.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ModeChoice {
    Sim,
    Real,
    /// Every mode the experiment has.
    Both,
}

pub struct RunOptions {
    /// What to run, checked beforehand by [`plan`].
    pub plan: Plan,
    /// Command-line arguments that reproduce the parameters (`--set key=value`), for the rerun
    /// command each section shows.
    pub args: Vec<String>,
    pub seed: u64,
    pub out: PathBuf,
    /// Runs per real-mode experiment (None: [`DEFAULT_REAL_REPEATS`]); sim runs once.
    pub repeat: Option<u32>,
    /// Print the results as JSON on stdout (progress and summaries go to stderr).
    pub json: bool,
    /// Real mode on the hosts of this file (its path, as given, and its contents); None: on
    /// this machine's processes.
    pub hosts: Option<(PathBuf, gridbed_cluster_driver::HostsFile)>,
}

/// Real-mode runs per experiment unless `--repeat` says otherwise: enough for a min / median / max.
pub const DEFAULT_REAL_REPEATS: u32 = 3;

fn check_writable(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("output directory {} cannot be created", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"")
        .with_context(|| format!("output directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Progress of the whole run: a spinner line on a terminal, plain lines on stderr otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar, total }
    }

    fn phase(&self, i: usize, exp: &str, mode: Mode, phase: &str) {
        let line = format!("[{i}/{}] {exp} ({mode}): {phase}", self.total);
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => eprintln!("{line}"),
        }
    }

    /// A finished step's lines, printed above the live line.
    fn println(&self, text: &str, json: bool) {
        match (&self.bar, json) {
            (Some(bar), _) => bar.suspend(|| print_lines(text, json)),
            (None, _) => print_lines(text, json),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn print_lines(text: &str, json: bool) {
    if json {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
}

/// The modes of one experiment under the choice.
fn modes_of(exp: &Experiment, choice: ModeChoice) -> anyhow::Result<Vec<Mode>> {
    let modes = match choice {
        ModeChoice::Sim => vec![Mode::Sim],
        ModeChoice::Real => vec![Mode::Real],
        ModeChoice::Both => exp.modes.to_vec(),
    };
    for m in &modes {
        anyhow::ensure!(
            exp.modes.contains(m),
            "experiment '{}' has no {m} mode",
            exp.name
        );
    }
    Ok(modes)
}

/// One step of a plan: an experiment, a mode, and its parameter values in that mode (None: the
/// experiment's own defaults).
pub struct Step {
    pub exp: Experiment,
    pub mode: Mode,
    pub values: Option<serde_json::Value>,
}

/// Every step of a run, in order.
pub type Plan = Vec<Step>;

/// The parameter values of one experiment in one mode: its defaults with `sets` applied
/// (None: nothing set).
fn values(
    exp: &Experiment,
    mode: Mode,
    sets: &[String],
) -> anyhow::Result<Option<serde_json::Value>> {
    if sets.is_empty() {
        return Ok(None);
    }
    let def = exp
        .params
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("experiment '{}' has no settable parameters", exp.name))?;
    if sets.iter().any(|s| s.starts_with("platform=")) && !def.names().contains(&"platform") {
        anyhow::bail!("experiment '{}' takes no platform file", exp.name);
    }
    def.apply(mode, sets).map(Some)
}

/// Checks the whole request (names, modes, every setting) before anything runs.
pub fn plan(name: &str, choice: ModeChoice, sets: &[String]) -> anyhow::Result<Plan> {
    let selected = if name == "all" {
        anyhow::ensure!(
            sets.is_empty(),
            "--set and --platform apply to one experiment, not to 'all'"
        );
        registry::all()
    } else {
        vec![registry::find(name)?]
    };
    let mut plan = Vec::new();
    for exp in selected {
        for mode in modes_of(&exp, choice)? {
            let values = values(&exp, mode, sets)?;
            plan.push(Step {
                exp: exp.clone(),
                mode,
                values,
            });
        }
    }
    Ok(plan)
}

/// Runs the selection; returns the result files written.
pub fn run(opts: &RunOptions) -> anyhow::Result<Vec<ResultFile>> {
    if opts.repeat.is_some_and(|n| n > 1) && opts.plan.iter().all(|s| s.mode == Mode::Sim) {
        anyhow::bail!(
            "--repeat applies to real mode only: a simulated run is a function of its seed"
        );
    }
    anyhow::ensure!(opts.repeat != Some(0), "--repeat must be at least 1");
    check_writable(&opts.out)?;
    // The cluster is launched once, for every real step and repeat, and stopped when the
    // runner returns (drop), also on error.
    let mut cluster = match &opts.hosts {
        Some(_) if opts.plan.iter().all(|s| s.mode == Mode::Sim) => {
            anyhow::bail!("--hosts applies to real mode only (--mode real or both)")
        }
        Some((path, file)) => {
            eprintln!(
                "cluster: logging into {} hosts of {}",
                file.hosts.len(),
                path.display()
            );
            let c = crate::cluster::launch(file).map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!("cluster: {} hosts up", c.names.len());
            Some(c)
        }
        None => None,
    };
    let progress = Progress::new(opts.plan.len());
    let mut written = Vec::new();
    for (i, st) in opts.plan.iter().enumerate() {
        let (exp, m) = (&st.exp, st.mode);
        let step = i + 1;
        let n = match m {
            Mode::Sim => 1,
            Mode::Real => opts.repeat.unwrap_or(DEFAULT_REAL_REPEATS),
        };
        let t0 = Instant::now();
        let mut args = opts.args.clone();
        if let (Mode::Real, Some((path, _))) = (m, &opts.hosts) {
            args.push(format!("--hosts {}", path.display()));
        }
        let mut extra = RunExtra {
            args,
            ..RunExtra::default()
        };
        let mut last: Option<ExperimentOutput> = None;
        for k in 1..=n {
            let phase = if n > 1 {
                format!("run {k} of {n}")
            } else {
                "running".into()
            };
            progress.phase(step, exp.name, m, &phase);
            let out = match (m, cluster.as_mut()) {
                (Mode::Real, Some(c)) => {
                    crate::cluster::run_step(c, exp, opts.seed, st.values.as_ref()).map(
                        |(o, params, placement)| {
                            extra.placement = Some(placement);
                            (o, params)
                        },
                    )
                }
                _ => exp.run_values(m, opts.seed, st.values.as_ref()),
            }
            .with_context(|| format!("experiment '{}' ({m}) failed", exp.name));
            let out = match out {
                Ok((o, params)) => {
                    extra.params = params;
                    o
                }
                Err(e) => {
                    // Runs already done are kept, marked partial, then the failure is reported.
                    if let Some(mut done) = last.take() {
                        done.notes.insert(
                            0,
                            format!(
                                "PARTIAL: {} of {n} runs completed; run {k} failed: {}",
                                k - 1,
                                format!("{e:#}").replace('\n', "; ")
                            ),
                        );
                        if let Ok(dir) =
                            report::write_with(&opts.out, exp, m, opts.seed, done, &extra)
                        {
                            eprintln!("partial result kept: {}", dir.display());
                        }
                    }
                    progress.finish();
                    return Err(e);
                }
            };
            // An experiment that repeats itself (and says so) is not repeated again.
            let own = report::own_repeats(&out.metrics).is_some();
            if n > 1 && !own {
                extra.repeats.push(out.metrics.clone());
            }
            last = Some(out);
            if own {
                break;
            }
        }
        let Some(out) = last else { continue };
        progress.phase(step, exp.name, m, "rendering figures, writing the report");
        let dir = report::write_with(&opts.out, exp, m, opts.seed, out, &extra)?;
        let r: ResultFile =
            serde_json::from_str(&std::fs::read_to_string(dir.join("result.json"))?)
                .context("reading back result.json")?;
        let text = summary_lines(&r, step, progress.total, t0.elapsed(), &dir);
        progress.println(&text, opts.json);
        written.push(r);
    }
    progress.finish();
    let index = format!("index: {}\n", opts.out.join("index.html").display());
    print_lines(&index, opts.json);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&written)?);
    }
    Ok(written)
}

/// What a finished step prints: where it went, each metric with its unit and verdict.
fn summary_lines(r: &ResultFile, step: usize, total: usize, took: Duration, dir: &Path) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "[{step}/{total}] {} ({}) in {:.1} s -> {}\n",
        r.experiment,
        r.mode,
        took.as_secs_f64(),
        dir.display()
    );
    for (k, &v) in &r.metrics {
        let unit = r.units.get(k).map(String::as_str).unwrap_or("");
        let value = crate::page::fmt_value(v, unit);
        let shown_unit = if matches!(unit, "count" | "bool" | "fraction") {
            ""
        } else {
            unit
        };
        let verdict = crate::page::metric_verdict(r, k, v);
        let paper = r
            .paper
            .get(k)
            .map(|p| format!("  paper {}", crate::page::fmt_value(*p, unit)))
            .unwrap_or_default();
        let label = match verdict {
            Verdict::NoVerdict => String::new(),
            v => format!("  {}", v.label()),
        };
        let _ = writeln!(s, "  {k:36} {value:>12} {shown_unit:<8}{paper}{label}");
    }
    if let Some(d) = &r.trace_digest {
        let _ = writeln!(s, "  trace digest {d}");
    }
    s
}
