use gridbed_vmp::ffi::ExceptionReset;
use unicorn_engine::{Arch, Mode, Unicorn};

#[test]
fn pending_exception_offset_is_found() {
    let uc = Unicorn::new(Arch::X86, Mode::MODE_32).unwrap();
    ExceptionReset::new(&uc).expect("offset probe");
}
