//! The band of ptrace-monitor costs the documented mechanisms give for one run's counted events.
//!
//! The base model ([`crate::time::Preset::PC_2005`]) is one point: a monitor on a host with
//! PTRACE_SYSEMU, two null calls per ptrace request, lmbench figures from Barham et al. Each
//! variant here changes one documented mechanism or one measured input, so the spread of the
//! variants is what the sources allow, not a fit to the paper's figure.

use serde::Serialize;

use crate::time::{Preset, TrapCostModel};
use crate::vcpu::{TrapKind, TrapStats};

/// lmbench figures of one host.
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub struct Lmbench {
    pub null_call_s: f64,
    pub sig_hndl_s: f64,
    pub ctx_2p_s: f64,
    pub prot_fault_s: f64,
}

/// lmbench 2.x on a 2.4 GHz Pentium 4 under Linux 2.4.18, posted to the Linux kernel mailing list
/// on 2 Oct 2002 (the range of the posted runs: null call 0.66-0.67 us, signal handler
/// 2.70-2.85 us, 2-process context switch 0.73-1.14 us, protection fault 1.31-1.41 us).
/// *Not verified*: the post itself was not found with the search tools available; the figures
/// are as given in the issue text.
pub const LKML_2002_LOW: Lmbench = Lmbench {
    null_call_s: 0.66e-6,
    sig_hndl_s: 2.70e-6,
    ctx_2p_s: 0.73e-6,
    prot_fault_s: 1.31e-6,
};
/// Upper ends of the same post's ranges (see [`LKML_2002_LOW`]).
pub const LKML_2002_HIGH: Lmbench = Lmbench {
    null_call_s: 0.67e-6,
    sig_hndl_s: 2.85e-6,
    ctx_2p_s: 1.14e-6,
    prot_fault_s: 1.41e-6,
};

/// Cost of one PTRACE_PEEKDATA/POKEDATA when a monitor moves guest memory word by word: about
/// 2 us a word on that era's hosts (umview on the Linux kernel mailing list, May 2006). What was
/// found (lkml.iu.edu/hypermail/linux/kernel/0605.2/0987.html, Renzo Davoli, 18 May 2006, the
/// PTRACE_MULTI thread): `cp` of linux-source-2.6.16.tar.bz2 under umview on a 1 GHz PowerPC G4
/// took 22.626 s with one ptrace call per word against 1.850 s with PTRACE_MULTI; the per-word
/// figure follows only with the file's size (about 40 MB, not given in the message) and one
/// transfer per word, so the 2 us is *derived, not verified*, and on a G4, not a Pentium 4.
pub const WORD_TRANSFER_S: f64 = 2.0e-6;

/// One way a ptrace monitor of the paper's era could have paid for the counted events.
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub struct Variant {
    pub name: &'static str,
    /// Where its numbers come from.
    pub source: &'static str,
    pub trap: TrapCostModel,
    /// Hardware interrupt round trip of the native machine (lmbench null call).
    pub native_int_round_trip_s: f64,
    /// The host lacks PTRACE_SYSEMU: a guest `int 0x80` is a host system call stopped twice
    /// (syscall entry and exit, as UML before SYSEMU), the monitor nullifies it in between.
    pub no_sysemu: bool,
    /// Cost per guest word read or written (None: a ptrace request, `trap.ptrace_call_s`).
    pub word_s: Option<f64>,
}

/// The base trap cost model with lmbench inputs `l`; the fault that stops the VM process is
/// charged as `signal_s`.
fn with_lmbench(base: TrapCostModel, l: Lmbench, signal_s: f64) -> TrapCostModel {
    TrapCostModel {
        signal_s,
        context_switch_s: l.ctx_2p_s,
        syscall_s: l.null_call_s,
        // Same estimate as the base model: a ptrace request costs two null calls.
        ptrace_call_s: 2.0 * l.null_call_s,
        ..base
    }
}

