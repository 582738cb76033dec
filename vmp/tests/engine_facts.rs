//! Facts about unicorn the monitor relies on, checked so an engine upgrade cannot silently break
//! the virtual clock.

use std::cell::Cell;
use std::rc::Rc;

use unicorn_engine::{Arch, Mode, Prot, RegisterX86, Unicorn};

#[test]
fn emu_stop_in_a_block_hook_stops_before_that_block() {
    let mut uc = Unicorn::new(Arch::X86, Mode::MODE_32).unwrap();
    uc.mem_map(0x1000, 0x1000, Prot::ALL).unwrap();
    // block 1: inc eax; jmp b2 | b2: inc eax; inc eax; hlt
    let code = [0x40, 0xEB, 0x00, 0x40, 0x40, 0xF4];
    uc.mem_write(0x1000, &code).unwrap();
    let n = Rc::new(Cell::new(0));
    let n2 = n.clone();
    uc.add_block_hook(1, 0, move |uc, _a, _s| {
        n2.set(n2.get() + 1);
        if n2.get() == 2 {
            uc.emu_stop().unwrap();
        }
    })
    .unwrap();
    uc.emu_start(0x1000, 0x2000, 0, 0).unwrap();
    let eip = uc.reg_read(RegisterX86::EIP).unwrap();
    let eax = uc.reg_read(RegisterX86::EAX).unwrap();
    assert_eq!((eip, eax), (0x1003, 1), "second block must not have run");
}
