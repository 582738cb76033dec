//! One virtual processor: unicorn plays the paper's VM process, the hooks installed here play its
//! monitor process.
//!
//! Interception design (correct for every trap, not only the first):
//! - the guest kernel's text is scanned with iced-x86 and every *sensitive* instruction (privileged
//!   ones, and the unprivileged-but-sensitive `pushf`/`popf`/`iret`/`sgdt`/`mov ss`/`cpuid`/... that
//!   would not fault) gets a code hook on its single address; the text pages are write-protected and
//!   a write to them rescans and re-hooks (see `scan`);
//! - anything else that faults (a privileged instruction outside scanned text, a user-mode #GP, #PF,
//!   #DE, ...) arrives in the interrupt hook, which first resets QEMU's "exception in flight" state
//!   (`ffi::ExceptionReset`) so the next fault is again a first fault, never a double fault.
//!
//! Trap cost (`vmp`): kernel<->user switches skip CS/SS loads the guest cannot observe (`segs`),
//! and while the guest has paging off the monitor fills unicorn's TLB itself so guest stores to
//! data pages stay on the fast path (`vtlb`).

mod blocks;
mod deliver;
mod emulate;
mod hooks;
mod ram;
pub use ram::reserve as reserve_restore_ram;
pub mod regs;
mod scan;
mod segs;
mod shadow;
pub mod snapshot;
pub mod syncpt;
mod vtlb;
pub mod wtrack;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use unicorn_engine::{Arch, Mode, Prot, RegisterX86 as X, UcHookId, Unicorn};

use crate::devices::Devices;
use crate::error::{Result, VmpError};
use crate::ffi::{self, ExceptionReset, Mmr};
use crate::layout::*;
use crate::time::CpuModel;
use crate::vcpu::{TableReg, TrapStats, VirtualCpu};

/// Which of the two configurations runs the guest.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Config {
    /// Guest kernel at ring 0; privileged instructions execute directly ("real machine").
    Native,
    /// Guest kernel deprivileged to ring 3; every sensitive instruction is trapped and emulated.
    Vmp,
}

/// A loadable guest: memory contents, the kernel text range to scan, the entry point.
#[derive(Clone, Debug, Default)]
pub struct GuestImage {
    pub segments: Vec<(u32, Vec<u8>)>,
    pub kernel_text: (u32, u32),
    /// User code ranges: scanned for `int n` only, so system calls reach the monitor through a
    /// hook instead of unicorn's (slower) exception path.
    pub user_text: Vec<(u32, u32)>,
    pub entry: u32,
}

/// Why `run` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest wrote its exit status to the power port.
    PowerOff(u32),
    /// The slice's instruction budget ran out (only with `run_slice`).
    SliceEnd,
    /// A synchronisation point (only after `enable_sync_points`, see `syncpt`).
    Sync(syncpt::SyncPoint),
    /// Halted with no interrupt that could wake it (only after `enable_sync_points`).
    Halted,
}

/// The monitor's state, kept as unicorn's user data so every hook can reach it.
pub struct Monitor {
    pub config: Config,
    pub cpu: CpuModel,
    pub vcpu: VirtualCpu,
    pub dev: Devices,
    /// Multiprocessor interrupt controller (off unless `enable_ipis`).
    pub ipi: crate::devices::Ipi,
    pub stats: TrapStats,
    /// Guest instructions retired before the current translation block.
    pub retired: u64,
    /// Guest cycles spent idle in `hlt`.
    pub idle_cycles: u64,
    /// The block being executed (its offsets live in `block_cache`).
    cur_block: blocks::CurBlock,
    block_cache: blocks::BlockCache,
    /// Addresses of REP string instructions seen in translated blocks (membership tests only).
    rep_string_at: BTreeSet<u32>,
    /// Address of the last instruction started (end of the last block, or the last trap).
    last_insn: u32,
    /// Index in the current block of the last I/O instruction whose hook ran.
    io_cursor: Option<usize>,
    /// The monitor asks emulation to stop once `retired` reaches this.
    stop_at: u64,
    /// Hard instruction budget: exceeding it is a runaway guest.
    pub budget: u64,
    pending: Option<VmpError>,
    halted_native: bool,
    reset: Option<ExceptionReset>,
    sensitive_hooks: BTreeMap<u32, UcHookId>,
    /// The hooked instructions as decoded by the last scan (valid until text changes, which
    /// rescans): a hooked trap skips re-reading and re-decoding its bytes.
    decoded: BTreeMap<u32, iced_x86::Instruction>,
    kernel_text: (u32, u32),
    user_text: Vec<(u32, u32)>,
    /// The page-permission plan's inputs (see `ram::GuestRam::plan`), kept for checkpoints.
    read_only: Vec<(u32, u32)>,
    exec: Vec<(u32, u32)>,
    text_protected: bool,
    unmapped_at: Option<u64>,
    /// Guest RAM, lent to unicorn (see `ram`).
    ram: ram::GuestRam,
    /// What the real CS/SS hold (`vmp`: loads skipped where invisible, see `segs`).
    segs: segs::SegState,
    /// Write tracking (see `wtrack`), off unless started.
    wtrack: wtrack::WriteTracker,
    /// Synchronisation-point stops (see `syncpt`), off unless enabled.
    sync: syncpt::SyncState,
}