/// Every documented variant, the base model first.
pub fn variants() -> Vec<Variant> {
    let p = Preset::PC_2005;
    let base = Variant {
        name: "base",
        source: "2-stop model, PTRACE_SYSEMU host, Barham et al. SOSP 2003 lmbench L-UP figures",
        trap: p.trap,
        native_int_round_trip_s: p.cpu.int_round_trip_s,
        no_sysemu: false,
        word_s: None,
    };
    // The lower and upper ends of the 2002 post: the stop charged as a protection fault (the
    // guest's sensitive instruction faults) or as a signal delivered to a handler.
    let lkml_low = Variant {
        name: "lmbench_2002_low",
        source: "LKML 2 Oct 2002 lmbench, P4 2.4 GHz, Linux 2.4.18, low ends; stop = prot fault",
        trap: with_lmbench(p.trap, LKML_2002_LOW, LKML_2002_LOW.prot_fault_s),
        native_int_round_trip_s: LKML_2002_LOW.null_call_s,
        ..base
    };
    let lkml_high = Variant {
        name: "lmbench_2002_high",
        source: "LKML 2 Oct 2002 lmbench, P4 2.4 GHz, Linux 2.4.18, high ends; stop = sig hndl",
        trap: with_lmbench(p.trap, LKML_2002_HIGH, LKML_2002_HIGH.sig_hndl_s),
        native_int_round_trip_s: LKML_2002_HIGH.null_call_s,
        ..base
    };
    let no_sysemu = Variant {
        name: "no_sysemu",
        source:
            "base + syscall-entry and syscall-exit stops per guest int 0x80 (UML before SYSEMU)",
        no_sysemu: true,
        ..base
    };
    let peek_poke = Variant {
        name: "peek_poke_2us",
        source:
            "base + guest words moved by PEEKDATA/POKEDATA at ~2 us a word (umview, LKML May 2006)",
        word_s: Some(WORD_TRANSFER_S),
        ..base
    };
    let worst = Variant {
        name: "all_slow",
        source: "lmbench_2002_high + no_sysemu + peek_poke_2us",
        no_sysemu: true,
        word_s: Some(WORD_TRANSFER_S),
        ..lkml_high
    };
    vec![base, lkml_low, lkml_high, no_sysemu, peek_poke, worst]
}

impl Variant {
    /// Modelled monitor seconds of the counted events `d`.
    pub fn monitor_seconds(&self, d: &TrapStats) -> f64 {
        let t = &self.trap;
        let b = t.breakdown(d);
        let words = (d.mem_words + d.insn_words) as f64;
        let word_extra = self.word_s.map_or(0.0, |w| words * (w - t.ptrace_call_s));
        // Without SYSEMU the one stop per int becomes an entry and an exit stop; in between the
        // monitor rewrites the syscall number (SETREGS) and resumes (PTRACE_SYSCALL), and the host
        // runs the nullified call.
        let ints = d.by_kind.get(&TrapKind::Int).copied().unwrap_or(0) as f64;
        let sysemu_extra = if self.no_sysemu {
            ints * (t.round_trip_s() + 2.0 * t.ptrace_call_s + t.syscall_s)
        } else {
            0.0
        };
        b.total() + word_extra + sysemu_extra
    }
}

/// One variant's result for a run of `calls` system calls.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub name: &'static str,
    pub vm_s: f64,
    pub native_s: f64,
    pub overhead_x: f64,
}

/// Every variant for the counted events `d` of the VM run, `vm_retired`/`native_retired` guest
/// instructions and `native_deliveries` interrupt deliveries of the native run, on `cpu`.
pub fn evaluate(
    d: &TrapStats,
    vm_retired: u64,
    native_retired: u64,
    native_deliveries: u64,
    cpu: &crate::time::CpuModel,
) -> Vec<Point> {
    variants()
        .into_iter()
        .map(|v| {
            let vm_s = cpu.seconds(cpu.cycles(vm_retired)) + v.monitor_seconds(d);
            let native_s = cpu.seconds(cpu.cycles(native_retired))
                + native_deliveries as f64 * v.native_int_round_trip_s;
            Point {
                name: v.name,
                vm_s,
                native_s,
                overhead_x: vm_s / native_s.max(1e-15),
            }
        })
        .collect()
}
