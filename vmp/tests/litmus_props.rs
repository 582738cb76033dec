//! Property harness over random litmus programs (2-4 processors, up to 4 memory accesses each,
//! fences and locked operations, distinct non-zero store values; for the multiprocessor VMP also
//! stores of small values that may equal a location's current value: silent stores).
//!
//! [`machine_within_oracle`] is generic over [`LitmusMachine`]: any machine that runs assembled
//! litmus code (the unicorn interleaver here, a multiprocessor VMP runner elsewhere) plugs into
//! it with one more `proptest!` case. `GRIDBED_LONG=1` runs 8x the cases.

use std::collections::BTreeSet;

use gridbed_vmp::litmus::interleave::{self, all_orders, InterleaveMachine, Schedule};
use gridbed_vmp::litmus::smp::SmpMachine;
use gridbed_vmp::litmus::{
    assemble, parse, print, sc, tso, Instr, Layout, Litmus, LitmusMachine, Operand, Outcome, Reg,
    DEFAULT_STATE_LIMIT, NREGS,
};
use gridbed_vmp::smp::Variant;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[derive(Clone, Debug)]
enum Op {
    Load(usize),
    Store(usize),
    Fence,
    Xchg(usize),
    Add(usize),
    Inc(usize),
    Xadd(usize),
    /// Compare-and-swap expecting the given value.
    Cas(usize, u32),
    /// A plain store of a small value (0..=2) that may equal the location's current value: the
    /// initial 0, another such store, or what `lock inc` left.
    StoreSmall(usize, u32),
}

const LOCATIONS: [&str; 3] = ["x", "y", "z"];

fn op() -> impl Strategy<Value = Op> {
    let loc = || 0..LOCATIONS.len();
    prop_oneof![
        4 => loc().prop_map(Op::Load),
        4 => loc().prop_map(Op::Store),
        1 => Just(Op::Fence),
        1 => loc().prop_map(Op::Xchg),
        1 => loc().prop_map(Op::Add),
        1 => loc().prop_map(Op::Inc),
        1 => loc().prop_map(Op::Xadd),
        1 => (loc(), 0u32..3).prop_map(|(l, v)| Op::Cas(l, v)),
    ]
}

/// Ops including silent-store candidates.
fn op_or_small_store() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => op(),
        1 => (0..LOCATIONS.len(), 0u32..=2).prop_map(|(l, v)| Op::StoreSmall(l, v)),
    ]
}

/// Threads of ops; fences do not count as accesses, so at most 4 accesses per thread.
fn threads() -> impl Strategy<Value = Vec<Vec<Op>>> {
    (2usize..=4).prop_flat_map(|n| prop::collection::vec(prop::collection::vec(op(), 1..=4), n))
}

/// Like [`threads`], with silent-store candidates.
fn threads_with_small_stores() -> impl Strategy<Value = Vec<Vec<Op>>> {
    (2usize..=4).prop_flat_map(|n| {
        prop::collection::vec(prop::collection::vec(op_or_small_store(), 1..=4), n)
    })
}

/// A litmus program from generated ops: each access gets its own register, stores get
/// distinct values 1, 2, 3, ...
fn build(threads: &[Vec<Op>]) -> Litmus {
    build_with(threads, |k| k)
}

/// [`build`] with the k-th distinct stored value (k = 1, 2, ...) given by `nth`.
fn build_with(threads: &[Vec<Op>], nth: fn(u32) -> u32) -> Litmus {
    const POOL: [Reg; 4] = [Reg::Ebx, Reg::Ecx, Reg::Edx, Reg::Esi];
    let mut next = 0u32;
    let mut value = || {
        next += 1;
        nth(next)
    };
    let mut code = Vec::new();
    for ops in threads {
        let mut t = Vec::new();
        for (k, op) in ops.iter().enumerate() {
            let r = POOL[k];
            match *op {
                Op::Load(loc) => t.push(Instr::Load { dst: r, loc }),
                Op::Store(loc) => t.push(Instr::Store {
                    loc,
                    src: Operand::Imm(value()),
                }),
                Op::StoreSmall(loc, v) => t.push(Instr::Store {
                    loc,
                    src: Operand::Imm(v),
                }),
                Op::Fence => t.push(Instr::Mfence),
                Op::Xchg(loc) => {
                    t.push(Instr::Mov {
                        dst: r,
                        src: Operand::Imm(value()),
                    });
                    t.push(Instr::Xchg { loc, reg: r });
                }
                Op::Add(loc) => t.push(Instr::LockAdd {
                    loc,
                    src: Operand::Imm(value()),
                }),
                Op::Inc(loc) => t.push(Instr::LockInc { loc }),
                Op::Xadd(loc) => {
                    t.push(Instr::Mov {
                        dst: r,
                        src: Operand::Imm(value()),
                    });
                    t.push(Instr::LockXadd { loc, reg: r });
                }
                Op::Cas(loc, expect) => {
                    t.push(Instr::Mov {
                        dst: Reg::Eax,
                        src: Operand::Imm(expect),
                    });
                    t.push(Instr::Mov {
                        dst: r,
                        src: Operand::Imm(value()),
                    });
                    t.push(Instr::LockCmpxchg { loc, reg: r });
                }
            }
        }
        code.push(t);
    }
    let mut lit = Litmus {
        name: "random".into(),
        locations: LOCATIONS.iter().map(|s| s.to_string()).collect(),
        init_mem: vec![0; LOCATIONS.len()],
        init_regs: vec![[0; NREGS]; threads.len()],
        threads: code,
        condition: None,
        observed: vec![],
    };
    lit.observe_everything();
    lit
}

