//! A virtual processor as a task on a (simulated or real) host: the guest runs in slices and each
//! slice's modelled time — guest instructions through the CPU model plus the monitor's per-trap
//! costs — is charged to the host's CPU with `Host::compute`, so a loaded host slows the guest
//! down; time the guest spends halted is slept, not computed.

use gridbed_runtime::Host;

use crate::error::Result;
use crate::machine::{Exit, Machine};
use crate::time::Preset;

/// What a hosted run charged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostedRun {
    pub exit_status: u32,
    pub slices: u64,
    pub charged_cycles: u64,
    pub idle_s: f64,
}

/// Modelled busy seconds and idle seconds of the machine so far.
fn modelled(m: &Machine, preset: &Preset) -> (f64, f64) {
    let mon = m.monitor();
    let guest = preset.cpu.seconds(preset.cpu.cycles(mon.retired));
    let busy = guest + preset.trap.monitor_seconds(&mon.stats);
    (busy, preset.cpu.seconds(mon.idle_cycles))
}

/// Runs `machine` to power-off in slices of `slice` guest instructions, charging each slice to
/// `host`.
pub async fn run_on_host(
    host: &dyn Host,
    machine: &mut Machine,
    preset: &Preset,
    slice: u64,
) -> Result<HostedRun> {
    let mut out = HostedRun::default();
    let slice = slice.max(1);
    loop {
        let (busy0, idle0) = modelled(machine, preset);
        let exit = machine.run(Some(slice))?;
        let (busy1, idle1) = modelled(machine, preset);
        let cycles = ((busy1 - busy0) * host.cpu_hz()).round().max(0.0) as u64;
        out.slices += 1;
        out.charged_cycles += cycles;
        if cycles > 0 {
            host.compute(cycles).await;
        }
        if idle1 > idle0 {
            out.idle_s += idle1 - idle0;
            host.sleep(gridbed_runtime::secs(idle1 - idle0)).await;
        }
        if let Exit::PowerOff(code) = exit {
            host.event(&format!("vmp processor powered off with status {code}"));
            out.exit_status = code;
            return Ok(out);
        }
    }
}
