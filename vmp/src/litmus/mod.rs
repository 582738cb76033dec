//! x86-TSO litmus tests: a text format, an operational oracle, an assembler and machines that run
//! the assembled code.
//!
//! # The litmus format (a subset of herd's x86 `.litmus` syntax)
//!
//! ```text
//! X86 SB                          <- architecture tag `X86` (or `x86`) and the test's name
//! "Fre PodWR Fre PodWR"           <- optional lines before `{`: quoted text, `key=value`; ignored
//! { x=0; y=0; 0:EAX=0; }          <- initial state: locations and registers, default 0
//!  P0          | P1          ;    <- one column per processor, `Pn` in order
//!  MOV [x],$1  | MOV [y],$1  ;    <- one instruction (or nothing) per column, rows end with `;`
//!  MOV EAX,[y] | MOV EAX,[x] ;
//! locations [x; y;]               <- optional: more locations/registers to observe
//! exists (0:EAX=0 /\ 1:EAX=0)     <- `exists`, `~exists` or `forall`, with `/\`, `\/`, `~`, ()
//! ```
//!
//! Instructions (Intel syntax, case-insensitive; `$` before an immediate is optional):
//! `MOV [x],$v` / `MOV [x],r` (store), `MOV r,[x]` (load), `MOV r,$v` / `MOV r,r'`, `MFENCE`,
//! `XCHG [x],r` / `XCHG r,[x]` (always locked), `LOCK ADD [x],$v|r`, `LOCK INC [x]`,
//! `LOCK XADD [x],r`, `LOCK CMPXCHG [x],r` (compares with EAX). Registers: EAX, EBX, ECX, EDX,
//! ESI, EDI. Values are 32-bit; locations are named memory words. Comments `(* ... *)` and
//! `//` to the end of a line are skipped. Anything else is a syntax error with its line number.
//!
//! An outcome is the final value of every *observed* register and location: those named in the
//! condition and in `locations`. [`tso::outcomes`] enumerates every outcome x86-TSO allows,
//! [`sc::outcomes`] every sequentially consistent one.

pub mod asm;
pub mod catalogue;
pub mod cli;
pub mod interleave;
pub mod parse;
pub mod print;
pub mod sc;
pub mod semantics;
pub mod smp;
pub mod tso;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use asm::{assemble, Assembled, Layout};
pub use parse::parse;

/// General-purpose registers a litmus program may use.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
    Esi,
    Edi,
}

pub const NREGS: usize = 6;

impl Reg {
    pub const ALL: [Reg; NREGS] = [Reg::Eax, Reg::Ebx, Reg::Ecx, Reg::Edx, Reg::Esi, Reg::Edi];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        ["EAX", "EBX", "ECX", "EDX", "ESI", "EDI"][self.index()]
    }

    pub fn from_name(s: &str) -> Option<Reg> {
        Reg::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
    }
}

/// Index of a location in [`Litmus::locations`].
pub type Loc = usize;

/// Source operand of a store or ALU operation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    Imm(u32),
    Reg(Reg),
}

/// One instruction of the supported subset.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Instr {
    /// `MOV [loc],src`: a plain store, buffered under TSO.
    Store {
        loc: Loc,
        src: Operand,
    },
    /// `MOV dst,[loc]`.
    Load {
        dst: Reg,
        loc: Loc,
    },
    /// `MOV dst,src` between registers/immediates: no memory access.
    Mov {
        dst: Reg,
        src: Operand,
    },
    Mfence,
    /// `XCHG [loc],reg`: locked by definition on x86.
    Xchg {
        loc: Loc,
        reg: Reg,
    },
    LockAdd {
        loc: Loc,
        src: Operand,
    },
    LockInc {
        loc: Loc,
    },
    LockXadd {
        loc: Loc,
        reg: Reg,
    },
    /// `LOCK CMPXCHG [loc],reg`: if `[loc] == EAX` then `[loc] = reg` else `EAX = [loc]`.
    LockCmpxchg {
        loc: Loc,
        reg: Reg,
    },
}

impl Instr {
    /// Locked read-modify-writes: atomic, and they drain the store buffer like `mfence`.
    pub fn is_locked(&self) -> bool {
        matches!(
            self,
            Instr::Xchg { .. }
                | Instr::LockAdd { .. }
                | Instr::LockInc { .. }
                | Instr::LockXadd { .. }
                | Instr::LockCmpxchg { .. }
        )
    }

    /// The location this instruction touches, if any.
    pub fn loc(&self) -> Option<Loc> {
        match *self {
            Instr::Store { loc, .. }
            | Instr::Load { loc, .. }
            | Instr::Xchg { loc, .. }
            | Instr::LockAdd { loc, .. }
            | Instr::LockInc { loc }
            | Instr::LockXadd { loc, .. }
            | Instr::LockCmpxchg { loc, .. } => Some(loc),
            Instr::Mov { .. } | Instr::Mfence => None,
        }
    }
}

