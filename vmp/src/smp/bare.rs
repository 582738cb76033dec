//! The bare runner: per-processor code at given addresses, no guest kernel, every processor run
//! to `hlt`, final memory returned. What a litmus test needs: each processor's code is a few
//! loads, stores, fences and locked instructions ending in `hlt`, assembled by the caller.
//!
//! [`crate::litmus::smp::SmpMachine`] is the worked use: it assembles one program per litmus
//! thread, runs [`run`] inside `gridbed_sim::run` with [`litmus_options`], and reads the result
//! slots from the returned memory.
//!
//! Code runs as the guest kernel (deprivileged by the monitor, as any `vmp` guest), with flat
//! segments, interrupts never raised (no timer), its own stack (`stack_top`).

use gridbed_runtime::{ClusterRef, HostId};

use super::{run_vm, CpuStart, SmpError, SmpOptions, Variant, VmOutcome};
use crate::layout::{RAM_BASE, RAM_TOP};
use crate::time::Preset;

/// One processor's code: `code` is loaded at `addr` and starts there.
#[derive(Clone, Debug)]
pub struct BareProgram {
    pub addr: u32,
    pub code: Vec<u8>,
}

/// Stacks of bare processors: 64 KiB each, downwards from here (below the i386 ELF base).
pub const BARE_STACKS_TOP: u32 = 0x0800_0000;
pub const BARE_STACK_SIZE: u32 = 0x1_0000;

/// Options for litmus runs: the given variant, an adversarial schedule (random quanta of 1..=64
/// instructions, random delays up to 50 us before each publish and apply), the 2005 preset.
pub fn litmus_options(cpu_hosts: Vec<HostId>, variant: Variant) -> SmpOptions {
    let mut o = SmpOptions::new(variant, cpu_hosts, Preset::PC_2005);
    o.quantum = 64;
    o.jitter_s = 50e-6;
    o.budget = 10_000_000;
    o
}

/// Runs `programs[i]` on processor i (on `opts.cpu_hosts[i]`) over memory initialised with
/// `init`, until every processor halts.
pub async fn run(
    cluster: ClusterRef,
    programs: Vec<BareProgram>,
    init: Vec<(u32, Vec<u8>)>,
    opts: SmpOptions,
) -> Result<VmOutcome, SmpError> {
    let mut segments = init;
    let mut starts = Vec::new();
    for (i, p) in programs.iter().enumerate() {
        let end = p.addr as u64 + p.code.len() as u64;
        if p.addr < RAM_BASE || end > RAM_TOP as u64 || p.code.is_empty() {
            return Err(SmpError::Machine(format!(
                "processor {i}: code at {:#x}..{end:#x} is not inside guest RAM",
                p.addr
            )));
        }
        let stack_top = BARE_STACKS_TOP - i as u32 * BARE_STACK_SIZE - 16;
        starts.push(CpuStart {
            entry: p.addr,
            stack_top,
            text: (p.addr, end as u32),
            user_text: Vec::new(),
        });
        segments.push((p.addr, p.code.clone()));
    }
    run_vm(cluster, segments, starts, opts).await
}

impl VmOutcome {
    /// The 32-bit word at `addr` as processor 0 sees it (0 outside RAM).
    pub fn read_u32(&self, addr: u32) -> u32 {
        self.read(addr, 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    }

    /// A processor's general registers at the end (EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI).
    pub fn regs(&self, cpu: usize) -> Option<[u32; 8]> {
        self.cpus
            .get(cpu)
            .and_then(|c| c.machine.arch_state().ok())
            .map(|a| a.gprs)
    }
}
