//! Finding the sensitive instructions before they run: a linear sweep of the guest kernel's text
//! with iced-x86 plants one code hook per sensitive instruction (a hook on a single address costs
//! nothing elsewhere: unicorn checks hook ranges when it translates). The text pages are then
//! write-protected; a guest store into them is performed by the monitor, and the text is rescanned
//! and re-hooked, so modified code can never run a sensitive instruction unseen.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use unicorn_engine::{HookType, MemType, Unicorn};

use super::{emulate, segs, Config, GuestImage, Monitor};
use crate::error::Result;
use crate::layout::PAGE;
use crate::vcpu::TrapPath;

type Uc<'a> = Unicorn<'a, Monitor>;

/// The text ranges of `image` that the monitor scans, and so maps write-protected (`vmp` only).
pub(super) fn protected_ranges(config: Config, image: &GuestImage) -> Vec<(u32, u32)> {
    if config != Config::Vmp {
        return Vec::new();
    }
    std::iter::once(image.kernel_text)
        .chain(image.user_text.iter().copied())
        .filter(|(s, e)| s < e)
        .collect()
}

/// Hooks every sensitive instruction of the kernel text and every `int n` of user text (`vmp`
/// only); the first scan also installs the write-protection hooks over those (read-only mapped)
/// pages.
pub(super) fn rescan(uc: &mut Uc<'_>) -> Result<()> {
    if uc.get_data().config != Config::Vmp {
        return Ok(());
    }
    for (_, id) in std::mem::take(&mut uc.get_data_mut().sensitive_hooks) {
        uc.remove_hook(id)?;
    }
    uc.get_data_mut().decoded.clear();
    let m = uc.get_data();
    let first_scan = !m.text_protected;
    let mut ranges = vec![(m.kernel_text.0, m.kernel_text.1, true)];
    ranges.extend(m.user_text.iter().map(|(s, e)| (*s, *e, false)));
    for (start, end, kernel) in ranges {
        if end <= start {
            continue;
        }
        let mut text = vec![0u8; (end - start) as usize];
        uc.mem_read(start as u64, &mut text)?;
        let mut d = Decoder::with_ip(32, &text, start as u64, DecoderOptions::NONE);
        let (mut found, mut cs_users) = (Vec::new(), Vec::new());
        while d.can_decode() {
            let i = d.decode();
            let sensitive = if kernel {
                emulate::classify(&i).is_some()
            } else {
                i.mnemonic() == Mnemonic::Int
            };
            if sensitive {
                found.push(i);
            } else if kernel && segs::touches_cs(&i) {
                cs_users.push(i.ip32());
            }
        }
        for i in found {
            let addr = i.ip32();
            uc.get_data_mut().decoded.insert(addr, i);
            let id = uc.add_code_hook(addr as u64, addr as u64, |uc, a, _| {
                if let Err(e) = emulate::emulate_at(uc, a as u32, TrapPath::Hook) {
                    uc.get_data_mut().fail(e);
                    let _ = uc.emu_stop();
                }
            })?;
            uc.get_data_mut().sensitive_hooks.insert(addr, id);
        }
        for addr in cs_users {
            // Not a trap: the instruction then runs natively with the guest's CS loaded.
            let id = uc.add_code_hook(addr as u64, addr as u64, |uc, _, _| {
                if let Err(e) = segs::materialize(uc) {
                    uc.get_data_mut().fail(e);
                    let _ = uc.emu_stop();
                }
            })?;
            uc.get_data_mut().sensitive_hooks.insert(addr, id);
        }
        // Hooks added after translation only apply to code translated afterwards.
        uc.ctl_remove_cache(start as u64, end as u64)?;
        uc.get_data_mut().block_cache.forget_range(start, end);
        let (ps, pe) = (start & !(PAGE - 1), (end + PAGE - 1) & !(PAGE - 1));
        if first_scan {
            // The pages were mapped read+execute by `Machine::new` (see `protected_ranges`).
            uc.add_mem_hook(
                HookType::MEM_WRITE_PROT,
                ps as u64,
                pe as u64 - 1,
                on_text_write,
            )?;
        }
    }
    uc.get_data_mut().text_protected = true;
    super::syncpt::plant(uc)
}

/// A guest store into protected kernel text: do the store ourselves (returning `true` after only
/// unprotecting would silently drop it, unicorn #2368), then rescan.
fn on_text_write(uc: &mut Uc<'_>, _t: MemType, addr: u64, size: usize, value: i64) -> bool {
    let bytes = value.to_le_bytes();
    let n = size.min(8);
    super::wtrack::note_monitor_write(uc.get_data_mut(), addr as u32, n);
    if uc.mem_write(addr, &bytes[..n]).is_err() {
        return false;
    }
    if let Err(e) = rescan(uc) {
        uc.get_data_mut().fail(e);
        let _ = uc.emu_stop();
    }
    true
}
