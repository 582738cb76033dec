//! What the coherence protocol costs a ptrace-based monitor (the slides' design), per counted
//! event, built only from the per-operation costs of [`TrapCostModel`] (each sourced in
//! `time.rs`); network time is not here: the backend charges it for every `Host::send`.
//!
//! The monitor is a separate process from the VM process holding guest memory, so:
//! - a write fault is a SIGSEGV stop of the VM process (signal, two context switches, the
//!   monitor's `waitpid`), PTRACE_GETSIGINFO for the address and PTRACE_CONT, plus an `mprotect`
//!   the monitor injects into the VM process to re-enable writes (a second stop round trip, three
//!   ptrace requests, the system call, one page);
//! - a twin, or reading the current page to diff it, is one PEEKDATA per 32-bit word (1024);
//! - applying a remote diff is one POKEDATA per 32-bit word it touches;
//! - re-protecting the written pages after a publish is one injected `mprotect` over them.
//!
//! PEEKDATA/POKEDATA word by word is the naive mechanism; the counts are reported so that a
//! cheaper transfer (e.g. `/proc/pid/mem`, shared memory) can be costed from them.

use serde::Serialize;

use crate::time::{ops, TrapCostModel};

/// 32-bit words of a page: PEEKDATA calls to copy it.
pub const PAGE_WORDS: f64 = 1024.0;

/// Counted coherence events of one processor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CoherenceCounts {
    /// Inter-processor interrupts sent (each rides on a publish; no cost of its own here).
    pub ipis_sent: u64,
    pub write_faults: u64,
    pub twins: u64,
    /// Pages compared with their twin at a publish.
    pub pages_diffed: u64,
    /// Pages whose diff was not empty (sent).
    pub diffs_sent: u64,
    pub diff_bytes: u64,
    pub publishes: u64,
    /// Publishes that had nothing to send (a synchronisation round trip only).
    pub empty_publishes: u64,
    /// Remote page diffs applied, and the 32-bit words they touched.
    pub diffs_applied: u64,
    pub words_applied: u64,
    /// `mprotect` calls re-protecting written pages, and the pages they covered.
    pub reprotects: u64,
    pub pages_reprotected: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub retransmits: u64,
    pub lock_acquires: u64,
    /// Bytes stored with the value they already held: sent, though twin/diff alone misses them.
    pub silent_bytes: u64,
    /// Bytes that changed with no store recorded by the monitor (a gap in its write record).
    pub unseen_bytes: u64,
}

/// Modelled monitor seconds of coherence, by mechanism.
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize)]
pub struct CoherenceBreakdown {
    pub write_fault_s: f64,
    pub twin_s: f64,
    pub diff_s: f64,
    pub apply_s: f64,
    pub reprotect_s: f64,
}

impl CoherenceBreakdown {
    pub fn total(&self) -> f64 {
        self.write_fault_s + self.twin_s + self.diff_s + self.apply_s + self.reprotect_s
    }
}

fn round_trip(t: &TrapCostModel) -> f64 {
    t.signal_s + 2.0 * t.context_switch_s + t.syscall_s
}

/// An `mprotect` injected into the VM process over `pages` pages.
fn injected_mprotect(t: &TrapCostModel, pages: f64) -> f64 {
    round_trip(t)
        + ops::PTRACE_PER_PROTECTION_SWITCH * t.ptrace_call_s
        + t.syscall_s
        + pages * t.mprotect_page_s
}

pub fn breakdown(t: &TrapCostModel, c: &CoherenceCounts) -> CoherenceBreakdown {
    CoherenceBreakdown {
        write_fault_s: c.write_faults as f64
            * (round_trip(t) + 2.0 * t.ptrace_call_s + injected_mprotect(t, 1.0)),
        twin_s: c.twins as f64 * PAGE_WORDS * t.ptrace_call_s,
        diff_s: c.pages_diffed as f64 * PAGE_WORDS * t.ptrace_call_s,
        apply_s: c.words_applied as f64 * t.ptrace_call_s,
        reprotect_s: c.reprotects as f64 * injected_mprotect(t, 0.0)
            + c.pages_reprotected as f64 * t.mprotect_page_s,
    }
}
