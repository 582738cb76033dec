//! The `vmp` monitor skips CS/SS loads on kernel<->user switches when the shadow descriptors are
//! the same (see `machine::segs`). The guest must not be able to tell: kernel code reading CS
//! right after a system call entry, user code reading CS after the return, the CS saved in the
//! interrupt frame and the final architectural state must all match the `native` run.

use gridbed_vmp::layout::*;
use gridbed_vmp::machine::{ArchState, Config, Exit, GuestImage, Machine};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;

const GDTR_AT: u32 = KERNEL_DATA + 0x100;
const IDTR_AT: u32 = KERNEL_DATA + 0x108;
const TSS_AT: u32 = KERNEL_DATA + 0x200;
const K_SCRATCH: u32 = KERNEL_DATA + 0x300;
const IDT_AT: u32 = KERNEL_DATA + 0x800;
const U_SCRATCH: u32 = KERNEL_DATA + 0x1000;
const U_STACK: u32 = KERNEL_DATA + 0x1800;
const K_STACK: u32 = KERNEL_BOOT_STACK - 0x800;
const ROUNDS: u32 = 300;

fn seg(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xFFFF)
        | (base as u64 & 0xFF_FFFF) << 16
        | (access as u64) << 40
        | ((limit as u64 >> 16) & 0xF) << 48
        | (flags as u64 & 0xF) << 52
        | (base as u64 >> 24) << 56
}

/// Kernel: GDT (flat ring-0 and ring-3 code/data + TSS), IDT gate 0x80 (DPL 3), `iretd` to user
/// code that reads CS and makes system calls; the handler reads CS/SS, saves them, and powers
/// off after `ROUNDS` calls — straight away, with the guest's CS possibly not yet reloaded.
fn image() -> GuestImage {
    let mut h = CodeAssembler::new(32).unwrap();
    let mut done = h.create_label();
    h.inc(dword_ptr(K_SCRATCH as u64 + 12)).unwrap();
    h.cmp(dword_ptr(K_SCRATCH as u64 + 12), ROUNDS).unwrap();
    h.jae(done).unwrap();
    h.mov(eax, cs).unwrap();
    h.push(cs).unwrap();
    h.pop(ebx).unwrap();
    h.mov(ecx, ss).unwrap();
    h.mov(dword_ptr(K_SCRATCH as u64), eax).unwrap();
    h.mov(dword_ptr(K_SCRATCH as u64 + 4), ebx).unwrap();
    h.mov(dword_ptr(K_SCRATCH as u64 + 8), ecx).unwrap();
    h.iretd().unwrap();
    h.set_label(&mut done).unwrap();
    h.xor(eax, eax).unwrap();
    h.out(PORT_POWER as u32, eax).unwrap();
    h.hlt().unwrap();
    let handler = h.assemble(KERNEL_TEXT as u64).unwrap();

    let entry = KERNEL_TEXT + handler.len() as u32;
    let mut k = CodeAssembler::new(32).unwrap();
    k.lgdt(ptr(GDTR_AT as u64)).unwrap();
    k.mov(eax, SEL_KDATA as u32).unwrap();
    k.mov(ss, ax).unwrap();
    k.mov(eax, SEL_TSS as u32).unwrap();
    k.ltr(ax).unwrap();
    k.lidt(ptr(IDTR_AT as u64)).unwrap();
    for v in [
        SEL_UDATA as u32,
        U_STACK,
        0x2,
        SEL_UCODE as u32,
        USER_SLOT_BASE,
    ] {
        k.push(v).unwrap();
    }
    k.iretd().unwrap();
    let main = k.assemble(entry as u64).unwrap();
    let mut ktext = handler;
    ktext.extend(main);

    let mut u = CodeAssembler::new(32).unwrap();
    let mut top = u.create_label();
    u.set_label(&mut top).unwrap();
    u.mov(eax, cs).unwrap();
    u.mov(dword_ptr(U_SCRATCH as u64), eax).unwrap();
    u.push(cs).unwrap();
    u.pop(edx).unwrap();
    u.mov(dword_ptr(U_SCRATCH as u64 + 4), edx).unwrap();
    u.mov(esi, ss).unwrap();
    u.mov(dword_ptr(U_SCRATCH as u64 + 8), esi).unwrap();
    u.int(0x80).unwrap();
    u.jmp(top).unwrap();
    let utext = u.assemble(USER_SLOT_BASE as u64).unwrap();

    let mut data = vec![0u8; 0x2000];
    let put = |data: &mut Vec<u8>, at: u32, b: &[u8]| {
        let o = (at - KERNEL_DATA) as usize;
        data[o..o + b.len()].copy_from_slice(b);
    };
    let gdt = [
        0,
        seg(0, 0xFFFFF, 0x9A, 0xC),
        seg(0, 0xFFFFF, 0x92, 0xC),
        seg(0, 0xFFFFF, 0xFA, 0xC),
        seg(0, 0xFFFFF, 0xF2, 0xC),
        seg(TSS_AT, 0x67, 0x89, 0),
    ];
    for (i, d) in gdt.iter().enumerate() {
        put(&mut data, KERNEL_DATA + 8 * i as u32, &d.to_le_bytes());
    }
    put(
        &mut data,
        GDTR_AT,
        &(8 * gdt.len() as u16 - 1).to_le_bytes(),
    );
    put(&mut data, GDTR_AT + 2, &KERNEL_DATA.to_le_bytes());
    put(&mut data, IDTR_AT, &(0x80u16 * 8 + 7).to_le_bytes());
    put(&mut data, IDTR_AT + 2, &IDT_AT.to_le_bytes());
    put(&mut data, TSS_AT + 4, &K_STACK.to_le_bytes());
    put(&mut data, TSS_AT + 8, &(SEL_KDATA as u32).to_le_bytes());
    let off = KERNEL_TEXT;
    let gate =
        (off as u64 & 0xFFFF) | (SEL_KCODE as u64) << 16 | 0xEEu64 << 40 | (off as u64 >> 16) << 48;
    put(&mut data, IDT_AT + 0x80 * 8, &gate.to_le_bytes());

    let kend = KERNEL_TEXT + ktext.len() as u32;
    let uend = USER_SLOT_BASE + utext.len() as u32;
    GuestImage {
        segments: vec![
            (KERNEL_TEXT, ktext),
            (KERNEL_DATA, data),
            (USER_SLOT_BASE, utext),
        ],
        kernel_text: (KERNEL_TEXT, kend),
        user_text: vec![(USER_SLOT_BASE, uend)],
        entry,
    }
}