impl Monitor {
    /// Guest cycles now, counting only instructions of completed blocks plus idle time.
    pub fn cycles(&self) -> u64 {
        self.cpu.cycles(self.retired) + self.idle_cycles
    }

    fn fail(&mut self, e: VmpError) {
        if self.pending.is_none() {
            self.pending = Some(e);
        }
    }
}

/// A virtual processor with a loaded guest.
pub struct Machine {
    uc: Unicorn<'static, Monitor>,
}

// SAFETY: the engine and everything reachable from it (hooks, their `Weak` back-references, the
// block cache's `Rc`s) are owned by this value and never handed out by clone, so moving the whole
// machine to another thread moves every reference with it; it is never shared (`!Sync`).
unsafe impl Send for Machine {}

impl Machine {
    pub fn new(config: Config, cpu: CpuModel, image: &GuestImage) -> Result<Self> {
        let exec: Vec<(u32, u32)> = image
            .segments
            .iter()
            .map(|(a, b)| (*a, a.saturating_add(b.len() as u32)))
            .collect();
        let layout = snapshot::RamLayout {
            kernel_text: image.kernel_text,
            user_text: image.user_text.clone(),
            read_only: scan::protected_ranges(config, image),
            exec,
        };
        let mut m = Machine::shell(config, cpu, &layout, ram::GuestRam::new())?;
        let uc = &mut m.uc;
        for (addr, bytes) in &image.segments {
            let end = *addr as u64 + bytes.len() as u64;
            if *addr < RAM_BASE || end > RAM_TOP as u64 {
                return Err(VmpError::BadImage(format!(
                    "segment {addr:#x}..{end:#x} lies outside guest RAM {RAM_BASE:#x}..{RAM_TOP:#x}"
                )));
            }
            uc.mem_write(*addr as u64, bytes)?;
        }
        m.hook_native_paging()?;
        m.boot(image.entry)?;
        Ok(m)
    }

    /// An engine with RAM mapped after `layout`, zeroed, and every hook installed, but no guest
    /// loaded or booted: what a new machine and a restored one have in common.
    fn shell(
        config: Config,
        cpu: CpuModel,
        layout: &snapshot::RamLayout,
        ram: ram::GuestRam,
    ) -> Result<Self> {
        let mon = Monitor {
            config,
            cpu,
            vcpu: VirtualCpu::default(),
            dev: Devices::new(cpu.hz),
            ipi: crate::devices::Ipi::default(),
            stats: TrapStats::default(),
            retired: 0,
            idle_cycles: 0,
            cur_block: blocks::CurBlock::default(),
            block_cache: blocks::BlockCache::new(),
            rep_string_at: BTreeSet::new(),
            last_insn: 0,
            io_cursor: None,
            stop_at: u64::MAX,
            budget: u64::MAX,
            pending: None,
            halted_native: false,
            reset: None,
            sensitive_hooks: BTreeMap::new(),
            decoded: BTreeMap::new(),
            kernel_text: layout.kernel_text,
            user_text: layout.user_text.clone(),
            read_only: layout.read_only.clone(),
            exec: layout.exec.clone(),
            text_protected: false,
            unmapped_at: None,
            ram,
            segs: segs::SegState::default(),
            wtrack: wtrack::WriteTracker::default(),
            sync: syncpt::SyncState::default(),
        };
        let mut uc = Unicorn::new_with_data(Arch::X86, Mode::MODE_32, mon)?;
        let prot = uc.get_data_mut().ram.plan(&layout.read_only, &layout.exec);
        let base = uc.get_data().ram.base();
        // SAFETY: the buffer lives in the engine's user data, dropped only after `uc_close`.
        unsafe { ram::map(&mut uc, base, &prot)? };
        uc.mem_map(MONITOR_BASE as u64, MONITOR_SIZE as u64, Prot::ALL)?;
        let reset = ExceptionReset::new(&uc)?;
        uc.get_data_mut().reset = Some(reset);
        hooks::install(&mut uc)?;
        vtlb::install(&mut uc)?;
        Ok(Machine { uc })
    }

