//! The SMP guest kernel: one image, booted by every processor of the virtual multiprocessor
//! (`crate::smp`), each in its own `Machine`, memory kept consistent by the coherence protocol.
//!
//! - **Processor id**: CPUID leaf 1, initial APIC id in EBX bits 31..24. Each processor writes it at
//!   the bottom of its boot stack; every kernel stack keeps its processor's id in its lowest
//!   word (Linux i386's `thread_info`, found by masking ESP), so any kernel entry finds its
//!   per-CPU area without a free register.
//! - **Boot**: processor 0 (bootstrap) builds the GDT (one TSS descriptor per processor) and
//!   the IDT, then sets a boot flag with a plain store; the others spin on it (`pause`, plain
//!   loads: it must become visible without a fence). Each then loads the tables, its own TSS and
//!   its local timer, marks itself online and goes idle. The bootstrap waits for every processor
//!   to be online (Linux's call-in), builds each process's first frame and places it on the run
//!   queue of its processor, and wakes that processor with an IPI.
//! - **Per-CPU area** (`percpu`): current process, ticks, run queue (ring of process indices,
//!   head/tail counters) with its spinlock, online flag, IPIs taken, idle stack, TSS.
//! - **Spinlocks** on `xchg` with `pause` in the spin (Linux's x86 `spin_lock` before ticket
//!   locks); released by a plain store. `PROC_LOCK` guards the live count, `CONSOLE_LOCK` keeps a
//!   `write` from interleaving with another processor's, each run queue has its own lock.
//! - **IPIs** through the IPI port (`layout::PORT_IPI`): `VEC_RESCHED` wakes an idle processor
//!   when work is placed on it; `VEC_HALT` (to all others) stops them when the last process
//!   exits, after which that processor writes process 0's exit status to the power port.
//! - **Scheduling**: per processor, round robin over its run queue, preemption on its timer;
//!   processes stay on the processor they were placed on. Idle: `cli`, check the queue, then
//!   `sti; hlt` (the interrupt shadow of `sti` makes the check-then-halt free of lost wake-ups).
//! - System calls as the uniprocessor kernel (`guest::kernel`): exit, write, getpid, brk,
//!   sched_yield, exit_group, Linux i386 numbers; a fault kills the process.

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

use crate::error::{Result, VmpError};
use crate::guest::kernel::data::{
    PROC_SIZE, P_BRK, P_BRK_MAX, P_BRK_MIN, P_ENTRY, P_EXIT, P_KSTACK_TOP, P_PID, P_SAVED_ESP,
    P_STATE, P_USER_ESP,
};
use crate::layout::*;

/// Most processors the kernel supports (GDT TSS slots, per-CPU areas, idle stacks).
pub const SMP_MAX_CPUS: u32 = 8;
/// Most processes, over all processors.
pub const SMP_MAX_PROCS: u32 = 8;
/// Vectors of the kernel's IPIs.
pub const VEC_RESCHED: u8 = 0x30;
pub const VEC_HALT: u8 = 0x31;

/// Process kernel stacks: `SMP_KSTACKS + (i+1) * KSTACK_SIZE` tops process i's.
pub const SMP_KSTACKS: u32 = KSTACKS;
/// Idle (and boot) stacks, one per processor, after the process kernel stacks.
pub const SMP_IDLE_STACKS: u32 = SMP_KSTACKS + SMP_MAX_PROCS * KSTACK_SIZE;
/// End of the kernel's memory (text, data, stacks).
pub const SMP_KERNEL_END: u32 = SMP_IDLE_STACKS + SMP_MAX_CPUS * KSTACK_SIZE;

/// Boot stack top of processor `cpu` (given to it by the monitor, like an AP trampoline's).
pub fn idle_stack_top(cpu: u32) -> u32 {
    SMP_IDLE_STACKS + (cpu + 1) * KSTACK_SIZE - 16
}

