//! The guest kernel. It builds its GDT, IDT and TSS, programs the PIT, idles once with `sti; hlt`,
//! then round-robins up to four user processes, serving Linux-numbered `int 0x80` system calls
//! (exit, write, getpid, brk, sched_yield, exit_group) and preempting on timer interrupts. A fault
//! in a process kills it. When the last process exits it writes process 0's exit status to the
//! power port.
//!
//! It is paravirtual only in what it assumes of its platform (flat base-0 segments, the monitor's
//! fixed-vector timer, a debug console port); it contains the ordinary privileged instructions of
//! a ring-0 kernel, and the same bytes run in both configurations.

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

use crate::error::{Result, VmpError};
use crate::layout::*;

/// Kernel data layout (offsets from `KERNEL_DATA`).
pub mod data {
    pub const GDT: u32 = 0x000;
    pub const GDTR: u32 = 0x040;
    pub const IDTR: u32 = 0x048;
    pub const CURRENT: u32 = 0x050;
    pub const NPROCS: u32 = 0x054;
    pub const TICKS: u32 = 0x058;
    pub const LIVE: u32 = 0x05C;
    pub const PIT_DIVISOR: u32 = 0x060;
    pub const CPUID_EAX: u32 = 0x064;
    pub const BOOT_TSC: u32 = 0x068;
    pub const TSS: u32 = 0x080;
    pub const PROCS: u32 = 0x100;
    pub const IDT: u32 = 0x400;
    pub const KILLED_MSG: u32 = 0xC00;
    /// Per-process record, `PROC_SIZE` bytes each.
    pub const PROC_SIZE: u32 = 48;
    pub const P_STATE: u32 = 0;
    pub const P_PID: u32 = 4;
    pub const P_SAVED_ESP: u32 = 8;
    pub const P_KSTACK_TOP: u32 = 12;
    pub const P_BRK: u32 = 16;
    pub const P_BRK_MIN: u32 = 20;
    pub const P_BRK_MAX: u32 = 24;
    pub const P_ENTRY: u32 = 28;
    pub const P_USER_ESP: u32 = 32;
    pub const P_EXIT: u32 = 36;
}

pub const KILLED_TEXT: &[u8] = b"[kernel] process killed by a fault\n";

fn k(off: u32) -> u64 {
    (KERNEL_DATA + off) as u64
}

fn asm_err(e: IcedError) -> VmpError {
    VmpError::BadImage(format!("kernel assembly: {e}"))
}

/// Assembles the kernel text (to be placed at `KERNEL_TEXT`, entry at its first byte).
pub fn assemble() -> Result<Vec<u8>> {
    // Entry addresses are immediates in the IDT-building code; `mov r32, imm32` has one size
    // whatever the value, so a second pass with the first pass's addresses gives the final text.
    let (_, addrs) = build([0; 3]).map_err(asm_err)?;
    let (text, again) = build(addrs).map_err(asm_err)?;
    if again != addrs {
        return Err(VmpError::BadImage("kernel layout did not converge".into()));
    }
    Ok(text)
}

