//! `experiment`: list, run and replay gridbed experiments.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use gridbed_experiments::runner::{self, ModeChoice, RunOptions};
use gridbed_experiments::{browser, registry, replay, sweep};

#[derive(Parser)]
#[command(name = "experiment", about = "Reproduce the gridbed source documents' measurements.", after_help = experiments_help())]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Deterministic simulator (reproducible from --seed).
    Sim,
    /// Real sockets / real execution on this machine.
    Real,
    /// Sim, then real for experiments that have a real mode.
    Both,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the experiments, one line each.
    List,
    /// Run one experiment, or `all`, and write results, figures and the index pages.
    Run {
        /// Experiment name (see `experiment list`) or `all`.
        name: String,
        #[arg(long, value_enum, default_value = "sim")]
        mode: ModeArg,
        /// Seed of the simulated runs: same seed, same trace.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory (default: the repository's reports/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Set a parameter, `key=value` (repeatable; see `experiment describe NAME`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Run on this simulator platform file (TOML, see experiments/platforms/).
        #[arg(long, value_name = "FILE.toml")]
        platform: Option<PathBuf>,
        /// Runs per real-mode experiment, summarised as min / median / max (default 3).
        #[arg(long)]
        repeat: Option<u32>,
        /// Print the results as JSON on stdout (progress and summaries go to stderr).
        #[arg(long)]
        json: bool,
        /// Real mode on the hosts of this file, launched through GXP over ssh (format: README,
        /// "Real machines"); without it real mode runs on this machine's processes.
        #[arg(long, value_name = "FILE")]
        hosts: Option<PathBuf>,
    },
    /// Load a report's index.html in headless Chromium: fail on a missing image, a broken link or
    /// a JavaScript error; optionally write a full-page screenshot.
    CheckReport {
        /// Report directory (default: the repository's reports/).
        dir: Option<PathBuf>,
        /// Write a full-page PNG here.
        #[arg(long)]
        screenshot: Option<PathBuf>,
    },
    /// List an experiment's parameters: name, default, unit and where the default comes from.
    Describe { name: String },
    /// Re-run a recorded simulated run (its run.json) and say "identical" or where it diverges.
    Replay { runfile: PathBuf },
    /// Run a simulated experiment over many seeds, `--jobs` at a time (each seed in its own
    /// process), and merge the results: metric distributions, every seed's trace digest, and the
    /// command that reproduces each failing seed. Exit status 1 if any seed failed. Running the
    /// same sweep again resumes it from its journal.
    Sweep {
        /// Experiment name (see `experiment list`).
        name: String,
        /// Seeds: `A..B` (both included) or one seed `N`.
        #[arg(long)]
        seeds: String,
        /// Seeds run at once (default: the machine's cores).
        #[arg(long, conflicts_with_all = ["local_hosts", "hosts"])]
        jobs: Option<usize>,
        /// Spread the seeds over this many local GXP hosts with GXP's task farm (one seed per
        /// host at a time; a seed whose host dies runs again elsewhere). Needs the `gxp`
        /// program beside `experiment` (or `GRIDBED_GXP`).
        #[arg(long, conflicts_with = "hosts")]
        local_hosts: Option<usize>,
        /// Spread the seeds over the hosts of this file with GXP's task farm, logging in over
        /// ssh and installing this program on each (format: README, "Real machines").
        #[arg(long, value_name = "FILE")]
        hosts: Option<PathBuf>,
        /// Output directory: journal, sweep.json, README.md, histograms (default: sweeps/NAME).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Set a parameter, `key=value` (repeatable; see `experiment describe NAME`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Run on this simulator platform file (TOML, see experiments/platforms/).
        #[arg(long, value_name = "FILE.toml")]
        platform: Option<PathBuf>,
        /// Run the experiment's reduced-size variant (the one the test suite uses).
        #[arg(long)]
        quick: bool,
        /// Also count a seed as failing when a metric misses its paper value or target.
        #[arg(long)]
        fail_on_target: bool,
        /// Longest one seed may run, seconds; it is then killed and counted as failing.
        #[arg(long, default_value_t = 3600.0)]
        timeout_s: f64,
    },
    /// Internal: one seed of a sweep (parameter values as JSON on stdin, record on stdout).
    #[command(name = "__sweep-one", hide = true)]
    SweepOne {
        name: String,
        seed: u64,
        #[arg(long)]
        quick: bool,
    },
    /// Internal: the sink process of real-mode block transfers.
    #[command(name = "__sink", hide = true)]
    Sink { kind: String, addr: String },
    /// Internal: a worker on a cluster host (started by the launcher through GXP).
    #[command(name = "__worker", hide = true)]
    Worker,
    /// Internal: the GXP daemon on a cluster host (this program is what GXP installs there).
    #[command(name = "daemon", hide = true)]
    Daemon {
        #[arg(long)]
        index: u32,
        #[arg(long)]
        sha: String,
    },
}