/// Kernel data layout (offsets from `KERNEL_DATA`): page 0 shared tables and globals, page 1
/// process table (records as the uniprocessor kernel's plus `P_CPU`), page 2 per-CPU areas.
pub mod data {
    pub const GDT: u32 = 0x000;
    pub const GDTR: u32 = 0x080;
    pub const IDTR: u32 = 0x088;
    pub const NPROCS: u32 = 0x090;
    pub const NCPUS: u32 = 0x094;
    pub const LIVE: u32 = 0x098;
    pub const PIT_DIVISOR: u32 = 0x09C;
    pub const BOOT_FLAG: u32 = 0x0A0;
    /// Spinlocks, each in its own 64-byte line.
    pub const PROC_LOCK: u32 = 0x100;
    pub const CONSOLE_LOCK: u32 = 0x140;
    pub const IDT: u32 = 0x400;
    pub const KILLED_MSG: u32 = 0xC00;
    pub const PROCS: u32 = 0x1000;
    /// Processor a process is placed on.
    pub const P_CPU: u32 = 40;
    pub const PERCPU: u32 = 0x2000;
    pub const PERCPU_SIZE: u32 = 0x100;
    /// Per-CPU fields.
    pub const PC_CURRENT: u32 = 0x00;
    pub const PC_TICKS: u32 = 0x04;
    pub const PC_RQ_LOCK: u32 = 0x08;
    pub const PC_RQ_HEAD: u32 = 0x0C;
    pub const PC_RQ_TAIL: u32 = 0x10;
    pub const PC_ONLINE: u32 = 0x14;
    pub const PC_IPIS: u32 = 0x18;
    pub const PC_IDLE_TOP: u32 = 0x1C;
    /// Run queue ring: `SMP_MAX_PROCS` process indices.
    pub const PC_RQ: u32 = 0x20;
    pub const PC_TSS: u32 = 0x40;
    /// Bytes of kernel data.
    pub const SIZE: u32 = 0x3000;
}

/// TSS selector of processor `cpu`.
fn sel_tss(cpu: u32) -> u32 {
    SEL_TSS as u32 + 8 * cpu
}

fn k(off: u32) -> u64 {
    (KERNEL_DATA + off) as u64
}

fn asm_err(e: IcedError) -> VmpError {
    VmpError::BadImage(format!("smp kernel assembly: {e}"))
}

type R = std::result::Result<(), IcedError>;

/// Assembles the kernel text (at `KERNEL_TEXT`, entry at its first byte).
pub fn assemble() -> Result<Vec<u8>> {
    // As the uniprocessor kernel: handler addresses are immediates of fixed size, so a second
    // pass with the first pass's addresses gives the final text.
    let (_, addrs) = build([0; 5]).map_err(asm_err)?;
    let (text, again) = build(addrs).map_err(asm_err)?;
    if again != addrs {
        return Err(VmpError::BadImage(
            "smp kernel layout did not converge".into(),
        ));
    }
    Ok(text)
}

/// `reg` = this processor's per-CPU area, from the id at the bottom of the current kernel stack.
fn percpu(a: &mut CodeAssembler, reg: AsmRegister32) -> R {
    a.mov(reg, esp)?;
    a.and(reg, !(KSTACK_SIZE - 1))?;
    a.mov(reg, dword_ptr(reg))?;
    a.imul_3(reg, reg, data::PERCPU_SIZE as i32)?;
    a.add(reg, KERNEL_DATA + data::PERCPU)
}

/// Spins until the lock at `[addr]` is taken (clobbers eax).
fn lock(a: &mut CodeAssembler, addr: AsmMemoryOperand) -> R {
    let (mut again, mut wait, mut got) = (a.create_label(), a.create_label(), a.create_label());
    // The first instruction carries no label of ours: the caller may have labelled it.
    a.mov(eax, 1u32)?;
    a.set_label(&mut again)?;
    a.xchg(addr, eax)?;
    a.test(eax, eax)?;
    a.jz(got)?;
    a.set_label(&mut wait)?;
    a.pause()?;
    a.cmp(addr, 0)?;
    a.jne(wait)?;
    a.mov(eax, 1u32)?;
    a.jmp(again)?;
    a.set_label(&mut got)?;
    // The caller may label what follows; a label needs an instruction of its own.
    a.nop()
}

