//! The shadow GDT of the `vmp` configuration. The real GDTR points at a monitor-owned copy of the
//! guest's GDT in which every code/data descriptor is raised to DPL 3 ("ring compression"): the
//! deprivileged kernel can then load its own selectors (0x08, 0x10, ...) unchanged, while nothing
//! it writes can give it real ring 0. System descriptors (TSS, LDT) are copied as they are; the real
//! processor never uses them because the monitor does all delivery.

use unicorn_engine::{RegisterX86 as X, Unicorn};

use super::deliver::peek;
use super::{segs, Monitor};
use crate::error::Result;
use crate::ffi::{self, Mmr};
use crate::layout::{MONITOR_BASE, MONITOR_SIZE};
use crate::vcpu::TableReg;

/// Space for the shadow GDT (the rest of the monitor page holds the boot stub).
const SHADOW_MAX: u32 = MONITOR_SIZE / 2;

pub(super) fn load_shadow(uc: &mut Unicorn<'_, Monitor>, gdtr: TableReg) -> Result<()> {
    let len = (gdtr.limit as u32 + 1).min(SHADOW_MAX) as usize;
    let mut table = vec![0u8; len];
    peek(uc, gdtr.base, &mut table)?;
    let guest_access = table.chunks_exact(8).map(|d| d[5]).collect();
    for d in table.chunks_exact_mut(8) {
        let access = d[5];
        let code_or_data = access & 0x10 != 0;
        if code_or_data {
            d[5] = access | 0x60;
        }
    }
    // A deferred CS load must read the old shadow, as the processor loaded it before `lgdt`.
    segs::materialize(uc)?;
    uc.mem_write(MONITOR_BASE as u64, &table)?;
    uc.get_data_mut().segs.set_shadow(&table, guest_access);
    ffi::write_mmr(
        uc,
        X::GDTR,
        Mmr {
            base: MONITOR_BASE as u64,
            limit: len as u32 - 1,
            ..Default::default()
        },
    )
}
