//! The operational x86-TSO model (Owens, Sarkar & Sewell, "A better x86 memory model: x86-TSO",
//! TPHOLs 2009): each processor has a FIFO store buffer; a store enters its processor's buffer; a
//! load reads the newest buffered store to its location, else memory; at any moment the oldest
//! buffered store of any processor may drain to memory; `mfence` waits for an empty buffer; a
//! locked instruction waits for an empty buffer and reads and writes memory in one atomic step.
//!
//! [`outcomes`] explores every interleaving of those steps, depth first, remembering visited
//! states so that each is expanded once; the search is bounded by a state limit.

use std::collections::BTreeSet;

use super::semantics::execute;
use super::{ExploreError, Instr, Litmus, Loc, Outcome, NREGS};

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct State {
    pc: Vec<usize>,
    regs: Vec<[u32; NREGS]>,
    /// Store buffers, oldest first.
    buf: Vec<Vec<(Loc, u32)>>,
    mem: Vec<u32>,
}

fn initial(t: &Litmus) -> State {
    let n = t.threads.len();
    State {
        pc: vec![0; n],
        regs: t.init_regs.clone(),
        buf: vec![Vec::new(); n],
        mem: t.init_mem.clone(),
    }
}

/// The state after processor `p` executes its next instruction, or None if it cannot now.
fn exec(t: &Litmus, s: &State, p: usize) -> Option<State> {
    let i: &Instr = t.threads[p].get(s.pc[p])?;
    let drains = matches!(i, Instr::Mfence) || i.is_locked();
    if drains && !s.buf[p].is_empty() {
        return None;
    }
    let mut n = s.clone();
    n.pc[p] += 1;
    let mut regs = n.regs[p];
    let write = execute(i, &mut regs, |loc| {
        s.buf[p]
            .iter()
            .rev()
            .find(|(l, _)| *l == loc)
            .map_or(s.mem[loc], |&(_, v)| v)
    });
    n.regs[p] = regs;
    if let Some((loc, v)) = write {
        if i.is_locked() {
            n.mem[loc] = v;
        } else {
            n.buf[p].push((loc, v));
        }
    }
    Some(n)
}

/// The state after processor `p`'s oldest buffered store reaches memory.
fn drain(s: &State, p: usize) -> Option<State> {
    let &(loc, v) = s.buf[p].first()?;
    let mut n = s.clone();
    n.buf[p].remove(0);
    n.mem[loc] = v;
    Some(n)
}

/// Every final outcome x86-TSO allows for `t`, exploring at most `limit` states.
pub fn outcomes(t: &Litmus, limit: usize) -> Result<BTreeSet<Outcome>, ExploreError> {
    let mut seen: BTreeSet<State> = BTreeSet::new();
    let mut stack = vec![initial(t)];
    let mut out = BTreeSet::new();
    while let Some(s) = stack.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        if seen.len() > limit {
            return Err(ExploreError::TooManyStates(limit));
        }
        let mut terminal = true;
        for p in 0..t.threads.len() {
            for next in [exec(t, &s, p), drain(&s, p)].into_iter().flatten() {
                terminal = false;
                if !seen.contains(&next) {
                    stack.push(next);
                }
            }
        }
        if terminal {
            // No step is possible only when every program is done and every buffer empty: a
            // processor with instructions left can always drain, then execute.
            debug_assert!(s.pc.iter().zip(&t.threads).all(|(pc, th)| *pc == th.len()));
            out.insert(t.outcome_of(&s.regs, &s.mem));
        }
    }
    Ok(out)
}