fn run(config: Config) -> (ArchState, Vec<u8>, Vec<u8>) {
    let mut m = Machine::new(config, Preset::PC_2005.cpu, &image()).unwrap();
    m.set_budget(1_000_000);
    assert_eq!(m.run(None).unwrap(), Exit::PowerOff(0));
    let mut data = vec![0u8; 0x2000];
    m.unicorn().mem_read(KERNEL_DATA as u64, &mut data).unwrap();
    let mut kstack = vec![0u8; 0x100];
    m.unicorn()
        .mem_read((K_STACK - 0x100) as u64, &mut kstack)
        .unwrap();
    (m.arch_state().unwrap(), data, kstack)
}

fn word(data: &[u8], at: u32) -> u32 {
    let o = (at - KERNEL_DATA) as usize;
    u32::from_le_bytes(data[o..o + 4].try_into().unwrap())
}

#[test]
fn skipped_segment_loads_are_invisible_to_the_guest() {
    let (native, vmp) = (run(Config::Native), run(Config::Vmp));
    let (s, data, _) = &vmp;
    // What the guest saw, in kernel and in user mode (selector reads are 16 bits wide).
    assert_eq!(word(data, K_SCRATCH) & 0xFFFF, SEL_KCODE as u32);
    assert_eq!(word(data, K_SCRATCH + 4) & 0xFFFF, SEL_KCODE as u32);
    assert_eq!(word(data, K_SCRATCH + 8) & 0xFFFF, SEL_KDATA as u32);
    assert_eq!(word(data, K_SCRATCH + 12), ROUNDS);
    assert_eq!(word(data, U_SCRATCH), SEL_UCODE as u32);
    assert_eq!(word(data, U_SCRATCH + 4) & 0xFFFF, SEL_UCODE as u32);
    assert_eq!(word(data, U_SCRATCH + 8), SEL_UDATA as u32);
    // Powered off in the handler before anything reloaded CS: the guest's CS is still 0x08.
    assert_eq!(s.cs, SEL_KCODE);
    assert_eq!(s.ss, SEL_KDATA);
    let mut native = native;
    let mut vmp = vmp;
    // native stops after the trailing instruction, vmp at it (as in tests/differential.rs).
    native.0.eip = 0;
    vmp.0.eip = 0;
    assert_eq!(native.0, vmp.0);
    let diff: Vec<usize> = (0..native.1.len())
        .filter(|&i| native.1[i] != vmp.1[i])
        .collect();
    assert!(
        diff.is_empty(),
        "guest data differs at offsets {diff:x?}: native {:x?} vmp {:x?}",
        diff.iter().map(|&i| native.1[i]).collect::<Vec<_>>(),
        diff.iter().map(|&i| vmp.1[i]).collect::<Vec<_>>()
    );
    assert!(native.2 == vmp.2, "kernel stack (interrupt frames) differs");
}
