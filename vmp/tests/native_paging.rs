//! `native` runs on the monitor's TLB fill while paging is off, like `vmp`; a guest that turns
//! paging on must get the processor's real page walk from then on, and a switch the monitor could
//! not see must stop the run with an error, never translate wrongly.

use gridbed_vmp::layout::{KERNEL_TEXT, PORT_POWER};
use gridbed_vmp::machine::{Config, Exit, GuestImage, Machine};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;

const PAGE_DIR: u32 = 0x0020_0000;

/// Maps virtual 0-4 MiB to itself and 4-8 MiB onto physical 0-4 MiB (4 MiB pages), turns paging
/// on, stores through the alias and powers off with what the identity address then holds.
fn guest() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    // Present, writable, user (the `vmp` guest kernel runs at ring 3), 4 MiB.
    a.mov(dword_ptr(PAGE_DIR as u64), 0x87u32).unwrap();
    a.mov(dword_ptr(PAGE_DIR as u64 + 4), 0x87u32).unwrap();
    a.mov(eax, cr4).unwrap();
    a.or(eax, 0x10).unwrap();
    a.mov(cr4, eax).unwrap();
    a.mov(eax, PAGE_DIR).unwrap();
    a.mov(cr3, eax).unwrap();
    a.mov(eax, cr0).unwrap();
    a.or(eax, 0x8000_0000u32 as i32).unwrap();
    a.mov(cr0, eax).unwrap();
    a.mov(dword_ptr(0x0043_0000u64), 0x1234_5678u32).unwrap();
    a.mov(eax, dword_ptr(0x0003_0000u64)).unwrap();
    a.mov(edx, PORT_POWER as u32).unwrap();
    a.out(dx, eax).unwrap();
    a.hlt().unwrap();
    a.assemble(KERNEL_TEXT as u64).unwrap()
}

fn run(config: Config, scanned: bool) -> gridbed_vmp::error::Result<Exit> {
    let text = guest();
    let end = KERNEL_TEXT + text.len() as u32;
    let img = GuestImage {
        segments: vec![(KERNEL_TEXT, text)],
        kernel_text: if scanned {
            (KERNEL_TEXT, end)
        } else {
            (end, end)
        },
        user_text: vec![],
        entry: KERNEL_TEXT,
    };
    let mut m = Machine::new(config, Preset::THIS_MACHINE.cpu, &img)?;
    m.set_budget(10_000);
    m.run(None)
}

#[test]
fn paging_switch_in_scanned_text_gets_the_real_page_walk() {
    for config in [Config::Native, Config::Vmp] {
        let exit = run(config, true).unwrap_or_else(|e| panic!("{config:?}: {e}"));
        assert_eq!(exit, Exit::PowerOff(0x1234_5678), "{config:?}");
    }
}

#[test]
fn unseen_paging_switch_in_native_is_an_error() {
    let err = run(Config::Native, false).unwrap_err().to_string();
    assert!(err.contains("enabled paging outside"), "{err}");
}