/// Something whose final value is part of an outcome.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Observable {
    Reg { cpu: usize, reg: Reg },
    Mem(String),
}

impl fmt::Display for Observable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observable::Reg { cpu, reg } => write!(f, "{cpu}:{}", reg.name()),
            Observable::Mem(name) => f.write_str(name),
        }
    }
}

/// Final values of the observed registers and locations.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outcome(pub BTreeMap<Observable, u32>);

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v};")?;
        }
        Ok(())
    }
}

/// A proposition over one outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prop {
    True,
    Eq(Observable, u32),
    Not(Box<Prop>),
    And(Box<Prop>, Box<Prop>),
    Or(Box<Prop>, Box<Prop>),
}

impl Prop {
    pub fn holds(&self, o: &Outcome) -> bool {
        match self {
            Prop::True => true,
            Prop::Eq(k, v) => o.0.get(k) == Some(v),
            Prop::Not(p) => !p.holds(o),
            Prop::And(a, b) => a.holds(o) && b.holds(o),
            Prop::Or(a, b) => a.holds(o) || b.holds(o),
        }
    }

    fn observables(&self, into: &mut BTreeSet<Observable>) {
        match self {
            Prop::True => {}
            Prop::Eq(k, _) => {
                into.insert(k.clone());
            }
            Prop::Not(p) => p.observables(into),
            Prop::And(a, b) | Prop::Or(a, b) => {
                a.observables(into);
                b.observables(into);
            }
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Quantifier {
    Exists,
    NotExists,
    Forall,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub quantifier: Quantifier,
    pub prop: Prop,
}

impl Condition {
    /// Whether the condition holds of a set of outcomes (herd's "Ok"/"No").
    pub fn holds(&self, outcomes: &BTreeSet<Outcome>) -> bool {
        match self.quantifier {
            Quantifier::Exists => outcomes.iter().any(|o| self.prop.holds(o)),
            Quantifier::NotExists => !outcomes.iter().any(|o| self.prop.holds(o)),
            Quantifier::Forall => outcomes.iter().all(|o| self.prop.holds(o)),
        }
    }
}

/// A parsed litmus program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Litmus {
    pub name: String,
    /// Location names; [`Loc`] indexes this.
    pub locations: Vec<String>,
    /// Initial value of each location.
    pub init_mem: Vec<u32>,
    /// Initial registers per processor.
    pub init_regs: Vec<[u32; NREGS]>,
    /// Instructions per processor.
    pub threads: Vec<Vec<Instr>>,
    pub condition: Option<Condition>,
    /// What an outcome records, sorted.
    pub observed: Vec<Observable>,
}

impl Litmus {
    pub fn loc_index(&self, name: &str) -> Option<Loc> {
        self.locations.iter().position(|l| l == name)
    }

    /// Observables named by the condition plus `extra`, sorted and deduplicated.
    pub fn set_observed(&mut self, extra: impl IntoIterator<Item = Observable>) {
        let mut set: BTreeSet<Observable> = extra.into_iter().collect();
        if let Some(c) = &self.condition {
            c.prop.observables(&mut set);
        }
        self.observed = set.into_iter().collect();
    }

    /// Observe every register a thread writes and every location: what random tests compare.
    pub fn observe_everything(&mut self) {
        let mut set = BTreeSet::new();
        for (cpu, t) in self.threads.iter().enumerate() {
            for i in t {
                if let Some(reg) = semantics::written_reg(i) {
                    set.insert(Observable::Reg { cpu, reg });
                }
            }
        }
        set.extend(self.locations.iter().cloned().map(Observable::Mem));
        self.set_observed(set);
    }

    /// The outcome of a final state given as registers per processor and memory per location.
    pub fn outcome_of(&self, regs: &[[u32; NREGS]], mem: &[u32]) -> Outcome {
        let mut o = BTreeMap::new();
        for k in &self.observed {
            let v = match k {
                Observable::Reg { cpu, reg } => regs[*cpu][reg.index()],
                Observable::Mem(name) => self.loc_index(name).map_or(0, |l| mem[l]),
            };
            o.insert(k.clone(), v);
        }
        Outcome(o)
    }
}

/// Default bound on explored states: a 4x4 program with fences and locked operations stays well
/// below it; a larger one is refused instead of exhausting memory.
pub const DEFAULT_STATE_LIMIT: usize = 2_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExploreError {
    #[error("state space exceeds {0} states; the program is too large for exhaustive search")]
    TooManyStates(usize),
}

/// Something that runs assembled litmus code and reports one outcome per run.
pub trait LitmusMachine {
    fn run(&mut self, asm: &Assembled, seed: u64) -> anyhow::Result<Outcome>;
}
