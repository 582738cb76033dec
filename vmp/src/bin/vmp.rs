//! `vmp`: run a guest program on one virtual processor and show its console and trap statistics.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use gridbed_vmp::checkpoint::precopy::{self, PrecopyOptions, SourceEnd};
use gridbed_vmp::checkpoint::{dir, tcp, ImageError, ImageSummary, RestoreLimits, WriteOptions};

/// A receiver gives up on a source silent this long (a stalled stream must not hang it).
const RECEIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
use gridbed_vmp::guest::{elf, programs, UserProgram};
use gridbed_vmp::layout::PAGE;
use gridbed_vmp::run::{
    boot_programs, run_machine, run_programs, RunOptions, RunReport, DEFAULT_BUDGET,
    DEFAULT_TIMER_HZ,
};
use gridbed_vmp::time::Preset;
use gridbed_vmp::Config;
use gridbed_vmp::Exit;

#[derive(Parser)]
#[command(
    name = "vmp",
    about = "Virtual Multiprocessor, one processor: trap-and-emulate IA-32 guests",
    after_help = "Example:\n  vmp smp --cpus 2 builtin:chatter:3@0 builtin:chatter:3@1   two processes on a 2-processor virtual SMP under the SMP guest kernel\n  vmp builtin getpid --n 1000            the slides' benchmark: 1000 getpid() under the monitor; prints the console, traps by kind and the times\n  vmp builtin getpid --n 1000 --config native   the same guest without the trap-and-emulate monitor, for comparison"
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
    /// fills --fill-mib of RAM, then N stores, one page after another over --hot-pages pages,
    /// --spin loop iterations after each; prints a checksum of its memory (for pre-copy)
    Dirty,
}

#[derive(Copy, Clone, ValueEnum, PartialEq)]
enum Strategy {
    /// freeze, send the whole image, resume at the destination (the paper's way)
    Stopcopy,
    /// send RAM while the guest runs, then the pages dirtied meanwhile, round after round;
    /// freeze only for the last ones
    Precopy,
}

