//! Sequential consistency, enumerated on its own (no store buffers): every interleaving of whole
//! instructions on one memory. Every SC outcome must be a TSO outcome, which the tests check.

use std::collections::BTreeSet;

use super::semantics::execute;
use super::{ExploreError, Litmus, Outcome, NREGS};

/// Every outcome of `t` under sequential consistency, exploring at most `limit` states.
pub fn outcomes(t: &Litmus, limit: usize) -> Result<BTreeSet<Outcome>, ExploreError> {
    type State = (Vec<usize>, Vec<[u32; NREGS]>, Vec<u32>);
    let n = t.threads.len();
    let start: State = (vec![0; n], t.init_regs.clone(), t.init_mem.clone());
    let mut seen: BTreeSet<State> = BTreeSet::new();
    let mut stack = vec![start];
    let mut out = BTreeSet::new();
    while let Some(s) = stack.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        if seen.len() > limit {
            return Err(ExploreError::TooManyStates(limit));
        }
        let (pc, regs, mem) = &s;
        let mut done = true;
        for p in 0..n {
            let Some(i) = t.threads[p].get(pc[p]) else {
                continue;
            };
            done = false;
            let (mut pc2, mut regs2, mut mem2) = s.clone();
            pc2[p] += 1;
            if let Some((loc, v)) = execute(i, &mut regs2[p], |loc| mem[loc]) {
                mem2[loc] = v;
            }
            stack.push((pc2, regs2, mem2));
        }
        if done {
            out.insert(t.outcome_of(regs, mem));
        }
    }
    Ok(out)
}
