//! The litmus catalogue on the multiprocessor VMP (both protocol variants, many seeds): no
//! outcome x86-TSO forbids, every copy of memory equal at the end; which allowed relaxed outcomes
//! appear. Plus the known twin/diff silent-store violation, kept as a regression test.
//!
//! `GRIDBED_LONG=1` runs 1000 seeds per test and variant instead of 48; run with `--nocapture`
//! to see the table of relaxed outcomes (what `notes/litmus.md` quotes).

use std::collections::{BTreeMap, BTreeSet};

use gridbed_vmp::litmus::smp::SmpMachine;
use gridbed_vmp::litmus::{
    assemble, catalogue, parse, sc, tso, Layout, LitmusMachine, Outcome, DEFAULT_STATE_LIMIT,
};
use gridbed_vmp::smp::Variant;

fn seeds() -> u64 {
    if std::env::var_os("GRIDBED_LONG").is_some() {
        1000
    } else {
        48
    }
}

/// Histogram of `text` on the smp machine over `seeds` seeds.
fn histogram(text: &str, variant: Variant, seeds: u64) -> BTreeMap<Outcome, u64> {
    let t = parse(text).unwrap();
    let asm = assemble(&t, Layout::default()).unwrap();
    let mut m = SmpMachine::new(variant);
    let mut h = BTreeMap::new();
    for seed in 0..seeds {
        let o = m
            .run(&asm, seed)
            .unwrap_or_else(|e| panic!("{} seed {seed}: {e:#}", t.name));
        *h.entry(o).or_insert(0) += 1;
    }
    h
}

fn catalogue_on(variant: Variant) {
    let k = seeds();
    eprintln!("| test | x86-TSO | relaxed outcome seen ({variant:?}, {k} seeds) | outcomes seen | TSO-only seen |");
    for entry in catalogue::TESTS {
        let t = parse(entry.text).unwrap();
        let allowed = tso::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
        let sc_set = sc::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
        let h = histogram(entry.text, variant, k);
        for (o, n) in &h {
            assert!(
                allowed.contains(o),
                "{variant:?} {}: {n} of {k} runs gave {o}, forbidden by x86-TSO",
                entry.name
            );
        }
        let cond = t.condition.as_ref().unwrap();
        let relaxed: u64 = h
            .iter()
            .filter(|(o, _)| cond.prop.holds(o))
            .map(|(_, n)| n)
            .sum();
        if !entry.allowed {
            assert_eq!(
                relaxed, 0,
                "{variant:?} {}: forbidden outcome seen",
                entry.name
            );
        }
        let seen: BTreeSet<&Outcome> = h.keys().collect();
        let tso_only = seen.iter().filter(|o| !sc_set.contains(o)).count();
        eprintln!(
            "| {} | {} | {relaxed}/{k} | {}/{} | {tso_only}/{} |",
            entry.name,
            if entry.allowed {
                "allowed"
            } else {
                "forbidden"
            },
            seen.len(),
            allowed.len(),
            allowed.len() - sc_set.len()
        );
    }
}

#[test]
fn catalogue_on_smp_naive_never_shows_a_forbidden_outcome() {
    catalogue_on(Variant::Naive);
}

#[test]
fn catalogue_on_smp_optimised_never_shows_a_forbidden_outcome() {
    catalogue_on(Variant::Optimised);
}

/// 2+2W with P0's second store silent (y already holds 0). x=1 /\ y=2 is forbidden by x86-TSO:
/// y=2 last puts P0's `y=0` before P1's `y=2`, x=1 last puts P1's `x=2` before P0's `x=1`, and
/// each processor's two stores are ordered. Twin/diff cannot see a store of the value the twin
/// holds, so P0's diff carries only x=1; when the sequencer orders P1's publish first, memory
/// ends x=1, y=2. This asserts the violation still reproduces: it fails once the blind spot is
/// closed (then turn it into a "never observed" check).
const TWO_PLUS_TWO_W_SILENT: &str = "X86 2+2W+silent\n{ x=0; y=0; }\n P0 | P1 ;\n MOV [x],$1 | MOV [y],$2 ;\n MOV [y],$0 | MOV [x],$2 ;\nexists (x=1 /\\ y=2)\n";