    /// `native`: hooks on the kernel's `mov cr0` (its text must be in RAM already), so the
    /// monitor's TLB fill hands over to the processor's page walk when the guest turns paging on.
    fn hook_native_paging(&mut self) -> Result<()> {
        let uc = &mut self.uc;
        let (start, end) = uc.get_data().kernel_text;
        if uc.get_data().config == Config::Native && start < end {
            let mut text = vec![0u8; (end - start) as usize];
            uc.mem_read(start as u64, &mut text)?;
            vtlb::hook_cr0_writes(uc, start, &text)?;
        }
        Ok(())
    }

    /// Puts the processor at the kernel entry: ring 0 in `native`; ring 3 in `vmp`, reached with an
    /// `iretd` from a monitor stub (unicorn refuses a ring-3 SS written from ring 0).
    fn boot(&mut self, entry: u32) -> Result<()> {
        let uc = &mut self.uc;
        regs::set(uc, X::ESP, KERNEL_BOOT_STACK)?;
        regs::set(uc, X::EFLAGS, 0x2)?;
        if uc.get_data().config == Config::Native {
            // Like a multiboot loader: flat ring-0 code 0x08 and data 0x10 loaded before entry.
            let gdt: [u64; 3] = [0, flat(0x9A), flat(0x92)];
            let bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
            uc.mem_write(MONITOR_BASE as u64, &bytes)?;
            ffi::write_mmr(
                uc,
                X::GDTR,
                Mmr {
                    base: MONITOR_BASE as u64,
                    limit: 23,
                    ..Default::default()
                },
            )?;
            regs::set(uc, X::SS, SEL_KDATA as u32)?;
            regs::set(uc, X::DS, SEL_KDATA as u32)?;
            regs::set(uc, X::ES, SEL_KDATA as u32)?;
            regs::set(uc, X::CS, SEL_KCODE as u32)?;
            regs::set(uc, X::EIP, entry)?;
            return Ok(());
        }
        // Boot shadow GDT: 0x08/0x10 = flat code/data at DPL 3 (what the guest's kernel selectors
        // mean until it loads its own GDT), 0x18/0x20 = flat ring-0 code/data for the stub.
        let gdt: [u64; 5] = [0, flat(0xFA), flat(0xF2), flat(0x9A), flat(0x92)];
        let bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
        uc.mem_write(MONITOR_BASE as u64, &bytes)?;
        // What the guest may use of it is the loader's GDT (ring-0 flat code/data at 0x08/0x10).
        uc.get_data_mut()
            .segs
            .set_shadow(&bytes, vec![0, 0x9A, 0x92, 0x9A, 0x92]);
        ffi::write_mmr(
            uc,
            X::GDTR,
            Mmr {
                base: MONITOR_BASE as u64,
                limit: 39,
                ..Default::default()
            },
        )?;
        regs::set(uc, X::SS, 0x20)?;
        regs::set(uc, X::CS, 0x18)?;
        let stub_at = MONITOR_BASE + 0x8000;
        let mut stub = Vec::new();
        for v in [0x13u32, KERNEL_BOOT_STACK, 0x202, 0x0b, entry] {
            stub.push(0x68); // push imm32
            stub.extend_from_slice(&v.to_le_bytes());
        }
        stub.push(0xcf); // iretd
        uc.mem_write(stub_at as u64, &stub)?;
        // The stub pushes its iret frame on a monitor stack, leaving guest memory untouched.
        regs::set(uc, X::ESP, MONITOR_BASE + MONITOR_SIZE - 16)?;
        uc.emu_start(stub_at as u64, entry as u64, 0, 0)?;
        // The guest kernel selector is 0x08 (RPL 0); the shadow descriptor's DPL 3 accepts it.
        regs::set(uc, X::CS, SEL_KCODE as u32)?;
        regs::set(uc, X::DS, SEL_KDATA as u32)?;
        regs::set(uc, X::ES, SEL_KDATA as u32)?;
        let cr4 = regs::get(uc, X::CR4)?;
        let mon = uc.get_data_mut();
        // What a native boot leaves: the loader's flat GDT (3 entries), the reset CR4.
        mon.vcpu = VirtualCpu {
            gdtr: TableReg {
                base: MONITOR_BASE,
                limit: 23,
            },
            cr4,
            ..VirtualCpu::default()
        };
        mon.retired = 0;
        mon.cur_block = blocks::CurBlock::default();
        mon.block_cache.clear();
        scan::rescan(uc)?;
        Ok(())
    }