/// Assembles with `entries` = (fault, timer, syscall) entry addresses; returns the actual ones.
fn build(entries: [u32; 3]) -> std::result::Result<(Vec<u8>, [u32; 3]), IcedError> {
    use data::*;
    let mut a = CodeAssembler::new(32)?;
    let mut timer_entry = a.create_label();
    let mut syscall_entry = a.create_label();
    let mut fault_entry = a.create_label();
    let mut resume = a.create_label();
    let mut schedule = a.create_label();

    // --- boot: GDT ---
    let tss = KERNEL_DATA + TSS;
    let gdt: [(u32, u32); 6] = [
        (0, 0),
        (0x0000_FFFF, 0x00CF_9A00), // 0x08 kernel code
        (0x0000_FFFF, 0x00CF_9200), // 0x10 kernel data
        (0x0000_FFFF, 0x00CF_FA00), // 0x18 user code (DPL 3)
        (0x0000_FFFF, 0x00CF_F200), // 0x20 user data (DPL 3)
        // 0x28 available 32-bit TSS, limit 103
        (
            (tss & 0xFFFF) << 16 | 103,
            ((tss >> 16) & 0xFF) | 0x8900 | (tss & 0xFF00_0000),
        ),
    ];
    for (i, (lo, hi)) in gdt.iter().enumerate() {
        a.mov(dword_ptr(k(GDT) + 8 * i as u64), *lo)?;
        a.mov(dword_ptr(k(GDT) + 8 * i as u64 + 4), *hi)?;
    }
    a.mov(word_ptr(k(GDTR)), GDT_ENTRIES * 8 - 1)?;
    a.mov(dword_ptr(k(GDTR) + 2), KERNEL_DATA + GDT)?;
    a.lgdt(ptr(k(GDTR)))?;
    a.mov(ax, SEL_KDATA as u32)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(ss, ax)?;
    // --- TSS ---
    a.mov(dword_ptr(k(TSS) + 8), SEL_KDATA as u32)?;
    a.mov(ax, SEL_TSS as u32)?;
    a.ltr(ax)?;
    // --- IDT: every vector -> fault_entry, then timer and system call ---
    a.mov(edi, KERNEL_DATA + IDT)?;
    a.mov(ecx, 256u32)?;
    let mut fill = a.create_label();
    a.set_label(&mut fill)?;
    a.mov(eax, entries[0])?;
    a.and(eax, 0xFFFFu32)?;
    a.or(eax, (SEL_KCODE as u32) << 16)?;
    a.mov(dword_ptr(edi), eax)?;
    a.mov(eax, entries[0])?;
    a.and(eax, 0xFFFF_0000u32)?;
    a.or(eax, 0x8E00u32)?;
    a.mov(dword_ptr(edi + 4), eax)?;
    a.add(edi, 8)?;
    a.dec(ecx)?;
    a.jnz(fill)?;
    for (vec, target, access) in [
        (VEC_TIMER, entries[1], 0x8E00u32),
        (VEC_SYSCALL, entries[2], 0xEE00u32),
    ] {
        let at = k(IDT) + 8 * vec as u64;
        a.mov(eax, target)?;
        a.and(eax, 0xFFFFu32)?;
        a.or(eax, (SEL_KCODE as u32) << 16)?;
        a.mov(dword_ptr(at), eax)?;
        a.mov(eax, target)?;
        a.and(eax, 0xFFFF_0000u32)?;
        a.or(eax, access)?;
        a.mov(dword_ptr(at + 4), eax)?;
    }
    a.mov(word_ptr(k(IDTR)), 256 * 8 - 1)?;
    a.mov(dword_ptr(k(IDTR) + 2), KERNEL_DATA + IDT)?;
    a.lidt(ptr(k(IDTR)))?;
    // --- identify the processor, note the boot time ---
    a.xor(eax, eax)?;
    a.inc(eax)?;
    a.cpuid()?;
    a.mov(dword_ptr(k(CPUID_EAX)), eax)?;
    a.rdtsc()?;
    a.mov(dword_ptr(k(BOOT_TSC)), eax)?;
    // --- PIT channel 0, mode 2, divisor from the boot parameters ---
    let mut no_timer = a.create_label();
    a.mov(ebx, dword_ptr(k(PIT_DIVISOR)))?;
    a.test(ebx, ebx)?;
    a.jz(no_timer)?;
    a.mov(al, 0x34u32)?;
    a.out(PORT_PIT_CMD as u32, al)?;
    a.mov(eax, ebx)?;
    a.out(PORT_PIT_CH0 as u32, al)?;
    a.mov(al, ah)?;
    a.out(PORT_PIT_CH0 as u32, al)?;
    // Idle until the first tick: sti; hlt; cli (the tick arrives in kernel mode).
    a.sti()?;
    a.hlt()?;
    a.cli()?;
    a.set_label(&mut no_timer)?;
    // --- initial frames on each process's kernel stack: pushad image + iret frame ---
    a.xor(esi, esi)?;
    let (mut frames, mut frames_done) = (a.create_label(), a.create_label());
    a.set_label(&mut frames)?;
    a.cmp(esi, dword_ptr(k(NPROCS)))?;
    a.jae(frames_done)?;
    a.imul_3(ebx, esi, PROC_SIZE as i32)?;
    a.add(ebx, KERNEL_DATA + PROCS)?;
    a.mov(edi, dword_ptr(ebx + P_KSTACK_TOP as i32))?;
    a.sub(edi, 52)?;
    a.mov(dword_ptr(ebx + P_SAVED_ESP as i32), edi)?;
    for i in 0..8 {
        a.mov(dword_ptr(edi + 4 * i), 0u32)?;
    }
    a.mov(eax, dword_ptr(ebx + P_ENTRY as i32))?;
    a.mov(dword_ptr(edi + 32), eax)?;
    a.mov(dword_ptr(edi + 36), SEL_UCODE as u32)?;
    a.mov(dword_ptr(edi + 40), 0x202u32)?;
    a.mov(eax, dword_ptr(ebx + P_USER_ESP as i32))?;
    a.mov(dword_ptr(edi + 44), eax)?;
    a.mov(dword_ptr(edi + 48), SEL_UDATA as u32)?;
    a.mov(dword_ptr(ebx + P_STATE as i32), 1u32)?;
    a.inc(dword_ptr(k(LIVE)))?;
    a.inc(esi)?;
    a.jmp(frames)?;
    a.set_label(&mut frames_done)?;
    // User data segments from now on (flat, usable by the kernel too).
    a.mov(ax, SEL_UDATA as u32)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(fs, ax)?;
    a.mov(gs, ax)?;
    a.mov(dword_ptr(k(CURRENT)), 0u32)?;
    a.jmp(resume)?;

    // --- resume the current process ---
    a.set_label(&mut resume)?;
    a.mov(ebx, dword_ptr(k(CURRENT)))?;
    a.imul_3(ebx, ebx, PROC_SIZE as i32)?;
    a.add(ebx, KERNEL_DATA + PROCS)?;
    a.mov(esp, dword_ptr(ebx + P_SAVED_ESP as i32))?;
    a.mov(eax, dword_ptr(ebx + P_KSTACK_TOP as i32))?;
    a.mov(dword_ptr(k(TSS) + 4), eax)?;
    a.popad()?;
    a.iretd()?;

    // --- schedule: next runnable process after the current one, round robin ---
    a.set_label(&mut schedule)?;
    let (mut next, mut found, mut wrap_ok, mut power_off) = (
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    );
    a.cmp(dword_ptr(k(LIVE)), 0)?;
    a.je(power_off)?;
    a.mov(eax, dword_ptr(k(CURRENT)))?;
    a.mov(ecx, MAX_PROCS)?;
    a.set_label(&mut next)?;
    a.inc(eax)?;
    a.cmp(eax, MAX_PROCS)?;
    a.jb(wrap_ok)?;
    a.xor(eax, eax)?;
    a.set_label(&mut wrap_ok)?;
    a.imul_3(ebx, eax, PROC_SIZE as i32)?;
    a.cmp(dword_ptr(ebx + (KERNEL_DATA + PROCS + P_STATE) as i32), 1)?;
    a.je(found)?;
    a.dec(ecx)?;
    a.jnz(next)?;
    a.set_label(&mut power_off)?;
    a.mov(eax, dword_ptr(k(PROCS + P_EXIT)))?;
    a.out(PORT_POWER as u32, eax)?;
    a.hlt()?;
    a.set_label(&mut found)?;
    a.mov(dword_ptr(k(CURRENT)), eax)?;
    a.jmp(resume)?;

    // --- timer interrupt ---
    a.set_label(&mut timer_entry)?;
    let mut from_user = a.create_label();
    a.pushad()?;
    a.inc(dword_ptr(k(TICKS)))?;
    a.mov(al, 0x20u32)?;
    a.out(PORT_PIC_EOI as u32, al)?;
    a.test(dword_ptr(esp + 36), 3)?; // interrupted CS
    a.jnz(from_user)?;
    a.popad()?; // the boot-time idle tick: return to the kernel
    a.iretd()?;
    a.set_label(&mut from_user)?;
    save_esp(&mut a)?;
    a.jmp(schedule)?;

    // --- faults: kill the current process ---
    a.set_label(&mut fault_entry)?;
    a.mov(esi, KERNEL_DATA + KILLED_MSG)?;
    a.mov(ecx, KILLED_TEXT.len() as u32)?;
    a.mov(dx, PORT_CONSOLE as u32)?;
    a.rep().outsb()?;
    a.mov(ebx, dword_ptr(k(CURRENT)))?;
    a.imul_3(ebx, ebx, PROC_SIZE as i32)?;
    a.add(ebx, KERNEL_DATA + PROCS)?;
    a.mov(dword_ptr(ebx + P_STATE as i32), 0u32)?;
    a.mov(dword_ptr(ebx + P_EXIT as i32), 139u32)?; // like a shell's 128 + SIGSEGV
    a.dec(dword_ptr(k(LIVE)))?;
    a.jmp(schedule)?;

    // --- system calls: eax = number, ebx/ecx/edx = arguments (Linux i386 ABI) ---
    // After pushad: edi+0 esi+4 ebp+8 esp+12 ebx+16 edx+20 ecx+24 eax+28.
    a.set_label(&mut syscall_entry)?;
    a.pushad()?;
    save_esp(&mut a)?;
    let mut ret = a.create_label();
    let [mut l_getpid, mut l_write, mut l_exit, mut l_brk, mut l_yield, mut l_enosys] = [
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    ];
    a.cmp(eax, SYS_GETPID)?;
    a.je(l_getpid)?;
    a.cmp(eax, SYS_WRITE)?;
    a.je(l_write)?;
    a.cmp(eax, SYS_EXIT)?;
    a.je(l_exit)?;
    a.cmp(eax, SYS_EXIT_GROUP)?;
    a.je(l_exit)?;
    a.cmp(eax, SYS_BRK)?;
    a.je(l_brk)?;
    a.cmp(eax, SYS_SCHED_YIELD)?;
    a.je(l_yield)?;
    a.set_label(&mut l_enosys)?;
    a.mov(eax, (-ENOSYS) as u32)?;
    a.jmp(ret)?;

    a.set_label(&mut l_getpid)?;
    a.mov(eax, dword_ptr(ebx + P_PID as i32))?;
    a.set_label(&mut ret)?;
    a.mov(dword_ptr(esp + 28), eax)?;
    a.popad()?;
    a.iretd()?;

    a.set_label(&mut l_write)?;
    let (mut fd_ok, mut fault) = (a.create_label(), a.create_label());
    a.mov(eax, dword_ptr(esp + 16))?;
    a.cmp(eax, 1)?;
    a.je(fd_ok)?;
    a.cmp(eax, 2)?;
    a.je(fd_ok)?;
    a.mov(eax, (-EBADF) as u32)?;
    a.jmp(ret)?;
    a.set_label(&mut fd_ok)?;
    a.mov(esi, dword_ptr(esp + 24))?;
    a.mov(ecx, dword_ptr(esp + 20))?;
    a.cmp(esi, RAM_BASE)?;
    a.jb(fault)?;
    a.mov(eax, esi)?;
    a.add(eax, ecx)?;
    a.jc(fault)?;
    a.cmp(eax, RAM_TOP)?;
    a.ja(fault)?;
    // A Linux-style irq-save critical section around the device access.
    a.pushfd()?;
    a.cli()?;
    a.mov(dx, PORT_CONSOLE as u32)?;
    a.rep().outsb()?;
    a.popfd()?;
    a.mov(eax, dword_ptr(esp + 20))?;
    a.jmp(ret)?;
    a.set_label(&mut fault)?;
    a.mov(eax, (-EFAULT) as u32)?;
    a.jmp(ret)?;

    a.set_label(&mut l_exit)?;
    a.mov(eax, dword_ptr(esp + 16))?;
    a.mov(dword_ptr(ebx + P_EXIT as i32), eax)?;
    a.mov(dword_ptr(ebx + P_STATE as i32), 0u32)?;
    a.dec(dword_ptr(k(LIVE)))?;
    a.jmp(schedule)?;

    a.set_label(&mut l_brk)?;
    let mut brk_done = a.create_label();
    a.mov(eax, dword_ptr(esp + 16))?;
    a.cmp(eax, dword_ptr(ebx + P_BRK_MIN as i32))?;
    a.jb(brk_done)?;
    a.cmp(eax, dword_ptr(ebx + P_BRK_MAX as i32))?;
    a.ja(brk_done)?;
    a.mov(dword_ptr(ebx + P_BRK as i32), eax)?;
    a.set_label(&mut brk_done)?;
    a.mov(eax, dword_ptr(ebx + P_BRK as i32))?;
    a.jmp(ret)?;

    a.set_label(&mut l_yield)?;
    a.mov(dword_ptr(esp + 28), 0u32)?;
    a.jmp(schedule)?;

    let res = a.assemble_options(
        KERNEL_TEXT as u64,
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    let ip = |l: &CodeLabel| res.label_ip(l).map(|v| v as u32);
    let addrs = [ip(&fault_entry)?, ip(&timer_entry)?, ip(&syscall_entry)?];
    Ok((res.inner.code_buffer, addrs))
}

/// Stores ESP in the current process's record; leaves the record's address in ebx.
fn save_esp(a: &mut CodeAssembler) -> std::result::Result<(), IcedError> {
    a.mov(ebx, dword_ptr(k(data::CURRENT)))?;
    a.imul_3(ebx, ebx, data::PROC_SIZE as i32)?;
    a.add(ebx, KERNEL_DATA + data::PROCS)?;
    a.mov(dword_ptr(ebx + data::P_SAVED_ESP as i32), esp)?;
    Ok(())
}
