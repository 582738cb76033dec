//! The x86-TSO oracle against the catalogue verdicts, SC inside TSO, and the assembled code run
//! on unicorn (every sequential order, random instruction-level interleavings) inside the oracle.

use std::collections::BTreeSet;

use gridbed_vmp::litmus::interleave::{self, all_orders, Schedule};
use gridbed_vmp::litmus::{
    assemble, catalogue, parse, sc, tso, Layout, Outcome, DEFAULT_STATE_LIMIT,
};

fn verdict(name: &str) {
    let entry = catalogue::get(name).expect("catalogue entry");
    let t = parse(entry.text).expect("catalogue test parses");
    let allowed = tso::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
    let cond = t.condition.as_ref().unwrap();
    assert_eq!(
        cond.holds(&allowed),
        entry.allowed,
        "{name}: oracle {} the relaxed outcome; catalogue says {}",
        if cond.holds(&allowed) {
            "allows"
        } else {
            "forbids"
        },
        if entry.allowed {
            "allowed"
        } else {
            "forbidden"
        }
    );
    // Every relaxed outcome the catalogue lists is one SC forbids, so for an allowed test TSO must
    // produce strictly more than SC, and for a forbidden one SC must not produce it either.
    let sc_set = sc::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
    assert!(
        sc_set.is_subset(&allowed),
        "{name}: SC outcome not allowed by TSO"
    );
    assert!(
        !cond.holds(&sc_set),
        "{name}: SC already shows the relaxed outcome"
    );
}

macro_rules! verdicts {
    ($($f:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $f() { verdict($name); })*
        #[test]
        fn every_catalogue_entry_has_a_test() {
            let tested: BTreeSet<&str> = [$($name),*].into_iter().collect();
            let all: BTreeSet<&str> = catalogue::TESTS.iter().map(|t| t.name).collect();
            assert_eq!(tested, all);
        }
    };
}

verdicts! {
    mp_forbidden => "MP",
    lb_forbidden => "LB",
    wrc_forbidden => "WRC",
    two_plus_two_w_forbidden => "2+2W",
    iriw_forbidden => "IRIW",
    s_forbidden => "S",
    wwc_forbidden => "WWC",
    sb_mfences_forbidden => "SB+mfences",
    r_po_mfence_forbidden => "R+po+mfence",
    rwc_po_mfence_forbidden => "RWC+po+mfence",
    sb_allowed => "SB",
    sb_mfence_po_allowed => "SB+mfence+po",
    r_allowed => "R",
    rwc_allowed => "RWC",
    n6_allowed => "n6",
    iriw_internal_allowed => "iriw-internal",
}

#[test]
fn sb_outcome_sets_are_exact() {
    let t = parse(catalogue::get("SB").unwrap().text).unwrap();
    let show = |s: BTreeSet<Outcome>| s.iter().map(|o| o.to_string()).collect::<Vec<_>>();
    assert_eq!(
        show(tso::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap()),
        [
            "0:EAX=0; 1:EAX=0;",
            "0:EAX=0; 1:EAX=1;",
            "0:EAX=1; 1:EAX=0;",
            "0:EAX=1; 1:EAX=1;"
        ]
    );
    assert_eq!(sc::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap().len(), 3);
}

#[test]
fn locked_operations_are_atomic_and_fence() {
    // Two lock incs never lose an update; an xchg-based SB is SC.
    let inc =
        parse("X86 incs\n{ x=0; }\n P0 | P1 ;\n LOCK INC [x] | LOCK INC [x] ;\nforall (x=2)\n")
            .unwrap();
    assert!(inc
        .condition
        .as_ref()
        .unwrap()
        .holds(&tso::outcomes(&inc, DEFAULT_STATE_LIMIT).unwrap()));
    let sbx = parse(
        "X86 SB+xchgs\n{ 0:EBX=1; 1:EBX=1; }\n P0 | P1 ;\n XCHG [x],EBX | XCHG [y],EBX ;\n MOV EAX,[y] | MOV EAX,[x] ;\nexists (0:EAX=0 /\\ 1:EAX=0)\n",
    )
    .unwrap();
    assert!(!sbx
        .condition
        .as_ref()
        .unwrap()
        .holds(&tso::outcomes(&sbx, DEFAULT_STATE_LIMIT).unwrap()));
    // cmpxchg: exactly one of two competing CASes from 0 succeeds.
    let cas = parse(
        "X86 cas\n{ 0:EBX=1; 1:EBX=2; }\n P0 | P1 ;\n LOCK CMPXCHG [x],EBX | LOCK CMPXCHG [x],EBX ;\n\
         exists ((x=1 /\\ 0:EAX=0 /\\ 1:EAX=1) \\/ (x=2 /\\ 1:EAX=0 /\\ 0:EAX=2))\n",
    )
    .unwrap();
    let outs = tso::outcomes(&cas, DEFAULT_STATE_LIMIT).unwrap();
    assert_eq!(outs.len(), 2, "{outs:?}");
    assert!(cas.condition.as_ref().unwrap().holds(&outs));
    assert!(outs
        .iter()
        .all(|o| cas.condition.as_ref().unwrap().prop.holds(o)));
}

#[test]
fn state_limit_is_enforced() {
    let t = parse(catalogue::get("IRIW").unwrap().text).unwrap();
    assert!(tso::outcomes(&t, 10).is_err());
    assert!(sc::outcomes(&t, 10).is_err());
}

/// Every outcome of the assembled code on unicorn, in every sequential order and under random
/// interleavings, is an SC outcome (unicorn is one processor) and therefore a TSO outcome.
#[test]
fn assembled_code_on_unicorn_stays_inside_the_oracle() {
    for entry in catalogue::TESTS {
        let t = parse(entry.text).unwrap();
        let sc_set = sc::outcomes(&t, DEFAULT_STATE_LIMIT).unwrap();
        let asm = assemble(&t, Layout::default()).unwrap();
        let mut seen = BTreeSet::new();
        for order in all_orders(t.threads.len()) {
            seen.insert(interleave::run(&asm, &Schedule::Sequential(order)).unwrap());
        }
        for seed in 0..16 {
            seen.insert(interleave::run(&asm, &Schedule::Random(seed)).unwrap());
        }
        for o in &seen {
            assert!(
                sc_set.contains(o),
                "{}: unicorn gave {o}, not an SC outcome",
                entry.name
            );
        }
    }
}

/// Sequential orders reach exactly the outcomes the oracle predicts for them: running P0 then P1
/// in SB must give 0:EAX=0, 1:EAX=1 — checks that registers and locations are read back right.
#[test]
fn sequential_order_gives_the_predicted_outcome() {
    let t = parse(catalogue::get("n6").unwrap().text).unwrap();
    let asm = assemble(&t, Layout::default()).unwrap();
    let a = interleave::run(&asm, &Schedule::Sequential(vec![0, 1])).unwrap();
    assert_eq!(a.to_string(), "0:EAX=1; 0:EBX=0; x=2;");
    let b = interleave::run(&asm, &Schedule::Sequential(vec![1, 0])).unwrap();
    assert_eq!(b.to_string(), "0:EAX=1; 0:EBX=2; x=1;");
}
