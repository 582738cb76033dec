//! Write tracking: the first guest write to a protected page traps to the monitor, which records
//! the page (and may copy it first, e.g. a twin) and re-enables writes to it; later writes to that
//! page run at full speed until the next [`Machine::take_dirty`] protects it again.
//!
//! Mechanism: unicorn's "virtual TLB" (see `vtlb`). While tracking, the monitor's TLB fill
//! withholds write permission from every page not yet written since the last take, so a store to
//! such a page misses the TLB and reaches the fill with a store access: that fill *is* the write
//! fault. The monitor records the page, runs the per-page callback on its contents *before* the
//! store lands, and grants write permission. Taking the dirty set clears the grants and flushes
//! unicorn's TLB, so every page is write-protected again.
//!
//! Monitor stores into guest memory (interrupt frames, emulated instructions, stores into
//! protected text) are recorded the same way (`note_monitor_write`), so the dirty set covers
//! everything that changed guest RAM. Loading from outside (`Machine::write_ram`) is recorded too.
//!
//! Written bytes (`Machine::track_written_bytes`, for the multiprocessor): a twin shows which bytes
//! *changed*, not which were *written*. A store of the value a byte already holds is invisible to
//! it, and a word store that changes only some of its bytes would travel as a partial word; both
//! break x86-TSO once another processor's writes are merged in between (a lost store, a torn
//! word). So the multiprocessor also records, per written page, a bit per byte that guest stores
//! (a unicorn memory-write hook over RAM) or monitor stores touched since the last take.
//!
//! Tracking needs the guest's paging off (linear = physical): the guest kernels here never enable
//! it; in `vmp` an attempt while tracking fails with a clear error, in `native` (where the guest's
//! CR0 write is not intercepted) `take_dirty` refuses when it finds paging on.

use unicorn_engine::{HookType, MemType, Prot, RegisterX86 as X, TlbEntry, UcHookId, Unicorn};

use super::{Machine, Monitor};
use crate::error::{Result, VmpError};
use crate::layout::{PAGE, RAM_BASE, RAM_TOP};

/// Called once per page per tracking epoch, at its first write, with the page's guest address and
/// its contents before that write (4 KiB).
pub type FirstWrite = Box<dyn FnMut(u32, &[u8]) + Send>;

const PAGES: usize = ((RAM_TOP - RAM_BASE) / PAGE) as usize;
const MASK_WORDS: usize = PAGE as usize / 64;

/// Which bytes of one page were written since the last take (a bit per byte).
#[derive(Clone, PartialEq, Eq)]
pub struct WrittenBytes(Box<[u64; MASK_WORDS]>);

impl Default for WrittenBytes {
    fn default() -> Self {
        WrittenBytes(Box::new([0; MASK_WORDS]))
    }
}

impl std::fmt::Debug for WrittenBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.runs()).finish()
    }
}

impl WrittenBytes {
    /// Marks bytes `off..off + len` of the page (clipped to the page).
    pub fn mark(&mut self, off: usize, len: usize) {
        let end = (off + len).min(PAGE as usize);
        for b in off..end {
            self.0[b / 64] |= 1 << (b % 64);
        }
    }

