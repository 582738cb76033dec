//! The SMP guest kernel on the virtual multiprocessor: several programs at once on 2 and 4
//! processors (built-in and ELF), a spinlock-protected counter incremented from every processor,
//! an IPI waking an idle processor, over both protocol variants and several seeds.

use gridbed_runtime::HostId;
use gridbed_sim::{Platform, SimConfig};
use gridbed_vmp::guest::{programs, UserProgram};
use gridbed_vmp::layout::*;
use gridbed_vmp::smp::{os, SmpError, SmpOptions, Variant, VmOutcome};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;

const VARIANTS: [Variant; 2] = [Variant::Naive, Variant::Optimised];
/// A page no program claims: the shared counter and its lock.
const SHARED: u32 = 0x0380_0000;
const NEXT_TICKET: u32 = SHARED;
const SERVING: u32 = SHARED + 4;
const COUNT: u32 = SHARED + 64;

fn run_os(
    seed: u64,
    ncpus: usize,
    variant: Variant,
    programs: Vec<(UserProgram, u32)>,
    timer_hz: u32,
    tweak: impl FnOnce(&mut SmpOptions),
) -> Result<VmOutcome, SmpError> {
    let hosts: Vec<HostId> = (0..ncpus as u32).map(HostId).collect();
    let mut opts = SmpOptions::new(variant, hosts, Preset::PC_2005);
    opts.budget = 200_000_000;
    tweak(&mut opts);
    let cfg = SimConfig::new(Platform::lans(1, ncpus, "gige-tcp").unwrap(), seed);
    gridbed_sim::run(cfg, move |c| {
        Box::pin(async move { os::run(c, programs, timer_hz, opts).await })
    })
    .value
}

/// Seeds per configuration: 2, or 8 with `GRIDBED_LONG=1`.
fn seeds() -> u64 {
    if std::env::var_os("GRIDBED_LONG").is_some() {
        8
    } else {
        2
    }
}

fn console(o: &VmOutcome) -> String {
    String::from_utf8_lossy(&o.sequencer.console).into_owned()
}

/// Adds `n` to the shared counter one at a time under a ticket spinlock (a ticket from
/// `lock xadd`, spin with `sched_yield` until it is served, release by a plain store), then exits
/// `status`.
///
/// A test-and-set lock released by a plain store starves the waiters on this machine: the
/// release becomes visible only at the holder's next synchronisation point, which is its own
/// next `xchg`, ordered before any waiter's. FIFO tickets hand the lock over in order.
fn counter(slot: u32, n: u32, status: u32) -> UserProgram {
    counter_with(slot, n, status, true)
}

/// `counter`, with or without the lock.
fn counter_with(slot: u32, n: u32, status: u32, locked: bool) -> UserProgram {
    let base = USER_SLOT_BASE + slot * USER_SLOT_SIZE;
    let mut a = CodeAssembler::new(32).unwrap();
    let (mut top, mut wait, mut got) = (a.create_label(), a.create_label(), a.create_label());
    a.mov(esi, n).unwrap();
    a.set_label(&mut top).unwrap();
    if !locked {
        a.jmp(got).unwrap();
    }
    a.mov(edi, 1u32).unwrap();
    a.lock().xadd(dword_ptr(NEXT_TICKET as u64), edi).unwrap();
    a.set_label(&mut wait).unwrap();
    a.cmp(dword_ptr(SERVING as u64), edi).unwrap();
    a.je(got).unwrap();
    // Spin then yield: each turn enters the kernel (a synchronisation point), so the waiter
    // sees the holder's release without burning quanta of `pause`.
    a.mov(eax, SYS_SCHED_YIELD).unwrap();
    a.int(0x80).unwrap();
    a.jmp(wait).unwrap();
    a.set_label(&mut got).unwrap();
    // A read-modify-write with a yield in the middle (a kernel entry: the other processors'
    // writes arrive): only the lock makes it exact.
    a.mov(ecx, dword_ptr(COUNT as u64)).unwrap();
    a.mov(eax, SYS_SCHED_YIELD).unwrap();
    a.int(0x80).unwrap();
    a.inc(ecx).unwrap();
    a.mov(dword_ptr(COUNT as u64), ecx).unwrap();
    if locked {
        a.inc(edi).unwrap();
        a.mov(dword_ptr(SERVING as u64), edi).unwrap();
    }
    a.dec(esi).unwrap();
    a.jnz(top).unwrap();
    a.mov(eax, SYS_EXIT).unwrap();
    a.mov(ebx, status).unwrap();
    a.int(0x80).unwrap();
    let code = a.assemble(base as u64).unwrap();
    let end = base + code.len() as u32;
    UserProgram {
        name: format!("counter{slot}"),
        text: vec![(base, end)],
        segments: vec![(base, code)],
        entry: base,
        end,
    }
}

