//! Writing a [`Litmus`] back in the documented syntax (what `parse` reads), e.g. to save a
//! generated test that failed.

use std::fmt::Write as _;

use super::{Condition, Instr, Litmus, Operand, Prop, Quantifier, Reg};

fn operand(o: Operand) -> String {
    match o {
        Operand::Imm(v) => format!("${v}"),
        Operand::Reg(r) => r.name().to_string(),
    }
}

fn instr(t: &Litmus, i: &Instr) -> String {
    let m = |l: usize| format!("[{}]", t.locations[l]);
    match *i {
        Instr::Store { loc, src } => format!("MOV {},{}", m(loc), operand(src)),
        Instr::Load { dst, loc } => format!("MOV {},{}", dst.name(), m(loc)),
        Instr::Mov { dst, src } => format!("MOV {},{}", dst.name(), operand(src)),
        Instr::Mfence => "MFENCE".into(),
        Instr::Xchg { loc, reg } => format!("XCHG {},{}", m(loc), reg.name()),
        Instr::LockAdd { loc, src } => format!("LOCK ADD {},{}", m(loc), operand(src)),
        Instr::LockInc { loc } => format!("LOCK INC {}", m(loc)),
        Instr::LockXadd { loc, reg } => format!("LOCK XADD {},{}", m(loc), reg.name()),
        Instr::LockCmpxchg { loc, reg } => format!("LOCK CMPXCHG {},{}", m(loc), reg.name()),
    }
}

/// A proposition in the condition syntax.
pub fn prop(p: &Prop) -> String {
    match p {
        Prop::True => "true".into(),
        Prop::Eq(o, v) => format!("{o}={v}"),
        Prop::Not(p) => format!("~{}", prop(p)),
        Prop::And(a, b) => format!("({} /\\ {})", prop(a), prop(b)),
        Prop::Or(a, b) => format!("({} \\/ {})", prop(a), prop(b)),
    }
}

/// A condition in the litmus syntax.
pub fn condition(c: &Condition) -> String {
    let q = match c.quantifier {
        Quantifier::Exists => "exists",
        Quantifier::NotExists => "~exists",
        Quantifier::Forall => "forall",
    };
    format!("{q} {}", prop(&c.prop))
}

/// `t` as litmus text; parsing it gives `t` back.
pub fn to_text(t: &Litmus) -> String {
    let mut s = format!("X86 {}\n{{", t.name);
    for (l, v) in t.locations.iter().zip(&t.init_mem) {
        let _ = write!(s, " {l}={v};");
    }
    for (cpu, regs) in t.init_regs.iter().enumerate() {
        for r in Reg::ALL {
            if regs[r.index()] != 0 {
                let _ = write!(s, " {cpu}:{}={};", r.name(), regs[r.index()]);
            }
        }
    }
    s.push_str(" }\n");
    let header: Vec<String> = (0..t.threads.len()).map(|i| format!("P{i}")).collect();
    let _ = writeln!(s, " {} ;", header.join(" | "));
    let rows = t.threads.iter().map(Vec::len).max().unwrap_or(0);
    for r in 0..rows {
        let cells: Vec<String> = t
            .threads
            .iter()
            .map(|th| th.get(r).map(|i| instr(t, i)).unwrap_or_default())
            .collect();
        let _ = writeln!(s, " {} ;", cells.join(" | "));
    }
    let obs: Vec<String> = t.observed.iter().map(|o| format!("{o};")).collect();
    if !obs.is_empty() {
        let _ = writeln!(s, "locations [{}]", obs.join(" "));
    }
    if let Some(c) = &t.condition {
        let _ = writeln!(s, "{}", condition(c));
    }
    s
}
