//! Synchronisation points of the IA-32 memory model, found by decoding guest code: where a
//! virtual processor of the multiprocessor (`crate::smp`) must publish its buffered writes
//! (and, for a locked instruction, hold the global lock around it).
//!
//! - `mfence`, and locked read-modify-writes (`lock` prefix, `xchg` with a memory operand), are
//!   hooked on their address when the text is scanned: the hook stops the processor *before* the
//!   instruction (EIP left on it) with [`SyncPoint`] `after: false`; the caller does its protocol
//!   work and calls [`Machine::pass_sync`], after which the instruction runs, and a locked one
//!   stops again right *after* it (`after: true`) so the caller can publish the result and release
//!   the lock.
//! - serialising instructions (all trapped and emulated by the monitor: `iret`, `cpuid`, loads of
//!   descriptor tables and control registers, `invd`/`wbinvd`/`invlpg`) and every interrupt
//!   delivery stop the processor right after the monitor has done them (`after: true`): their
//!   ordering effect is on what follows, which has not run yet.
//!
//! Off unless [`Machine::enable_sync_points`] is called (`vmp` configuration only).

use std::collections::BTreeMap;

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};
use unicorn_engine::{RegisterX86 as X, UcHookId, Unicorn};

use super::{regs, Config, Machine, Monitor};
use crate::error::{Result, VmpError};
use crate::vcpu::TrapKind;

type Uc<'a> = Unicorn<'a, Monitor>;

/// Why a processor stopped at a synchronisation point.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SyncKind {
    /// `mfence`.
    Fence,
    /// A locked read-modify-write (`lock` prefix or `xchg` with memory).
    Locked,
    /// A serialising instruction (emulated by the monitor).
    Serialising,
    /// An interrupt or exception was delivered through the virtual IDT.
    Interrupt,
    /// An inter-processor interrupt was sent (`out` to the IPI port): it travels with this
    /// processor's earlier writes.
    Ipi,
}

/// A stop at a synchronisation point.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SyncPoint {
    pub kind: SyncKind,
    /// The instruction's address (for `Interrupt`, the handler's first instruction).
    pub eip: u32,
    /// Whether the instruction has already run.
    pub after: bool,
}

/// Per-processor state of the synchronisation-point machinery.
#[derive(Default)]
pub struct SyncState {
    pub(super) enabled: bool,
    /// Stop the run loop with this (set by a hook or by the monitor's emulation).
    pub(super) exit: Option<SyncPoint>,
    /// Let the hooked instruction at this address run once.
    pass: Option<u32>,
    /// A halted processor with no interrupt source returns `Exit::Halted` instead of failing.
    pub(super) halt_exits: bool,
    hooks: BTreeMap<u32, UcHookId>,
    /// Where the after-stop of the locked instruction now running happens.
    armed_after: Option<u32>,
    /// Stops by kind, for the cost model.
    pub counts: BTreeMap<SyncKind, u64>,
}

/// The synchronisation kind of an instruction that is *not* trapped by the monitor.
pub fn classify(i: &Instruction) -> Option<SyncKind> {
    if i.mnemonic() == Mnemonic::Mfence {
        return Some(SyncKind::Fence);
    }
    let mem_operand = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
    if mem_operand && (i.has_lock_prefix() || i.mnemonic() == Mnemonic::Xchg) {
        return Some(SyncKind::Locked);
    }
    None
}

/// Whether a trapped instruction is serialising (Intel SDM vol. 3, "Serializing Instructions").
pub(super) fn serialising(kind: TrapKind) -> bool {
    matches!(
        kind,
        TrapKind::Iret
            | TrapKind::Cpuid
            | TrapKind::Lgdt
            | TrapKind::Lidt
            | TrapKind::Lldt
            | TrapKind::Ltr
            | TrapKind::MovToCr
            | TrapKind::Invd
            | TrapKind::Wbinvd
            | TrapKind::Invlpg
    )
}

/// Called by the monitor after it emulated a serialising instruction or delivered an interrupt:
/// stop right here so the caller publishes before the guest goes on.
pub(super) fn stop_after(uc: &mut Uc<'_>, kind: SyncKind) {
    let m = uc.get_data_mut();
    if !m.sync.enabled || m.sync.exit.is_some() {
        return;
    }
    let eip = regs::get(uc, X::EIP).unwrap_or(0);
    uc.get_data_mut().sync.exit = Some(SyncPoint {
        kind,
        eip,
        after: true,
    });
    let _ = uc.emu_stop();
}

