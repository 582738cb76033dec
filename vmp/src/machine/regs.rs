//! Register access: unicorn's registers by iced-x86's register names, and small helpers.

use iced_x86::Register as R;
use unicorn_engine::{RegisterX86 as X, Unicorn};

use crate::error::{Result, VmpError};

pub fn get<D>(uc: &Unicorn<D>, r: X) -> Result<u32> {
    Ok(uc.reg_read(r)? as u32)
}

pub fn set<D>(uc: &mut Unicorn<D>, r: X, v: u32) -> Result<()> {
    Ok(uc.reg_write(r, v as u64)?)
}

/// The unicorn register holding an iced general-purpose or segment register, with the width in
/// bytes and the bit shift of the sub-register (AH..BH live at bit 8).
pub fn map(r: R) -> Option<(X, u32, u32)> {
    Some(match r {
        R::EAX => (X::EAX, 4, 0),
        R::ECX => (X::ECX, 4, 0),
        R::EDX => (X::EDX, 4, 0),
        R::EBX => (X::EBX, 4, 0),
        R::ESP => (X::ESP, 4, 0),
        R::EBP => (X::EBP, 4, 0),
        R::ESI => (X::ESI, 4, 0),
        R::EDI => (X::EDI, 4, 0),
        R::AX => (X::EAX, 2, 0),
        R::CX => (X::ECX, 2, 0),
        R::DX => (X::EDX, 2, 0),
        R::BX => (X::EBX, 2, 0),
        R::SP => (X::ESP, 2, 0),
        R::BP => (X::EBP, 2, 0),
        R::SI => (X::ESI, 2, 0),
        R::DI => (X::EDI, 2, 0),
        R::AL => (X::EAX, 1, 0),
        R::CL => (X::ECX, 1, 0),
        R::DL => (X::EDX, 1, 0),
        R::BL => (X::EBX, 1, 0),
        R::AH => (X::EAX, 1, 8),
        R::CH => (X::ECX, 1, 8),
        R::DH => (X::EDX, 1, 8),
        R::BH => (X::EBX, 1, 8),
        R::CS => (X::CS, 2, 0),
        R::DS => (X::DS, 2, 0),
        R::ES => (X::ES, 2, 0),
        R::SS => (X::SS, 2, 0),
        R::FS => (X::FS, 2, 0),
        R::GS => (X::GS, 2, 0),
        _ => return None,
    })
}

fn mask(width: u32) -> u32 {
    if width >= 4 {
        u32::MAX
    } else {
        (1u32 << (width * 8)) - 1
    }
}

/// Reads an iced register's value.
pub fn read_iced<D>(uc: &Unicorn<D>, r: R) -> Result<u32> {
    let (x, w, sh) =
        map(r).ok_or_else(|| VmpError::Engine(format!("no mapping for register {r:?}")))?;
    Ok((get(uc, x)? >> sh) & mask(w))
}

/// Writes an iced register, preserving the untouched bits of the containing 32-bit register.
pub fn write_iced<D>(uc: &mut Unicorn<D>, r: R, v: u32) -> Result<()> {
    let (x, w, sh) =
        map(r).ok_or_else(|| VmpError::Engine(format!("no mapping for register {r:?}")))?;
    let old = get(uc, x)?;
    let m = mask(w) << sh;
    set(uc, x, (old & !m) | ((v << sh) & m))
}

/// Architectural registers compared by the differential test and shown after a run.
pub const GPRS: [X; 8] = [
    X::EAX,
    X::ECX,
    X::EDX,
    X::EBX,
    X::ESP,
    X::EBP,
    X::ESI,
    X::EDI,
];

pub const EFLAGS_IF: u32 = 1 << 9;
pub const EFLAGS_IOPL: u32 = 3 << 12;
pub const EFLAGS_TF: u32 = 1 << 8;
pub const EFLAGS_NT: u32 = 1 << 14;
pub const EFLAGS_RF: u32 = 1 << 16;
pub const EFLAGS_VM: u32 = 1 << 17;
