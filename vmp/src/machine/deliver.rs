//! Interrupt and exception delivery through the IDT, the processor's job that unicorn never does:
//! through the real IDT/TSS in `native` (this is "hardware"), through the *virtual* IDTR/TR and the
//! guest's own tables in `vmp` (this is the monitor). Also the `vmp` emulation of `iret`.

use unicorn_engine::{RegisterX86 as X, Unicorn};

use super::hooks::{self, retire_upto};
use super::segs::{self, Seg};
use super::{emulate, regs, ArchState, Config, Monitor};
use crate::error::{Result, VmpError};
use crate::ffi::{self};
use crate::layout::VEC_TIMER;
use crate::machine::regs::{EFLAGS_IF, EFLAGS_IOPL, EFLAGS_NT, EFLAGS_RF, EFLAGS_TF, EFLAGS_VM};
use crate::vcpu::{TrapKind, TrapPath};

type Uc<'a> = Unicorn<'a, Monitor>;

/// How an event enters the IDT.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// `int n`: gate DPL is checked against CPL.
    Soft,
    /// External interrupt (the timer).
    Hard,
    /// Processor exception, with an error code for the vectors that push one.
    Fault(Option<u32>),
}

/// Aligned 32-bit words covering `len` bytes at `addr`: what PEEKDATA/POKEDATA move.
fn words_spanned(addr: u32, len: usize) -> u64 {
    if len == 0 {
        return 0;
    }
    ((addr & 3) as u64 + len as u64).div_ceil(4)
}

/// Reads guest memory as the monitor (counted: one PEEKDATA per word in the paper's monitor).
pub(super) fn peek(uc: &mut Uc, addr: u32, buf: &mut [u8]) -> Result<()> {
    if !uc.get_data().ram.read(addr, buf) {
        uc.mem_read(addr as u64, buf)
            .map_err(|_| unmapped(uc, addr, "monitor read"))?;
    }
    count_words(uc, addr, buf.len());
    Ok(())
}

/// The error of a monitor access outside guest memory.
fn unmapped(uc: &Uc, addr: u32, what: &str) -> VmpError {
    VmpError::Unmapped {
        eip: regs::get(uc, X::EIP).unwrap_or(0),
        addr: addr as u64,
        asm: what.into(),
    }
}

/// Counts the guest words a monitor access touched (PEEK/POKEDATA calls in the paper's monitor).
fn count_words(uc: &mut Uc, addr: u32, len: usize) {
    let m = uc.get_data_mut();
    if m.config == Config::Vmp {
        m.stats.mem_words += words_spanned(addr, len);
    }
}

