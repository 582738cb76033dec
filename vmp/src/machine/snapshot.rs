//! Capture and restore of a whole virtual processor at an instruction boundary (between two
//! `Machine::run` calls), for checkpoints and migration.
//!
//! What is kept, and why each piece is needed for the restored run to be indistinguishable:
//! - the engine's CPU context (unicorn's `CPUX86State` up to `end_reset_fields`, as
//!   `uc_context_save` copies it): general, segment (selectors *and* hidden descriptor caches),
//!   control, FPU/SSE registers, EFLAGS and the CPL. Reloading selectors through `reg_write`
//!   instead would re-check them against the current CPL and refuse e.g. a ring-3 SS at ring 0;
//! - the monitor's `VirtualCpu`, devices (console, timer phase, EOI state, PIT latch, exit
//!   status), trap statistics, the instruction and idle-cycle clocks (they decide when the next
//!   timer interrupt fires), the budget, the last started instruction (REP-iteration counting);
//! - the monitor page (shadow GDT) and the lazy-segment state's shadow copy and deferred CS;
//! - the page-permission plan's inputs and the scanned text ranges;
//! - guest RAM, page by page (see `pages`).
//!
//! What is re-derived on restore rather than kept: the sensitive-instruction hooks and decoded
//! instructions (a rescan of the restored text), the block-offset cache and REP-address set
//! (rebuilt as blocks are translated), the vtlb fill mode (from CR0.PG), what the real CS/SS are
//! known to hold (forgotten: the next load is a real one).

use serde::{Deserialize, Serialize};
use unicorn_engine::RegisterX86 as X;
use unicorn_engine_sys as sys;

use super::segs::{SegSnapshot, SegState};
use super::{blocks, regs, scan, vtlb, ArchState, Config, Machine};
use crate::devices::Devices;
use crate::error::{Result, VmpError};
use crate::layout::{MONITOR_BASE, MONITOR_SIZE, PAGE, RAM_BASE, RAM_TOP};
use crate::time::CpuModel;
use crate::vcpu::{TrapStats, VirtualCpu};

/// Names the engine whose CPU-context layout an image holds; a different one is refused.
pub const ENGINE_TAG: &str = "unicorn-2.1.5 x86-32 CPUX86State..end_reset_fields";

/// How guest RAM is mapped: the scanned text ranges and the permission plan's inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamLayout {
    pub kernel_text: (u32, u32),
    pub user_text: Vec<(u32, u32)>,
    /// Write-protected scanned text (`vmp` only).
    pub read_only: Vec<(u32, u32)>,
    /// Loaded image segments (mapped executable).
    pub exec: Vec<(u32, u32)>,
}

/// Everything of a machine except its RAM pages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineState {
    pub config: Config,
    pub cpu: CpuModel,
    pub layout: RamLayout,
    pub engine_tag: String,
    /// The engine's CPU context bytes (see the module doc).
    pub engine: Vec<u8>,
    /// The guest-visible registers, for display and checks (the engine context is authoritative).
    pub arch: ArchState,
    pub vcpu: VirtualCpu,
    pub dev: Devices,
    pub stats: TrapStats,
    pub retired: u64,
    pub idle_cycles: u64,
    pub budget: u64,
    pub last_insn: u32,
    pub halted_native: bool,
    pub segs: SegSnapshot,
    /// The monitor-owned page at `MONITOR_BASE` (shadow GDT, boot stub).
    pub monitor_page: Vec<u8>,
}

/// Pages of guest RAM.
pub const RAM_PAGES: u32 = (RAM_TOP - RAM_BASE) / PAGE;

fn check(e: sys::uc_error) -> Result<()> {
    if e == sys::uc_error::OK {
        Ok(())
    } else {
        Err(e.into())
    }
}

/// A CPU context of one engine, freshly saved, freed on drop.
struct SavedContext {
    h: *mut sys::uc_engine,
    ctx: *mut sys::uc_context,
    data_at: usize,
    data_len: usize,
}

impl SavedContext {
    fn save(h: *mut sys::uc_engine) -> Result<Self> {
        let mut ctx: *mut sys::uc_context = std::ptr::null_mut();
        // SAFETY: alloc/save on the live engine handle; on error the context is freed by Drop.
        unsafe {
            check(sys::uc_context_alloc(h, &raw mut ctx))?;
            let total = sys::uc_context_size(h);
            let mut c = SavedContext {
                h,
                ctx,
                data_at: 0,
                data_len: 0,
            };
            check(sys::uc_context_save(h, ctx))?;
            // `uc_context` starts with the size of its trailing data array.
            let data_len = std::ptr::read_unaligned(ctx.cast::<usize>());
            if data_len == 0 || data_len >= total {
                return Err(VmpError::Engine(format!(
                    "unexpected CPU context layout ({data_len} of {total} bytes)"
                )));
            }
            c.data_at = total - data_len;
            c.data_len = data_len;
            Ok(c)
        }
    }