#[test]
fn expected_violation_silent_store_in_two_plus_two_w() {
    let t = parse(TWO_PLUS_TWO_W_SILENT).unwrap();
    let allowed = tso::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
    let cond = t.condition.as_ref().unwrap();
    assert!(!cond.holds(&allowed), "the oracle must forbid x=1 /\\ y=2");
    for variant in [Variant::Naive, Variant::Optimised] {
        let h = histogram(TWO_PLUS_TWO_W_SILENT, variant, 32);
        let forbidden: u64 = h
            .iter()
            .filter(|(o, _)| !allowed.contains(o))
            .map(|(_, n)| n)
            .sum();
        assert!(
            forbidden > 0,
            "{variant:?}: the silent-store violation no longer reproduces ({h:?}); if the \
             blind spot was fixed, make this test assert it never appears"
        );
        eprintln!("{variant:?}: {forbidden}/32 runs forbidden: {h:?}");
    }
}

/// The same shape with a non-silent second store (y=3) stays inside the oracle: the violation
/// above comes from the silent store, not from the ordering of publishes.
#[test]
fn two_plus_two_w_without_silent_store_stays_inside_the_oracle() {
    let text = TWO_PLUS_TWO_W_SILENT
        .replace("MOV [y],$0", "MOV [y],$3")
        .replace("2+2W+silent", "2+2W+loud");
    let t = parse(&text).unwrap();
    let allowed = tso::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
    for variant in [Variant::Naive, Variant::Optimised] {
        for o in histogram(&text, variant, 32).keys() {
            assert!(allowed.contains(o), "{variant:?}: {o} forbidden");
        }
    }
}

/// Found by the property suite: a store that leaves some of its bytes unchanged is torn. P1's
/// `x=256` (0x100) differs from the twin (x=0) in byte 1 only, so its diff carries byte 1 and
/// merges into P0's x=32 (0x20) as 0x120 = 288: P0's second `xadd` reads a value no store wrote
/// (x86-TSO: every store is atomic). Asserts it still reproduces; fails once fixed.
const TORN_STORE: &str = "X86 torn-store\n{ x=0; }\n P0 | P1 ;\n MOV EBX,$32 | MOV [x],$256 ;\n LOCK XADD [x],EBX | ;\n MOV ECX,$64 | ;\n LOCK XADD [x],ECX | ;\n MOV [x],$128 | ;\nlocations [0:EBX; 0:ECX; x;]\n";

#[test]
fn expected_violation_partially_silent_store_is_torn() {
    let t = parse(TORN_STORE).unwrap();
    let allowed = tso::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
    let mut forbidden = 0;
    for variant in [Variant::Naive, Variant::Optimised] {
        let h = histogram(TORN_STORE, variant, 32);
        for (o, n) in &h {
            if !allowed.contains(o) {
                eprintln!("{variant:?}: {n}/32 {o}");
                forbidden += n;
            }
        }
    }
    assert!(
        forbidden > 0,
        "the torn store no longer reproduces; if fixed, assert it never appears"
    );
}

/// Found by the property suite (no silent store: every stored byte differs from every other):
/// a write-write race on z under the `optimised` protocol ends with the processors' copies of
/// memory different (I1 broken) on some seeds; `naive` never does. Asserts it still reproduces;
/// fails once fixed.
const OPTIMISED_WW_RACE: &str = "X86 ww-copies\n{ x=0; z=0; }\n P0 | P1 ;\n MOV [x],$16843009 | MOV [z],$50529027 ;\n MOV [z],$33686018 | MOV [z],$67372036 ;\nlocations [x; z;]\n";

#[test]
fn expected_violation_optimised_write_race_leaves_copies_different() {
    let t = parse(OPTIMISED_WW_RACE).unwrap();
    let asm = assemble(&t, Layout::default()).unwrap();
    let allowed = tso::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
    let mut naive = SmpMachine::new(Variant::Naive);
    let mut optimised = SmpMachine::new(Variant::Optimised);
    let mut bad = 0;
    for seed in 0..32 {
        let o = naive.run(&asm, seed).unwrap();
        assert!(allowed.contains(&o), "naive seed {seed}: {o}");
        if let Err(e) = optimised.run(&asm, seed) {
            let e = format!("{e:#}");
            assert!(e.contains("copies"), "optimised seed {seed}: {e}");
            bad += 1;
        }
    }
    eprintln!("optimised: copies differ on {bad}/32 seeds");
    assert!(
        bad > 0,
        "no violation any more; if fixed, assert it never appears"
    );
}