    pub fn monitor(&self) -> &Monitor {
        self.uc.get_data()
    }

    pub fn unicorn(&self) -> &Unicorn<'static, Monitor> {
        &self.uc
    }

    pub fn unicorn_mut(&mut self) -> &mut Unicorn<'static, Monitor> {
        &mut self.uc
    }

    pub fn set_budget(&mut self, budget: u64) {
        self.uc.get_data_mut().budget = budget;
    }

    /// Multiprocessor: turns on this processor's interrupt controller as processor `cpu_id` of
    /// `ncpus` (CPUID's APIC id, the IPI port).
    pub fn enable_ipis(&mut self, cpu_id: u8, ncpus: u8) {
        let ipi = &mut self.uc.get_data_mut().ipi;
        ipi.enabled = true;
        ipi.cpu_id = cpu_id;
        ipi.ncpus = ncpus;
    }

    /// IPIs the guest sent since the last call, (destination, vector) in program order.
    pub fn take_ipis(&mut self) -> Vec<(u16, u8)> {
        std::mem::take(&mut self.uc.get_data_mut().ipi.outbox)
    }

    pub fn has_outgoing_ipis(&self) -> bool {
        !self.uc.get_data().ipi.outbox.is_empty()
    }

    /// Makes `vector` pending here (an IPI arrived); delivered at the next instruction boundary
    /// with interrupts enabled.
    pub fn raise_ipi(&mut self, vector: u8) {
        self.uc.get_data_mut().ipi.raise(vector);
    }

    pub fn has_pending_ipi(&self) -> bool {
        !self.uc.get_data().ipi.pending.is_empty()
    }

    /// IPIs raised on this processor so far.
    pub fn ipis_received(&self) -> u64 {
        self.uc.get_data().ipi.received
    }

    /// After `Exit::Halted`: `None` if the processor halted for good (interrupts disabled);
    /// otherwise it waits for an interrupt, and `Some(Some(c))` says its next timer tick is `c`
    /// guest cycles away, `Some(None)` that only an IPI can wake it.
    pub fn idle_wait(&self) -> Option<Option<u64>> {
        let m = self.uc.get_data();
        if !deliver::is_halted(&self.uc) || !m.vcpu.vif || m.config != Config::Vmp {
            return None;
        }
        if m.dev.timer_period == 0 || m.dev.in_service {
            return Some(None);
        }
        Some(Some(m.dev.next_timer.saturating_sub(m.cycles())))
    }

    /// Counts `cycles` of idle time in `hlt` (the guest clock moves on).
    pub fn idle_for(&mut self, cycles: u64) {
        self.uc.get_data_mut().idle_cycles += cycles;
    }

    pub fn console(&self) -> &[u8] {
        &self.uc.get_data().dev.console
    }

    /// Runs until the guest powers off, fails, or (with `slice`) at least `slice` more guest
    /// instructions have retired.
    pub fn run(&mut self, slice: Option<u64>) -> Result<Exit> {
        let start = self.uc.get_data().retired;
        loop {
            let uc = &mut self.uc;
            if let Some(code) = uc.get_data().dev.exit_status {
                return Ok(Exit::PowerOff(code));
            }
            if let Some(s) = slice {
                if uc.get_data().retired - start >= s {
                    return Ok(Exit::SliceEnd);
                }
            }
            deliver::pending_irq(uc)?;
            if let Some(p) = take_sync(uc.get_data_mut()) {
                return Ok(Exit::Sync(p));
            }
            if deliver::is_halted(uc) && !deliver::idle_until_irq(uc)? {
                if uc.get_data().sync.halt_exits {
                    return Ok(Exit::Halted);
                }
                let eip = regs::get(uc, X::EIP)?;
                return Err(VmpError::DeadHalt { eip });
            }
            let mon = uc.get_data_mut();
            let mut stop = mon.budget.saturating_add(1);
            if mon.dev.timer_period > 0 && !mon.dev.in_service {
                // Stop when the next timer interrupt is due (cycles -> instructions); when it is
                // already due but masked, step block by block until the guest unmasks it.
                let left = mon.dev.next_timer.saturating_sub(mon.cycles());
                let n = ((left as f64 / mon.cpu.cpi).ceil() as u64).max(1);
                stop = stop.min(mon.retired + n);
            }
            if let Some(s) = slice {
                stop = stop.min(start + s);
            }
            mon.stop_at = stop;
            let eip = regs::get(uc, X::EIP)?;
            let res = uc.emu_start(eip as u64, STOP_SENTINEL, 0, 0);
            let end_eip = regs::get(uc, X::EIP)?;
            let mon = uc.get_data_mut();
            // A stop requested from an instruction hook ends emulation right after that
            // instruction: count the block up to EIP; otherwise the block ran to its end.
            let cur = mon.cur_block;
            let off = end_eip.wrapping_sub(cur.start).min(u16::MAX as u32) as u16;
            let found = mon
                .block_cache
                .offsets(cur.start, cur.size)
                .map(|offs| offs.binary_search(&off));
            let done = match found {
                Some(Ok(i)) if end_eip >= cur.start => i as u64,
                _ => cur.count as u64,
            };
            mon.retired += done;
            mon.cur_block = blocks::CurBlock::default();
            if let Some(e) = mon.pending.take() {
                return Err(e);
            }
            if let Err(e) = res {
                return Err(hooks::engine_error(uc, e));
            }
            let mon = uc.get_data();
            if mon.retired > mon.budget {
                let eip = regs::get(uc, X::EIP)?;
                let budget = mon.budget;
                return Err(VmpError::Runaway {
                    eip,
                    asm: emulate::disasm_at(uc, eip),
                    budget,
                });
            }
            if mon.config == Config::Native {
                hooks::detect_native_hlt(uc, cur)?;
            }
            if let Some(p) = take_sync(uc.get_data_mut()) {
                return Ok(Exit::Sync(p));
            }
        }
    }

    /// The guest-visible architectural state (virtualised in `vmp`), for the differential test.
    pub fn arch_state(&self) -> Result<ArchState> {
        deliver::arch_state(&self.uc)
    }
}

/// Takes a pending synchronisation stop, counting it.
fn take_sync(m: &mut Monitor) -> Option<syncpt::SyncPoint> {
    let p = m.sync.exit.take()?;
    *m.sync.counts.entry(p.kind).or_default() += 1;
    Some(p)
}

/// A flat 4 GiB segment descriptor with access byte `access` (32-bit, 4 KiB granularity).
pub fn flat(access: u8) -> u64 {
    0x00CF_0000_0000_FFFF | ((access as u64) << 40)
}

/// Registers, flags and privileged state as the guest sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchState {
    pub gprs: [u32; 8],
    pub eip: u32,
    pub eflags: u32,
    pub cs: u16,
    pub ss: u16,
    pub ds: u16,
    pub es: u16,
    pub gdtr: (u32, u16),
    pub idtr: (u32, u16),
    pub ldtr: u16,
    pub tr: u16,
    pub cr0: u32,
    pub cr2: u32,
    pub cr3: u32,
    pub cr4: u32,
}