pub(super) fn peek32(uc: &mut Uc, addr: u32) -> Result<u32> {
    let mut b = [0u8; 4];
    peek(uc, addr, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Writes guest memory as the monitor (counted like `peek`).
pub(super) fn poke(uc: &mut Uc, addr: u32, bytes: &[u8]) -> Result<()> {
    super::wtrack::note_monitor_write(uc.get_data_mut(), addr, bytes.len());
    if !uc.get_data_mut().ram.write(addr, bytes) {
        uc.mem_write(addr as u64, bytes)
            .map_err(|_| unmapped(uc, addr, "monitor write"))?;
    }
    count_words(uc, addr, bytes.len());
    Ok(())
}

/// Reads a GDT descriptor for `sel` from the table at `base`.
fn descriptor(uc: &mut Uc, base: u32, sel: u16) -> Result<u64> {
    let mut b = [0u8; 8];
    peek(uc, base.wrapping_add((sel & !7) as u32), &mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn desc_base(d: u64) -> u32 {
    (((d >> 16) & 0xFF_FFFF) | (((d >> 56) & 0xFF) << 24)) as u32
}

fn desc_dpl(d: u64) -> u8 {
    ((d >> 45) & 3) as u8
}

fn triple(uc: &Uc, why: String) -> VmpError {
    let eip = regs::get(uc, X::EIP).unwrap_or(0);
    VmpError::TripleFault {
        eip,
        asm: emulate::disasm_at(uc, eip),
        why,
    }
}

/// Delivers `vector` with return address `ret_eip`.
pub(super) fn deliver(uc: &mut Uc, vector: u8, ev: Event, ret_eip: u32) -> Result<()> {
    let vmp = uc.get_data().config == Config::Vmp;
    uc.get_data_mut().stats.deliveries += 1;
    let (idt_base, idt_limit, gdt_base, cpl) = if vmp {
        let v = &uc.get_data().vcpu;
        (v.idtr.base, v.idtr.limit as u32, v.gdtr.base, v.cpl)
    } else {
        let idt = ffi::read_mmr(uc, X::IDTR)?;
        let gdt = ffi::read_mmr(uc, X::GDTR)?;
        (
            idt.base as u32,
            idt.limit,
            gdt.base as u32,
            (regs::get(uc, X::CS)? & 3) as u8,
        )
    };
    if vector as u32 * 8 + 7 > idt_limit {
        return Err(triple(
            uc,
            format!("vector {vector:#x} lies beyond the IDT limit {idt_limit:#x}"),
        ));
    }
    let mut g = [0u8; 8];
    peek(uc, idt_base + vector as u32 * 8, &mut g)?;
    let offset =
        u16::from_le_bytes([g[0], g[1]]) as u32 | (u16::from_le_bytes([g[6], g[7]]) as u32) << 16;
    let selector = u16::from_le_bytes([g[2], g[3]]);
    let (present, gate_dpl, gate_type) = (g[5] & 0x80 != 0, (g[5] >> 5) & 3, g[5] & 0xF);
    if !present || !(gate_type == 0xE || gate_type == 0xF) {
        return Err(triple(
            uc,
            format!("IDT vector {vector:#x} has no present 32-bit gate"),
        ));
    }
    if ev == Event::Soft && gate_dpl < cpl {
        // `int n` through a gate the caller may not use: #GP with the IDT error code.
        return deliver(
            uc,
            13,
            Event::Fault(Some(vector as u32 * 8 + 2)),
            ret_eip.wrapping_sub(2),
        );
    }
    let target = descriptor(uc, gdt_base, selector)?;
    let new_cpl = desc_dpl(target);
    if vmp && target & 1 << 40 == 0 {
        // Like the processor loading CS through the gate: mark the guest's descriptor accessed
        // (the real load only touches the shadow copy).
        let access = ((target >> 40) as u8) | 1;
        poke(
            uc,
            gdt_base.wrapping_add((selector & !7) as u32 + 5),
            &[access],
        )?;
    }
    let real_flags = regs::get(uc, X::EFLAGS)?;
    let flags_image = if vmp {
        let v = &uc.get_data().vcpu;
        (real_flags & !(EFLAGS_IF | EFLAGS_IOPL)) | ((v.vif as u32) << 9) | ((v.iopl as u32) << 12)
    } else {
        real_flags
    };
    if vmp && cpl == 3 {
        segs::resync(uc)?;
    }
    let cs = if vmp {
        segs::guest_cs(uc)? as u32
    } else {
        regs::get(uc, X::CS)?
    };
    // The frame, outermost word first (at most SS, ESP, EFLAGS, CS, EIP, error code).
    let mut frame = [0u32; 6];
    let mut n = 0usize;
    let mut push = |w: u32| {
        frame[n] = w;
        n += 1;
    };
    let mut esp = regs::get(uc, X::ESP)?;
    if cpl > new_cpl {
        let (old_ss, old_esp) = (regs::get(uc, X::SS)?, esp);
        let (ss0, esp0) = tss_stack(uc, vmp, gdt_base)?;
        if vmp {
            segs::load(uc, Seg::Ss, ss0 | 3, new_cpl != 3)?;
            let m = uc.get_data_mut();
            m.vcpu.ss = ss0;
            m.stats.cpl_switches += 1;
        } else {
            force_ring0(uc, ss0)?;
        }
        esp = esp0;
        push(old_ss);
        push(old_esp);
    }
    push(flags_image);
    push(cs);
    push(ret_eip);
    if let Event::Fault(Some(code)) = ev {
        push(code);
    }
    // In memory the last-pushed word sits lowest.
    let mut bytes = [0u8; 24];
    for (slot, w) in bytes.chunks_exact_mut(4).zip(frame[..n].iter().rev()) {
        slot.copy_from_slice(&w.to_le_bytes());
    }
    esp = esp.wrapping_sub(4 * n as u32);
    poke(uc, esp, &bytes[..4 * n])?;
    regs::set(uc, X::ESP, esp)?;
    if vmp {
        segs::load(uc, Seg::Cs, selector, new_cpl != 3)?;
    } else {
        regs::set(uc, X::CS, selector as u32)?;
    }
    regs::set(uc, X::EIP, offset)?;
    let mut nf = real_flags & !(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM);
    let interrupt_gate = gate_type == 0xE;
    if vmp {
        let v = &mut uc.get_data_mut().vcpu;
        v.cpl = new_cpl;
        v.halted = false;
        if interrupt_gate {
            v.vif = false;
        }
    } else {
        uc.get_data_mut().halted_native = false;
        if interrupt_gate {
            nf &= !EFLAGS_IF;
        }
    }
    regs::set(uc, X::EFLAGS, nf)?;
    super::syncpt::stop_after(uc, super::syncpt::SyncKind::Interrupt);
    Ok(())
}

/// Ring-0 stack from the TSS (virtual TR and the guest's GDT in `vmp`, real TR in `native`).
fn tss_stack(uc: &mut Uc, vmp: bool, gdt_base: u32) -> Result<(u16, u32)> {
    let base = if vmp {
        let tr = uc.get_data().vcpu.tr;
        if tr & !7 == 0 {
            return Err(triple(
                uc,
                "privilege change with no task register loaded".into(),
            ));
        }
        desc_base(descriptor(uc, gdt_base, tr)?)
    } else {
        ffi::read_mmr(uc, X::TR)?.base as u32
    };
    let mut b = [0u8; 8];
    peek(uc, base + 4, &mut b)?;
    Ok((
        u16::from_le_bytes([b[4], b[5]]),
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    ))
}

/// Unicorn only loads a ring-0 SS at CPL 0 and derives CPL from SS: drop to real mode for one SS
/// load (which makes CPL 0), return to protected mode, then load the real ring-0 SS.
fn force_ring0(uc: &mut Uc, ss0: u16) -> Result<()> {
    let cr0 = regs::get(uc, X::CR0)?;
    regs::set(uc, X::CR0, cr0 & !0x8000_0001)?;
    regs::set(uc, X::SS, 0)?;
    regs::set(uc, X::CR0, cr0)?;
    regs::set(uc, X::SS, ss0 as u32)
}

/// Emulates a 32-bit `iret` for the deprivileged guest kernel (possibly returning to user mode).
pub(super) fn emulate_iret(uc: &mut Uc) -> Result<()> {
    let esp = regs::get(uc, X::ESP)?;
    let mut b = [0u8; 12];
    peek(uc, esp, &mut b)?;
    let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (eip, cs, flags) = (w(0), w(4) as u16, w(8));
    let cpl = uc.get_data().vcpu.cpl;
    let new_cpl = (cs & 3) as u8;
    if new_cpl < cpl {
        return Err(triple(uc, format!("iret to more privileged cs {cs:#x}")));
    }
    let real = regs::get(uc, X::EFLAGS)?;
    // Real IF stays set and IOPL 0 so that cli/sti/in/out keep trapping; the guest's live in vcpu.
    let keep = EFLAGS_IF | EFLAGS_IOPL | EFLAGS_VM;
    regs::set(
        uc,
        X::EFLAGS,
        (flags & !keep) | (real & EFLAGS_VM) | EFLAGS_IF | 2,
    )?;
    segs::load(uc, Seg::Cs, cs, new_cpl != 3)?;
    regs::set(uc, X::EIP, eip)?;
    {
        let v = &mut uc.get_data_mut().vcpu;
        if cpl <= v.iopl || cpl == 0 {
            v.vif = flags & EFLAGS_IF != 0;
        }
        if cpl == 0 {
            v.iopl = ((flags >> 12) & 3) as u8;
        }
    }
    if new_cpl > cpl {
        let new_esp = peek32(uc, esp + 12)?;
        let new_ss = peek32(uc, esp + 16)? as u16;
        segs::load(uc, Seg::Ss, new_ss, new_cpl != 3)?;
        regs::set(uc, X::ESP, new_esp)?;
        segs::null_inner_data_segments(uc, new_cpl)?;
        let m = uc.get_data_mut();
        m.vcpu.ss = new_ss;
        m.vcpu.cpl = new_cpl;
        m.stats.cpl_switches += 1;
    } else {
        regs::set(uc, X::ESP, esp + 12)?;
    }
    Ok(())
}

/// The interrupt hook: `int n` and every processor exception.
pub(super) fn on_interrupt(uc: &mut Uc, intno: u32) -> Result<()> {
    let eip = regs::get(uc, X::EIP)?;
    let vector = intno as u8;
    let soft_len = soft_int_len(uc, intno, eip);
    if let Some(len) = soft_len {
        let start = eip.wrapping_sub(len);
        retire_upto(uc.get_data_mut(), start, true);
        if uc.get_data().config == Config::Vmp {
            uc.get_data_mut()
                .stats
                .record(TrapKind::Int, TrapPath::Interrupt);
        }
        return deliver(uc, vector, Event::Soft, eip);
    }
    // A real fault: clear QEMU's exception-in-flight so the next one is not a double fault.
    let mut r = uc.get_data_mut().reset.take();
    if let Some(reset) = r.as_mut() {
        reset.reset(uc)?;
    }
    uc.get_data_mut().reset = r;
    let m = uc.get_data();
    if m.config == Config::Vmp && intno == 13 && m.vcpu.cpl == 0 {
        return emulate::emulate_at(uc, eip, TrapPath::Fault);
    }
    retire_upto(uc.get_data_mut(), eip, false);
    if intno == 14 {
        let cr2 = regs::get(uc, X::CR2)?;
        uc.get_data_mut().vcpu.cr2 = cr2;
    }
    reflect_fault(uc, vector, eip)
}

/// Reflects a fault at `eip` to the guest kernel (counted as a trap in `vmp`).
pub(super) fn reflect_fault(uc: &mut Uc, vector: u8, eip: u32) -> Result<()> {
    if uc.get_data().config == Config::Vmp {
        uc.get_data_mut()
            .stats
            .record(TrapKind::Exception, TrapPath::Fault);
    }
    let code = match vector {
        8 | 10..=14 | 17 => Some(0),
        _ => None,
    };
    deliver(uc, vector, Event::Fault(code), eip)
}

/// `int n` arrives with EIP after the instruction; faults arrive with EIP at it. Unicorn does not
/// say which, so look for the `int` encoding just before EIP (vectors >= 32 are never faults).
fn soft_int_len(uc: &Uc, intno: u32, eip: u32) -> Option<u32> {
    let mut b = [0u8; 2];
    let ok = uc.mem_read(eip.wrapping_sub(2) as u64, &mut b).is_ok();
    if intno >= 32 {
        return Some(2);
    }
    match (ok, intno) {
        (true, 3) if b[1] == 0xCC => Some(1),
        (true, 4) if b[1] == 0xCE => Some(1),
        (true, n) if b[0] == 0xCD && b[1] as u32 == n => Some(2),
        _ => None,
    }
}

/// The invalid-instruction hook: #UD reflected to the guest.
pub(super) fn on_invalid(uc: &mut Uc) -> Result<()> {
    let eip = regs::get(uc, X::EIP)?;
    retire_upto(uc.get_data_mut(), eip, false);
    reflect_fault(uc, 6, eip)
}

/// Delivers a due timer interrupt if the guest has interrupts enabled.
pub(super) fn pending_irq(uc: &mut Uc) -> Result<()> {
    let m = uc.get_data();
    let now = m.cycles();
    if !m.dev.irq_due(now) {
        return pending_ipi(uc);
    }
    let enabled = match m.config {
        Config::Vmp => m.vcpu.vif,
        Config::Native => regs::get(uc, X::EFLAGS)? & EFLAGS_IF != 0,
    };
    if !enabled {
        return Ok(());
    }
    let m = uc.get_data_mut();
    m.dev.irq_taken(now);
    if m.config == Config::Vmp {
        m.stats.record(TrapKind::Irq, TrapPath::Interrupt);
    }
    let eip = regs::get(uc, X::EIP)?;
    deliver(uc, VEC_TIMER, Event::Hard, eip)
}

/// Delivers the lowest pending IPI vector if the guest has interrupts enabled (multiprocessor;
/// vmp configuration).
fn pending_ipi(uc: &mut Uc) -> Result<()> {
    let m = uc.get_data();
    if m.ipi.pending.is_empty() || m.config != Config::Vmp || !m.vcpu.vif {
        return Ok(());
    }
    let m = uc.get_data_mut();
    let Some(vector) = m.ipi.pending.pop_first() else {
        return Ok(());
    };
    m.stats.record(TrapKind::Irq, TrapPath::Interrupt);
    let eip = regs::get(uc, X::EIP)?;
    deliver(uc, vector, Event::Hard, eip)
}

pub(super) fn is_halted(uc: &Uc) -> bool {
    let m = uc.get_data();
    m.vcpu.halted || m.halted_native
}

/// A halted processor idles until the next timer interrupt. Returns false if none can come.
pub(super) fn idle_until_irq(uc: &mut Uc) -> Result<bool> {
    let enabled = match uc.get_data().config {
        Config::Vmp => uc.get_data().vcpu.vif,
        Config::Native => regs::get(uc, X::EFLAGS)? & EFLAGS_IF != 0,
    };
    let m = uc.get_data_mut();
    if m.ipi.enabled {
        // Multiprocessor: an IPI already pending wakes it now; otherwise the processor task
        // waits in host time for an IPI or its next tick (`Machine::idle_wait`).
        if enabled && !m.ipi.pending.is_empty() {
            pending_irq(uc)?;
            return Ok(true);
        }
        return Ok(false);
    }
    if !enabled || m.dev.timer_period == 0 || m.dev.in_service {
        return Ok(false);
    }
    let now = m.cycles();
    m.idle_cycles += m.dev.next_timer.saturating_sub(now);
    pending_irq(uc)?;
    Ok(true)
}

pub(super) fn arch_state(uc: &Uc) -> Result<ArchState> {
    let m = uc.get_data();
    let mut gprs = [0u32; 8];
    for (g, r) in gprs.iter_mut().zip(regs::GPRS) {
        *g = regs::get(uc, r)?;
    }
    let real_flags = regs::get(uc, X::EFLAGS)?;
    let seg = |r| regs::get(uc, r).map(|v| v as u16);
    let mut s = ArchState {
        gprs,
        eip: regs::get(uc, X::EIP)?,
        eflags: real_flags,
        cs: seg(X::CS)?,
        ss: seg(X::SS)?,
        ds: seg(X::DS)?,
        es: seg(X::ES)?,
        gdtr: (0, 0),
        idtr: (0, 0),
        ldtr: 0,
        tr: 0,
        cr0: 0,
        cr2: 0,
        cr3: 0,
        cr4: 0,
    };
    match m.config {
        Config::Vmp => {
            s.cs = segs::guest_cs(uc)?;
            let v = &m.vcpu;
            s.eflags = (real_flags & !(EFLAGS_IF | EFLAGS_IOPL))
                | ((v.vif as u32) << 9)
                | ((v.iopl as u32) << 12);
            s.ss = v.ss;
            s.gdtr = (v.gdtr.base, v.gdtr.limit);
            s.idtr = (v.idtr.base, v.idtr.limit);
            (s.ldtr, s.tr) = (v.ldtr, v.tr);
            (s.cr0, s.cr2, s.cr3, s.cr4) = (v.cr0, v.cr2, v.cr3, v.cr4);
        }
        Config::Native => {
            let g = ffi::read_mmr(uc, X::GDTR)?;
            let i = ffi::read_mmr(uc, X::IDTR)?;
            s.gdtr = (g.base as u32, g.limit as u16);
            s.idtr = (i.base as u32, i.limit as u16);
            s.ldtr = ffi::read_mmr(uc, X::LDTR)?.selector;
            s.tr = ffi::read_mmr(uc, X::TR)?.selector;
            s.cr0 = regs::get(uc, X::CR0)?;
            s.cr2 = regs::get(uc, X::CR2)?;
            s.cr3 = regs::get(uc, X::CR3)?;
            s.cr4 = regs::get(uc, X::CR4)?;
        }
    }
    let _ = hooks::is_native(m);
    Ok(s)
}