/// Seeds per random program on the multiprocessor VMP.
fn smp_seeds() -> u64 {
    if std::env::var_os("GRIDBED_LONG").is_some() {
        64
    } else {
        16
    }
}

fn cases() -> u32 {
    if std::env::var_os("GRIDBED_LONG").is_some() {
        8 * 48
    } else {
        48
    }
}

/// Runs `t` on `m` under `seeds` seeds; every outcome must be one x86-TSO allows.
pub fn machine_within_oracle<M: LitmusMachine>(
    m: &mut M,
    t: &Litmus,
    seeds: u64,
) -> Result<BTreeSet<Outcome>, TestCaseError> {
    let allowed =
        tso::outcomes(t, DEFAULT_STATE_LIMIT).map_err(|e| TestCaseError::reject(e.to_string()))?;
    let asm = assemble(t, Layout::default()).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    let mut seen = BTreeSet::new();
    for seed in 0..seeds {
        let o = m
            .run(&asm, seed)
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        prop_assert!(
            allowed.contains(&o),
            "seed {seed}: outcome {o} is forbidden by x86-TSO\n{}",
            print::to_text(t)
        );
        seen.insert(o);
    }
    Ok(seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Every sequentially consistent outcome is an x86-TSO outcome.
    #[test]
    fn sc_outcomes_are_tso_outcomes(th in threads()) {
        let t = build(&th);
        let sc_set = sc::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
        let tso_set = tso::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
        prop_assert!(sc_set.is_subset(&tso_set), "{}", print::to_text(&t));
    }

    /// Printing a program and parsing it back gives the same program.
    #[test]
    fn print_then_parse_round_trips(th in threads()) {
        let t = build(&th);
        let back = parse(&print::to_text(&t)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, t);
    }

    /// The assembled code on unicorn: every sequential order and random instruction-level
    /// interleavings give outcomes the oracle allows (and, unicorn being one processor, SC ones).
    #[test]
    fn unicorn_interleavings_stay_inside_the_oracle(th in threads()) {
        let t = build(&th);
        let seen = machine_within_oracle(&mut InterleaveMachine, &t, 6)?;
        let sc_set = sc::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
        let asm = assemble(&t, Layout::default()).unwrap();
        for order in all_orders(t.threads.len()) {
            let o = interleave::run(&asm, &Schedule::Sequential(order.clone())).unwrap();
            prop_assert!(sc_set.contains(&o), "order {order:?} gave {o}\n{}", print::to_text(&t));
        }
        for o in &seen {
            prop_assert!(sc_set.contains(o), "interleaving gave non-SC {o}\n{}", print::to_text(&t));
        }
    }

    /// The multiprocessor VMP (both protocols, adversarial schedules from the seed) on every
    /// op, small stores that may repeat a location's value included (silent stores, whole or in
    /// some bytes, and locked arithmetic whose sums share bytes): every outcome is allowed by
    /// x86-TSO, and the processors' copies of memory end equal (the machine checks it).
    #[test]
    fn smp_outcomes_stay_inside_the_oracle(th in threads_with_small_stores(), optimised in any::<bool>()) {
        let t = build(&th);
        let variant = if optimised { Variant::Optimised } else { Variant::Naive };
        machine_within_oracle(&mut SmpMachine::new(variant), &t, smp_seeds())?;
    }
}
