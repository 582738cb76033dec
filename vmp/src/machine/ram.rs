//! Guest RAM, owned by the monitor and lent to unicorn with `mem_map_ptr`.
//!
//! Two reasons not to let unicorn allocate it:
//! - the monitor reads guest memory on every trap (instruction bytes, IDT gate, descriptors, the
//!   iret frame); `uc_mem_read` walks QEMU's address space for each call, a plain copy from our
//!   own buffer does not;
//! - write-protecting scanned text with `uc_mem_protect` makes unicorn split the 256 MiB region by
//!   copying all of it; mapping RAM as separate regions with the right permissions up front avoids
//!   that entirely.
//!
//! Monitor *writes* still go through `uc_mem_write`, so QEMU invalidates any translated code on
//! the written page.

use unicorn_engine::{Prot, Unicorn};

use crate::error::Result;
use crate::layout::{PAGE, RAM_BASE, RAM_TOP};

/// A zeroed, heap-allocated copy of guest RAM `RAM_BASE..RAM_TOP` (lazily backed by the host OS).
pub struct GuestRam {
    ptr: *mut u8,
    len: usize,
    /// The anonymous mapping holding the buffer (start, length), or None for a heap box.
    mapping: Option<(usize, usize)>,
    /// Taken from the pool: bytes of an earlier machine until `zero_except`.
    recycled: bool,
    /// Per page: mapped read/write but not executable, so unicorn can hold no translated code
    /// there and the monitor may store into it directly (see `write`).
    data_only: Vec<bool>,
}

impl GuestRam {
    pub fn new() -> Self {
        Self::mapped(false)
    }

    /// A fresh zeroed buffer; with `huge`, advised for transparent huge pages (see `map_huge`).
    fn mapped(huge: bool) -> Self {
        let len = (RAM_TOP - RAM_BASE) as usize;
        if let Some((ptr, mapping)) = map_huge(len, huge) {
            return GuestRam {
                ptr,
                len,
                mapping: Some(mapping),
                recycled: false,
                data_only: Vec::new(),
            };
        }
        let b = vec![0u8; len].into_boxed_slice();
        let ptr = Box::into_raw(b).cast::<u8>();
        GuestRam {
            ptr,
            len,
            mapping: None,
            recycled: false,
            data_only: Vec::new(),
        }
    }

    /// RAM for a machine about to be restored with `pages` pages: a buffer from the pool (see
    /// [`reserve`]) if one is there, already backed by the host OS but holding old bytes
    /// ([`GuestRam::is_recycled`]: the restorer zeroes what the image does not fill), else a
    /// fresh zeroed one, on huge pages when the image is large.
    pub fn for_restore(pages: u32) -> Self {
        let len = (RAM_TOP - RAM_BASE) as usize;
        let taken = POOL.lock().map(|mut p| p.free.pop()).unwrap_or(None);
        match taken {
            Some((ptr, mapping)) => GuestRam {
                ptr: ptr as *mut u8,
                len,
                mapping: Some(mapping),
                recycled: true,
                data_only: Vec::new(),
            },
            None => Self::mapped(pages >= HUGE_RESTORE_PAGES),
        }
    }

    /// Whether the buffer came from the pool and may hold a previous machine's bytes.
    pub fn is_recycled(&self) -> bool {
        self.recycled
    }