fn experiments_help() -> String {
    let mut s = String::from(
        "Example:\n  experiment run migration-bandwidth --seed 7 --out /tmp/r   (Figure 3 in simulation; open /tmp/r/index.html)\n  experiment replay /tmp/r/migration-bandwidth/run.json    (same seed, same trace: prints \"identical\")\n\nExperiments:\n",
    );
    for e in registry::all() {
        s.push_str(&format!(
            "  {:22} {}\n  {:22} Reproduces {}.\n",
            e.name, e.about, "", e.reproduces
        ));
    }
    s
}

fn default_out() -> PathBuf {
    // The committed report lives in the repository; fall back to ./reports for an installed binary.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("reports");
    if let Ok(repo) = repo.canonicalize() {
        repo
    } else {
        PathBuf::from("reports")
    }
}

/// What `--set` and `--platform` ask for, as `key=value` settings.
fn settings(sets: &[String], platform: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let mut all = sets.to_vec();
    if let Some(file) = platform {
        // The run records the file's text, not its path, so a replay runs the same platform even
        // after the file changed. Checked here so a bad file fails before anything runs.
        let text = read_platform(file)?;
        gridbed_sim::Platform::from_toml(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        all.push(format!("platform={text}"));
        all.push(format!("platform_file={}", file.display()));
    }
    Ok(all)
}

/// Largest platform file accepted (a 100 000-host platform with per-host overrides is far less).
const MAX_PLATFORM_BYTES: u64 = 8 << 20;

fn read_platform(file: &Path) -> anyhow::Result<String> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_PLATFORM_BYTES,
        "{}: larger than {MAX_PLATFORM_BYTES} bytes",
        file.display()
    );
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

fn check_report(dir: PathBuf, screenshot: Option<PathBuf>) -> anyhow::Result<()> {
    let page = dir.join("index.html");
    let check = browser::check_page(&page)?;
    let problems = check.problems();
    anyhow::ensure!(
        problems.is_empty(),
        "{}: {}",
        page.display(),
        problems.join("; ")
    );
    println!(
        "{}: {} images loaded, no broken link, no JavaScript error",
        page.display(),
        check.images
    );
    if let Some(png) = screenshot {
        let h = browser::screenshot(&page, &png, 1200)?;
        println!("screenshot: {} (1200 x {h})", png.display());
    }
    Ok(())
}

/// `experiment describe NAME`.
fn describe(name: &str) -> anyhow::Result<()> {
    let exp = registry::find(name)?;
    println!("{}: {}", exp.name, exp.about);
    let Some(def) = exp.params else {
        println!("  (no settable parameters)");
        return Ok(());
    };
    for mode in exp.modes {
        let records = def.records(*mode, &(def.defaults)(*mode));
        println!("parameters ({mode} mode): name = default [unit] (source)");
        for r in records {
            println!("  {} = {} [{}] ({})", r.name, r.default, r.unit, r.source);
        }
        if exp
            .modes
            .iter()
            .all(|m| (def.defaults)(*m) == (def.defaults)(*mode))
        {
            break; // the same defaults in every mode: listed once
        }
    }
    Ok(())
}

/// Checks a sweep's arguments before anything runs.
#[allow(clippy::too_many_arguments)]
fn sweep_options(
    name: &str,
    seeds: &str,
    jobs: Option<usize>,
    local_hosts: Option<usize>,
    hosts: Option<&Path>,
    out: Option<PathBuf>,
    set: &[String],
    platform: Option<&Path>,
    quick: bool,
    fail_on_target: bool,
    timeout_s: f64,
) -> anyhow::Result<sweep::SweepOptions> {
    let seeds = sweep::seeds::parse(seeds)?;
    anyhow::ensure!(
        timeout_s.is_finite() && timeout_s > 0.0 && timeout_s <= 7.0 * 86400.0,
        "--timeout-s must be above 0 and at most a week, got {timeout_s}"
    );
    let spread = match (hosts, local_hosts) {
        (Some(f), _) => {
            let file = gridbed_experiments::cluster::load_hosts(f)?;
            sweep::Spread::Cluster(f.to_path_buf(), Box::new(file))
        }
        (None, Some(n)) => {
            anyhow::ensure!(
                (1..=64).contains(&n),
                "--local-hosts must be 1 to 64, got {n}"
            );
            sweep::Spread::LocalGxp(n)
        }
        (None, None) => {
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            anyhow::ensure!(
                (1..=1024).contains(&jobs),
                "--jobs must be 1 to 1024, got {jobs}"
            );
            sweep::Spread::Processes(jobs)
        }
    };
    let sets = settings(set, platform)?;
    let mut plan = runner::plan(name, ModeChoice::Sim, &sets)?;
    let step = plan.pop().context("no experiment selected")?;
    anyhow::ensure!(plan.is_empty(), "a sweep runs one experiment, not '{name}'");
    anyhow::ensure!(
        !(quick && step.values.is_some()),
        "--quick runs the experiment's reduced-size variant, which takes no --set or --platform"
    );
    Ok(sweep::SweepOptions {
        out: out.unwrap_or_else(|| PathBuf::from("sweeps").join(step.exp.name)),
        exp: step.exp,
        seeds,
        spread,
        sets,
        values: step.values,
        quick,
        fail_on_target,
        timeout: std::time::Duration::from_secs_f64(timeout_s),
        exe: std::env::current_exe().context("cannot find this program's executable")?,
    })
}

