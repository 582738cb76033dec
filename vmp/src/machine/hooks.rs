//! Installing the monitor's hooks on unicorn, and turning engine stops into clear errors.

use std::ffi::c_void;
use std::rc::Rc;

use iced_x86::{Decoder, DecoderOptions};
use unicorn_engine::{uc_error, HookType, MemType, RegisterX86 as X, Unicorn};
use unicorn_engine_sys as sys;

use super::blocks::{BlockInfo, CurBlock};
use super::{deliver, emulate, regs, Config, Monitor};
use crate::error::{Result, VmpError};
use crate::layout::{MONITOR_BASE, MONITOR_SIZE, PORT_PIC_EOI, RAM_BASE, RAM_TOP};
use crate::vcpu::{TrapKind, TrapPath};

pub(super) fn install(uc: &mut Unicorn<'static, Monitor>) -> Result<()> {
    // Block hook over all of memory: counts retired guest instructions (the virtual clock) and
    // stops emulation at the slice end / next timer deadline. It runs once per executed block, so
    // it is registered through the C API with a plain callback (the safe binding's proxy would
    // rebuild a `Unicorn` handle on every call).
    add_raw_block_hook(uc)?;
    uc.add_intr_hook(|uc, intno| {
        if let Err(e) = deliver::on_interrupt(uc, intno) {
            uc.get_data_mut().fail(e);
            let _ = uc.emu_stop();
        }
    })?;
    uc.add_insn_invalid_hook(|uc| match deliver::on_invalid(uc) {
        Ok(()) => true,
        Err(e) => {
            uc.get_data_mut().fail(e);
            let _ = uc.emu_stop();
            true
        }
    })?;
    // Port I/O that the processor allows (native ring 0) reaches the devices directly.
    uc.add_insn_in_hook(|uc, port, size| {
        let eip = io_insn(uc);
        let now = now_at(uc.get_data(), eip);
        let v = uc.get_data_mut().dev.read(port as u16, now);
        v & size_mask(size)
    })?;
    uc.add_insn_out_hook(|uc, port, size, value| {
        let eip = io_insn(uc);
        let now = now_at(uc.get_data(), eip);
        let m = uc.get_data_mut();
        m.dev.write(port as u16, value & size_mask(size), now);
        if port as u16 == PORT_PIC_EOI {
            // End of interrupt: the run loop re-arms its stop at the next tick.
            let _ = uc.emu_stop();
        } else if m.dev.exit_status.is_some() {
            // Power-off takes effect right after the `out`, exactly where the trapped `out` of
            // the vmp configuration stops, so both retire the same instructions.
            retire_upto(m, eip, true);
            if let Some(i) = emulate::decode_at(uc, eip) {
                let _ = regs::set(uc, X::EIP, i.next_ip32());
            }
            let _ = uc.emu_stop();
        }
    })?;
    // Only over the holes of the address space: a memory hook whose range covers RAM would keep
    // every guest store on unicorn's slow path (`uc_mem_hook_installed` in its softmmu).
    for (lo, hi) in [
        (0, RAM_BASE as u64 - 1),
        (RAM_TOP as u64, MONITOR_BASE as u64 - 1),
        ((MONITOR_BASE + MONITOR_SIZE) as u64, u64::MAX),
    ] {
        uc.add_mem_hook(
            HookType::MEM_UNMAPPED,
            lo,
            hi,
            |uc, _ty: MemType, addr, _size, _v| {
                uc.get_data_mut().unmapped_at = Some(addr);
                false
            },
        )?;
    }
    add_raw_insn_hook(uc, sys::X86Insn::RDTSC, rdtsc_proxy)?;
    add_raw_insn_hook(uc, sys::X86Insn::CPUID, cpuid_proxy)?;
    Ok(())
}