    /// Zeroes every page whose bit in `keep` (a bit per RAM page) is clear, by handing it back
    /// to the host OS (it reads as zero and is backed again on first touch).
    pub fn zero_except(&mut self, keep: &[u64]) {
        let pages = self.len / PAGE as usize;
        let kept = |i: usize| keep.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
        let mut i = 0;
        while i < pages {
            if kept(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < pages && !kept(i) {
                i += 1;
            }
            let (off, n) = (start * PAGE as usize, (i - start) * PAGE as usize);
            zero_range(self.ptr.wrapping_add(off), n);
        }
        self.recycled = false;
    }

    /// Copies guest bytes at `addr` into `buf`; false if the range is not all inside RAM.
    pub fn read(&self, addr: u32, buf: &mut [u8]) -> bool {
        let end = addr as u64 + buf.len() as u64;
        if addr < RAM_BASE || end > RAM_TOP as u64 {
            return false;
        }
        // SAFETY: the range lies inside the allocation (checked above); unicorn only writes this
        // memory while emulating, never while a monitor hook (our only caller) is running.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.add((addr - RAM_BASE) as usize),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        true
    }

    /// Stores `bytes` at guest `addr` directly when every page touched is data-only; false (and
    /// nothing written) otherwise, and the caller goes through `uc_mem_write`, which also
    /// invalidates translated code.
    pub fn write(&mut self, addr: u32, bytes: &[u8]) -> bool {
        let end = addr as u64 + bytes.len() as u64;
        if bytes.is_empty() || addr < RAM_BASE || end > RAM_TOP as u64 {
            return false;
        }
        let first = ((addr - RAM_BASE) / PAGE) as usize;
        let last = ((end as u32 - 1 - RAM_BASE) / PAGE) as usize;
        if !self
            .data_only
            .get(first..=last)
            .is_some_and(|p| p.iter().all(|d| *d))
        {
            return false;
        }
        // SAFETY: the range lies inside the allocation (checked above); unicorn is not running
        // guest code while a monitor hook (our only caller) runs.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.add((addr - RAM_BASE) as usize),
                bytes.len(),
            );
        }
        true
    }

    /// Whether guest `addr` lies in a page mapped read/write but not executable.
    pub fn is_data_only(&self, addr: u64) -> bool {
        let Some(off) = addr.checked_sub(RAM_BASE as u64) else {
            return false;
        };
        self.data_only
            .get((off / PAGE as u64) as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Decides each page's permissions: pages in `read_only` (write-protected scanned text)
    /// read+execute, other pages in `exec` (loaded image segments) read/write/execute, the rest
    /// (stacks, heap, free RAM) read/write. Returns them for [`map`] and remembers which pages
    /// are data-only.
    pub fn plan(&mut self, read_only: &[(u32, u32)], exec: &[(u32, u32)]) -> Vec<Prot> {
        let pages = ((RAM_TOP - RAM_BASE) / PAGE) as usize;
        let mut prot = vec![Prot::READ | Prot::WRITE; pages];
        let mut mark = |ranges: &[(u32, u32)], p: Prot| {
            for (s, e) in ranges {
                let s = (*s).max(RAM_BASE);
                let e = (*e).min(RAM_TOP);
                if s >= e {
                    continue;
                }
                let first = ((s - RAM_BASE) / PAGE) as usize;
                let last = ((e - 1 - RAM_BASE) / PAGE) as usize;
                prot[first..=last].fill(p);
            }
        };
        mark(exec, Prot::ALL);
        mark(read_only, Prot::READ | Prot::EXEC);
        self.data_only = prot
            .iter()
            .map(|p| *p == Prot::READ | Prot::WRITE)
            .collect();
        prot
    }

    /// All of guest RAM. Only valid while unicorn is not emulating, which `&self` on the owning
    /// machine guarantees (emulation needs `&mut`).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` describe the live allocation; see the method doc for aliasing.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Per guest page: whether it may hold non-zero bytes, i.e. the host OS has ever backed it
    /// (present or swapped out, from `/proc/self/pagemap`). A page the OS never backed is still
    /// the allocation's zeros, and checking it would only fault it in. None where the OS cannot
    /// tell (then every page is a candidate).
    pub fn backed_pages(&self) -> Option<Vec<bool>> {
        backed(self.ptr as usize, self.len)
    }

    /// Stores `bytes` at guest `addr` bypassing unicorn, whatever the page's permissions: only
    /// for filling a machine being restored, before any code has been translated. False if the
    /// range is not inside RAM.
    pub fn fill(&mut self, addr: u32, bytes: &[u8]) -> bool {
        let end = addr as u64 + bytes.len() as u64;
        if addr < RAM_BASE || end > RAM_TOP as u64 {
            return false;
        }
        // SAFETY: the range lies inside the allocation (checked above); the engine is not
        // running (the caller holds the machine mutably).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.add((addr - RAM_BASE) as usize),
                bytes.len(),
            );
        }
        true
    }

    /// The page at guest `addr` (page-aligned, inside RAM), writable bypassing unicorn: the
    /// same contract as [`GuestRam::fill`].
    pub fn page_mut(&mut self, addr: u32) -> Option<&mut [u8]> {
        if !addr.is_multiple_of(PAGE) || !(RAM_BASE..RAM_TOP).contains(&addr) {
            return None;
        }
        // SAFETY: the page lies inside the allocation (checked above); the engine is not running
        // (the caller holds the machine mutably) and the borrow of `self` keeps it so.
        unsafe {
            Some(std::slice::from_raw_parts_mut(
                self.ptr.add((addr - RAM_BASE) as usize),
                PAGE as usize,
            ))
        }
    }

    /// Start of the buffer (guest address `RAM_BASE`), for [`map`].
    pub fn base(&self) -> RamBase {
        RamBase(self.ptr)
    }
}

