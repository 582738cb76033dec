//! Running a whole guest to completion and reporting what happened.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::guest::{build_image, UserProgram};
use crate::machine::{Config, Exit, Machine};
use crate::time::CpuModel;
use crate::vcpu::TrapStats;

/// Default guest timer frequency: Linux 2.6's HZ=100 class of tick (2.6.13+ default was 250; 100
/// keeps timer traps a negligible share of the getpid loop either way).
pub const DEFAULT_TIMER_HZ: u32 = 100;

/// Default instruction budget: far above any built-in guest, small enough to stop a runaway.
pub const DEFAULT_BUDGET: u64 = 2_000_000_000;

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub config: Config,
    pub exit_status: u32,
    pub console: String,
    pub stats: TrapStats,
    pub retired: u64,
    pub idle_cycles: u64,
    pub guest_cycles: u64,
    /// Host wall-clock seconds for the run (measurement only; never fed back into the guest).
    pub wall_s: f64,
    /// Host CPU seconds of this thread for the run: less disturbed than `wall_s` on a shared
    /// machine (measurement only, like `wall_s`).
    pub cpu_s: f64,
}

/// CPU time consumed by the calling thread so far (measurement only).
pub fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes the timespec we own; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Options of one run.
#[derive(Copy, Clone, Debug)]
pub struct RunOptions {
    pub config: Config,
    pub cpu: CpuModel,
    pub timer_hz: u32,
    pub budget: u64,
}

impl RunOptions {
    pub fn new(config: Config, cpu: CpuModel) -> Self {
        RunOptions {
            config,
            cpu,
            timer_hz: DEFAULT_TIMER_HZ,
            budget: DEFAULT_BUDGET,
        }
    }
}

/// Boots the kernel with `programs` and runs until the guest powers off.
// `wall_s` is how long the run took on this machine (the real-mode measurement); the guest and the
// modelled time never see it.
#[allow(clippy::disallowed_methods)]
pub fn run_programs(programs: &[UserProgram], opts: RunOptions) -> Result<RunReport> {
    run_machine(&mut boot_programs(programs, opts)?)
}

/// Boots the kernel with `programs`, ready to run.
pub fn boot_programs(programs: &[UserProgram], opts: RunOptions) -> Result<Machine> {
    let image = build_image(programs, opts.timer_hz)?;
    let mut m = Machine::new(opts.config, opts.cpu, &image)?;
    m.set_budget(opts.budget);
    Ok(m)
}

/// Runs a booted or restored machine until the guest powers off.
#[allow(clippy::disallowed_methods)] // the run's wall time, reported only (never fed to the guest)
pub fn run_machine(m: &mut Machine) -> Result<RunReport> {
    let (t0, c0) = (Instant::now(), thread_cpu_s());
    let exit = m.run(None)?;
    let (wall_s, cpu_s) = (t0.elapsed().as_secs_f64(), thread_cpu_s() - c0);
    let Exit::PowerOff(exit_status) = exit else {
        unreachable!("run(None) only returns on power-off or error")
    };
    let mon = m.monitor();
    Ok(RunReport {
        config: mon.config,
        exit_status,
        console: String::from_utf8_lossy(m.console()).into_owned(),
        stats: mon.stats.clone(),
        retired: mon.retired,
        idle_cycles: mon.idle_cycles,
        guest_cycles: mon.cycles(),
        wall_s,
        cpu_s,
    })
}
