//! `vmp`: run a guest program on one virtual processor and show its console and trap statistics.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use gridbed_vmp::guest::{elf, programs, UserProgram};
use gridbed_vmp::run::{run_programs, RunOptions, RunReport, DEFAULT_BUDGET, DEFAULT_TIMER_HZ};
use gridbed_vmp::time::Preset;
use gridbed_vmp::Config;

#[derive(Parser)]
#[command(
    name = "vmp",
    about = "Virtual Multiprocessor, one processor: trap-and-emulate IA-32 guests",
    after_help = "Example:\n  vmp builtin getpid --n 1000            the slides' benchmark: 1000 getpid() under the monitor; prints the console, traps by kind and the times\n  vmp builtin getpid --n 1000 --config native   the same guest without the trap-and-emulate monitor, for comparison"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, ValueEnum)]
enum Builtin {
    /// getpid() N times (the slides' benchmark)
    Getpid,
    /// recursive fib(N), two processes in parallel (the slides' second benchmark, on one CPU)
    Fib,
    /// three processes printing and yielding N times (round-robin scheduling)
    Chatter,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a static ELF32 i386 executable (Linux int 0x80 ABI: exit, write, getpid, brk, yield).
    Run {
        file: PathBuf,
        #[command(flatten)]
        opts: Opts,
    },
    /// Run a built-in guest program.
    Builtin {
        #[arg(value_enum)]
        which: Builtin,
        /// Iterations (getpid calls, fib argument, chatter rounds).
        #[arg(long, default_value_t = 1000)]
        n: u32,
        #[command(flatten)]
        opts: Opts,
    },
    /// Run a litmus test (herd x86 syntax): outcome histogram and the x86-TSO oracle's verdict;
    /// exits 1 if the machine produced an outcome x86-TSO forbids.
    Litmus {
        file: PathBuf,
        /// Runs (one seed each) on the chosen machine.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        #[arg(long, value_enum, default_value = "interleave")]
        machine: gridbed_vmp::litmus::cli::MachineKind,
    },
}

#[derive(clap::Args)]
struct Opts {
    #[arg(long, value_enum, default_value = "vmp")]
    config: Config,
    /// Guest timer frequency in Hz (0 disables the timer).
    #[arg(long, default_value_t = DEFAULT_TIMER_HZ)]
    timer_hz: u32,
    /// Instruction budget; a guest exceeding it is stopped as a runaway.
    #[arg(long, default_value_t = DEFAULT_BUDGET)]
    budget: u64,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmp: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let (progs, opts): (Vec<UserProgram>, Opts) = match cli.cmd {
        Cmd::Litmus {
            file,
            seeds,
            machine,
        } => {
            let src = gridbed_vmp::litmus::cli::read_source(&file)?;
            let r = gridbed_vmp::litmus::cli::run(&src, seeds, machine)
                .with_context(|| file.display().to_string())?;
            print!("{}", r.text);
            return Ok(ExitCode::from(u8::from(r.forbidden_seen)));
        }
        Cmd::Run { file, opts } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            (vec![elf::load(&file.display().to_string(), &bytes)?], opts)
        }
        Cmd::Builtin { which, n, opts } => {
            let p = match which {
                Builtin::Getpid => vec![programs::getpid_loop(0, n)?],
                Builtin::Fib => vec![programs::fib(0, n)?, programs::fib(1, n)?],
                Builtin::Chatter => (0..3)
                    .map(|i| programs::chatter(i, b'A' + i as u8, n))
                    .collect::<Result<_, _>>()?,
            };
            (p, opts)
        }
    };
    let mut ro = RunOptions::new(opts.config, Preset::PC_2005.cpu);
    ro.timer_hz = opts.timer_hz;
    ro.budget = opts.budget;
    let r = run_programs(&progs, ro)?;
    print_report(&r);
    Ok(ExitCode::from((r.exit_status & 0xff) as u8))
}

fn print_report(r: &RunReport) {
    print!("{}", r.console);
    eprintln!(
        "--- {:?}: exit status {}, {} guest instructions, {:.3} ms wall, {:.3} ms CPU",
        r.config,
        r.exit_status,
        r.retired,
        r.wall_s * 1e3,
        r.cpu_s * 1e3
    );
    eprintln!(
        "traps: {} total ({} guest words touched, {} instruction words read, {} privilege switches, {} IDT deliveries)",
        r.stats.total(),
        r.stats.mem_words,
        r.stats.insn_words,
        r.stats.cpl_switches,
        r.stats.deliveries
    );
    for (k, v) in &r.stats.by_kind {
        eprintln!("  {:<12} {v}", k.name());
    }
    for (p, v) in &r.stats.by_path {
        eprintln!("  via {:<8} {v}", format!("{p:?}").to_lowercase());
    }
}