/// Guest RAM buffers of dropped machines, kept (up to `keep`) for restores: a destination that
/// expects a migration prepares its memory beforehand, as a one-sided put needs a pre-registered
/// buffer. Fresh anonymous memory costs the host a fault and a clear per page on first touch;
/// on this machine (a VM) that clearing was half of a 256 MiB restore.
struct Pool {
    keep: usize,
    /// (buffer address, mapping)
    free: Vec<(usize, (usize, usize))>,
}

static POOL: std::sync::Mutex<Pool> = std::sync::Mutex::new(Pool {
    keep: 0,
    free: Vec::new(),
});

/// Keeps `n` guest RAM buffers ready for restores, backed by the host now (every page touched),
/// and from now on keeps buffers of dropped machines up to that number (0: none, the default).
pub fn reserve(n: usize) {
    let len = (RAM_TOP - RAM_BASE) as usize;
    let Ok(mut p) = POOL.lock() else {
        return;
    };
    p.keep = n;
    while p.free.len() > n {
        if let Some((_, (start, l))) = p.free.pop() {
            unmap(start, l);
        }
    }
    while p.free.len() < n {
        let Some((ptr, mapping)) = map_huge(len, true) else {
            return;
        };
        // Touch every page so the host backs it now, not during the restore.
        for off in (0..len).step_by(PAGE as usize) {
            // SAFETY: inside the fresh mapping, which nothing else references yet.
            unsafe { ptr.add(off).write_volatile(0) };
        }
        p.free.push((ptr as usize, mapping));
    }
}

/// Zeroes `len` bytes at `ptr` (page-aligned, inside a private anonymous mapping).
#[cfg(target_os = "linux")]
fn zero_range(ptr: *mut u8, len: usize) {
    // SAFETY: the range lies in this buffer's private anonymous mapping; MADV_DONTNEED makes
    // it read as zero afterwards. Should the advice fail, zero it by hand.
    let r = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) };
    if r != 0 {
        // SAFETY: as above.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
    }
}

#[cfg(not(target_os = "linux"))]
fn zero_range(ptr: *mut u8, len: usize) {
    // SAFETY: the range lies inside this buffer.
    unsafe { std::ptr::write_bytes(ptr, 0, len) };
}

/// From this many pages (64 MiB) a restore's fresh RAM goes on huge pages: below it, the 2 MiB
/// a huge page clears per fault would cost more than the 4 KiB faults it saves (a small
/// guest touches a few scattered pages).
const HUGE_RESTORE_PAGES: u32 = 16384;

/// Transparent huge pages' size on x86-64 Linux.
#[cfg(target_os = "linux")]
const HUGE: usize = 2 << 20;