    fn data(&mut self) -> &mut [u8] {
        // SAFETY: `data_at + data_len` is the allocation's size (checked in `save`).
        unsafe {
            std::slice::from_raw_parts_mut(self.ctx.cast::<u8>().add(self.data_at), self.data_len)
        }
    }

    fn restore(&self) -> Result<()> {
        // SAFETY: a context allocated for this engine.
        check(unsafe { sys::uc_context_restore(self.h, self.ctx) })
    }
}

impl Drop for SavedContext {
    fn drop(&mut self) {
        // SAFETY: allocated by `uc_context_alloc`, freed once.
        unsafe {
            sys::uc_context_free(self.ctx);
        }
    }
}

fn save_engine(h: *mut sys::uc_engine) -> Result<Vec<u8>> {
    Ok(SavedContext::save(h)?.data().to_vec())
}

fn load_engine(h: *mut sys::uc_engine, bytes: &[u8]) -> Result<()> {
    let mut c = SavedContext::save(h)?;
    if c.data_len != bytes.len() {
        return Err(VmpError::BadImage(format!(
            "CPU context of {} bytes does not fit this engine's {}",
            bytes.len(),
            c.data_len
        )));
    }
    c.data().copy_from_slice(bytes);
    c.restore()
}

impl Machine {
    /// The whole state except RAM. Only at an instruction boundary, i.e. between `run` calls
    /// (which is the only time `&self` is available while a guest is loaded).
    pub fn capture_state(&self) -> Result<MachineState> {
        let uc = &self.uc;
        let m = uc.get_data();
        if m.pending.is_some() || m.cur_block != blocks::CurBlock::default() {
            return Err(VmpError::Engine(
                "capture requested inside an instruction".into(),
            ));
        }
        if regs::get(uc, X::DR7)? & 0xff != 0 {
            // The context would hold pointers to engine breakpoints.
            return Err(VmpError::Engine(
                "cannot checkpoint a guest with hardware breakpoints enabled (DR7)".into(),
            ));
        }
        let engine = save_engine(uc.get_handle())?;
        let mut monitor_page = vec![0u8; MONITOR_SIZE as usize];
        uc.mem_read(MONITOR_BASE as u64, &mut monitor_page)?;
        Ok(MachineState {
            config: m.config,
            cpu: m.cpu,
            layout: RamLayout {
                kernel_text: m.kernel_text,
                user_text: m.user_text.clone(),
                read_only: m.read_only.clone(),
                exec: m.exec.clone(),
            },
            engine_tag: ENGINE_TAG.into(),
            engine,
            arch: self.arch_state()?,
            vcpu: m.vcpu.clone(),
            dev: m.dev.clone(),
            stats: m.stats.clone(),
            retired: m.retired,
            idle_cycles: m.idle_cycles,
            budget: m.budget,
            last_insn: m.last_insn,
            halted_native: m.halted_native,
            segs: m.segs.snapshot(),
            monitor_page,
        })
    }

    /// Guest RAM pages that are not all zero, as (guest address, bytes), in address order. Pages
    /// the host OS never backed are skipped unread (see `GuestRam::backed_pages`).
    pub fn nonzero_pages(&self) -> impl Iterator<Item = (u32, &[u8])> {
        let ram = &self.uc.get_data().ram;
        let backed = ram.backed_pages();
        ram.bytes()
            .chunks_exact(PAGE as usize)
            .enumerate()
            .filter(move |(i, p)| backed.as_ref().is_none_or(|b| b[*i]) && !is_zero(p))
            .map(|(i, p)| (RAM_BASE + i as u32 * PAGE, p))
    }

    /// The bytes of the RAM page at `addr` (page-aligned, inside RAM).
    pub fn page(&self, addr: u32) -> Option<&[u8]> {
        let off = addr.checked_sub(RAM_BASE)? as usize;
        if !addr.is_multiple_of(PAGE) || addr >= RAM_TOP {
            return None;
        }
        Some(&self.uc.get_data().ram.bytes()[off..off + PAGE as usize])
    }
}

/// Whether a page holds only zero bytes (16 bytes per compare: this scan runs over all of
/// guest RAM on every capture).
pub fn is_zero(page: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128; `align_to` only reinterprets aligned middles.
    let (head, words, tail) = unsafe { page.align_to::<u128>() };
    head.iter().all(|b| *b == 0) && tail.iter().all(|b| *b == 0) && words.iter().all(|w| *w == 0)
}

/// A machine being restored: RAM is filled page by page, then [`Restorer::finish`] loads the
/// processor state and re-derives the rest. Dropping it unfinished leaves nothing behind.
pub struct Restorer {
    m: Machine,
    state: MachineState,
    /// A bit per RAM page filled so far: on a recycled buffer the others are zeroed at finish.
    filled: Vec<u64>,
}