#[derive(Copy, Clone, ValueEnum)]
enum SmpVariant {
    Naive,
    Optimised,
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
        /// Iterations (getpid calls, fib argument, chatter rounds, dirty stores).
        #[arg(long, default_value_t = 1000)]
        n: u32,
        /// dirty: MiB of RAM it fills (at most 244).
        #[arg(long, default_value_t = 244)]
        fill_mib: u32,
        /// dirty: pages of its working set (stored to in turn).
        #[arg(long, default_value_t = 4096)]
        hot_pages: u32,
        /// dirty: busy-loop iterations after each store (2 instructions each).
        #[arg(long, default_value_t = 50)]
        spin: u32,
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
    /// Run programs under the SMP guest kernel on a virtual multiprocessor (one simulated host
    /// per processor): each PROGRAM is `FILE@CPU` (a static ELF32 executable) or
    /// `builtin:NAME[:N]@CPU` (NAME: getpid, fib, chatter), placed on processor CPU. Prints the
    /// console and each processor's counts; exits with process 0's status.
    Smp {
        /// Virtual processors (1..=8).
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        #[arg(long, value_enum, default_value = "optimised")]
        variant: SmpVariant,
        /// Guest timer frequency in Hz on every processor (0 disables the timer).
        #[arg(long, default_value_t = DEFAULT_TIMER_HZ)]
        timer_hz: u32,
        /// Seed of the simulation.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Instruction budget per processor.
        #[arg(long, default_value_t = DEFAULT_BUDGET)]
        budget: u64,
        #[arg(required = true, value_name = "PROGRAM@CPU")]
        programs: Vec<String>,
    },
    /// Restore a checkpoint image written by `--checkpoint-at` and run it to the end.
    Restore {
        dir: PathBuf,
        /// Guest RAM the destination may back, in MiB (default: all of guest RAM).
        #[arg(long)]
        mem_limit_mib: Option<u32>,
    },
    /// Check a checkpoint image and show what it holds.
    Image { dir: PathBuf },
    /// Wait on `--listen ADDR` for one guest migrated with `--migrate-to`, then run it to the end.
    Receive {
        #[arg(long)]
        listen: String,
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
    /// Stop after (at least) N guest instructions, at an instruction boundary, and write a
    /// checkpoint image to `--image DIR`.
    #[arg(long, value_name = "N", requires = "image")]
    checkpoint_at: Option<u64>,
    /// Directory for the checkpoint image.
    #[arg(long, value_name = "DIR", requires = "checkpoint_at")]
    image: Option<PathBuf>,
    /// Store pages uncompressed (default: lz4 where it shrinks a page).
    #[arg(long)]
    no_compress: bool,
    /// Migrate the running guest after (at least) N instructions to the `vmp receive` at
    /// `--migrate-to ADDR` (TCP); if it does not take it, the guest runs on here.
    #[arg(long, value_name = "N", requires = "migrate_to")]
    migrate_at: Option<u64>,
    #[arg(long, value_name = "ADDR", requires = "migrate_at")]
    migrate_to: Option<String>,
    /// How to migrate.
    #[arg(long, value_enum, default_value = "stopcopy")]
    strategy: Strategy,
    /// precopy: guest instructions run after each 512 KiB batch of pages sent.
    #[arg(long, default_value_t = PrecopyOptions::default().slice)]
    precopy_slice: u64,
    /// precopy: freeze once a round leaves at most this many dirty pages.
    #[arg(long, default_value_t = PrecopyOptions::default().stop_pages)]
    precopy_stop_pages: usize,
    /// precopy: freeze after at most this many live rounds.
    #[arg(long, default_value_t = PrecopyOptions::default().max_rounds)]
    precopy_max_rounds: u32,
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
        Cmd::Smp {
            cpus,
            variant,
            timer_hz,
            seed,
            budget,
            programs,
        } => {
            let variant = match variant {
                SmpVariant::Naive => gridbed_vmp::smp::Variant::Naive,
                SmpVariant::Optimised => gridbed_vmp::smp::Variant::Optimised,
            };
            return smp(cpus, variant, timer_hz, seed, budget, &programs);
        }
        Cmd::Restore { dir, mem_limit_mib } => return restore(&dir, mem_limit_mib),
        Cmd::Receive { listen } => return receive(&listen),
        Cmd::Image { dir } => {
            show_image(&dir::inspect(&dir)?);
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Run { file, opts } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            (vec![elf::load(&file.display().to_string(), &bytes)?], opts)
        }
        Cmd::Builtin {
            which,
            n,
            fill_mib,
            hot_pages,
            spin,
            opts,
        } => {
            let p = match which {
                Builtin::Getpid => vec![programs::getpid_loop(0, n)?],
                Builtin::Fib => vec![programs::fib(0, n)?, programs::fib(1, n)?],
                Builtin::Chatter => (0..3)
                    .map(|i| programs::chatter(i, b'A' + i as u8, n))
                    .collect::<Result<_, _>>()?,
                Builtin::Dirty => vec![programs::dirty(
                    0,
                    fill_mib.saturating_mul((1 << 20) / PAGE),
                    hot_pages,
                    n,
                    spin,
                )?],
            };
            (p, opts)
        }
    };
    let mut ro = RunOptions::new(opts.config, Preset::PC_2005.cpu);
    ro.timer_hz = opts.timer_hz;
    ro.budget = opts.budget;
    if let (Some(at), Some(to)) = (opts.migrate_at, &opts.migrate_to) {
        if opts.strategy == Strategy::Precopy {
            let po = PrecopyOptions {
                compress: false,
                stop_pages: opts.precopy_stop_pages,
                max_rounds: opts.precopy_max_rounds,
                slice: opts.precopy_slice,
            };
            return migrate_precopy(&progs, ro, at, to, po);
        }
        return migrate(&progs, ro, at, to);
    }
    if let (Some(at), Some(image)) = (opts.checkpoint_at, &opts.image) {
        let compress = !opts.no_compress;
        return checkpoint(&progs, ro, at, image, WriteOptions { compress });
    }
    let r = run_programs(&progs, ro)?;
    print_report(&r);
    Ok(ExitCode::from((r.exit_status & 0xff) as u8))
}