/// A zeroed anonymous mapping of `len` bytes, 2 MiB-aligned, with `huge` advised for
/// transparent huge pages: a large restore writes all of RAM into a fresh machine, and faulting
/// it in 4 KiB at a time (65 536 faults for 256 MiB) cost more than the copy itself; with huge
/// pages it is 128 faults (where the host's THP mode is `madvise` or `always`; elsewhere the
/// advice is a no-op). Returns the buffer and the mapping to unmap.
#[cfg(target_os = "linux")]
fn map_huge(len: usize, huge: bool) -> Option<(*mut u8, (usize, usize))> {
    let total = len + HUGE;
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let start = base as usize;
    let aligned = start.next_multiple_of(HUGE);
    if huge {
        // SAFETY: `aligned..aligned + len` lies inside the mapping just made. Advice failing
        // (no THP in this kernel) only leaves small pages.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    Some((aligned as *mut u8, (start, total)))
}

#[cfg(not(target_os = "linux"))]
fn map_huge(_len: usize, _huge: bool) -> Option<(*mut u8, (usize, usize))> {
    None
}

#[cfg(target_os = "linux")]
fn unmap(start: usize, len: usize) {
    // SAFETY: a mapping made by `map_huge`, unmapped once (from Drop).
    unsafe {
        libc::munmap(start as *mut libc::c_void, len);
    }
}

#[cfg(not(target_os = "linux"))]
fn unmap(_start: usize, _len: usize) {}

#[cfg(target_os = "linux")]
fn backed(start: usize, len: usize) -> Option<Vec<bool>> {
    use std::os::unix::fs::FileExt;
    const HOST_PAGE: usize = 4096;
    // SAFETY: sysconf has no preconditions.
    if unsafe { libc::sysconf(libc::_SC_PAGESIZE) } != HOST_PAGE as libc::c_long {
        return None;
    }
    let f = std::fs::File::open("/proc/self/pagemap").ok()?;
    let (first, last) = (start / HOST_PAGE, (start + len - 1) / HOST_PAGE);
    let mut raw = vec![0u8; (last - first + 1) * 8];
    f.read_exact_at(&mut raw, (first * 8) as u64).ok()?;
    // Bit 63: present; bit 62: swapped.
    let host_backed: Vec<bool> = raw
        .chunks_exact(8)
        .map(|e| u64::from_le_bytes(e.try_into().unwrap_or([0; 8])) >> 62 != 0)
        .collect();
    let pages = len / PAGE as usize;
    Some(
        (0..pages)
            .map(|i| {
                let a = (start + i * PAGE as usize) / HOST_PAGE - first;
                let b = (start + (i + 1) * PAGE as usize - 1) / HOST_PAGE - first;
                host_backed[a..=b].iter().any(|x| *x)
            })
            .collect(),
    )
}

#[cfg(not(target_os = "linux"))]
fn backed(_start: usize, _len: usize) -> Option<Vec<bool>> {
    None
}

/// The buffer's address, copied out so the engine holding the buffer can be borrowed mutably.
#[derive(Copy, Clone)]
pub struct RamBase(*mut u8);

/// Maps the RAM at `base` into `uc` with the per-page permissions `prot` (from
/// [`GuestRam::plan`]), each run of equal pages as its own region.
///
/// Keeping non-code pages non-executable is a speed matter: the monitor may write data-only pages
/// directly, and in `vmp` the monitor's own TLB fill (`vtlb`) keeps stores to them off unicorn's
/// slow "not dirty" path (the processor's fill marks every page executable without paging).
///
/// # Safety
/// `base` must come from a [`GuestRam`] that outlives the engine (e.g. held in its user data).
pub unsafe fn map<D>(uc: &mut Unicorn<D>, base: RamBase, prot: &[Prot]) -> Result<()> {
    let pages = prot.len();
    let mut run = 0usize;
    for i in 1..=pages {
        if i == pages || prot[i] != prot[run] {
            let at = |i: usize| RAM_BASE + (i as u32) * PAGE;
            map_range(uc, base, at(run), at(i), prot[run])?;
            run = i;
        }
    }
    Ok(())
}

fn map_range<D>(
    uc: &mut Unicorn<D>,
    base: RamBase,
    start: u32,
    end: u32,
    prot: Prot,
) -> Result<()> {
    // SAFETY: `start..end` lies inside RAM_BASE..RAM_TOP, i.e. inside the buffer, which outlives
    // the engine (contract of `map`).
    unsafe {
        uc.mem_map_ptr(
            start as u64,
            (end - start) as u64,
            prot,
            base.0.add((start - RAM_BASE) as usize).cast(),
        )?;
    }
    Ok(())
}

impl Default for GuestRam {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        if let Some((start, len)) = self.mapping {
            if let Ok(mut p) = POOL.lock() {
                if p.free.len() < p.keep {
                    p.free.push((self.ptr as usize, (start, len)));
                    return;
                }
            }
            unmap(start, len);
            return;
        }
        // SAFETY: `ptr`/`len` came from `Box::into_raw` of a boxed slice of exactly `len` bytes.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr, self.len,
            )));
        }
    }
}
