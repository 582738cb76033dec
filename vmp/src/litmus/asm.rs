//! Assembling a litmus program to IA-32 machine code with iced-x86.
//!
//! Each processor gets its own code at `code_base + cpu * code_stride`: it loads its initial
//! registers, runs the test's instructions, stores every observed register of that processor to its
//! result slot and stops at a `hlt`. Locations live at fixed data addresses; a runner writes
//! [`Assembled::init_words`] before starting and reads the locations and result slots after every
//! processor reached its `hlt`.

use anyhow::{Context, Result};
use iced_x86::code_asm::{self as x, AsmRegister32, CodeAssembler};

use super::{Instr, Litmus, Observable, Operand, Outcome, Reg};

/// Where code, locations and result slots go (guest-physical = linear, flat segments).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub code_base: u32,
    /// Distance between processors' code (each processor's code on its own page by default).
    pub code_stride: u32,
    pub data_base: u32,
    /// Distance between locations: 64 keeps each on its own cache line, all on one page, so a
    /// page-granular protocol sees false sharing.
    pub data_stride: u32,
    pub result_base: u32,
    /// Distance between processors' result slots (a page each: results never share a page).
    pub result_stride: u32,
    /// End a basic block after every test instruction (a `jmp` to the next one). Semantically
    /// a no-op; it lets a machine that schedules at block granularity (the multiprocessor VMP's
    /// quanta end only between blocks) stop a processor between any two of its accesses.
    pub split_blocks: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            code_base: 0x0001_0000,
            code_stride: 0x1000,
            data_base: 0x0010_0000,
            data_stride: 64,
            result_base: 0x0020_0000,
            result_stride: 0x1000,
            split_blocks: true,
        }
    }
}

/// One processor's code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuCode {
    /// Address of the first instruction; the code is loaded there.
    pub entry: u32,
    pub bytes: Vec<u8>,
    /// Address of the final `hlt`: the processor is done when its EIP gets there.
    pub hlt_at: u32,
}

/// A litmus program as machine code plus what a runner needs to set up and read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    pub name: String,
    pub layout: Layout,
    pub cpus: Vec<CpuCode>,
    /// (address, value) of every location's initial word.
    pub init_words: Vec<(u32, u32)>,
    /// Where each observed item ends up: a location's own word, or a register's result slot.
    pub slots: Vec<(Observable, u32)>,
}

impl Assembled {
    /// The outcome of a finished run, reading 32-bit words through `read`.
    pub fn outcome(&self, mut read: impl FnMut(u32) -> Result<u32>) -> Result<Outcome> {
        let mut o = Outcome::default();
        for (obs, addr) in &self.slots {
            o.0.insert(obs.clone(), read(*addr)?);
        }
        Ok(o)
    }

    /// Guest memory regions a runner must map: (base, size), page-aligned.
    pub fn regions(&self) -> Vec<(u32, u32)> {
        let page = |n: u32| n.div_ceil(0x1000).max(1) * 0x1000;
        let l = &self.layout;
        let n = self.cpus.len() as u32;
        let nloc = self.init_words.len() as u32;
        vec![
            (l.code_base, page(l.code_stride * n)),
            (l.data_base, page(l.data_stride * nloc.max(1))),
            (l.result_base, page(l.result_stride * n)),
        ]
    }
}

fn r32(r: Reg) -> AsmRegister32 {
    match r {
        Reg::Eax => x::eax,
        Reg::Ebx => x::ebx,
        Reg::Ecx => x::ecx,
        Reg::Edx => x::edx,
        Reg::Esi => x::esi,
        Reg::Edi => x::edi,
    }
}

fn emit(
    a: &mut CodeAssembler,
    i: &Instr,
    addr: impl Fn(usize) -> u32,
) -> Result<(), iced_x86::IcedError> {
    let m = |loc: usize| x::dword_ptr(addr(loc) as u64);
    match *i {
        Instr::Store {
            loc,
            src: Operand::Imm(v),
        } => a.mov(m(loc), v),
        Instr::Store {
            loc,
            src: Operand::Reg(r),
        } => a.mov(m(loc), r32(r)),
        Instr::Load { dst, loc } => a.mov(r32(dst), m(loc)),
        Instr::Mov {
            dst,
            src: Operand::Imm(v),
        } => a.mov(r32(dst), v),
        Instr::Mov {
            dst,
            src: Operand::Reg(r),
        } => a.mov(r32(dst), r32(r)),
        Instr::Mfence => a.mfence(),
        // XCHG with memory is locked without a prefix; emitting none keeps the encoding the
        // one compilers use, so a monitor must recognise it as a locked instruction.
        Instr::Xchg { loc, reg } => a.xchg(m(loc), r32(reg)),
        Instr::LockAdd {
            loc,
            src: Operand::Imm(v),
        } => a.lock().add(m(loc), v),
        Instr::LockAdd {
            loc,
            src: Operand::Reg(r),
        } => a.lock().add(m(loc), r32(r)),
        Instr::LockInc { loc } => a.lock().inc(m(loc)),
        Instr::LockXadd { loc, reg } => a.lock().xadd(m(loc), r32(reg)),
        Instr::LockCmpxchg { loc, reg } => a.lock().cmpxchg(m(loc), r32(reg)),
    }
}

/// Assembles `t` for `layout`.
pub fn assemble(t: &Litmus, layout: Layout) -> Result<Assembled> {
    let n = t.threads.len() as u32;
    let loc_addr = |loc: usize| layout.data_base + loc as u32 * layout.data_stride;
    let mut slots = Vec::new();
    let mut cpus = Vec::new();
    for (cpu, code) in t.threads.iter().enumerate() {
        let mut a = CodeAssembler::new(32)?;
        for r in Reg::ALL {
            a.mov(r32(r), t.init_regs[cpu][r.index()])?;
        }
        for (k, i) in code.iter().enumerate() {
            emit(&mut a, i, loc_addr).with_context(|| format!("P{cpu}: {i:?}"))?;
            if layout.split_blocks && k + 1 < code.len() {
                let mut next = a.create_label();
                a.jmp(next)?;
                a.set_label(&mut next)?;
            }
        }
        let slot_base = layout.result_base + cpu as u32 * layout.result_stride;
        for r in Reg::ALL {
            let obs = Observable::Reg { cpu, reg: r };
            if t.observed.contains(&obs) {
                let at = slot_base + 4 * r.index() as u32;
                a.mov(x::dword_ptr(at as u64), r32(r))?;
                slots.push((obs, at));
            }
        }
        let entry = layout.code_base + cpu as u32 * layout.code_stride;
        let mut bytes = a.assemble(entry as u64)?;
        // The `hlt` goes last, so its address is the length of everything before it.
        let hlt_at = entry + bytes.len() as u32;
        bytes.push(0xf4);
        anyhow::ensure!(
            bytes.len() as u32 <= layout.code_stride,
            "P{cpu}'s code ({} bytes) does not fit its {}-byte slot",
            bytes.len(),
            layout.code_stride
        );
        cpus.push(CpuCode {
            entry,
            bytes,
            hlt_at,
        });
    }
    anyhow::ensure!(n > 0, "a litmus test needs at least one processor");
    for obs in &t.observed {
        if let Observable::Mem(name) = obs {
            let loc = t.loc_index(name).context("observed location is unknown")?;
            slots.push((obs.clone(), loc_addr(loc)));
        }
    }
    slots.sort();
    let init_words = (0..t.locations.len())
        .map(|l| (loc_addr(l), t.init_mem[l]))
        .collect();
    Ok(Assembled {
        name: t.name.clone(),
        layout,
        cpus,
        init_words,
        slots,
    })
}