/// One `PROGRAM@CPU` argument of `vmp smp`, loaded for process slot `slot`.
fn smp_program(arg: &str, slot: u32) -> Result<(UserProgram, u32)> {
    let (what, cpu) = arg
        .rsplit_once('@')
        .with_context(|| format!("{arg}: expected PROGRAM@CPU"))?;
    let cpu: u32 = cpu
        .parse()
        .with_context(|| format!("{arg}: processor {cpu:?} is not a number"))?;
    let prog = if let Some(b) = what.strip_prefix("builtin:") {
        let (name, n) = match b.split_once(':') {
            Some((name, n)) => (
                name,
                n.parse::<u32>()
                    .with_context(|| format!("{arg}: {n:?} is not a number"))?,
            ),
            None => (b, 10),
        };
        match name {
            "getpid" => programs::getpid_loop(slot, n)?,
            "fib" => programs::fib(slot, n)?,
            "chatter" => programs::chatter(slot, b'A' + (slot % 26) as u8, n)?,
            _ => anyhow::bail!("{arg}: no built-in {name:?} (getpid, fib, chatter)"),
        }
    } else {
        let bytes = std::fs::read(what).with_context(|| format!("cannot read {what}"))?;
        elf::load(what, &bytes)?
    };
    Ok((prog, cpu))
}

/// `vmp smp`: the SMP guest kernel over `cpus` simulated hosts (Gigabit Ethernet, kernel TCP).
fn smp(
    cpus: u32,
    variant: gridbed_vmp::smp::Variant,
    timer_hz: u32,
    seed: u64,
    budget: u64,
    args: &[String],
) -> Result<ExitCode> {
    use gridbed_vmp::guest::smp_kernel::SMP_MAX_CPUS;
    anyhow::ensure!(
        (1..=SMP_MAX_CPUS).contains(&cpus),
        "--cpus {cpus}: the SMP kernel runs on 1..={SMP_MAX_CPUS} processors"
    );
    let progs = args
        .iter()
        .enumerate()
        .map(|(i, a)| smp_program(a, i as u32))
        .collect::<Result<Vec<_>>>()?;
    let hosts = (0..cpus).map(gridbed_runtime::HostId).collect();
    let mut opts = gridbed_vmp::smp::SmpOptions::new(variant, hosts, Preset::PC_2005);
    opts.budget = budget;
    let platform = gridbed_sim::Platform::lans(1, cpus as usize, "gige-tcp")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = gridbed_sim::SimConfig::new(platform, seed);
    let out = gridbed_sim::run(cfg, move |c| {
        Box::pin(async move { gridbed_vmp::smp::os::run(c, progs, timer_hz, opts).await })
    })
    .value?;
    std::io::stdout().write_all(&out.sequencer.console)?;
    println!(
        "--- smp kernel, {cpus} processors, {:.6} s simulated",
        out.elapsed.as_secs_f64()
    );
    for c in &out.cpus {
        println!(
            "cpu {}: instructions {}, traps {}, publishes {}, write faults {}, IPIs sent {} received {}, idle {:.6} s",
            c.cpu,
            c.machine.monitor().retired,
            c.machine.monitor().stats.total(),
            c.counts.publishes,
            c.counts.write_faults,
            c.counts.ipis_sent,
            c.ipis_received,
            c.idle_s
        );
    }
    let status = out
        .exit_status()
        .context("the guest stopped without powering off")?;
    println!("exit status {status}");
    Ok(ExitCode::from((status & 0xff) as u8))
}