/// Address of the I/O instruction whose hook is running. Unicorn's EIP inside IN/OUT hooks is
/// the start of the translation block, so walk the block from there (or from the last I/O
/// instruction already seen in it) to the next `in`/`out`/`ins`/`outs`.
fn io_insn(uc: &mut Unicorn<'_, Monitor>) -> u32 {
    let eip = regs::get(uc, X::EIP).unwrap_or(0);
    let m = uc.get_data();
    let cur = m.cur_block;
    let start = cur.start;
    let offs = match m.block_cache.offsets(cur.start, cur.size) {
        Some(o) => o.clone(),
        None => return eip,
    };
    let from = match m.io_cursor {
        Some(c) => c + 1,
        None => index_in_block(m, eip) as usize,
    };
    for (i, off) in offs.iter().enumerate().skip(from) {
        let at = start + *off as u32;
        if emulate::decode_at(uc, at).is_some_and(|ins| {
            matches!(
                emulate::classify(&ins),
                Some(TrapKind::In | TrapKind::Out | TrapKind::Ins | TrapKind::Outs)
            )
        }) {
            uc.get_data_mut().io_cursor = Some(i);
            return at;
        }
    }
    eip
}

fn size_mask(size: usize) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

fn add_raw_block_hook(uc: &mut Unicorn<'static, Monitor>) -> Result<()> {
    let mon: *mut Monitor = uc.get_data_mut();
    let mut id: sys::uc_hook = 0;
    let cb: extern "C" fn(*mut sys::uc_engine, u64, u32, *mut c_void) = block_proxy;
    // SAFETY: the callback matches `uc_cb_hookcode_t`; `mon` points into the engine's own user
    // data and stays valid while the engine (and so the hook) exists.
    let err = unsafe {
        sys::uc_hook_add(
            uc.get_handle(),
            &raw mut id,
            HookType::BLOCK.0 as i32,
            cb as *mut c_void,
            mon.cast(),
            1,
            0,
        )
    };
    if err != uc_error::OK {
        return Err(err.into());
    }
    Ok(())
}

extern "C" fn block_proxy(uc: *mut sys::uc_engine, addr: u64, size: u32, ud: *mut c_void) {
    // SAFETY: see `add_raw_block_hook`; no other reference to the monitor is live in a hook.
    let m = unsafe { &mut *ud.cast::<Monitor>() };
    let addr = addr as u32;
    // The common case — a known block, no REP re-entry, no stop due — touches a few fields and
    // makes no call, so it needs no stack frame; everything else takes `block_slow`.
    if let Some(info) = m.block_cache.front_hit(addr, size) {
        let retired = m.retired + m.cur_block.count as u64;
        if m.last_insn != addr && retired < m.stop_at {
            m.retired = retired;
            m.last_insn = addr + info.last_offset as u32;
            m.cur_block = CurBlock {
                start: addr,
                size,
                count: info.count,
            };
            m.io_cursor = None;
            return;
        }
    }
    block_slow(m, addr, size, uc)
}

#[inline(never)]
fn block_slow(m: &mut Monitor, addr: u32, size: u32, uc: *mut sys::uc_engine) {
    if on_block(m, addr, size, uc) {
        // SAFETY: stopping the engine that is calling us is what uc_emu_stop is for.
        unsafe {
            sys::uc_emu_stop(uc);
        }
    }
}

/// Accounts the block that just ended and enters the one at `addr`; true asks emulation to stop
/// before it runs.
fn on_block(m: &mut Monitor, addr: u32, size: u32, uc: *mut sys::uc_engine) -> bool {
    let info = match m.block_cache.info(addr, size) {
        Some(i) => i,
        None => new_block(m, uc, addr, size),
    };
    // QEMU runs each further iteration of a REP string instruction as a new block starting at it;
    // architecturally it is still the one instruction already counted.
    let repeat = m.last_insn == addr && m.rep_string_at.contains(&addr);
    m.retired += m.cur_block.count as u64;
    m.retired -= repeat as u64;
    if m.retired >= m.stop_at {
        // A stop requested here takes effect before this block runs (tests/engine_facts.rs).
        m.cur_block = CurBlock::default();
        m.retired += repeat as u64;
        return true;
    }
    m.last_insn = addr + info.last_offset as u32;
    m.cur_block = CurBlock {
        start: addr,
        size,
        count: info.count,
    };
    m.io_cursor = None;
    false
}

