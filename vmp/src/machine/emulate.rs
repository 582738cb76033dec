//! Trap-and-emulate: decode the real instruction bytes at EIP with iced-x86 and apply the
//! instruction to the virtual CPU state, then advance EIP. Used by both interception paths.

use iced_x86::{
    Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Mnemonic, OpKind, Register,
};
use unicorn_engine::{RegisterX86 as X, Unicorn};

use super::deliver::{self, peek, poke};
use super::hooks::{now_at, retire_upto, stop};
use super::{regs, shadow, Monitor};
use crate::error::{Result, VmpError};
use crate::machine::regs::{EFLAGS_IF, EFLAGS_IOPL, EFLAGS_RF, EFLAGS_VM};
use crate::vcpu::{TrapKind, TrapPath};

type Uc<'a> = Unicorn<'a, Monitor>;

/// Reads up to 15 instruction bytes at `eip` (fewer at the end of mapped memory).
fn fetch(uc: &Uc, eip: u32) -> Vec<u8> {
    let mut b = [0u8; 15];
    let in_ram = (crate::layout::RAM_TOP.saturating_sub(eip) as usize).min(15);
    if in_ram > 0 && uc.get_data().ram.read(eip, &mut b[..in_ram]) {
        return b[..in_ram].to_vec();
    }
    for n in (1..=15usize).rev() {
        let mut b = vec![0u8; n];
        if uc.mem_read(eip as u64, &mut b).is_ok() {
            return b;
        }
    }
    Vec::new()
}

pub fn decode_at(uc: &Uc, eip: u32) -> Option<Instruction> {
    let bytes = fetch(uc, eip);
    let mut d = Decoder::with_ip(32, &bytes, eip as u64, DecoderOptions::NONE);
    let i = d.decode();
    (!i.is_invalid()).then_some(i)
}

pub fn format(i: &Instruction) -> String {
    let mut s = String::new();
    IntelFormatter::new().format(i, &mut s);
    s
}