impl Restorer {
    /// Checks `state` against this build and prepares an empty machine for it.
    pub fn new(state: MachineState) -> Result<Self> {
        Self::with_pages(state, 0)
    }

    /// [`Restorer::new`] for an image of `pages` pages (large ones get huge-page RAM).
    pub fn with_pages(state: MachineState, pages: u32) -> Result<Self> {
        if state.engine_tag != ENGINE_TAG {
            return Err(VmpError::BadImage(format!(
                "image holds CPU state of engine '{}', this build runs '{ENGINE_TAG}'",
                state.engine_tag
            )));
        }
        if state.monitor_page.len() != MONITOR_SIZE as usize {
            return Err(VmpError::BadImage("monitor page has the wrong size".into()));
        }
        let l = &state.layout;
        let in_ram = |(s, e): &(u32, u32)| s <= e && *e <= RAM_TOP;
        if !(in_ram(&l.kernel_text)
            && l.user_text.iter().all(in_ram)
            && l.read_only.iter().all(in_ram)
            && l.exec.iter().all(in_ram))
        {
            return Err(VmpError::BadImage("memory layout outside guest RAM".into()));
        }
        let ram = super::ram::GuestRam::for_restore(pages);
        let m = Machine::shell(state.config, state.cpu, &state.layout, ram)?;
        Ok(Restorer {
            m,
            state,
            filled: vec![0; (RAM_PAGES as usize).div_ceil(64)],
        })
    }

    /// Fills the RAM page at `addr` (page-aligned) with `bytes` (one page).
    pub fn page(&mut self, addr: u32, bytes: &[u8]) -> Result<()> {
        if !addr.is_multiple_of(PAGE) || bytes.len() != PAGE as usize {
            return Err(VmpError::BadImage(format!("bad page record at {addr:#x}")));
        }
        self.mark(addr);
        if !self.m.uc.get_data_mut().ram.fill(addr, bytes) {
            return Err(VmpError::BadImage(format!(
                "page {addr:#x} lies outside guest RAM"
            )));
        }
        Ok(())
    }

    fn mark(&mut self, addr: u32) {
        if let Some(i) = addr.checked_sub(RAM_BASE).map(|o| (o / PAGE) as usize) {
            if let Some(w) = self.filled.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
        }
    }

    /// Replaces the state `new` was given with a later capture of the same machine (pre-copy
    /// sends the machine's shape first and its final state last): configuration, CPU model,
    /// memory layout and engine must be the ones the empty machine was built for.
    pub fn replace_state(&mut self, state: MachineState) -> Result<()> {
        let s = &self.state;
        if state.config != s.config
            || state.cpu != s.cpu
            || state.layout != s.layout
            || state.engine_tag != s.engine_tag
            || state.monitor_page.len() != s.monitor_page.len()
        {
            return Err(VmpError::BadImage(
                "final state does not match the machine the stream began with".into(),
            ));
        }
        self.state = state;
        Ok(())
    }

    /// The RAM page at `addr` (page-aligned, inside RAM) to be filled in place, e.g. straight
    /// from a socket or file.
    pub fn page_mut(&mut self, addr: u32) -> Result<&mut [u8]> {
        self.mark(addr);
        self.m
            .uc
            .get_data_mut()
            .ram
            .page_mut(addr)
            .ok_or_else(|| VmpError::BadImage(format!("bad page record at {addr:#x}")))
    }

    /// Loads the processor and monitor state and re-derives hooks and caches: the machine
    /// continues exactly where the captured one stopped.
    pub fn finish(self) -> Result<Machine> {
        let Restorer {
            mut m,
            state: s,
            filled,
        } = self;
        let ram = &mut m.uc.get_data_mut().ram;
        if ram.is_recycled() {
            ram.zero_except(&filled);
        }
        let uc = &mut m.uc;
        uc.mem_write(MONITOR_BASE as u64, &s.monitor_page)?;
        load_engine(uc.get_handle(), &s.engine)?;
        let mon = uc.get_data_mut();
        mon.vcpu = s.vcpu;
        mon.dev = s.dev;
        mon.stats = s.stats;
        mon.retired = s.retired;
        mon.idle_cycles = s.idle_cycles;
        mon.budget = s.budget;
        mon.last_insn = s.last_insn;
        mon.halted_native = s.halted_native;
        mon.segs = SegState::restore(&s.segs);
        mon.block_cache.clear();
        mon.text_protected = false;
        uc.ctl_remove_cache(RAM_BASE as u64, RAM_TOP as u64)?;
        scan::rescan(uc)?;
        // Both configurations run on the monitor's TLB fill while guest paging is off.
        let paging = regs::get(uc, X::CR0)? & 0x8000_0000 != 0;
        vtlb::set_paging(uc, paging)?;
        m.hook_native_paging()?;
        Ok(m)
    }
}