/// First execution of a block: decode it and remember its offsets (kept out of the hot path).
#[cold]
#[inline(never)]
fn new_block(m: &mut Monitor, uc: *mut sys::uc_engine, addr: u32, size: u32) -> BlockInfo {
    let (o, reps) = block_offsets(m, uc, addr, size);
    m.rep_string_at.extend(reps);
    m.block_cache.insert(addr, size, o)
}

/// Offsets of the instructions of a translation block, decoded with iced-x86, and the addresses of
/// its REP-prefixed string instructions.
fn block_offsets(
    m: &Monitor,
    uc: *mut sys::uc_engine,
    addr: u32,
    size: u32,
) -> (Rc<[u16]>, Vec<u32>) {
    let mut bytes = vec![0u8; size as usize];
    // SAFETY (uc_mem_read): `bytes` is `size` writable bytes; `uc` is the live engine.
    let read = m.ram.read(addr, &mut bytes)
        || unsafe {
            sys::uc_mem_read(uc, addr as u64, bytes.as_mut_ptr().cast(), size as u64)
                == uc_error::OK
        };
    if !read {
        return (Rc::from(vec![0u16]), Vec::new());
    }
    let mut d = Decoder::with_ip(32, &bytes, addr as u64, DecoderOptions::NONE);
    let (mut v, mut reps) = (Vec::new(), Vec::new());
    while d.can_decode() {
        v.push((d.ip() - addr as u64) as u16);
        let i = d.decode();
        if i.is_string_instruction()
            && (i.has_rep_prefix() || i.has_repe_prefix() || i.has_repne_prefix())
        {
            reps.push(i.ip32());
        }
    }
    (Rc::from(v), reps)
}

/// Index of `eip` within the current block (instructions before it in the block).
pub(super) fn index_in_block(m: &Monitor, eip: u32) -> u64 {
    let cur = m.cur_block;
    let Some(offs) = m.block_cache.offsets(cur.start, cur.size) else {
        return 0;
    };
    let off = eip.wrapping_sub(cur.start);
    match offs.binary_search(&(off as u16)) {
        Ok(i) if off <= u16::MAX as u32 => i as u64,
        _ => 0,
    }
}

/// Guest cycles at the start of the instruction at `eip` (used by `rdtsc` and device I/O).
pub(super) fn now_at(m: &Monitor, eip: u32) -> u64 {
    m.cpu.cycles(m.retired + index_in_block(m, eip)) + m.idle_cycles
}

/// The instruction at `eip` completed (emulated) or was abandoned (a fault): account the block's
/// instructions up to it and forget the rest of the block, which the new EIP leaves.
pub(super) fn retire_upto(m: &mut Monitor, eip: u32, include: bool) {
    m.retired += index_in_block(m, eip) + include as u64;
    m.last_insn = eip;
    m.io_cursor = None;
    m.cur_block = CurBlock::default();
}

type RawInsnHook = extern "C" fn(*mut sys::uc_engine, *mut c_void) -> i32;

/// `rdtsc`/`cpuid` hooks need an `int` return ("skip the instruction"), which the safe binding's
/// proxy does not provide; they get the monitor through a raw pointer that lives as long as `uc`.
fn add_raw_insn_hook(
    uc: &mut Unicorn<'static, Monitor>,
    insn: sys::X86Insn,
    f: RawInsnHook,
) -> Result<()> {
    let mon: *mut Monitor = uc.get_data_mut();
    let mut id: sys::uc_hook = 0;
    // SAFETY: the callback signature matches unicorn's `uc_cb_insn_cpuid_t`; `mon` points into the
    // engine's own user data and stays valid while the engine (and so the hook) exists.
    let err = unsafe {
        sys::uc_hook_add(
            uc.get_handle(),
            &raw mut id,
            HookType::INSN.0 as i32,
            f as *mut c_void,
            mon.cast(),
            1,
            0,
            insn,
        )
    };
    if err != uc_error::OK {
        return Err(err.into());
    }
    Ok(())
}

