//! The guest platform's fixed layout: memory map, selectors, I/O ports, vectors and system-call
//! numbers. The guest kernel (assembled in `guest::kernel`) and the monitor agree on these; they are
//! the paravirtual ABI, like a PC's memory map and port assignments.

/// Guest RAM starts after an unmapped guard page so that null-pointer accesses fault.
pub const RAM_BASE: u32 = 0x0000_1000;
/// Top of guest RAM (exclusive): 256 MiB, enough for ELF executables linked at the i386 default
/// base 0x0804_8000.
pub const RAM_TOP: u32 = 0x1000_0000;
/// Monitor-owned page outside guest RAM holding the shadow GDT of the `vmp` configuration.
pub const MONITOR_BASE: u32 = 0xF000_0000;
pub const MONITOR_SIZE: u32 = 0x1_0000;
/// Address where emulation is told to stop; never mapped, so the guest cannot reach it.
pub const STOP_SENTINEL: u64 = 0xFFFF_FFF0;

/// Kernel image: text at 1 MiB, data after it (separate pages so text can be write-protected).
pub const KERNEL_TEXT: u32 = 0x0010_0000;
pub const KERNEL_DATA: u32 = 0x0012_0000;
/// Kernel boot stack top (also used before the first process runs).
pub const KERNEL_BOOT_STACK: u32 = 0x0018_0000;
/// Per-process kernel stacks: `KSTACKS + (i+1)*KSTACK_SIZE` is the top of process i's stack.
pub const KSTACKS: u32 = 0x0019_0000;
pub const KSTACK_SIZE: u32 = 0x1000;

/// Pages of the guest-kernel region (text, data, boot stack, per-process kernel stacks): what a
/// UMLinux-style monitor must protect from guest user mode and unprotect for guest kernel mode.
pub const GUEST_KERNEL_PAGES: u32 = (KSTACKS + MAX_PROCS * KSTACK_SIZE - KERNEL_TEXT) / PAGE;

/// User programs built into the crate are placed in their own slots (no paging in the guest:
/// processes are separated by address range).
pub const USER_SLOT_BASE: u32 = 0x0040_0000;
pub const USER_SLOT_SIZE: u32 = 0x0010_0000;
/// Size of each process's heap region, reserved after its image for `brk`.
pub const HEAP_SIZE: u32 = 0x0004_0000;
/// Size of each process's user stack.
pub const USER_STACK_SIZE: u32 = 0x0001_0000;

pub const MAX_PROCS: u32 = 4;

/// Selectors of the guest GDT (the guest kernel builds it; the monitor knows its shape only to
/// boot the kernel in the first place).
pub const SEL_KCODE: u16 = 0x08;
pub const SEL_KDATA: u16 = 0x10;
pub const SEL_UCODE: u16 = 0x1b;
pub const SEL_UDATA: u16 = 0x23;
pub const SEL_TSS: u16 = 0x28;
pub const GDT_ENTRIES: u32 = 6;

/// Interrupt vectors.
pub const VEC_TIMER: u8 = 0x20;
pub const VEC_SYSCALL: u8 = 0x80;

/// I/O ports: a Bochs/QEMU-style debug console, a PIT-style timer, a PIC-style EOI register and a
/// power-off port whose written value is the guest's exit status.
pub const PORT_CONSOLE: u16 = 0xE9;
pub const PORT_PIT_CH0: u16 = 0x40;
pub const PORT_PIT_CMD: u16 = 0x43;
pub const PORT_PIC_EOI: u16 = 0x20;
pub const PORT_POWER: u16 = 0xF4;
/// Multiprocessor only: a paravirtual inter-processor-interrupt port. A 32-bit `out` of
/// `destination << 8 | vector` raises `vector` (>= 32) on processor `destination`, or on every
/// other processor if the destination is [`IPI_ALL_BUT_SELF`] (the local APIC's ICR shorthand).
/// The processor id itself is CPUID leaf 1's initial APIC id, EBX bits 31..24.
pub const PORT_IPI: u16 = 0xF8;
pub const IPI_ALL_BUT_SELF: u32 = 0xFF;

/// Linux i386 system-call numbers, so static executables built for Linux with `int $0x80` run.
pub const SYS_EXIT: u32 = 1;
pub const SYS_WRITE: u32 = 4;
pub const SYS_GETPID: u32 = 20;
pub const SYS_BRK: u32 = 45;
pub const SYS_SCHED_YIELD: u32 = 158;
pub const SYS_EXIT_GROUP: u32 = 252;

/// Linux errno values returned (negated) by the guest kernel.
pub const ENOSYS: i32 = 38;
pub const EFAULT: i32 = 14;
pub const EBADF: i32 = 9;

/// Page size used for write-protecting scanned kernel text.
pub const PAGE: u32 = 0x1000;