/// A bad setting or platform file: one line, exit status 2 (as for bad arguments).
fn bad_input(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
    ExitCode::from(2)
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal failure: {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("invalid arguments"));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let result = match cli.cmd {
        Cmd::List => {
            for e in registry::all() {
                let modes: Vec<String> = e.modes.iter().map(|m| m.to_string()).collect();
                println!("{:22} [{}] {}", e.name, modes.join(","), e.about);
            }
            Ok(())
        }
        Cmd::Run {
            name,
            mode,
            seed,
            out,
            set,
            platform,
            repeat,
            json,
            hosts,
        } => {
            let modes = match mode {
                ModeArg::Sim => ModeChoice::Sim,
                ModeArg::Real => ModeChoice::Real,
                ModeArg::Both => ModeChoice::Both,
            };
            let planned = settings(&set, platform.as_deref()).and_then(|sets| {
                let hosts = match hosts {
                    Some(p) => Some((p.clone(), gridbed_experiments::cluster::load_hosts(&p)?)),
                    None => None,
                };
                let plan = runner::plan(&name, modes, &sets)?;
                if hosts.is_some() {
                    gridbed_experiments::cluster::check_plan(&plan)?;
                }
                Ok((plan, sets, hosts))
            });
            match planned {
                Ok((plan, sets, hosts)) => runner::run(&RunOptions {
                    plan,
                    args: sets.iter().map(|s| format!("--set {s}")).collect(),
                    seed,
                    out: out.unwrap_or_else(default_out),
                    repeat,
                    json,
                    hosts,
                })
                .map(|_| ()),
                Err(e) => return bad_input(e),
            }
        }
        Cmd::Describe { name } => describe(&name),
        Cmd::CheckReport { dir, screenshot } => {
            check_report(dir.unwrap_or_else(default_out), screenshot)
        }
        Cmd::Replay { runfile } => {
            replay::load(&runfile).and_then(|run| match replay::replay(&run)? {
                replay::Replay::Identical { events, digest } => {
                    println!("identical: {events} events, digest {digest}");
                    Ok(())
                }
                replay::Replay::Diverged {
                    index,
                    recorded,
                    replayed,
                } => Err(anyhow::anyhow!(
                    "diverged at event #{index}: recorded `{}`, replayed `{}`",
                    recorded.as_deref().unwrap_or("<none>"),
                    replayed.as_deref().unwrap_or("<none>")
                )),
            })
        }
        Cmd::Worker => {
            let code = gridbed_experiments::cluster::worker_main();
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        Cmd::Daemon { index, sha } => daemon(index, &sha),
        Cmd::Sweep {
            name,
            seeds,
            jobs,
            local_hosts,
            hosts,
            out,
            set,
            platform,
            quick,
            fail_on_target,
            timeout_s,
        } => {
            let opts = sweep_options(
                &name,
                &seeds,
                jobs,
                local_hosts,
                hosts.as_deref(),
                out,
                &set,
                platform.as_deref(),
                quick,
                fail_on_target,
                timeout_s,
            );
            match opts {
                Ok(o) => match sweep::run(&o) {
                    Ok(s) if s.failed.is_empty() => Ok(()),
                    Ok(s) => {
                        eprintln!("error: {} of {} seeds failed", s.failed.len(), s.seeds);
                        return ExitCode::FAILURE;
                    }
                    Err(e) => Err(e),
                },
                Err(e) => return bad_input(e),
            }
        }
        Cmd::SweepOne { name, seed, quick } => {
            registry::find(&name).and_then(|e| sweep::run_one_from_stdin(&e, seed, quick))
        }
        Cmd::Sink { kind, addr } => {
            gridbed_migration_driver::blocks::run_sink(&kind, &addr).map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line per problem: a cluster run lists every host that failed.
            let text = format!("{e:#}");
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                eprintln!("error: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `experiment daemon --index N --sha SHA`: this program as GXP's daemon on a cluster host
/// (started by the login's bootstrap, which installed it checksum-verified).
fn daemon(index: u32, sha: &str) -> anyhow::Result<()> {
    gridbed_cluster_driver::run_daemon(index, sha)
}
