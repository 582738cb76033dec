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
const LOCK: u32 = SHARED;
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

fn console(o: &VmOutcome) -> String {
    String::from_utf8_lossy(&o.sequencer.console).into_owned()
}

/// Adds `n` to the shared counter one at a time under an `xchg` spinlock, then exits `status`.
fn counter(slot: u32, n: u32, status: u32) -> UserProgram {
    let base = USER_SLOT_BASE + slot * USER_SLOT_SIZE;
    let mut a = CodeAssembler::new(32).unwrap();
    let (mut spin, mut wait, mut got) = (a.create_label(), a.create_label(), a.create_label());
    a.mov(esi, n).unwrap();
    a.set_label(&mut spin).unwrap();
    a.mov(eax, 1u32).unwrap();
    a.xchg(dword_ptr(LOCK as u64), eax).unwrap();
    a.test(eax, eax).unwrap();
    a.jz(got).unwrap();
    a.set_label(&mut wait).unwrap();
    a.pause().unwrap();
    a.cmp(dword_ptr(LOCK as u64), 0).unwrap();
    a.jne(wait).unwrap();
    a.jmp(spin).unwrap();
    a.set_label(&mut got).unwrap();
    // A read-modify-write in two plain instructions: only the lock makes it exact.
    a.mov(eax, dword_ptr(COUNT as u64)).unwrap();
    a.inc(eax).unwrap();
    a.mov(dword_ptr(COUNT as u64), eax).unwrap();
    a.mov(dword_ptr(LOCK as u64), 0u32).unwrap();
    a.dec(esi).unwrap();
    a.jnz(spin).unwrap();
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