#[test]
fn chatter_on_two_processors() {
    for v in VARIANTS {
        let progs = vec![
            (programs::chatter(0, b'A', 3).unwrap(), 0),
            (programs::chatter(1, b'B', 3).unwrap(), 1),
        ];
        let o = run_os(1, 2, v, progs, 100, |_| {}).unwrap();
        let c = console(&o);
        eprintln!("{v:?}: {c:?} status {:?}", o.exit_status());
        assert_eq!(c.matches("[A] hi\n").count(), 3, "{c}");
        assert_eq!(c.matches("[B] hi\n").count(), 3, "{c}");
        assert_eq!(o.exit_status(), Some(0));
    }
}

#[test]
fn several_programs_on_two_and_four_processors_over_seeds() {
    // Two per processor on 2 (yield and timer preemption share each), one each on 4.
    for (ncpus, place) in [(2usize, [0u32, 0, 1, 1]), (4, [0, 1, 2, 3])] {
        for v in VARIANTS {
            for seed in 1..=seeds() {
                let progs = (0..4u32)
                    .map(|i| {
                        (
                            programs::chatter(i, b'A' + i as u8, 4).unwrap(),
                            place[i as usize],
                        )
                    })
                    .collect();
                let o = run_os(seed, ncpus, v, progs, 1000, |_| {})
                    .unwrap_or_else(|e| panic!("{ncpus} cpus {v:?} seed {seed}: {e}"));
                let c = console(&o);
                for t in ['A', 'B', 'C', 'D'] {
                    assert_eq!(
                        c.matches(&format!("[{t}] hi\n")).count(),
                        4,
                        "{ncpus} cpus {v:?} seed {seed}: {c:?}"
                    );
                }
                // Every byte of the console is one of those lines: no write interleaved
                // inside another. (The monitor emulates a `rep outsb` in one trap and its bytes
                // are published together, so this holds even without the kernel's console
                // lock; checked by removing it.)
                assert_eq!(c.len(), 16 * 7, "{c:?}");
                assert_eq!(o.exit_status(), Some(0));
                assert_eq!(o.cpus.iter().filter(|c| c.powered_off).count(), 1);
            }
        }
    }
}

#[test]
fn spinlock_protected_counter_from_every_processor_is_exact() {
    for v in VARIANTS {
        for seed in (0..seeds()).map(|s| 3 + s) {
            let progs = (0..4u32).map(|i| (counter(i, 25, 7 + i), i)).collect();
            let o = run_os(seed, 4, v, progs, 1000, |_| {}).unwrap();
            assert_eq!(o.read_u32(COUNT), 100, "{v:?} seed {seed}");
            assert!(o.copies_agree(SHARED, 128));
            assert_eq!(o.exit_status(), Some(7), "process 0's exit status");
        }
        // The same increments without the lock lose updates: the check above can fail.
        let progs = (0..4u32)
            .map(|i| (counter_with(i, 25, 0, false), i))
            .collect();
        let o = run_os(3, 4, v, progs, 1000, |_| {}).unwrap();
        assert!(o.read_u32(COUNT) < 100, "{v:?}: {}", o.read_u32(COUNT));
    }
}