/// The disassembled instruction at `eip`, or its raw bytes when it does not decode.
pub fn disasm_at(uc: &Uc, eip: u32) -> String {
    match decode_at(uc, eip) {
        Some(i) => format(&i),
        None => format!("<undecodable {}>", hex(&fetch(uc, eip))),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which sensitive instruction this is, if any. `None` for ordinary instructions.
pub fn classify(i: &Instruction) -> Option<TrapKind> {
    use TrapKind as K;
    let is_ss = |n: u32| {
        i.op_count() > n && i.op_kind(n) == OpKind::Register && i.op_register(n) == Register::SS
    };
    Some(match i.mnemonic() {
        Mnemonic::Lgdt => K::Lgdt,
        Mnemonic::Lidt => K::Lidt,
        Mnemonic::Sgdt => K::Sgdt,
        Mnemonic::Sidt => K::Sidt,
        Mnemonic::Lldt => K::Lldt,
        Mnemonic::Sldt => K::Sldt,
        Mnemonic::Ltr => K::Ltr,
        Mnemonic::Str => K::Str,
        Mnemonic::Mov if i.op0_kind() == OpKind::Register && is_cr(i.op0_register()) => K::MovToCr,
        Mnemonic::Mov if i.op1_kind() == OpKind::Register && is_cr(i.op1_register()) => {
            K::MovFromCr
        }
        Mnemonic::Mov if is_ss(0) || is_ss(1) => K::MovSs,
        Mnemonic::Push if is_ss(0) => K::MovSs,
        Mnemonic::Pop if is_ss(0) => K::PopSs,
        Mnemonic::Smsw => K::Smsw,
        Mnemonic::Lmsw => K::Lmsw,
        Mnemonic::Clts => K::Clts,
        Mnemonic::Cli => K::Cli,
        Mnemonic::Sti => K::Sti,
        Mnemonic::Pushf | Mnemonic::Pushfd => K::Pushf,
        Mnemonic::Popf | Mnemonic::Popfd => K::Popf,
        Mnemonic::In => K::In,
        Mnemonic::Out => K::Out,
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => K::Ins,
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => K::Outs,
        Mnemonic::Hlt => K::Hlt,
        Mnemonic::Iret | Mnemonic::Iretd => K::Iret,
        Mnemonic::Invlpg => K::Invlpg,
        Mnemonic::Wbinvd => K::Wbinvd,
        Mnemonic::Invd => K::Invd,
        Mnemonic::Rdtsc => K::Rdtsc,
        Mnemonic::Cpuid => K::Cpuid,
        _ => return None,
    })
}

fn is_cr(r: Register) -> bool {
    matches!(
        r,
        Register::CR0 | Register::CR2 | Register::CR3 | Register::CR4
    )
}

/// Instructions that fault at CPL > 0 (the rest are sensitive but unprivileged).
fn privileged(k: TrapKind) -> bool {
    use TrapKind as K;
    !matches!(
        k,
        K::Sgdt
            | K::Sidt
            | K::Sldt
            | K::Str
            | K::Smsw
            | K::Pushf
            | K::Popf
            | K::Rdtsc
            | K::Cpuid
            | K::MovSs
            | K::PopSs
            | K::Iret
    )
}

/// Effective address of the memory operand (flat segments: the guest ABI has base-0 segments).
fn ea(uc: &Uc, i: &Instruction) -> Result<u32> {
    let r = |reg: Register| -> Result<u32> {
        if reg == Register::None {
            Ok(0)
        } else {
            regs::read_iced(uc, reg)
        }
    };
    let base = r(i.memory_base())?;
    let index = r(i.memory_index())?.wrapping_mul(i.memory_index_scale());
    Ok(base
        .wrapping_add(index)
        .wrapping_add(i.memory_displacement32()))
}

/// Value of operand `n` (register, immediate or memory of `size` bytes).
fn read_op(uc: &mut Uc, i: &Instruction, n: u32, size: usize) -> Result<u32> {
    match i.op_kind(n) {
        OpKind::Register => regs::read_iced(uc, i.op_register(n)),
        OpKind::Memory => {
            let mut b = [0u8; 4];
            let a = ea(uc, i)?;
            peek(uc, a, &mut b[..size])?;
            Ok(u32::from_le_bytes(b))
        }
        OpKind::Immediate8 => Ok(i.immediate8() as u32),
        _ => Ok(i.immediate32()),
    }
}

/// Writes operand `n`: a register (zero-extended to its width) or `size` bytes of memory.
fn write_op(uc: &mut Uc, i: &Instruction, n: u32, size: usize, v: u32) -> Result<()> {
    match i.op_kind(n) {
        OpKind::Register => regs::write_iced(uc, i.op_register(n), v),
        _ => {
            let a = ea(uc, i)?;
            poke(uc, a, &v.to_le_bytes()[..size])
        }
    }
}

fn push32(uc: &mut Uc, v: u32) -> Result<()> {
    let esp = regs::get(uc, X::ESP)?.wrapping_sub(4);
    poke(uc, esp, &v.to_le_bytes())?;
    regs::set(uc, X::ESP, esp)
}

fn pop32(uc: &mut Uc) -> Result<u32> {
    let esp = regs::get(uc, X::ESP)?;
    let v = deliver::peek32(uc, esp)?;
    regs::set(uc, X::ESP, esp.wrapping_add(4))?;
    Ok(v)
}

fn unsupported(uc: &Uc, eip: u32) -> VmpError {
    VmpError::Unsupported {
        eip,
        asm: disasm_at(uc, eip),
    }
}

/// Emulates the sensitive instruction at `eip` (reached by `path`) on the virtual CPU.
pub(super) fn emulate_at(uc: &mut Uc, eip: u32, path: TrapPath) -> Result<()> {
    let cached = match path {
        TrapPath::Hook => uc.get_data().decoded.get(&eip).copied(),
        _ => None,
    };
    let Some(i) = cached.or_else(|| decode_at(uc, eip)) else {
        return Err(VmpError::Undecodable {
            eip,
            bytes: hex(&fetch(uc, eip)),
        });
    };
    {
        // The paper's monitor reads the instruction with PEEKDATA, one aligned word at a time.
        let m = uc.get_data_mut();
        m.stats.insn_words += ((eip & 3) as u64 + i.len() as u64).div_ceil(4);
    }
    if i.mnemonic() == Mnemonic::Int && path == TrapPath::Hook {
        // `int n` found by the user-code scan: deliver it without the exception round trip.
        let m = uc.get_data_mut();
        retire_upto(m, eip, true);
        m.stats.record(TrapKind::Int, TrapPath::Hook);
        return deliver::deliver(uc, i.immediate8(), deliver::Event::Soft, i.next_ip32());
    }
    let Some(kind) = classify(&i) else {
        if path == TrapPath::Fault {
            // An ordinary instruction faulted (e.g. a bad segment load): the guest's problem.
            retire_upto(uc.get_data_mut(), eip, false);
            return deliver::reflect_fault(uc, 13, eip);
        }
        return Err(unsupported(uc, eip));
    };
    let cpl = uc.get_data().vcpu.cpl;
    if cpl != 0 && privileged(kind) {
        retire_upto(uc.get_data_mut(), eip, false);
        return deliver::reflect_fault(uc, 13, eip);
    }
    let now = now_at(uc.get_data(), eip);
    {
        let m = uc.get_data_mut();
        retire_upto(m, eip, true);
        m.stats.record(kind, path);
    }
    let next = i.next_ip32();
    let mut jump = false;
    let mut ipi_sent = false;
    match kind {
        TrapKind::Lgdt | TrapKind::Lidt => {
            let a = ea(uc, &i)?;
            let mut b = [0u8; 6];
            peek(uc, a, &mut b)?;
            let t = crate::vcpu::TableReg {
                limit: u16::from_le_bytes([b[0], b[1]]),
                base: u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
            };
            if kind == TrapKind::Lgdt {
                uc.get_data_mut().vcpu.gdtr = t;
                shadow::load_shadow(uc, t)?;
            } else {
                uc.get_data_mut().vcpu.idtr = t;
            }
        }
        TrapKind::Sgdt | TrapKind::Sidt => {
            let v = &uc.get_data().vcpu;
            let t = if kind == TrapKind::Sgdt {
                v.gdtr
            } else {
                v.idtr
            };
            let mut b = t.limit.to_le_bytes().to_vec();
            b.extend_from_slice(&t.base.to_le_bytes());
            let a = ea(uc, &i)?;
            poke(uc, a, &b)?;
        }
        TrapKind::Lldt => {
            let sel = read_op(uc, &i, 0, 2)? as u16;
            uc.get_data_mut().vcpu.ldtr = sel;
        }
        TrapKind::Ltr => {
            let sel = read_op(uc, &i, 0, 2)? as u16;
            let gdt = uc.get_data().vcpu.gdtr.base;
            // Like the processor, mark the TSS descriptor busy.
            let at = gdt.wrapping_add((sel & !7) as u32 + 5);
            let mut b = [0u8; 1];
            peek(uc, at, &mut b)?;
            poke(uc, at, &[b[0] | 2])?;
            uc.get_data_mut().vcpu.tr = sel;
        }
        TrapKind::Sldt | TrapKind::Str => {
            let v = &uc.get_data().vcpu;
            let sel = if kind == TrapKind::Sldt { v.ldtr } else { v.tr };
            write_op(uc, &i, 0, 2, sel as u32)?;
        }
        TrapKind::MovToCr => {
            let v = regs::read_iced(uc, i.op1_register())?;
            set_cr(uc, i.op0_register(), v)?;
        }
        TrapKind::MovFromCr => {
            let c = &uc.get_data().vcpu;
            let v = match i.op1_register() {
                Register::CR0 => c.cr0,
                Register::CR2 => c.cr2,
                Register::CR3 => c.cr3,
                _ => c.cr4,
            };
            regs::write_iced(uc, i.op0_register(), v)?;
        }
        TrapKind::Smsw => {
            let cr0 = uc.get_data().vcpu.cr0;
            let size = if i.op0_kind() == OpKind::Register {
                4
            } else {
                2
            };
            write_op(uc, &i, 0, size, cr0)?;
        }
        TrapKind::Lmsw => {
            let v = read_op(uc, &i, 0, 2)?;
            let cr0 = uc.get_data().vcpu.cr0;
            set_cr(uc, Register::CR0, (cr0 & !0xe) | (v & 0xf) | (cr0 & 1))?;
        }
        TrapKind::Clts => uc.get_data_mut().vcpu.cr0 &= !8,
        TrapKind::Cli => uc.get_data_mut().vcpu.vif = false,
        TrapKind::Sti => {
            uc.get_data_mut().vcpu.vif = true;
            stop_if_irq(uc);
        }
        TrapKind::Pushf => {
            if i.mnemonic() != Mnemonic::Pushfd {
                return Err(unsupported(uc, eip));
            }
            let real = regs::get(uc, X::EFLAGS)?;
            let v = &uc.get_data().vcpu;
            let img = (real & !(EFLAGS_IF | EFLAGS_IOPL | EFLAGS_RF | EFLAGS_VM))
                | ((v.vif as u32) << 9)
                | ((v.iopl as u32) << 12);
            push32(uc, img)?;
        }
        TrapKind::Popf => {
            if i.mnemonic() != Mnemonic::Popfd {
                return Err(unsupported(uc, eip));
            }
            let v = pop32(uc)?;
            let real = regs::get(uc, X::EFLAGS)?;
            let keep = EFLAGS_IF | EFLAGS_IOPL | EFLAGS_VM | EFLAGS_RF;
            regs::set(
                uc,
                X::EFLAGS,
                (v & !keep) | (real & (EFLAGS_VM | EFLAGS_IOPL)) | EFLAGS_IF | 2,
            )?;
            let c = &mut uc.get_data_mut().vcpu;
            c.vif = v & EFLAGS_IF != 0;
            c.iopl = ((v >> 12) & 3) as u8;
            stop_if_irq(uc);
        }
        TrapKind::In => {
            let size = reg_size(i.op0_register());
            let port = read_op(uc, &i, 1, 2)? as u16;
            let v = uc.get_data_mut().dev.read(port, now);
            regs::write_iced(uc, i.op0_register(), v & mask(size))?;
        }
        TrapKind::Out => {
            let size = reg_size(i.op1_register());
            let port = read_op(uc, &i, 0, 2)? as u16;
            let v = regs::read_iced(uc, i.op1_register())?;
            let m = uc.get_data_mut();
            if port == crate::layout::PORT_IPI && m.ipi.enabled {
                // The IPI leaves with this processor's writes before it (a publish right after
                // the instruction), so the target sees what the sender wrote before sending.
                ipi_sent = m.ipi.send(v & mask(size)) && !m.ipi.outbox.is_empty();
            } else {
                m.dev.write(port, v & mask(size), now);
                if m.dev.exit_status.is_some() || port == crate::layout::PORT_PIC_EOI {
                    stop(uc);
                }
            }
        }
        TrapKind::Ins | TrapKind::Outs => string_io(uc, &i, kind, now)?,
        TrapKind::Hlt => {
            uc.get_data_mut().vcpu.halted = true;
            stop(uc);
        }
        TrapKind::Iret => {
            if i.mnemonic() != Mnemonic::Iretd {
                return Err(unsupported(uc, eip));
            }
            deliver::emulate_iret(uc)?;
            jump = true;
            stop_if_irq(uc);
        }
        TrapKind::Invlpg => {
            let _ = uc.ctl_flush_tlb();
        }
        TrapKind::Wbinvd | TrapKind::Invd => {}
        TrapKind::Rdtsc => {
            regs::set(uc, X::EAX, now as u32)?;
            regs::set(uc, X::EDX, (now >> 32) as u32)?;
        }
        TrapKind::Cpuid => {
            let (a, c) = (regs::get(uc, X::EAX)?, regs::get(uc, X::ECX)?);
            let mut r = cpuid_values(a, c);
            if a == 1 {
                // Initial APIC id (Intel SDM vol. 2, CPUID leaf 01H, EBX bits 31..24).
                r[1] |= (uc.get_data().ipi.cpu_id as u32) << 24;
            }
            for (reg, v) in [
                (X::EAX, r[0]),
                (X::EBX, r[1]),
                (X::ECX, r[2]),
                (X::EDX, r[3]),
            ] {
                regs::set(uc, reg, v)?;
            }
        }
        TrapKind::MovSs | TrapKind::PopSs => {
            let load = kind == TrapKind::PopSs
                || (i.op0_kind() == OpKind::Register && i.op0_register() == Register::SS);
            if kind == TrapKind::PopSs {
                let v = pop32(uc)? as u16;
                load_ss(uc, v)?;
            } else if load {
                let v = read_op(uc, &i, 1, 2)? as u16;
                load_ss(uc, v)?;
            } else if i.mnemonic() == Mnemonic::Push {
                let ss = uc.get_data().vcpu.ss as u32;
                push32(uc, ss)?;
            } else {
                let ss = uc.get_data().vcpu.ss as u32;
                let size = if i.op0_kind() == OpKind::Register {
                    4
                } else {
                    2
                };
                write_op(uc, &i, 0, size, ss)?;
            }
        }
        TrapKind::Int | TrapKind::Irq | TrapKind::Exception => return Err(unsupported(uc, eip)),
    }
    if !jump {
        regs::set(uc, X::EIP, next)?;
    }
    if super::syncpt::serialising(kind) {
        super::syncpt::stop_after(uc, super::syncpt::SyncKind::Serialising);
    }
    if ipi_sent {
        super::syncpt::stop_after(uc, super::syncpt::SyncKind::Ipi);
    }
    Ok(())
}

fn load_ss(uc: &mut Uc, sel: u16) -> Result<()> {
    // Like the processor, mark the guest's descriptor accessed.
    let gdt = uc.get_data().vcpu.gdtr.base;
    let at = gdt.wrapping_add((sel & !7) as u32 + 5);
    let mut b = [0u8; 1];
    peek(uc, at, &mut b)?;
    if b[0] & 1 == 0 {
        poke(uc, at, &[b[0] | 1])?;
    }
    // The real SS must carry RPL 3 (real CPL); the guest's view keeps what it loaded.
    let lazy = uc.get_data().vcpu.cpl != 3;
    super::segs::load(uc, super::segs::Seg::Ss, sel | 3, lazy)?;
    uc.get_data_mut().vcpu.ss = sel;
    Ok(())
}

fn set_cr(uc: &mut Uc, cr: Register, v: u32) -> Result<()> {
    match cr {
        Register::CR0 => {
            // ET is hard-wired to 1 on every processor since the 486.
            let v = v | 0x10;
            uc.get_data_mut().vcpu.cr0 = v;
            // Paging follows the guest's wish; protection stays on.
            let real = regs::get(uc, X::CR0)?;
            let paging = v & 0x8000_0000 != 0;
            if paging != (real & 0x8000_0000 != 0) {
                super::vtlb::set_paging(uc, paging)?;
            }
            regs::set(uc, X::CR0, (real & !0x8001_0000) | (v & 0x8001_0000) | 1)?;
        }
        Register::CR2 => uc.get_data_mut().vcpu.cr2 = v,
        Register::CR3 => {
            uc.get_data_mut().vcpu.cr3 = v;
            regs::set(uc, X::CR3, v)?;
        }
        _ => {
            uc.get_data_mut().vcpu.cr4 = v;
            let real = regs::get(uc, X::CR4)?;
            // Only page-size extensions affect how the real MMU walks the guest's tables.
            regs::set(uc, X::CR4, (real & !0x10) | (v & 0x10))?;
        }
    }
    Ok(())
}

fn string_io(uc: &mut Uc, i: &Instruction, kind: TrapKind, now: u64) -> Result<()> {
    let size: u32 = match i.mnemonic() {
        Mnemonic::Insb | Mnemonic::Outsb => 1,
        Mnemonic::Insw | Mnemonic::Outsw => 2,
        _ => 4,
    };
    let rep = i.has_rep_prefix() || i.has_repe_prefix();
    let mut count = if rep { regs::get(uc, X::ECX)? } else { 1 };
    let down = regs::get(uc, X::EFLAGS)? & (1 << 10) != 0;
    let port = regs::get(uc, X::EDX)? as u16;
    let (ptr_reg, mut p) = if kind == TrapKind::Outs {
        (X::ESI, regs::get(uc, X::ESI)?)
    } else {
        (X::EDI, regs::get(uc, X::EDI)?)
    };
    // Move the whole string with one guest-memory access: one PEEK/POKE per word, as a monitor
    // copying a buffer would.
    let total = count as usize * size as usize;
    let start = if down {
        p.wrapping_sub(total as u32).wrapping_add(size)
    } else {
        p
    };
    let mut buf = vec![0u8; total];
    if kind == TrapKind::Outs {
        peek(uc, start, &mut buf)?;
    }
    let step = |p: u32| {
        if down {
            p.wrapping_sub(size)
        } else {
            p.wrapping_add(size)
        }
    };
    let mut k = 0usize;
    while count > 0 {
        let off = (p.wrapping_sub(start)) as usize;
        if kind == TrapKind::Outs {
            let mut w = [0u8; 4];
            w[..size as usize].copy_from_slice(&buf[off..off + size as usize]);
            uc.get_data_mut()
                .dev
                .write(port, u32::from_le_bytes(w), now);
        } else {
            let v = uc.get_data_mut().dev.read(port, now);
            buf[off..off + size as usize].copy_from_slice(&v.to_le_bytes()[..size as usize]);
        }
        p = step(p);
        count -= 1;
        k += 1;
    }
    if kind == TrapKind::Ins && k > 0 {
        poke(uc, start, &buf)?;
    }
    regs::set(uc, ptr_reg, p)?;
    if rep {
        regs::set(uc, X::ECX, 0)?;
    }
    if uc.get_data().dev.exit_status.is_some() {
        stop(uc);
    }
    Ok(())
}

fn reg_size(r: Register) -> u32 {
    match r {
        Register::AL => 1,
        Register::AX => 2,
        _ => 4,
    }
}

fn mask(size: u32) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

/// After the guest re-enables interrupts, stop so a due interrupt is delivered at once.
fn stop_if_irq(uc: &mut Uc) {
    let m = uc.get_data();
    let ipi = !m.ipi.pending.is_empty() && !sti_shadow(uc);
    if m.vcpu.vif && (m.dev.irq_due(m.cycles()) || ipi) {
        stop(uc);
    }
}

/// `sti` delays interrupt recognition until after the next instruction (Intel SDM vol. 2, STI),
/// which is what makes an idle loop's `sti; hlt` free of lost wake-ups. Honoured for IPIs (the
/// multiprocessor); the halted processor takes the pending IPI at once.
fn sti_shadow(uc: &Uc) -> bool {
    let Ok(eip) = regs::get(uc, X::EIP) else {
        return false;
    };
    let mut b = [0u8; 2];
    uc.mem_read(eip.wrapping_sub(1) as u64, &mut b[..1]).is_ok()
        && b[0] == 0xFB
        && uc.mem_read(eip as u64, &mut b[1..]).is_ok()
        && b[1] == 0xF4
}

/// Deterministic CPUID answers shared by both configurations: a Pentium 4 (family 15) with FPU,
/// PSE, TSC, CX8 and CMOV, under the vendor string "GridbedVMP32".
pub fn cpuid_values(eax: u32, _ecx: u32) -> [u32; 4] {
    let v = b"GridbedVMP32";
    let w = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
    match eax {
        0 => [1, w(0), w(8), w(4)],
        1 => [0x0F29, 0, 0, 0x8119],
        _ => [0; 4],
    }
}
