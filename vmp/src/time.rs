//! Virtual time: guest instructions become cycles through a CPU model, and every trap adds the cost
//! of the paper's mechanism (a ptrace-based monitor process) through a per-trap cost model.
//!
//! The guest itself only ever sees its own cycles (`rdtsc`, the timer): monitor time is invisible
//! to it, so `native` and `vmp` runs of one guest stay instruction-for-instruction identical.

use serde::{Deserialize, Serialize};

use crate::vcpu::TrapStats;

/// A processor: clock rate and average cycles per guest instruction.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuModel {
    pub hz: f64,
    pub cpi: f64,
    /// Hardware cost of one interrupt delivery + `iret` round trip (a null system call's
    /// entry/exit), beyond the instructions themselves.
    pub int_round_trip_s: f64,
}

/// What one trap costs in the paper's design: the VM process stops on a signal, the monitor (its
/// ptrace parent) wakes, inspects and patches it with ptrace calls, and resumes it.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrapCostModel {
    /// Kernel delivers the trap as a signal to the traced VM process and stops it.
    pub signal_s: f64,
    /// One process context switch (a ptrace stop costs two: VM -> monitor, monitor -> VM).
    pub context_switch_s: f64,
    /// One ptrace system call (GETREGS, SETREGS, PEEKDATA, POKEDATA, CONT).
    pub ptrace_call_s: f64,
    /// Monitor-side decode and emulation work per trap.
    pub emulate_s: f64,
    /// Changing the VM process's view of guest-kernel memory when the guest switches between its
    /// kernel and user mode (LilyVM-style: one mprotect-class system call plus a TLB flush).
    pub cpl_switch_s: f64,
}

/// A machine preset: CPU plus trap cost.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub name: &'static str,
    pub cpu: CpuModel,
    pub trap: TrapCostModel,
}

impl Preset {
    /// The paper's mid-2000s IA-32 PC running Linux 2.6 (slides: IA-32, Linux guest, 2005-2006).
    /// These are estimates of that class of machine, not measurements from the paper (which gives
    /// none): every number is an order-of-magnitude figure for a Pentium 4 / Linux 2.6 box.
    pub const PC_2005: Preset = Preset {
        name: "pc2005",
        cpu: CpuModel {
            // A 3.0 GHz Pentium 4, the common desktop/cluster node of 2005.
            hz: 3.0e9,
            // NetBurst sustains roughly one instruction per cycle on simple integer loops.
            cpi: 1.0,
            // lmbench `lat_syscall null` on Pentium 4 / Linux 2.6 with int 0x80: ~0.5 us; the
            // P4's int/iret microcode is notoriously slow.
            int_round_trip_s: 0.5e-6,
        },
        trap: TrapCostModel {
            // Signal generation + delivery to a traced task on P4/Linux 2.6: lmbench's
            // "signal handler overhead" class of numbers, a few microseconds.
            signal_s: 3.0e-6,
            // lmbench lat_ctx (2 processes, 0 KB) on P4-era Linux 2.6: a few microseconds,
            // with the cache/TLB refill that a switch between two address spaces implies.
            context_switch_s: 4.0e-6,
            // A null syscall via int 0x80 on P4 is ~0.5-1 us; ptrace adds task lookup and
            // access_process_vm page pinning: ~2 us per call.
            ptrace_call_s: 2.0e-6,
            // Decoding and emulating one instruction in the monitor: ~1000 cycles at 3 GHz.
            emulate_s: 0.3e-6,
            // One mprotect over the guest-kernel area plus the TLB refill it causes.
            cpl_switch_s: 5.0e-6,
        },
    };

    /// This machine running the unicorn-based monitor: the guest CPU is unicorn's JIT (measured
    /// by the `throughput` bench) and a trap is an in-process hook, so the ptrace terms vanish and
    /// only the emulation term (measured by the `trap` bench) remains.
    pub const THIS_MACHINE: Preset = Preset {
        name: "this-machine",
        cpu: CpuModel {
            // Effective guest rate of unicorn here: ~300 M guest instructions/s (throughput bench).
            hz: 3.0e8,
            cpi: 1.0,
            // The monitor delivers interrupts itself: covered by the trap term.
            int_round_trip_s: 0.0,
        },
        trap: TrapCostModel {
            signal_s: 0.0,
            context_switch_s: 0.0,
            ptrace_call_s: 0.0,
            // Hook + decode + emulate, measured by the `trap` bench (~0.3 us).
            emulate_s: 0.3e-6,
            cpl_switch_s: 0.0,
        },
    };
}

impl TrapCostModel {
    /// Modelled monitor time of a run from its counted traps.
    pub fn monitor_seconds(&self, stats: &TrapStats) -> f64 {
        let traps = stats.total() as f64;
        // Per trap: signal, two context switches, GETREGS + PEEKDATA (the instruction bytes) +
        // SETREGS + CONT = 4 ptrace calls, and the emulation itself.
        let per_trap =
            self.signal_s + 2.0 * self.context_switch_s + 4.0 * self.ptrace_call_s + self.emulate_s;
        // Every guest word the emulation read or wrote is one PEEKDATA/POKEDATA.
        traps * per_trap
            + stats.mem_words as f64 * self.ptrace_call_s
            + stats.cpl_switches as f64 * self.cpl_switch_s
    }
}

impl CpuModel {
    /// Guest cycles for `retired` instructions.
    pub fn cycles(&self, retired: u64) -> u64 {
        (retired as f64 * self.cpi) as u64
    }

    pub fn seconds(&self, cycles: u64) -> f64 {
        cycles as f64 / self.hz
    }
}