/// Releases a lock: a plain store (x86-TSO keeps it after the critical section's stores).
fn unlock(a: &mut CodeAssembler, addr: AsmMemoryOperand) -> R {
    a.mov(addr, 0u32)
}

/// Writes an IDT gate for `vector` to `target` from a register-free sequence (clobbers eax).
fn gate(a: &mut CodeAssembler, vector: u32, target: u32, access: u32) -> R {
    let at = k(data::IDT) + 8 * vector as u64;
    a.mov(eax, target)?;
    a.and(eax, 0xFFFFu32)?;
    a.or(eax, (SEL_KCODE as u32) << 16)?;
    a.mov(dword_ptr(at), eax)?;
    a.mov(eax, target)?;
    a.and(eax, 0xFFFF_0000u32)?;
    a.or(eax, access)?;
    a.mov(dword_ptr(at + 4), eax)
}

/// Entry addresses: fault, timer, syscall, resched IPI, halt IPI.
fn build(entries: [u32; 5]) -> std::result::Result<(Vec<u8>, [u32; 5]), IcedError> {
    use data::*;
    let mut a = CodeAssembler::new(32)?;
    let mut fault_entry = a.create_label();
    let mut timer_entry = a.create_label();
    let mut syscall_entry = a.create_label();
    let mut resched_entry = a.create_label();
    let mut halt_entry = a.create_label();
    let mut resume = a.create_label();
    let mut requeue = a.create_label();
    let mut pick = a.create_label();
    let mut pick_locked = a.create_label();
    let mut idle = a.create_label();
    let mut exit_current = a.create_label();

    // --- boot, every processor: its id from CPUID, kept at the bottom of its stack ---
    a.cli()?;
    a.mov(eax, 1u32)?;
    a.cpuid()?;
    a.shr(ebx, 24)?;
    a.mov(eax, esp)?;
    a.and(eax, !(KSTACK_SIZE - 1))?;
    a.mov(dword_ptr(eax), ebx)?;
    let (mut ap, mut tables) = (a.create_label(), a.create_label());
    a.test(ebx, ebx)?;
    a.jnz(ap)?;
    // --- the bootstrap processor builds the shared tables ---
    let base: [(u32, u32); 5] = [
        (0, 0),
        (0x0000_FFFF, 0x00CF_9A00), // 0x08 kernel code
        (0x0000_FFFF, 0x00CF_9200), // 0x10 kernel data
        (0x0000_FFFF, 0x00CF_FA00), // 0x18 user code (DPL 3)
        (0x0000_FFFF, 0x00CF_F200), // 0x20 user data (DPL 3)
    ];
    for (i, (lo, hi)) in base.iter().enumerate() {
        a.mov(dword_ptr(k(GDT) + 8 * i as u64), *lo)?;
        a.mov(dword_ptr(k(GDT) + 8 * i as u64 + 4), *hi)?;
    }
    for c in 0..SMP_MAX_CPUS {
        // 0x28 + 8c: available 32-bit TSS of processor c, limit 103.
        let tss = KERNEL_DATA + PERCPU + c * PERCPU_SIZE + PC_TSS;
        let at = k(GDT) + sel_tss(c) as u64;
        a.mov(dword_ptr(at), (tss & 0xFFFF) << 16 | 103)?;
        a.mov(
            dword_ptr(at + 4),
            ((tss >> 16) & 0xFF) | 0x8900 | (tss & 0xFF00_0000),
        )?;
    }
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
    gate(&mut a, VEC_TIMER as u32, entries[1], 0x8E00)?;
    gate(&mut a, VEC_SYSCALL as u32, entries[2], 0xEE00)?;
    gate(&mut a, VEC_RESCHED as u32, entries[3], 0x8E00)?;
    gate(&mut a, VEC_HALT as u32, entries[4], 0x8E00)?;
    a.mov(word_ptr(k(GDTR)), (5 + SMP_MAX_CPUS) * 8 - 1)?;
    a.mov(dword_ptr(k(GDTR) + 2), KERNEL_DATA + GDT)?;
    a.mov(word_ptr(k(IDTR)), 256 * 8 - 1)?;
    a.mov(dword_ptr(k(IDTR) + 2), KERNEL_DATA + IDT)?;
    // Published like any store: the others see it within a quantum, without a fence.
    a.mov(dword_ptr(k(BOOT_FLAG)), 1u32)?;
    a.jmp(tables)?;
    // --- application processors wait for the tables ---
    a.set_label(&mut ap)?;
    a.pause()?;
    a.cmp(dword_ptr(k(BOOT_FLAG)), 0)?;
    a.je(ap)?;
    // --- every processor: tables, its TSS, its timer ---
    a.set_label(&mut tables)?;
    a.lgdt(ptr(k(GDTR)))?;
    a.mov(ax, SEL_KDATA as u32)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(ss, ax)?;
    a.lidt(ptr(k(IDTR)))?;
    percpu(&mut a, ebp)?;
    a.mov(dword_ptr(ebp + PC_IDLE_TOP as i32), esp)?;
    a.mov(dword_ptr(ebp + (PC_TSS + 8) as i32), SEL_KDATA as u32)?;
    a.mov(dword_ptr(ebp + PC_CURRENT as i32), -1i32 as u32)?;
    a.lea(eax, dword_ptr(ebx * 8 + SEL_TSS as i32))?;
    a.ltr(ax)?;
    let mut no_timer = a.create_label();
    a.mov(ecx, dword_ptr(k(PIT_DIVISOR)))?;
    a.test(ecx, ecx)?;
    a.jz(no_timer)?;
    a.mov(al, 0x34u32)?;
    a.out(PORT_PIT_CMD as u32, al)?;
    a.mov(eax, ecx)?;
    a.out(PORT_PIT_CH0 as u32, al)?;
    a.mov(al, ah)?;
    a.out(PORT_PIT_CH0 as u32, al)?;
    a.set_label(&mut no_timer)?;
    // Flat user data segments from now on (usable by the kernel too).
    a.mov(ax, SEL_UDATA as u32)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(fs, ax)?;
    a.mov(gs, ax)?;
    let mut bsp_place = a.create_label();
    a.test(ebx, ebx)?;
    a.jz(bsp_place)?;
    // An application processor calls in and idles until work is placed on it.
    a.mov(dword_ptr(ebp + PC_ONLINE as i32), 1u32)?;
    a.jmp(idle)?;

    // --- the bootstrap processor: wait for call-in, then place every process ---
    a.set_label(&mut bsp_place)?;
    a.mov(dword_ptr(ebp + PC_ONLINE as i32), 1u32)?;
    a.mov(eax, dword_ptr(k(NPROCS)))?;
    a.mov(dword_ptr(k(LIVE)), eax)?; // before any can run (and exit)
    a.mov(esi, 1u32)?;
    let (mut callin, mut callin_wait, mut callin_done) =
        (a.create_label(), a.create_label(), a.create_label());
    a.set_label(&mut callin)?;
    a.cmp(esi, dword_ptr(k(NCPUS)))?;
    a.jae(callin_done)?;
    a.imul_3(edi, esi, PERCPU_SIZE as i32)?;
    a.set_label(&mut callin_wait)?;
    a.pause()?;
    a.cmp(
        dword_ptr(edi + (KERNEL_DATA + PERCPU + PC_ONLINE) as i32),
        0,
    )?;
    a.je(callin_wait)?;
    a.inc(esi)?;
    a.jmp(callin)?;
    a.set_label(&mut callin_done)?;
    a.xor(esi, esi)?;
    let (mut frames, mut frames_done, mut no_ipi) =
        (a.create_label(), a.create_label(), a.create_label());
    a.set_label(&mut frames)?;
    a.cmp(esi, dword_ptr(k(NPROCS)))?;
    a.jae(frames_done)?;
    a.imul_3(ebx, esi, PROC_SIZE as i32)?;
    a.add(ebx, KERNEL_DATA + PROCS)?;
    // First frame on its kernel stack: pushad image + iret frame to ring 3.
    a.mov(edi, dword_ptr(ebx + P_KSTACK_TOP as i32))?;
    a.mov(ecx, dword_ptr(ebx + P_CPU as i32))?;
    a.mov(dword_ptr(edi - KSTACK_SIZE as i32), ecx)?; // the stack's processor id
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
    // Enqueue on its processor's run queue.
    a.imul_3(edi, ecx, PERCPU_SIZE as i32)?;
    a.add(edi, KERNEL_DATA + PERCPU)?;
    lock(&mut a, dword_ptr(edi + PC_RQ_LOCK as i32))?;
    a.mov(eax, dword_ptr(edi + PC_RQ_TAIL as i32))?;
    a.and(eax, SMP_MAX_PROCS - 1)?;
    a.mov(dword_ptr(edi + eax * 4 + PC_RQ as i32), esi)?;
    a.inc(dword_ptr(edi + PC_RQ_TAIL as i32))?;
    unlock(&mut a, dword_ptr(edi + PC_RQ_LOCK as i32))?;
    // Wake it (a processor other than this one).
    a.test(ecx, ecx)?;
    a.jz(no_ipi)?;
    a.mov(eax, ecx)?;
    a.shl(eax, 8)?;
    a.or(eax, VEC_RESCHED as u32)?;
    a.out(PORT_IPI as u32, eax)?;
    a.set_label(&mut no_ipi)?;
    a.inc(esi)?;
    a.jmp(frames)?;
    a.set_label(&mut frames_done)?;
    a.jmp(idle)?;

    // --- resume process eax on this processor (ebp = per-CPU area) ---
    a.set_label(&mut resume)?;
    a.mov(dword_ptr(ebp + PC_CURRENT as i32), eax)?;
    a.imul_3(ebx, eax, PROC_SIZE as i32)?;
    a.add(ebx, KERNEL_DATA + PROCS)?;
    a.mov(esp, dword_ptr(ebx + P_SAVED_ESP as i32))?;
    a.mov(eax, dword_ptr(ebx + P_KSTACK_TOP as i32))?;
    a.mov(dword_ptr(ebp + (PC_TSS + 4) as i32), eax)?;
    a.popad()?;
    a.iretd()?;

    // --- requeue the current process at the tail, then pick the head ---
    a.set_label(&mut requeue)?;
    lock(&mut a, dword_ptr(ebp + PC_RQ_LOCK as i32))?;
    a.mov(ecx, dword_ptr(ebp + PC_RQ_TAIL as i32))?;
    a.and(ecx, SMP_MAX_PROCS - 1)?;
    a.mov(edx, dword_ptr(ebp + PC_CURRENT as i32))?;
    a.mov(dword_ptr(ebp + ecx * 4 + PC_RQ as i32), edx)?;
    a.inc(dword_ptr(ebp + PC_RQ_TAIL as i32))?;
    a.jmp(pick_locked)?;
    // --- pick the next process of this processor's run queue, or idle ---
    a.set_label(&mut pick)?;
    lock(&mut a, dword_ptr(ebp + PC_RQ_LOCK as i32))?;
    a.set_label(&mut pick_locked)?;
    let mut empty = a.create_label();
    a.mov(ecx, dword_ptr(ebp + PC_RQ_HEAD as i32))?;
    a.cmp(ecx, dword_ptr(ebp + PC_RQ_TAIL as i32))?;
    a.je(empty)?;
    a.and(ecx, SMP_MAX_PROCS - 1)?;
    a.mov(eax, dword_ptr(ebp + ecx * 4 + PC_RQ as i32))?;
    a.inc(dword_ptr(ebp + PC_RQ_HEAD as i32))?;
    unlock(&mut a, dword_ptr(ebp + PC_RQ_LOCK as i32))?;
    a.jmp(resume)?;
    a.set_label(&mut empty)?;
    unlock(&mut a, dword_ptr(ebp + PC_RQ_LOCK as i32))?;
    // --- idle: on this processor's own stack, halt until an interrupt ---
    a.set_label(&mut idle)?;
    a.mov(dword_ptr(ebp + PC_CURRENT as i32), -1i32 as u32)?;
    a.mov(esp, dword_ptr(ebp + PC_IDLE_TOP as i32))?;
    let mut idle_loop = a.create_label();
    a.set_label(&mut idle_loop)?;
    a.cli()?;
    lock(&mut a, dword_ptr(ebp + PC_RQ_LOCK as i32))?;
    a.mov(ecx, dword_ptr(ebp + PC_RQ_HEAD as i32))?;
    a.cmp(ecx, dword_ptr(ebp + PC_RQ_TAIL as i32))?;
    a.jne(pick_locked)?;
    unlock(&mut a, dword_ptr(ebp + PC_RQ_LOCK as i32))?;
    a.sti()?;
    a.hlt()?;
    a.jmp(idle_loop)?;

    // --- timer interrupt (this processor's) ---
    a.set_label(&mut timer_entry)?;
    let mut from_user = a.create_label();
    a.pushad()?;
    percpu(&mut a, ebp)?;
    a.inc(dword_ptr(ebp + PC_TICKS as i32))?;
    a.mov(al, 0x20u32)?;
    a.out(PORT_PIC_EOI as u32, al)?;
    a.test(dword_ptr(esp + 36), 3)?; // interrupted CS
    a.jnz(from_user)?;
    a.popad()?; // a tick in the idle loop: back to it
    a.iretd()?;
    a.set_label(&mut from_user)?;
    save_esp(&mut a)?;
    a.jmp(requeue)?;

    // --- IPIs: a wake-up (the idle loop re-checks its queue on return), and halt ---
    a.set_label(&mut resched_entry)?;
    a.pushad()?;
    percpu(&mut a, ebp)?;
    a.inc(dword_ptr(ebp + PC_IPIS as i32))?;
    a.popad()?;
    a.iretd()?;
    a.set_label(&mut halt_entry)?;
    let mut halted = a.create_label();
    a.cli()?;
    a.set_label(&mut halted)?;
    a.hlt()?;
    a.jmp(halted)?;

    // --- faults: kill the current process ---
    a.set_label(&mut fault_entry)?;
    percpu(&mut a, ebp)?;
    lock(&mut a, dword_ptr(k(CONSOLE_LOCK)))?;
    a.mov(esi, KERNEL_DATA + KILLED_MSG)?;
    a.mov(ecx, crate::guest::kernel::KILLED_TEXT.len() as u32)?;
    a.mov(dx, PORT_CONSOLE as u32)?;
    a.rep().outsb()?;
    unlock(&mut a, dword_ptr(k(CONSOLE_LOCK)))?;
    a.mov(ebx, dword_ptr(ebp + PC_CURRENT as i32))?;
    a.imul_3(ebx, ebx, PROC_SIZE as i32)?;
    a.add(ebx, KERNEL_DATA + PROCS)?;
    a.mov(eax, 139u32)?; // like a shell's 128 + SIGSEGV
    a.jmp(exit_current)?;

    // --- system calls: eax = number, ebx/ecx/edx = arguments (Linux i386 ABI) ---
    // After pushad: edi+0 esi+4 ebp+8 esp+12 ebx+16 edx+20 ecx+24 eax+28.
    a.set_label(&mut syscall_entry)?;
    a.pushad()?;
    percpu(&mut a, ebp)?;
    save_esp(&mut a)?;
    let mut ret = a.create_label();
    let [mut l_getpid, mut l_write, mut l_exit, mut l_brk, mut l_yield] = [
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
    // The console is shared: one write at a time over all processors.
    lock(&mut a, dword_ptr(k(CONSOLE_LOCK)))?;
    a.mov(dx, PORT_CONSOLE as u32)?;
    a.rep().outsb()?;
    unlock(&mut a, dword_ptr(k(CONSOLE_LOCK)))?;
    a.mov(eax, dword_ptr(esp + 20))?;
    a.jmp(ret)?;
    a.set_label(&mut fault)?;
    a.mov(eax, (-EFAULT) as u32)?;
    a.jmp(ret)?;

    a.set_label(&mut l_exit)?;
    a.mov(eax, dword_ptr(esp + 16))?;
    a.set_label(&mut exit_current)?;
    // ebx = record, eax = status, ebp = per-CPU area.
    let mut others_live = a.create_label();
    a.mov(dword_ptr(ebx + P_EXIT as i32), eax)?;
    a.mov(dword_ptr(ebx + P_STATE as i32), 0u32)?;
    a.mov(dword_ptr(ebp + PC_CURRENT as i32), -1i32 as u32)?;
    lock(&mut a, dword_ptr(k(PROC_LOCK)))?;
    a.dec(dword_ptr(k(LIVE)))?;
    a.mov(ecx, dword_ptr(k(LIVE)))?;
    unlock(&mut a, dword_ptr(k(PROC_LOCK)))?;
    a.test(ecx, ecx)?;
    a.jnz(others_live)?;
    // The last process: halt every other processor, then power off with process 0's status.
    a.mov(eax, IPI_ALL_BUT_SELF << 8 | VEC_HALT as u32)?;
    a.out(PORT_IPI as u32, eax)?;
    a.mov(eax, dword_ptr(k(PROCS + P_EXIT)))?;
    a.out(PORT_POWER as u32, eax)?;
    a.hlt()?;
    a.set_label(&mut others_live)?;
    a.jmp(pick)?;

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
    a.jmp(requeue)?;

    let res = a.assemble_options(
        KERNEL_TEXT as u64,
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    let ip = |l: &CodeLabel| res.label_ip(l).map(|v| v as u32);
    let addrs = [
        ip(&fault_entry)?,
        ip(&timer_entry)?,
        ip(&syscall_entry)?,
        ip(&resched_entry)?,
        ip(&halt_entry)?,
    ];
    Ok((res.inner.code_buffer, addrs))
}

/// Stores ESP in the current process's record; leaves the record's address in ebx (ebp = the
/// per-CPU area).
fn save_esp(a: &mut CodeAssembler) -> R {
    a.mov(ebx, dword_ptr(ebp + data::PC_CURRENT as i32))?;
    a.imul_3(ebx, ebx, PROC_SIZE as i32)?;
    a.add(ebx, KERNEL_DATA + data::PROCS)?;
    a.mov(dword_ptr(ebx + P_SAVED_ESP as i32), esp)
}

/// The multiprocessor guest as a boot loader lays it out: memory segments, the kernel's text
/// range, and every processor's boot stack.
#[derive(Clone, Debug)]
pub struct SmpImage {
    pub segments: Vec<(u32, Vec<u8>)>,
    pub kernel_text: (u32, u32),
    pub user_text: Vec<(u32, u32)>,
    pub stacks: Vec<u32>,
}

/// Builds the SMP guest: the kernel for `ncpus` processors, and each program placed on its
/// processor (`programs[i].1`), timer at `timer_hz` on every processor (0: no timer).
pub fn build_image(
    programs: &[(super::UserProgram, u32)],
    ncpus: u32,
    timer_hz: u32,
) -> Result<SmpImage> {
    if ncpus == 0 || ncpus > SMP_MAX_CPUS {
        return Err(VmpError::BadImage(format!(
            "need 1..={SMP_MAX_CPUS} processors, got {ncpus}"
        )));
    }
    if programs.is_empty() || programs.len() > SMP_MAX_PROCS as usize {
        return Err(VmpError::BadImage(format!(
            "need 1..={SMP_MAX_PROCS} processes, got {}",
            programs.len()
        )));
    }
    if let Some((p, c)) = programs.iter().find(|(_, c)| *c >= ncpus) {
        return Err(VmpError::BadImage(format!(
            "process {} is placed on processor {c}, but there are {ncpus}",
            p.name
        )));
    }
    let text = assemble()?;
    let text_end = KERNEL_TEXT + text.len() as u32;
    if text_end > KERNEL_DATA {
        return Err(VmpError::BadImage(
            "smp kernel text overlaps its data".into(),
        ));
    }
    let mut kd = vec![0u8; data::SIZE as usize];
    let put = |kd: &mut Vec<u8>, off: u32, v: u32| {
        kd[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes())
    };
    put(&mut kd, data::NPROCS, programs.len() as u32);
    put(&mut kd, data::NCPUS, ncpus);
    let divisor = if timer_hz == 0 {
        0
    } else {
        (crate::devices::PIT_HZ / timer_hz as f64)
            .round()
            .clamp(1.0, 65535.0) as u32
    };
    put(&mut kd, data::PIT_DIVISOR, divisor);
    let msg = crate::guest::kernel::KILLED_TEXT;
    kd[data::KILLED_MSG as usize..data::KILLED_MSG as usize + msg.len()].copy_from_slice(msg);
    let mut segments = vec![(KERNEL_TEXT, text)];
    let mut user_text = Vec::new();
    let mut claimed: Vec<(u32, u32)> = vec![(KERNEL_TEXT, SMP_KERNEL_END)];
    for (i, (p, cpu)) in programs.iter().enumerate() {
        let i = i as u32;
        let rec = data::PROCS + i * PROC_SIZE;
        let brk = (p.end + PAGE - 1) & !(PAGE - 1);
        let stack_top = super::image::user_stack_top(i);
        let ranges = p
            .segments
            .iter()
            .map(|(a, b)| (*a, a + b.len() as u32))
            .chain([
                (brk, brk + HEAP_SIZE),
                (stack_top + 16 - USER_STACK_SIZE, stack_top + 16),
            ]);
        for (s, e) in ranges {
            if let Some((cs_, ce_)) = claimed.iter().find(|(a, b)| s < *b && *a < e) {
                return Err(VmpError::BadImage(format!(
                    "process {i} ({}) memory {s:#x}..{e:#x} overlaps {cs_:#x}..{ce_:#x}",
                    p.name
                )));
            }
            claimed.push((s, e));
        }
        put(&mut kd, rec + P_PID, i + 1);
        put(
            &mut kd,
            rec + P_KSTACK_TOP,
            SMP_KSTACKS + (i + 1) * KSTACK_SIZE,
        );
        put(&mut kd, rec + P_BRK, brk);
        put(&mut kd, rec + P_BRK_MIN, brk);
        put(&mut kd, rec + P_BRK_MAX, brk + HEAP_SIZE);
        put(&mut kd, rec + P_ENTRY, p.entry);
        put(&mut kd, rec + P_USER_ESP, stack_top);
        put(&mut kd, rec + data::P_CPU, *cpu);
        segments.extend(p.segments.iter().cloned());
        user_text.extend(p.text.iter().copied());
    }
    segments.push((KERNEL_DATA, kd));
    Ok(SmpImage {
        segments,
        kernel_text: (KERNEL_TEXT, text_end),
        user_text,
        stacks: (0..ncpus).map(idle_stack_top).collect(),
    })
}