/// Runs to instruction `at`, prints the console so far and writes the image.
fn checkpoint(
    progs: &[UserProgram],
    ro: RunOptions,
    at: u64,
    image: &std::path::Path,
    opts: WriteOptions,
) -> Result<ExitCode> {
    let mut m = boot_programs(progs, ro)?;
    let exit = m.run(Some(at))?;
    let mut out = std::io::stdout().lock();
    out.write_all(m.console())?;
    dir::flush(&mut out);
    let retired = m.monitor().retired;
    if let Exit::PowerOff(code) = exit {
        anyhow::bail!(
            "guest powered off (status {code}) after {retired} instructions, before \
             --checkpoint-at {at}: no image written"
        );
    }
    let bytes = dir::save(&m, image, m.console().len() as u64, opts)?;
    eprintln!(
        "--- checkpoint at instruction {retired}: {} ({bytes} bytes, {} non-zero pages)",
        image.join(gridbed_vmp::checkpoint::IMAGE_FILE).display(),
        m.nonzero_pages().count()
    );
    Ok(ExitCode::SUCCESS)
}

/// Restores the image in `image_dir` and runs it to the end, printing the console output the
/// checkpointed run had not yet printed.
fn restore(image_dir: &std::path::Path, mem_limit_mib: Option<u32>) -> Result<ExitCode> {
    let mut limits = RestoreLimits::default();
    if let Some(mib) = mem_limit_mib {
        limits.max_pages = limits.max_pages.min(mib.saturating_mul((1 << 20) / PAGE));
    }
    let (mut m, summary) = dir::load(image_dir, limits)?;
    let mut r = run_machine(&mut m)?;
    let delivered = (summary.state.console_delivered as usize).min(m.console().len());
    let mut out = std::io::stdout().lock();
    out.write_all(&m.console()[delivered..])?;
    dir::flush(&mut out);
    r.console.clear();
    print_report(&r);
    Ok(ExitCode::from((r.exit_status & 0xff) as u8))
}

/// Runs to instruction `at`, then hands the guest to `to`; runs it on here if that fails.
fn migrate(progs: &[UserProgram], ro: RunOptions, at: u64, to: &str) -> Result<ExitCode> {
    let mut m = boot_programs(progs, ro)?;
    let exit = m.run(Some(at))?;
    let delivered = m.console().len();
    let mut out = std::io::stdout().lock();
    out.write_all(m.console())?;
    dir::flush(&mut out);
    if let Exit::SliceEnd = exit {
        let retired = m.monitor().retired;
        let sent = std::net::TcpStream::connect(to)
            .map_err(ImageError::from)
            .and_then(|s| tcp::send_guest(s, &m, delivered as u64));
        match sent {
            Ok(true) => {
                eprintln!("--- migrated to {to} at instruction {retired}");
                return Ok(ExitCode::SUCCESS);
            }
            Ok(false) => eprintln!("--- {to} did not take the guest; it runs on here"),
            Err(e) => eprintln!("--- migration to {to} failed ({e}); the guest runs on here"),
        }
    }
    let mut r = run_machine(&mut m)?;
    out.write_all(&m.console()[delivered..])?;
    dir::flush(&mut out);
    r.console.clear();
    print_report(&r);
    Ok(ExitCode::from((r.exit_status & 0xff) as u8))
}