#[test]
fn an_ipi_wakes_an_idle_processor_and_dropped_ipis_are_a_lost_wake_up() {
    // No timer: an idle processor wakes only by IPI. Processor 1 calls in and halts before the
    // bootstrap processor places the program on it.
    for v in VARIANTS {
        let progs = || {
            vec![
                (programs::chatter(0, b'A', 2).unwrap(), 0),
                (programs::chatter(1, b'B', 2).unwrap(), 1),
            ]
        };
        let o = run_os(5, 2, v, progs(), 0, |_| {}).unwrap();
        let c = console(&o);
        assert_eq!(c.matches("[B] hi\n").count(), 2, "{c:?}");
        assert!(o.cpus[1].ipis_received >= 1, "the wake-up");
        assert!(
            o.cpus.iter().map(|c| c.ipis_received).sum::<u64>() >= 2,
            "and the halt"
        );
        assert!(
            o.cpus[1].idle_s > 0.0,
            "processor 1 was idle before its wake-up"
        );
        assert!(o.cpus.iter().map(|c| c.counts.ipis_sent).sum::<u64>() >= 2);
        let e = run_os(5, 2, v, progs(), 0, |o| {
            o.drop_ipis = true;
            o.max_idle_s = 0.5;
        })
        .err()
        .expect("with IPIs dropped nothing wakes processor 1");
        let e = e.to_string();
        // Processor 0 goes idle too once its own process exits: either may report it.
        assert!(
            e.contains("virtual processor") && e.contains("lost inter-processor"),
            "{e}"
        );
    }
}

/// A static ELF32 i386 executable linked at `base`: prints `msg`, exits with `status`.
fn elf_hello(base: u32, msg: &[u8], status: u32) -> Vec<u8> {
    let code_at = base + 0x54; // after the ELF header (52) and one program header (32)
    let mut a = CodeAssembler::new(32).unwrap();
    a.mov(eax, SYS_WRITE).unwrap();
    a.mov(ebx, 1u32).unwrap();
    a.mov(ecx, code_at + 0x40).unwrap();
    a.mov(edx, msg.len() as u32).unwrap();
    a.int(0x80).unwrap();
    a.mov(eax, SYS_EXIT).unwrap();
    a.mov(ebx, status).unwrap();
    a.int(0x80).unwrap();
    let mut code = a.assemble(code_at as u64).unwrap();
    code.resize(0x40, 0x90);
    code.extend_from_slice(msg);
    let mut f = vec![0u8; 0x54];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 1; // ELFCLASS32
    f[5] = 1; // little endian
    f[6] = 1; // version
    let put16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 3); // EM_386
    put32(&mut f, 20, 1);
    put32(&mut f, 24, code_at); // e_entry
    put32(&mut f, 28, 52); // e_phoff
    put16(&mut f, 40, 52); // e_ehsize
    put16(&mut f, 42, 32); // e_phentsize
    put16(&mut f, 44, 1); // e_phnum
    let total = (0x54 + code.len()) as u32;
    put32(&mut f, 52, 1); // PT_LOAD
    put32(&mut f, 56, 0); // p_offset
    put32(&mut f, 60, base); // p_vaddr
    put32(&mut f, 64, base);
    put32(&mut f, 68, total); // p_filesz
    put32(&mut f, 72, total + 0x100); // p_memsz (with .bss)
    put32(&mut f, 76, 5); // R+X
    put32(&mut f, 80, 0x1000);
    f.extend_from_slice(&code);
    f
}

#[test]
fn static_elf_programs_run_on_chosen_processors() {
    use gridbed_vmp::guest::elf;
    for v in VARIANTS {
        for seed in 1..=seeds() {
            let a = elf::load("a", &elf_hello(0x0804_8000, b"elf a\n", 5)).unwrap();
            let b = elf::load("b", &elf_hello(0x0904_8000, b"elf b\n", 3)).unwrap();
            let c = elf::load("c", &elf_hello(0x0a04_8000, b"elf c\n", 4)).unwrap();
            let progs = vec![(a, 1), (b, 0), (c, 1)];
            let o = run_os(seed, 2, v, progs, 1000, |_| {}).unwrap();
            let text = console(&o);
            for l in ["elf a\n", "elf b\n", "elf c\n"] {
                assert_eq!(text.matches(l).count(), 1, "{text:?}");
            }
            assert_eq!(o.exit_status(), Some(5), "process 0's exit status");
        }
    }
}
