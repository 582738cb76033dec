//! `experiment`: list, run and replay gridbed experiments.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use gridbed_experiments::{registry, replay, report};
use gridbed_runtime::outcome::Mode;

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
    },
    /// List an experiment's parameters: name, default, unit and where the default comes from.
    Describe { name: String },
    /// Re-run a recorded simulated run (its run.json) and say "identical" or where it diverges.
    Replay { runfile: PathBuf },
    /// Internal: the sink process of real-mode block transfers.
    #[command(name = "__sink", hide = true)]
    Sink { kind: String, addr: String },
}

fn experiments_help() -> String {
    let mut s = String::from("Experiments:\n");
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

fn check_writable(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("output directory {} cannot be created", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"")
        .with_context(|| format!("output directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// What `--set` and `--platform` ask for, as `key=value` settings.
fn settings(sets: &[String], platform: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let mut all = sets.to_vec();
    if let Some(file) = platform {
        // Checked here so a bad file fails before anything runs, in one line.
        gridbed_sim::Platform::from_toml_file(file)?;
        all.push(format!("platform={}", file.display()));
    }
    Ok(all)
}

/// The parameter values of one experiment in one mode: its defaults with `sets` applied
/// (None: nothing set, the experiment's own defaults).
fn values(
    exp: &registry::Experiment,
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

/// Experiments to run, each with its modes and parameter values per mode.
type Plan = Vec<(
    registry::Experiment,
    Vec<Mode>,
    Vec<Option<serde_json::Value>>,
)>;

/// Checks the whole request (names, modes, every setting) before anything runs.
fn plan(name: &str, mode: ModeArg, sets: &[String]) -> anyhow::Result<Plan> {
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
        let modes: Vec<Mode> = match mode {
            ModeArg::Sim => vec![Mode::Sim],
            ModeArg::Real => vec![Mode::Real],
            ModeArg::Both => exp.modes.to_vec(),
        };
        for &m in &modes {
            if !exp.modes.contains(&m) {
                anyhow::bail!("experiment '{}' has no {m} mode", exp.name);
            }
        }
        let vals = modes
            .iter()
            .map(|&m| values(&exp, m, sets))
            .collect::<anyhow::Result<Vec<_>>>()?;
        plan.push((exp, modes, vals));
    }
    Ok(plan)
}

fn run_cmd(plan: Plan, seed: u64, out: PathBuf) -> anyhow::Result<()> {
    check_writable(&out)?;
    for (exp, modes, vals) in plan {
        for (m, v) in modes.into_iter().zip(vals) {
            let bar =
                indicatif::ProgressBar::new_spinner().with_message(format!("{} ({m})", exp.name));
            bar.enable_steady_tick(Duration::from_millis(120));
            let t0 = Instant::now();
            let result = exp
                .run_values(m, seed, v.as_ref())
                .with_context(|| format!("experiment '{}' ({m}) failed", exp.name));
            bar.finish_and_clear();
            let (output, params) = result?;
            let dir = report::write(&out, &exp, m, seed, output, params)?;
            let r: report::ResultFile =
                serde_json::from_str(&std::fs::read_to_string(dir.join("result.json"))?)?;
            println!(
                "{} ({m}) in {:.1}s -> {}",
                exp.name,
                t0.elapsed().as_secs_f64(),
                dir.display()
            );
            for (k, v) in &r.metrics {
                match report::verdict(&r, k) {
                    Some((p, ratio, ok)) => println!(
                        "  {k:32} {v:>14.6}  paper {p:<10} ratio {ratio:.3} {}",
                        if ok { "ok" } else { "OUT OF TOLERANCE" }
                    ),
                    None => println!("  {k:32} {v:>14.6}"),
                }
            }
            if let Some(d) = r.trace_digest {
                println!("  trace digest {d}");
            }
        }
    }
    println!("index: {}", out.join("index.html").display());
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
        } => match settings(&set, platform.as_deref()).and_then(|sets| plan(&name, mode, &sets)) {
            Ok(plan) => run_cmd(plan, seed, out.unwrap_or_else(default_out)),
            Err(e) => return bad_input(e),
        },
        Cmd::Describe { name } => describe(&name),
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
        Cmd::Sink { kind, addr } => {
            gridbed_migration_driver::blocks::run_sink(&kind, &addr).map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