/// Runs to instruction `at`, then pre-copies the guest to `to` while it runs on; runs it on
/// here if that fails.
fn migrate_precopy(
    progs: &[UserProgram],
    ro: RunOptions,
    at: u64,
    to: &str,
    po: PrecopyOptions,
) -> Result<ExitCode> {
    let mut m = boot_programs(progs, ro)?;
    let exit = m.run(Some(at))?;
    let mut out = std::io::stdout().lock();
    let delivered;
    if let Exit::SliceEnd = exit {
        let sent = std::net::TcpStream::connect(to)
            .map_err(ImageError::from)
            .and_then(|s| precopy::send_guest(s, &mut m, po));
        // Whatever the guest printed so far (it ran on during the live rounds) is this side's.
        out.write_all(m.console())?;
        dir::flush(&mut out);
        delivered = m.console().len();
        match sent {
            Ok((SourceEnd::Migrated, rep)) => {
                eprintln!(
                    "--- migrated to {to} by pre-copy at instruction {}: {} rounds (pages {:?}), {} pages sent, {} resent, {} bytes, live {:.1} ms, downtime {:.2} ms",
                    m.monitor().retired,
                    rep.round_pages.len(),
                    rep.round_pages,
                    rep.pages_sent(),
                    rep.pages_resent,
                    rep.bytes,
                    rep.live_s * 1e3,
                    rep.downtime_s * 1e3
                );
                return Ok(ExitCode::SUCCESS);
            }
            Ok((SourceEnd::Kept(why), _)) => {
                eprintln!("--- pre-copy to {to} failed ({why}); the guest runs on here")
            }
            Ok((SourceEnd::PoweredOff(code), _)) => {
                eprintln!(
                    "--- the guest finished during pre-copy (exit status {code}); it ended here"
                );
                return Ok(ExitCode::from((code & 0xff) as u8));
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        out.write_all(m.console())?;
        delivered = m.console().len();
    }
    let mut r = run_machine(&mut m)?;
    out.write_all(&m.console()[delivered..])?;
    dir::flush(&mut out);
    r.console.clear();
    print_report(&r);
    Ok(ExitCode::from((r.exit_status & 0xff) as u8))
}

/// Accepts one migrated guest on `listen` and runs it to the end.
fn receive(listen: &str) -> Result<ExitCode> {
    let l = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    // Back guest RAM now, before anyone connects: a restore then writes into ready memory.
    gridbed_vmp::machine::reserve_restore_ram(1);
    eprintln!("--- listening on {}", l.local_addr()?);
    let (s, _) = l.accept()?;
    let (mut m, summary, _rounds) =
        precopy::receive_any(s, RestoreLimits::default(), RECEIVE_IDLE)?;
    let mut r = run_machine(&mut m)?;
    let delivered = (summary.state.console_delivered as usize).min(m.console().len());
    let mut out = std::io::stdout().lock();
    out.write_all(&m.console()[delivered..])?;
    dir::flush(&mut out);
    r.console.clear();
    print_report(&r);
    Ok(ExitCode::from((r.exit_status & 0xff) as u8))
}

fn show_image(s: &ImageSummary) {
    let m = &s.state.machine;
    println!("gridbed vmp image, format version {}", s.version);
    println!("configuration   {:?}", m.config);
    println!(
        "stopped at      instruction {} (eip {:#010x}, guest cpl {}), {} guest cycles idle",
        m.retired, m.arch.eip, m.vcpu.cpl, m.idle_cycles
    );
    println!(
        "registers       eax {:#x} ecx {:#x} edx {:#x} ebx {:#x} esp {:#x} ebp {:#x} esi {:#x} edi {:#x} eflags {:#x}",
        m.arch.gprs[0], m.arch.gprs[1], m.arch.gprs[2], m.arch.gprs[3],
        m.arch.gprs[4], m.arch.gprs[5], m.arch.gprs[6], m.arch.gprs[7], m.arch.eflags
    );
    println!(
        "devices         console {} bytes ({} delivered), timer period {} cycles",
        m.dev.console.len(),
        s.state.console_delivered,
        m.dev.timer_period
    );
    println!("traps so far    {}", m.stats.total());
    println!(
        "memory          {} non-zero pages ({} KiB): {} raw, {} lz4",
        s.raw_pages + s.lz4_pages,
        (s.raw_pages + s.lz4_pages) as u64 * PAGE as u64 / 1024,
        s.raw_pages,
        s.lz4_pages
    );
    println!("image           {} bytes, checksums verified", s.bytes);
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
