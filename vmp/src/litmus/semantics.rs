//! What one instruction computes, independent of the memory model: the models decide where its
//! read comes from and where its write goes.

use super::{Instr, Loc, Operand, Reg, NREGS};

/// The memory write an instruction performs, if any.
pub type Write = Option<(Loc, u32)>;

fn value(op: Operand, regs: &[u32; NREGS]) -> u32 {
    match op {
        Operand::Imm(v) => v,
        Operand::Reg(r) => regs[r.index()],
    }
}

/// Executes `i` on `regs`, reading its location (if it has one) through `read`.
pub fn execute(i: &Instr, regs: &mut [u32; NREGS], read: impl FnOnce(Loc) -> u32) -> Write {
    match *i {
        Instr::Store { loc, src } => Some((loc, value(src, regs))),
        Instr::Load { dst, loc } => {
            regs[dst.index()] = read(loc);
            None
        }
        Instr::Mov { dst, src } => {
            regs[dst.index()] = value(src, regs);
            None
        }
        Instr::Mfence => None,
        Instr::Xchg { loc, reg } => {
            let old = read(loc);
            let new = regs[reg.index()];
            regs[reg.index()] = old;
            Some((loc, new))
        }
        Instr::LockAdd { loc, src } => {
            let v = value(src, regs);
            Some((loc, read(loc).wrapping_add(v)))
        }
        Instr::LockInc { loc } => Some((loc, read(loc).wrapping_add(1))),
        Instr::LockXadd { loc, reg } => {
            let old = read(loc);
            let sum = old.wrapping_add(regs[reg.index()]);
            regs[reg.index()] = old;
            Some((loc, sum))
        }
        Instr::LockCmpxchg { loc, reg } => {
            let old = read(loc);
            if old == regs[Reg::Eax.index()] {
                Some((loc, regs[reg.index()]))
            } else {
                regs[Reg::Eax.index()] = old;
                // The processor writes the old value back: invisible, but still a locked write.
                Some((loc, old))
            }
        }
    }
}

/// The register an instruction may write.
pub fn written_reg(i: &Instr) -> Option<Reg> {
    match *i {
        Instr::Load { dst, .. } | Instr::Mov { dst, .. } => Some(dst),
        Instr::Xchg { reg, .. } | Instr::LockXadd { reg, .. } => Some(reg),
        Instr::LockCmpxchg { .. } => Some(Reg::Eax),
        Instr::Store { .. } | Instr::Mfence | Instr::LockAdd { .. } | Instr::LockInc { .. } => None,
    }
}
