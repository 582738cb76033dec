//! The multiprocessor over simulated hosts: TSO's forbidden outcomes never appear, locked
//! instructions are atomic across hosts, writes become visible without fences, and lost messages,
//! a crashed host and a malformed peer are handled.

use gridbed_runtime::HostId;
use gridbed_sim::{FaultPlan, Platform, SimConfig};
use gridbed_vmp::smp::bare::{self, BareProgram};
use gridbed_vmp::smp::{SmpError, SmpOptions, Variant, VmOutcome};
use iced_x86::code_asm::*;

const CODE: u32 = 0x0020_0000;
const X: u32 = 0x0030_0000;
const Y: u32 = 0x0030_1000;
const LOCK: u32 = 0x0030_2000;
const COUNT: u32 = 0x0030_2040;
const VARIANTS: [Variant; 2] = [Variant::Naive, Variant::Optimised];

fn asm(at: u32, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> BareProgram {
    let mut a = CodeAssembler::new(32).unwrap();
    f(&mut a).unwrap();
    a.hlt().unwrap();
    BareProgram {
        addr: at,
        code: a.assemble(at as u64).unwrap(),
    }
}

fn hosts(n: usize) -> Vec<HostId> {
    (0..n as u32).map(HostId).collect()
}

fn run(
    seed: u64,
    programs: Vec<BareProgram>,
    opts: SmpOptions,
    faults: FaultPlan,
) -> Result<VmOutcome, SmpError> {
    let n = programs.len();
    let mut cfg = SimConfig::new(Platform::lans(1, n, "gige-tcp").unwrap(), seed);
    cfg.faults = faults;
    gridbed_sim::run(cfg, move |c| {
        Box::pin(async move { bare::run(c, programs, vec![], opts).await })
    })
    .value
}

/// SB+mfences: x=1; mfence; r0=y || y=1; mfence; r1=x. r0=r1=0 is forbidden.
fn sb_mfences() -> Vec<BareProgram> {
    let side = |i: u32, mine: u32, other: u32| {
        asm(CODE + i * 0x1000, move |a| {
            a.mov(dword_ptr(mine as u64), 1u32)?;
            a.mfence()?;
            a.mov(eax, dword_ptr(other as u64))
        })
    };
    vec![side(0, X, Y), side(1, Y, X)]
}

#[test]
fn sb_with_mfences_never_shows_both_zero() {
    for v in VARIANTS {
        for seed in 0..12 {
            let o = run(
                seed,
                sb_mfences(),
                bare::litmus_options(hosts(2), v),
                FaultPlan::default(),
            )
            .unwrap();
            let (r0, r1) = (o.regs(0).unwrap()[0], o.regs(1).unwrap()[0]);
            assert!(
                r0 == 1 || r1 == 1,
                "{v:?} seed {seed}: r0=r1=0 under mfence"
            );
            assert_eq!((o.read_u32(X), o.read_u32(Y)), (1, 1));
            assert!(
                o.copies_agree(X, 0x2000),
                "{v:?} seed {seed}: copies differ"
            );
        }
    }
}

/// Each processor adds `n` to the counter with `lock xadd` and `n` with a spinlock (`xchg`)
/// around a plain load/add/store.
fn counters(cpus: u32, n: u32) -> Vec<BareProgram> {
    (0..cpus)
        .map(|i| {
            asm(CODE + i * 0x1000, move |a| {
                let (mut l1, mut spin, mut l2) =
                    (a.create_label(), a.create_label(), a.create_label());
                a.mov(ecx, n)?;
                a.set_label(&mut l1)?;
                a.mov(eax, 1u32)?;
                a.lock().xadd(dword_ptr(COUNT as u64), eax)?;
                a.dec(ecx)?;
                a.jnz(l1)?;
                a.mov(ecx, n)?;
                a.set_label(&mut spin)?;
                a.mov(eax, 1u32)?;
                a.xchg(dword_ptr(LOCK as u64), eax)?;
                a.test(eax, eax)?;
                a.jnz(spin)?;
                a.mov(edx, dword_ptr(COUNT as u64 + 4))?;
                a.inc(edx)?;
                a.mov(dword_ptr(COUNT as u64 + 4), edx)?;
                a.mov(dword_ptr(LOCK as u64), 0u32)?;
                a.dec(ecx)?;
                a.jz(l2)?;
                a.jmp(spin)?;
                a.set_label(&mut l2)?;
                a.nop()
            })
        })
        .collect()
}

#[test]
fn locked_instructions_are_atomic_across_hosts() {
    for v in VARIANTS {
        for seed in 0..3 {
            let o = run(
                seed,
                counters(3, 30),
                bare::litmus_options(hosts(3), v),
                FaultPlan::default(),
            )
            .unwrap();
            assert_eq!(
                o.read_u32(COUNT),
                90,
                "{v:?} seed {seed}: lock xadd lost updates"
            );
            assert_eq!(
                o.read_u32(COUNT + 4),
                90,
                "{v:?} seed {seed}: spinlock lost updates"
            );
            assert!(o.copies_agree(LOCK, 0x1000));
        }
    }
}

/// P1 sets a flag with a plain store and halts; P0 spins on it with plain loads, no fence.
#[test]
fn writes_become_visible_without_fences() {
    let p0 = asm(CODE, |a| {
        let mut spin = a.create_label();
        a.set_label(&mut spin)?;
        a.mov(eax, dword_ptr(X as u64))?;
        a.test(eax, eax)?;
        a.jz(spin)
    });
    let p1 = asm(CODE + 0x1000, |a| a.mov(dword_ptr(X as u64), 7u32));
    for v in VARIANTS {
        let mut o = SmpOptions::new(v, hosts(2), gridbed_vmp::time::Preset::PC_2005);
        o.quantum = 5_000;
        let out = run(1, vec![p0.clone(), p1.clone()], o, FaultPlan::default()).unwrap();
        assert_eq!(out.regs(0).unwrap()[0], 7);
    }
}

#[test]
fn lost_messages_do_not_break_consistency() {
    let faults = FaultPlan {
        loss_rate: 0.15,
        ..FaultPlan::default()
    };
    for v in VARIANTS {
        let o = run(
            5,
            counters(2, 20),
            bare::litmus_options(hosts(2), v),
            faults.clone(),
        )
        .unwrap();
        assert_eq!(o.read_u32(COUNT), 40, "{v:?}");
        assert_eq!(o.read_u32(COUNT + 4), 40, "{v:?}");
        let retransmits: u64 =
            o.cpus.iter().map(|c| c.counts.retransmits).sum::<u64>() + o.sequencer.retransmits;
        assert!(
            retransmits > 0,
            "{v:?}: 15% loss but nothing was retransmitted"
        );
        assert!(o.copies_agree(COUNT, 8));
    }
}

#[test]
fn a_crashed_host_stops_the_machine_naming_the_processor() {
    let faults = FaultPlan {
        schedule: vec![(
            std::time::Duration::from_micros(300),
            gridbed_sim::Fault::Crash(HostId(1)),
        )],
        ..FaultPlan::default()
    };
    let err = run(
        2,
        counters(2, 2000),
        bare::litmus_options(hosts(2), Variant::Optimised),
        faults,
    )
    .err()
    .expect("the machine cannot finish without processor 1");
    let text = err.to_string();
    assert!(
        text.contains("processor 1") && text.contains("h1"),
        "{text}"
    );
}

/// A peer sending garbage to the sequencer and to a processor is rejected and disconnected; the
/// machine still computes the right answer.
#[test]
fn malformed_frames_are_rejected() {
    use gridbed_runtime::Addr;
    use gridbed_vmp::smp::proto::{CPU_PORT, SEQ_PORT};
    let cfg = SimConfig::new(Platform::lans(1, 3, "gige-tcp").unwrap(), 9);
    let programs = counters(2, 10);
    let opts = bare::litmus_options(hosts(2), Variant::Naive);
    let out = gridbed_sim::run(cfg, move |c| {
        Box::pin(async move {
            let rogue = c.hosts()[2].clone();
            rogue.spawn(
                "rogue",
                Box::pin({
                    let rogue = rogue.clone();
                    async move {
                        let garbage: [&[u8]; 3] = [&[], &[1, 0xff, 0xff], &[7, 1, 2, 3]];
                        for g in garbage {
                            for to in [
                                Addr::new(HostId(0), SEQ_PORT),
                                Addr::new(HostId(1), CPU_PORT),
                            ] {
                                let _ = rogue.send(9999, to, g.to_vec()).await;
                            }
                        }
                    }
                }),
            );
            bare::run(c, programs, vec![], opts).await
        })
    })
    .value
    .unwrap();
    assert_eq!(out.read_u32(COUNT), 20);
    assert_eq!(out.read_u32(COUNT + 4), 20);
    // Disconnecting discards what the rogue still had on the wire, so not all three arrive.
    assert!(
        out.sequencer.rejected >= 1,
        "rejected {}",
        out.sequencer.rejected
    );
}

/// SB without fences: x=1; r0=y || y=1; r1=x. TSO allows r0=r1=0 (store buffering) and the
/// multiprocessor produces it: writes stay buffered until a publish, so it is TSO, not SC.
#[test]
fn sb_without_fences_shows_store_buffering() {
    let side = |i: u32, mine: u32, other: u32| {
        asm(CODE + i * 0x1000, move |a| {
            a.mov(dword_ptr(mine as u64), 1u32)?;
            a.mov(eax, dword_ptr(other as u64))
        })
    };
    for v in VARIANTS {
        let mut hist = std::collections::BTreeMap::new();
        for seed in 0..20 {
            let o = run(
                seed,
                vec![side(0, X, Y), side(1, Y, X)],
                bare::litmus_options(hosts(2), v),
                FaultPlan::default(),
            )
            .unwrap();
            *hist
                .entry((o.regs(0).unwrap()[0], o.regs(1).unwrap()[0]))
                .or_insert(0) += 1;
        }
        eprintln!("{v:?} SB outcomes (r0, r1): {hist:?}");
        assert!(
            hist.contains_key(&(0, 0)),
            "{v:?}: never buffered: {hist:?}"
        );
    }
}

/// Two processors store different values to one word and fence: whichever is ordered last wins,
/// and every copy ends the same (a processor waiting for its own publish must not take an
/// earlier remote value over its own write).
#[test]
fn racing_stores_end_the_same_everywhere() {
    let side = |i: u32| {
        asm(CODE + i * 0x1000, move |a| {
            a.mov(dword_ptr(X as u64), i + 1)?;
            a.mfence()
        })
    };
    for v in VARIANTS {
        for seed in 0..20 {
            let o = run(
                seed,
                vec![side(0), side(1), side(2)],
                bare::litmus_options(hosts(3), v),
                FaultPlan::default(),
            )
            .unwrap();
            assert!((1..=3).contains(&o.read_u32(X)));
            assert!(
                o.copies_agree(X, 4),
                "{v:?} seed {seed}: copies of x differ"
            );
        }
    }
}
