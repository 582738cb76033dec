//! Bad guests and bad files end in clear errors naming the EIP and instruction, never a panic or
//! a hang.

use gridbed_vmp::guest::{elf, programs};
use gridbed_vmp::layout::*;
use gridbed_vmp::machine::{Config, GuestImage, Machine};
use gridbed_vmp::run::{run_programs, RunOptions};
use gridbed_vmp::time::Preset;
use gridbed_vmp::VmpError;

fn kernel(code: &[u8], scan: bool) -> GuestImage {
    let end = KERNEL_TEXT + code.len() as u32;
    GuestImage {
        segments: vec![(KERNEL_TEXT, code.to_vec())],
        kernel_text: if scan { (KERNEL_TEXT, end) } else { (0, 0) },
        user_text: vec![],
        entry: KERNEL_TEXT,
    }
}

fn run(code: &[u8], config: Config, scan: bool) -> VmpError {
    let mut m = Machine::new(config, Preset::PC_2005.cpu, &kernel(code, scan)).unwrap();
    m.set_budget(100_000);
    m.run(None).unwrap_err()
}

#[test]
fn runaway_guest_is_stopped() {
    // jmp $
    for c in [Config::Native, Config::Vmp] {
        let e = run(&[0xEB, 0xFE], c, true);
        assert!(matches!(e, VmpError::Runaway { eip: 0x100000, .. }), "{e}");
        assert!(e.to_string().contains("jmp"), "{e}");
    }
}

#[test]
fn unsupported_privileged_instruction_is_named() {
    // 16-bit popf (66 9D) in the kernel: sensitive, not emulated.
    let e = run(&[0x66, 0x9D, 0xF4], Config::Vmp, true);
    assert!(
        matches!(e, VmpError::Unsupported { eip: 0x100000, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("popf"), "{e}");
}

#[test]
fn fault_without_idt_is_a_triple_fault() {
    // ud2 with no IDT loaded.
    for c in [Config::Native, Config::Vmp] {
        let e = run(&[0x0F, 0x0B], c, true);
        assert!(
            matches!(e, VmpError::TripleFault { eip: 0x100000, .. }),
            "{c:?}: {e}"
        );
        assert!(e.to_string().contains("ud2"), "{e}");
    }
}

#[test]
fn unmapped_access_is_named() {
    // mov eax, [0x10] (the guard page)
    let e = run(&[0xA1, 0x10, 0, 0, 0], Config::Vmp, true);
    assert!(matches!(e, VmpError::Unmapped { addr: 0x10, .. }), "{e}");
}

#[test]
fn halt_with_interrupts_off_is_dead() {
    let e = run(&[0xFA, 0xF4], Config::Vmp, true);
    assert!(matches!(e, VmpError::DeadHalt { .. }), "{e}");
}

#[test]
fn bad_elf_files_are_rejected() {
    assert!(matches!(elf::load("x", b"hello"), Err(VmpError::BadElf(_))));
    assert!(matches!(
        elf::load("x", b"\x7fELF\x01"),
        Err(VmpError::BadElf(_))
    ));
    let mut hdr = vec![0u8; 52];
    hdr[..4].copy_from_slice(b"\x7fELF");
    hdr[4] = 2; // 64-bit
    assert!(elf::load("x", &hdr)
        .unwrap_err()
        .to_string()
        .contains("32-bit"));
    hdr[4] = 1;
    hdr[5] = 1;
    hdr[6] = 1;
    hdr[16] = 2; // ET_EXEC
    hdr[18] = 62; // x86-64
    assert!(elf::load("x", &hdr)
        .unwrap_err()
        .to_string()
        .contains("i386"));
    hdr[18] = 3;
    // Program headers promised past the end of the file.
    hdr[28] = 52; // e_phoff
    hdr[42] = 32; // e_phentsize
    hdr[44] = 1; // e_phnum
    assert!(matches!(elf::load("x", &hdr), Err(VmpError::BadElf(_))));
}

#[test]
fn user_fault_kills_only_that_process() {
    // A user program executing `cli` (privileged) is killed; its sibling finishes.
    let mut bad = programs::getpid_loop(0, 1).unwrap();
    bad.segments[0].1[..1].copy_from_slice(&[0xFA]);
    bad.segments[0].1[1..5].copy_from_slice(&[0x0F, 0x0B, 0x90, 0x90]); // cli; ud2; ...
    let good = programs::getpid_loop(1, 10).unwrap();
    for c in [Config::Native, Config::Vmp] {
        let r = run_programs(
            &[bad.clone(), good.clone()],
            RunOptions::new(c, Preset::PC_2005.cpu),
        )
        .unwrap();
        assert_eq!(r.exit_status, 139, "{c:?}");
        assert!(r.console.contains("killed"), "{}", r.console);
        assert!(r.console.contains("getpid x10 done"), "{}", r.console);
    }
}
