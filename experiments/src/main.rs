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
    },
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

fn run_cmd(name: &str, mode: ModeArg, seed: u64, out: PathBuf) -> anyhow::Result<()> {
    let selected = if name == "all" {
        registry::all()
    } else {
        vec![registry::find(name)?]
    };
    check_writable(&out)?;
    for exp in selected {
        let modes: Vec<Mode> = match mode {
            ModeArg::Sim => vec![Mode::Sim],
            ModeArg::Real => vec![Mode::Real],
            ModeArg::Both => exp.modes.to_vec(),
        };
        for m in modes {
            if !exp.modes.contains(&m) {
                anyhow::bail!("experiment '{}' has no {m} mode", exp.name);
            }
            let bar =
                indicatif::ProgressBar::new_spinner().with_message(format!("{} ({m})", exp.name));
            bar.enable_steady_tick(Duration::from_millis(120));
            let t0 = Instant::now();
            let result = (exp.run)(m, seed)
                .with_context(|| format!("experiment '{}' ({m}) failed", exp.name));
            bar.finish_and_clear();
            let output = result?;
            let dir = report::write(&out, &exp, m, seed, output)?;
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
        } => run_cmd(&name, mode, seed, out.unwrap_or_else(default_out)),
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
