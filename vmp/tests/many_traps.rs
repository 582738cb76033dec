//! Interception must be correct for every trap, not only the first: thousands of traps through
//! each path (pre-scan hooks, and real #GP faults with the exception state reset each time).

use gridbed_vmp::layout::*;
use gridbed_vmp::machine::{Config, Exit, GuestImage, Machine};
use gridbed_vmp::time::Preset;
use gridbed_vmp::vcpu::{TrapKind, TrapPath};
use iced_x86::code_asm::*;

const N: u32 = 5000;

/// A kernel-mode loop of N iterations of `cli; sti; mov cr3, eax; mov eax, cr0`, then power off.
fn image(scan: bool) -> GuestImage {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut top = a.create_label();
    a.mov(esi, N).unwrap();
    a.set_label(&mut top).unwrap();
    a.cli().unwrap();
    a.sti().unwrap();
    a.mov(eax, 0x3000u32).unwrap();
    a.mov(cr3, eax).unwrap();
    a.mov(eax, cr0).unwrap();
    a.dec(esi).unwrap();
    a.jnz(top).unwrap();
    a.mov(eax, 7u32).unwrap();
    a.out(PORT_POWER as u32, eax).unwrap();
    a.hlt().unwrap();
    let text = a.assemble(KERNEL_TEXT as u64).unwrap();
    let end = KERNEL_TEXT + text.len() as u32;
    GuestImage {
        segments: vec![(KERNEL_TEXT, text)],
        kernel_text: if scan { (KERNEL_TEXT, end) } else { (0, 0) },
        user_text: vec![],
        entry: KERNEL_TEXT,
    }
}

fn check(scan: bool, path: TrapPath) {
    let mut m = Machine::new(Config::Vmp, Preset::PC_2005.cpu, &image(scan)).unwrap();
    assert_eq!(m.run(None).unwrap(), Exit::PowerOff(7));
    let s = &m.monitor().stats;
    for k in [
        TrapKind::Cli,
        TrapKind::Sti,
        TrapKind::MovToCr,
        TrapKind::MovFromCr,
    ] {
        assert_eq!(s.by_kind[&k], N as u64, "{k:?}");
    }
    assert!(s.by_path[&path] >= 4 * N as u64);
    let st = m.arch_state().unwrap();
    assert_eq!(st.cr3, 0x3000);
    assert_eq!(st.gprs[0], 7);
}

#[test]
fn twenty_thousand_hooked_traps() {
    check(true, TrapPath::Hook);
}

#[test]
fn twenty_thousand_gp_faults_never_double_fault() {
    check(false, TrapPath::Fault);
}