/// Hooks every `mfence` and locked instruction of the scanned text (kernel and user), and the
/// instruction after each locked one (where its after-stop happens: a stop requested from a code
/// hook takes effect before the hooked instruction, so "after X" is "before X's successor").
/// Called at the end of each scan.
pub(super) fn plant(uc: &mut Uc<'_>) -> Result<()> {
    if !uc.get_data().sync.enabled {
        return Ok(());
    }
    for (_, id) in std::mem::take(&mut uc.get_data_mut().sync.hooks) {
        uc.remove_hook(id)?;
    }
    let m = uc.get_data();
    let mut ranges = vec![m.kernel_text];
    ranges.extend(m.user_text.iter().copied());
    // Per address: its own kind (if a synchronisation instruction) and whether it follows a
    // locked one.
    let mut at: BTreeMap<u32, (Option<(SyncKind, u32)>, bool)> = BTreeMap::new();
    for (start, end) in &ranges {
        if end <= start {
            continue;
        }
        let mut text = vec![0u8; (end - start) as usize];
        uc.mem_read(*start as u64, &mut text)?;
        let mut d = Decoder::with_ip(32, &text, *start as u64, DecoderOptions::NONE);
        while d.can_decode() {
            let i = d.decode();
            if let Some(kind) = classify(&i) {
                at.entry(i.ip32()).or_default().0 = Some((kind, i.next_ip32()));
                if kind == SyncKind::Locked {
                    at.entry(i.next_ip32()).or_default().1 = true;
                }
            }
        }
    }
    for (addr, (kind, follows_locked)) in at {
        let id = uc.add_code_hook(addr as u64, addr as u64, move |uc, a, _| {
            on_sync_hook(uc, a as u32, kind, follows_locked)
        })?;
        uc.get_data_mut().sync.hooks.insert(addr, id);
    }
    for (start, end) in ranges {
        if end > start {
            uc.ctl_remove_cache(start as u64, end as u64 + 16)?;
            uc.get_data_mut().block_cache.forget_range(start, end + 16);
        }
    }
    Ok(())
}

/// Stops before the instruction at `addr` (EIP left on it) reporting `p`.
fn stop_here(uc: &mut Uc<'_>, addr: u32, p: SyncPoint) {
    uc.get_data_mut().sync.exit = Some(p);
    // Writing EIP from a code hook abandons the instruction; the stop leaves EIP on it.
    if let Err(e) = regs::set(uc, X::EIP, addr) {
        uc.get_data_mut().fail(e);
    }
    let _ = uc.emu_stop();
}

fn on_sync_hook(uc: &mut Uc<'_>, addr: u32, kind: Option<(SyncKind, u32)>, follows_locked: bool) {
    let m = uc.get_data_mut();
    if follows_locked && m.sync.armed_after == Some(addr) {
        m.sync.armed_after = None;
        let p = SyncPoint {
            kind: SyncKind::Locked,
            eip: addr,
            after: true,
        };
        return stop_here(uc, addr, p);
    }
    let Some((kind, next_ip)) = kind else { return };
    if m.sync.pass == Some(addr) {
        m.sync.pass = None;
        if kind == SyncKind::Locked {
            // Runs now; the stop comes at the next instruction.
            m.sync.armed_after = Some(next_ip);
        }
        return;
    }
    let p = SyncPoint {
        kind,
        eip: addr,
        after: false,
    };
    stop_here(uc, addr, p);
}

impl Machine {
    /// Turns on synchronisation-point stops (`Exit::Sync`) and `Exit::Halted` for a processor
    /// halted with nothing to wake it (`vmp` only: the monitor must see the instructions).
    pub fn enable_sync_points(&mut self) -> Result<()> {
        if self.uc.get_data().config != Config::Vmp {
            return Err(VmpError::BadImage(
                "synchronisation points need the vmp configuration".into(),
            ));
        }
        let m = self.uc.get_data_mut();
        m.sync.enabled = true;
        m.sync.halt_exits = true;
        plant(&mut self.uc)
    }

    /// Sets the stack pointer before the first run (each processor of a multiprocessor has its
    /// own boot stack).
    pub fn set_stack(&mut self, esp: u32) -> Result<()> {
        regs::set(&mut self.uc, X::ESP, esp)
    }

    /// Lets the instruction of the last before-stop run when emulation resumes.
    pub fn pass_sync(&mut self, eip: u32) {
        self.uc.get_data_mut().sync.pass = Some(eip);
    }

    /// Forgets a pass or after-stop not taken (the instruction was interrupted): the next
    /// attempt stops before it again.
    pub fn cancel_sync(&mut self) {
        let s = &mut self.uc.get_data_mut().sync;
        s.pass = None;
        s.armed_after = None;
    }

    /// Synchronisation stops so far, by kind.
    pub fn sync_counts(&self) -> &BTreeMap<SyncKind, u64> {
        &self.uc.get_data().sync.counts
    }
}
