//! The virtual CPU state the monitor keeps for a deprivileged guest, and the trap statistics.
//!
//! In the `vmp` configuration the real (unicorn) CPU runs the guest at ring 3 with a monitor-owned
//! GDT; what the guest believes its privileged state to be lives here, exactly as the paper's
//! monitor keeps "the virtual CPU state in memory" and answers later reads from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A descriptor-table register (GDTR/IDTR).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReg {
    pub base: u32,
    pub limit: u16,
}

/// The privileged state of one virtual processor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualCpu {
    pub gdtr: TableReg,
    pub idtr: TableReg,
    pub ldtr: u16,
    pub tr: u16,
    pub cr0: u32,
    pub cr2: u32,
    pub cr3: u32,
    pub cr4: u32,
    /// Virtual EFLAGS.IF and EFLAGS.IOPL (the real ones stay fixed while the guest is deprivileged).
    pub vif: bool,
    pub iopl: u8,
    /// The privilege level the guest believes it runs at (0 kernel, 3 user).
    pub cpl: u8,
    /// The guest's SS selector as it loaded it (the real SS carries RPL 3).
    pub ss: u16,
    /// Set by `hlt`: the processor idles until the next interrupt.
    pub halted: bool,
}

impl Default for VirtualCpu {
    fn default() -> Self {
        VirtualCpu {
            gdtr: TableReg::default(),
            idtr: TableReg::default(),
            ldtr: 0,
            tr: 0,
            // Protected mode, as after the boot loader: PE | ET (bit 4 is hard-wired to 1).
            cr0: 0x11,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            vif: false,
            iopl: 0,
            cpl: 0,
            ss: crate::layout::SEL_KDATA,
            halted: false,
        }
    }
}

/// What kind of guest instruction or event made the monitor step in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TrapKind {
    Lgdt,
    Lidt,
    Sgdt,
    Sidt,
    Lldt,
    Sldt,
    Ltr,
    Str,
    MovToCr,
    MovFromCr,
    Smsw,
    Lmsw,
    Clts,
    Cli,
    Sti,
    Pushf,
    Popf,
    In,
    Out,
    Ins,
    Outs,
    Hlt,
    Iret,
    /// `int n` delivered through the virtual IDT.
    Int,
    /// A timer interrupt injected through the virtual IDT.
    Irq,
    /// A guest fault (#GP from user mode, #PF, #UD, ...) reflected to the guest kernel.
    Exception,
    Invlpg,
    Wbinvd,
    Invd,
    Rdtsc,
    Cpuid,
    MovSs,
    PopSs,
}

impl TrapKind {
    pub fn name(self) -> &'static str {
        use TrapKind::*;
        match self {
            Lgdt => "lgdt",
            Lidt => "lidt",
            Sgdt => "sgdt",
            Sidt => "sidt",
            Lldt => "lldt",
            Sldt => "sldt",
            Ltr => "ltr",
            Str => "str",
            MovToCr => "mov_to_cr",
            MovFromCr => "mov_from_cr",
            Smsw => "smsw",
            Lmsw => "lmsw",
            Clts => "clts",
            Cli => "cli",
            Sti => "sti",
            Pushf => "pushf",
            Popf => "popf",
            In => "in",
            Out => "out",
            Ins => "ins",
            Outs => "outs",
            Hlt => "hlt",
            Iret => "iret",
            Int => "int",
            Irq => "irq",
            Exception => "exception",
            Invlpg => "invlpg",
            Wbinvd => "wbinvd",
            Invd => "invd",
            Rdtsc => "rdtsc",
            Cpuid => "cpuid",
            MovSs => "mov_ss",
            PopSs => "pop_ss",
        }
    }
}

/// How the monitor noticed the trap: a hook planted on a scanned sensitive instruction, or a real
/// processor exception (#GP) caught in the interrupt hook.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TrapPath {
    Hook,
    Fault,
    Interrupt,
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrapStats {
    pub by_kind: BTreeMap<TrapKind, u64>,
    pub by_path: BTreeMap<TrapPath, u64>,
    /// Guest memory words the monitor read or wrote while emulating (each is one PTRACE_PEEKDATA or
    /// PTRACE_POKEDATA in the paper's ptrace monitor).
    pub mem_words: u64,
    /// Words of trapping instruction bytes the monitor read to decode them (PEEKDATA in the
    /// paper's monitor: the bytes at EIP, spanning one or two aligned words).
    pub insn_words: u64,
    /// Virtual privilege-level changes (guest kernel <-> guest user).
    pub cpl_switches: u64,
    /// Interrupts and exceptions delivered through the IDT (both configurations).
    pub deliveries: u64,
}

impl TrapStats {
    pub fn record(&mut self, kind: TrapKind, path: TrapPath) {
        *self.by_kind.entry(kind).or_default() += 1;
        *self.by_path.entry(path).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Counters of `self` minus those of an earlier snapshot `before` of the same run (or of a
    /// shorter run of the same guest): what happened in between.
    pub fn since(&self, before: &TrapStats) -> TrapStats {
        fn minus<K: Ord + Copy>(a: &BTreeMap<K, u64>, b: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
            a.iter()
                .map(|(k, v)| (*k, v.saturating_sub(*b.get(k).unwrap_or(&0))))
                .filter(|(_, v)| *v > 0)
                .collect()
        }
        TrapStats {
            by_kind: minus(&self.by_kind, &before.by_kind),
            by_path: minus(&self.by_path, &before.by_path),
            mem_words: self.mem_words.saturating_sub(before.mem_words),
            insn_words: self.insn_words.saturating_sub(before.insn_words),
            cpl_switches: self.cpl_switches.saturating_sub(before.cpl_switches),
            deliveries: self.deliveries.saturating_sub(before.deliveries),
        }
    }
}