extern "C" fn rdtsc_proxy(uc: *mut sys::uc_engine, ud: *mut c_void) -> i32 {
    // SAFETY: see `add_raw_insn_hook`; no other reference to the monitor is live inside a hook.
    let m = unsafe { &mut *ud.cast::<Monitor>() };
    let mut eip: u32 = 0;
    unsafe {
        sys::uc_reg_read(uc, X::EIP as i32, (&raw mut eip).cast());
    }
    let t = now_at(m, eip);
    write_pair(uc, t as u32, (t >> 32) as u32);
    1
}

extern "C" fn cpuid_proxy(uc: *mut sys::uc_engine, _ud: *mut c_void) -> i32 {
    let mut eax: u32 = 0;
    let mut ecx: u32 = 0;
    unsafe {
        sys::uc_reg_read(uc, X::EAX as i32, (&raw mut eax).cast());
        sys::uc_reg_read(uc, X::ECX as i32, (&raw mut ecx).cast());
    }
    let r = emulate::cpuid_values(eax, ecx);
    for (reg, v) in [
        (X::EAX, r[0]),
        (X::EBX, r[1]),
        (X::ECX, r[2]),
        (X::EDX, r[3]),
    ] {
        unsafe {
            sys::uc_reg_write(uc, reg as i32, (&raw const v).cast());
        }
    }
    1
}

fn write_pair(uc: *mut sys::uc_engine, lo: u32, hi: u32) {
    unsafe {
        sys::uc_reg_write(uc, X::EAX as i32, (&raw const lo).cast());
        sys::uc_reg_write(uc, X::EDX as i32, (&raw const hi).cast());
    }
}

/// After a native run: a `hlt` at ring 0 ends unicorn's emulation right after it, and QEMU ends
/// the translation block at a `hlt`, so the guest halted exactly when `ended` (the block that was
/// executing when emulation returned) ran to its end and its last instruction is a one-byte `hlt`.
/// The retired count cannot tell this apart from a requested stop: the `hlt` may be the very
/// instruction that reaches the slice end or the timer deadline, and a stop at a block entry may
/// follow some other instruction whose last byte is 0xF4.
pub(super) fn detect_native_hlt(uc: &mut Unicorn<'_, Monitor>, ended: CurBlock) -> Result<()> {
    let eip = regs::get(uc, X::EIP)?;
    let ran_to_end = ended.count > 0 && eip == ended.start.wrapping_add(ended.size);
    if !ran_to_end || eip <= RAM_BASE {
        return Ok(());
    }
    let m = uc.get_data();
    let last_is_one_byte = m
        .block_cache
        .offsets(ended.start, ended.size)
        .and_then(|offs| offs.last().copied())
        .is_some_and(|off| off as u32 + 1 == ended.size);
    let mut b = [0u8; 1];
    if last_is_one_byte
        && m.dev.exit_status.is_none()
        && uc.mem_read(eip as u64 - 1, &mut b).is_ok()
        && b[0] == 0xF4
    {
        uc.get_data_mut().halted_native = true;
    }
    Ok(())
}

/// An engine error after `emu_start`, named with the guest EIP and instruction.
pub(super) fn engine_error(uc: &mut Unicorn<'_, Monitor>, e: uc_error) -> VmpError {
    let eip = regs::get(uc, X::EIP).unwrap_or(0);
    let asm = emulate::disasm_at(uc, eip);
    match (e, uc.get_data_mut().unmapped_at.take()) {
        (
            uc_error::READ_UNMAPPED | uc_error::WRITE_UNMAPPED | uc_error::FETCH_UNMAPPED,
            Some(addr),
        ) => VmpError::Unmapped { eip, addr, asm },
        (uc_error::EXCEPTION, _) => VmpError::TripleFault {
            eip,
            asm,
            why: "unhandled processor exception".into(),
        },
        (e, _) => {
            let _ = (RAM_TOP, TrapPath::Hook);
            VmpError::Engine(format!("{e:?} at eip {eip:#010x} ({asm})"))
        }
    }
}

/// Asks the engine to stop after the current instruction's hook returns.
pub(super) fn stop(uc: &mut Unicorn<'_, Monitor>) {
    let _ = uc.emu_stop();
}

pub(super) fn is_native(m: &Monitor) -> bool {
    m.config == Config::Native
}