    pub fn contains(&self, off: usize) -> bool {
        off < PAGE as usize && self.0[off / 64] & (1 << (off % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// Number of bytes marked.
    pub fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// The maximal runs of marked bytes, as (offset, length), ascending.
    pub fn runs(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut open: Option<usize> = None;
        for (w, bits) in self.0.iter().enumerate() {
            // Whole words outside a run, or inside one, need no look at their bits.
            if matches!((open, *bits), (None, 0) | (Some(_), u64::MAX)) {
                continue;
            }
            for k in 0..64 {
                let b = w * 64 + k;
                match (open, bits & (1 << k) != 0) {
                    (None, true) => open = Some(b),
                    (Some(s), false) => {
                        out.push((s, b - s));
                        open = None;
                    }
                    _ => {}
                }
            }
        }
        if let Some(s) = open {
            out.push((s, PAGE as usize - s));
        }
        out
    }
}

/// Per-machine tracking state (lives in the monitor).
#[derive(Default)]
pub struct WriteTracker {
    on: bool,
    /// Bit per RAM page: written (so write-enabled) since the last take.
    written: Vec<u64>,
    /// Pages written since the last take, in first-write order.
    dirty: Vec<u32>,
    callback: Option<FirstWrite>,
    /// Per RAM page, the bytes written since the last take (only with `track_written_bytes`).
    bytes: Option<Vec<Option<WrittenBytes>>>,
    bytes_hook: Option<UcHookId>,
    /// Write faults taken by guest stores since tracking started (monitor stores not counted).
    pub faults: u64,
}

impl WriteTracker {
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// The RAM page index of `addr`, if it is in RAM.
    fn index(addr: u64) -> Option<usize> {
        let off = addr.checked_sub(RAM_BASE as u64)?;
        let i = (off / PAGE as u64) as usize;
        (i < PAGES).then_some(i)
    }

    fn is_written(&self, i: usize) -> bool {
        self.written[i / 64] & (1 << (i % 64)) != 0
    }

    /// Records page `i` as written; true if this was its first write of the epoch.
    fn mark(&mut self, i: usize) -> bool {
        if self.is_written(i) {
            return false;
        }
        self.written[i / 64] |= 1 << (i % 64);
        self.dirty.push(RAM_BASE + i as u32 * PAGE);
        true
    }

    /// Records a store of `len` bytes at `addr` in the written-byte masks (if kept).
    fn mark_bytes(&mut self, addr: u64, len: usize) {
        let Some(masks) = self.bytes.as_mut() else {
            return;
        };
        let end = addr + len as u64;
        let mut a = addr;
        while a < end {
            let Some(i) = Self::index(a) else {
                return;
            };
            let off = (a % PAGE as u64) as usize;
            let n = ((PAGE as usize - off) as u64).min(end - a) as usize;
            masks[i]
                .get_or_insert_with(WrittenBytes::default)
                .mark(off, n);
            a += n as u64;
        }
    }

    /// Whether a page must stay write-protected in a TLB fill.
    pub(super) fn withholds_write(&self, addr: u64) -> bool {
        self.on && Self::index(addr).is_some_and(|i| !self.is_written(i))
    }
}

/// The TLB fill used by `vtlb`: `perms` is what the fill would grant without tracking. A store to
/// a protected page is the write fault: record, call back, grant.
pub(super) fn fill(uc: &mut Unicorn<'_, Monitor>, addr: u64, ty: MemType, perms: Prot) -> TlbEntry {
    let mon = uc.get_data_mut();
    let mut perms = perms;
    if mon.wtrack.withholds_write(addr) {
        if ty == MemType::WRITE {
            mon.wtrack.faults += 1;
            first_write(mon, addr);
        } else {
            perms = Prot(perms.0 & !Prot::WRITE.0);
        }
    }
    TlbEntry { paddr: addr, perms }
}

/// Marks the page of `addr` and hands its current contents to the callback if it is new.
fn first_write(mon: &mut Monitor, addr: u64) {
    let Some(i) = WriteTracker::index(addr) else {
        return;
    };
    if !mon.wtrack.mark(i) {
        return;
    }
    if let Some(cb) = mon.wtrack.callback.as_mut() {
        let page_addr = RAM_BASE + i as u32 * PAGE;
        let mut buf = [0u8; PAGE as usize];
        if mon.ram.read(page_addr, &mut buf) {
            cb(page_addr, &buf);
        }
    }
}

/// Records a monitor store of `len` bytes at `addr` (before it is done, so a twin sees the old
/// contents).
pub(super) fn note_monitor_write(mon: &mut Monitor, addr: u32, len: usize) {
    if !mon.wtrack.on || len == 0 {
        return;
    }
    mon.wtrack.mark_bytes(addr as u64, len);
    let first = addr as u64 & !(PAGE as u64 - 1);
    let end = addr as u64 + len as u64;
    let mut p = first;
    while p < end {
        first_write(mon, p);
        p += PAGE as u64;
    }
}

impl Machine {
    /// Starts write tracking: every RAM page becomes write-protected; `on_first_write` (if any)
    /// sees each page just before its first write of an epoch. Restarting replaces the callback
    /// and begins a new epoch with an empty dirty set.
    pub fn start_tracking(&mut self, on_first_write: Option<FirstWrite>) -> Result<()> {
        self.check_paging_off()?;
        let mon = self.uc.get_data_mut();
        mon.wtrack.on = true;
        mon.wtrack.written = vec![0; PAGES.div_ceil(64)];
        mon.wtrack.dirty.clear();
        mon.wtrack.callback = on_first_write;
        if let Some(masks) = mon.wtrack.bytes.as_mut() {
            masks.iter_mut().for_each(|m| *m = None);
        }
        super::vtlb::ensure_virtual(&mut self.uc)
    }

    /// Also records which bytes of each page guest and monitor stores write (until tracking
    /// stops): see [`Machine::take_written`]. Costs a hook call per guest store into RAM.
    pub fn track_written_bytes(&mut self) -> Result<()> {
        if !self.uc.get_data().wtrack.on {
            return Err(VmpError::Engine(
                "written-byte tracking needs write tracking on".into(),
            ));
        }
        if self.uc.get_data().wtrack.bytes.is_some() {
            return Ok(());
        }
        let id = self.uc.add_mem_hook(
            HookType::MEM_WRITE,
            RAM_BASE as u64,
            RAM_TOP as u64 - 1,
            |uc, _ty, addr, size, _value| {
                uc.get_data_mut().wtrack.mark_bytes(addr, size);
                true
            },
        )?;
        let mon = self.uc.get_data_mut();
        mon.wtrack.bytes = Some(vec![None; PAGES]);
        mon.wtrack.bytes_hook = Some(id);
        Ok(())
    }

    /// The bytes of `page` written since the last call for it (empty if none, or if written
    /// bytes are not tracked); the page's record starts afresh.
    pub fn take_written(&mut self, page: u32) -> WrittenBytes {
        let mon = self.uc.get_data_mut();
        match (mon.wtrack.bytes.as_mut(), WriteTracker::index(page as u64)) {
            (Some(masks), Some(i)) => masks[i].take().unwrap_or_default(),
            _ => WrittenBytes::default(),
        }
    }

    /// The bytes of `page` written since the last [`Machine::take_written`] for it, if tracked.
    pub fn written(&self, page: u32) -> Option<&WrittenBytes> {
        let mon = self.uc.get_data();
        let i = WriteTracker::index(page as u64)?;
        mon.wtrack.bytes.as_ref()?[i].as_ref()
    }

    /// Stops tracking: writes no longer fault; the dirty set is dropped.
    pub fn stop_tracking(&mut self) -> Result<()> {
        if let Some(id) = self.uc.get_data_mut().wtrack.bytes_hook.take() {
            self.uc.remove_hook(id)?;
        }
        let mon = self.uc.get_data_mut();
        mon.wtrack = WriteTracker::default();
        super::vtlb::restore_default(&mut self.uc)
    }

    /// The pages (guest addresses, ascending) written since tracking started or the last take;
    /// they are write-protected again, so each one's next write faults anew.
    pub fn take_dirty(&mut self) -> Result<Vec<u32>> {
        self.take_dirty_keeping(|_| false)
    }

    /// Like [`Machine::take_dirty`], but pages for which `keep` is true stay write-enabled (no
    /// fault, no callback on their next write) and stay in the dirty set of the next epoch: for
    /// pages the caller expects to be written again and re-twins itself.
    pub fn take_dirty_keeping(&mut self, keep: impl Fn(u32) -> bool) -> Result<Vec<u32>> {
        self.check_paging_off()?;
        let mon = self.uc.get_data_mut();
        let mut pages = std::mem::take(&mut mon.wtrack.dirty);
        let mut reprotected = false;
        for p in &pages {
            if keep(*p) {
                mon.wtrack.dirty.push(*p);
                continue;
            }
            let i = ((p - RAM_BASE) / PAGE) as usize;
            mon.wtrack.written[i / 64] &= !(1 << (i % 64));
            reprotected = true;
        }
        pages.sort_unstable();
        if reprotected {
            self.uc.ctl_flush_tlb()?;
        }
        Ok(pages)
    }

    /// The pages written since the last take, without protecting them again (ascending).
    pub fn dirty_pages(&self) -> Vec<u32> {
        let mut v = self.uc.get_data().wtrack.dirty.clone();
        v.sort_unstable();
        v
    }

    /// Write faults taken by guest stores since tracking started.
    pub fn write_faults(&self) -> u64 {
        self.uc.get_data().wtrack.faults
    }

    /// Copies guest RAM at `addr` into `buf` (the monitor's view; false outside RAM).
    pub fn read_ram(&self, addr: u32, buf: &mut [u8]) -> bool {
        self.uc.get_data().ram.read(addr, buf)
    }

    /// Stores `bytes` into guest RAM from outside the guest (e.g. a remote diff), keeping
    /// translated code coherent. Not recorded as dirty: it is not this processor's write.
    pub fn write_ram(&mut self, addr: u32, bytes: &[u8]) -> Result<()> {
        if !self.uc.get_data_mut().ram.write(addr, bytes) {
            self.uc
                .mem_write(addr as u64, bytes)
                .map_err(|_| VmpError::Unmapped {
                    eip: 0,
                    addr: addr as u64,
                    asm: "monitor RAM write".into(),
                })?;
        }
        Ok(())
    }

    fn check_paging_off(&self) -> Result<()> {
        let cr0 = super::regs::get(&self.uc, X::CR0)?;
        if cr0 & 0x8000_0000 != 0 {
            return Err(VmpError::Unsupported {
                eip: super::regs::get(&self.uc, X::EIP).unwrap_or(0),
                asm: "write tracking with guest paging on".into(),
            });
        }
        Ok(())
    }
}
