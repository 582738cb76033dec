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

use unicorn_engine::{MemType, Prot, TlbType, Unicorn};

use super::{Config, Monitor};
use crate::error::{Result, VmpError};

/// Installs the identity fill (also the write-tracking fault, see `wtrack`); `vmp` uses it from
/// the start, `native` only while tracking writes.
pub(super) fn install(uc: &mut Unicorn<'static, Monitor>) -> Result<()> {
    uc.add_tlb_hook(0, u64::MAX, |uc, addr, ty| {
        let data = ty != MemType::FETCH && uc.get_data().ram.is_data_only(addr);
        let perms = if data {
            Prot::READ | Prot::WRITE
        } else {
            Prot::ALL
        };
        Some(super::wtrack::fill(uc, addr, ty, perms))
    })?;
    if uc.get_data().config == Config::Vmp {
        set_paging(uc, false)?;
    }
    Ok(())
}

/// Write tracking needs the monitor's fill (`native` normally runs on the processor's walk).
pub(super) fn ensure_virtual(uc: &mut Unicorn<'_, Monitor>) -> Result<()> {
    set_paging(uc, false)
}

/// Back to what the configuration uses without tracking.
pub(super) fn restore_default(uc: &mut Unicorn<'_, Monitor>) -> Result<()> {
    let native = uc.get_data().config == Config::Native;
    set_paging(uc, native)
}

/// Selects who fills the TLB: the processor's page walk with paging on, the identity fill above
/// with paging off. Either way the old entries go. Paging on while tracking writes is refused.
pub(super) fn set_paging(uc: &mut Unicorn<'_, Monitor>, on: bool) -> Result<()> {
    if on && uc.get_data().wtrack.is_on() {
        return Err(VmpError::Unsupported {
            eip: super::regs::get(uc, unicorn_engine::RegisterX86::EIP).unwrap_or(0),
            asm: "guest enabled paging while the monitor tracks writes".into(),
        });
    }
    uc.ctl_set_tlb_type(if on { TlbType::CPU } else { TlbType::VIRTUAL })?;
    uc.ctl_flush_tlb()?;
    Ok(())
}
