//! Fast guest stores while the guest runs without paging (`vmp` only).
//!
//! Unicorn marks every RAM page "not dirty" in its TLB, and its `notdirty_write` only clears that
//! mark (letting later stores take the inline fast path) when the TLB entry is *not executable*.
//! Without paging the x86 MMU grants read/write/execute on every page, so every guest store —
//! a `push` on the kernel stack included — would stay on the slow helper path forever (about a
//! quarter of a getpid() round trip in a perf profile). While paging is off the linear address is
//! the physical one, so the monitor can fill the TLB itself (unicorn's "virtual TLB") with the
//! identity mapping and withhold execute permission for data accesses to data-only pages: same
//! translation, same faults, but stores to those pages go fast after the first. Code pages keep
//! execute (their stores must stay slow so self-modifying code is seen). When the guest enables
//! paging the processor's own page walk takes over again (`set_paging`).
//!
//! `native` uses the same fill, so `vmp` and `native` run the guest on the same fast path. There
//! the guest writes CR0 itself, so every `mov cr0, r32` of its kernel text gets a hook that
//! switches the fill before the write takes effect (`hook_cr0_writes`); a paging switch made
//! anywhere else is caught in the fill hook and stops the run with an error instead of running
//! with a wrong translation.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use unicorn_engine::{MemType, Prot, RegisterX86 as X, TlbType, Unicorn};

use super::{regs, Config, Monitor};
use crate::error::{Result, VmpError};

const CR0_PG: u32 = 0x8000_0000;

/// Installs the identity fill (also the write-tracking fault, see `wtrack`): both configurations
/// use it while guest paging is off.
pub(super) fn install(uc: &mut Unicorn<'static, Monitor>) -> Result<()> {
    uc.add_tlb_hook(0, u64::MAX, |uc, addr, ty| {
        if uc.get_data().config == Config::Native
            && regs::get(uc, X::CR0).is_ok_and(|cr0| cr0 & CR0_PG != 0)
        {
            // Paging came on without passing a hooked `mov cr0`: the identity fill would be
            // wrong, so stop with an error rather than translate.
            uc.get_data_mut().fail(VmpError::Engine(format!(
                "native guest enabled paging outside its scanned kernel text (fill at {addr:#x})"
            )));
            let _ = uc.emu_stop();
            return None;
        }
        let data = ty != MemType::FETCH && uc.get_data().ram.is_data_only(addr);
        let perms = if data {
            Prot::READ | Prot::WRITE
        } else {
            Prot::ALL
        };
        Some(super::wtrack::fill(uc, addr, ty, perms))
    })?;
    set_paging(uc, false)
}

/// Write tracking needs the monitor's fill (both configurations use it while guest paging is
/// off; `set_paging` refuses paging on while tracking).
pub(super) fn ensure_virtual(uc: &mut Unicorn<'_, Monitor>) -> Result<()> {
    set_paging(uc, false)
}

/// Back to what the guest's paging bit asks for once tracking stops.
pub(super) fn restore_default(uc: &mut Unicorn<'_, Monitor>) -> Result<()> {
    let paging = regs::get(uc, X::CR0)? & CR0_PG != 0;
    set_paging(uc, paging)
}

/// Selects who fills the TLB: the processor's page walk with paging on, the identity fill above
/// with paging off. Either way the old entries go. Paging on while tracking writes is refused.
pub(super) fn set_paging(uc: &mut Unicorn<'_, Monitor>, on: bool) -> Result<()> {
    if on && uc.get_data().wtrack.is_on() {
        return Err(VmpError::Unsupported {
            eip: regs::get(uc, X::EIP).unwrap_or(0),
            asm: "guest enabled paging while the monitor tracks writes".into(),
        });
    }
    uc.ctl_set_tlb_type(if on { TlbType::CPU } else { TlbType::VIRTUAL })?;
    uc.ctl_flush_tlb()?;
    Ok(())
}

/// `native`: hooks every `mov cr0, r32` in `text` (the guest kernel's code at `base`) so the TLB
/// fill follows the paging bit the instruction is about to write.
pub(super) fn hook_cr0_writes(
    uc: &mut Unicorn<'static, Monitor>,
    base: u32,
    text: &[u8],
) -> Result<()> {
    let mut d = Decoder::with_ip(32, text, base as u64, DecoderOptions::NONE);
    let mut found = Vec::new();
    while d.can_decode() {
        let i = d.decode();
        if i.mnemonic() == Mnemonic::Mov
            && i.op0_kind() == OpKind::Register
            && i.op0_register() == Register::CR0
        {
            found.push((i.ip32(), i.op1_register()));
        }
    }
    for (addr, src) in found {
        uc.add_code_hook(addr as u64, addr as u64, move |uc, _, _| {
            let switch = regs::read_iced(uc, src).and_then(|new| {
                let old = regs::get(uc, X::CR0)?;
                let on = new & CR0_PG != 0;
                if on != (old & CR0_PG != 0) {
                    set_paging(uc, on)?;
                }
                Ok(())
            });
            if let Err(e) = switch {
                uc.get_data_mut().fail(e);
                let _ = uc.emu_stop();
            }
        })?;
    }
    Ok(())
}
