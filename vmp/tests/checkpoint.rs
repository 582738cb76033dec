//! Capture and restore at an instruction boundary: a guest run to a random instruction count,
//! captured, restored into a fresh machine (directly, and through the image format) and run to
//! the end must end exactly like the uninterrupted run — console, exit status, registers, clocks,
//! trap counters and RAM. Leaving a piece of state out must break that.

use gridbed_vmp::checkpoint::{read_image, write_image, RestoreLimits, WriteOptions};
use gridbed_vmp::guest::{build_image, programs, UserProgram};
use gridbed_vmp::layout::*;
use gridbed_vmp::machine::snapshot::{MachineState, Restorer};
use gridbed_vmp::machine::{ArchState, Config, Exit, Machine};
use gridbed_vmp::time::Preset;
use gridbed_vmp::vcpu::TrapStats;
use iced_x86::code_asm::*;
use proptest::prelude::*;

/// A fast timer so that interrupts land inside the short guests below.
const TIMER_HZ: u32 = 20_000;

#[derive(Debug, PartialEq)]
struct End {
    console: Vec<u8>,
    exit: u32,
    arch: ArchState,
    retired: u64,
    cycles: u64,
    stats: TrapStats,
    ram_crc: u32,
}

fn boot(progs: &[UserProgram], config: Config) -> Machine {
    let image = build_image(progs, TIMER_HZ).unwrap();
    let mut m = Machine::new(config, Preset::PC_2005.cpu, &image).unwrap();
    m.set_budget(50_000_000);
    m
}

fn finish(mut m: Machine) -> End {
    let exit = match m.run(None).unwrap() {
        Exit::PowerOff(c) => c,
        other => panic!("a run without a budget ends at power-off, not {other:?}"),
    };
    let mut crc = crc32fast::Hasher::new();
    for (a, p) in m.nonzero_pages() {
        crc.update(&a.to_le_bytes());
        crc.update(p);
    }
    End {
        console: m.console().to_vec(),
        exit,
        arch: m.arch_state().unwrap(),
        retired: m.monitor().retired,
        cycles: m.monitor().cycles(),
        stats: m.monitor().stats.clone(),
        ram_crc: crc.finalize(),
    }
}

/// Runs `m` for at least `at` instructions; None if the guest powered off first.
fn stop_at(mut m: Machine, at: u64) -> Option<Machine> {
    match m.run(Some(at)).unwrap() {
        Exit::SliceEnd => Some(m),
        Exit::PowerOff(_) => None,
        other => panic!("no sync points on a lone processor: {other:?}"),
    }
}

fn restore_direct(state: MachineState, pages: &[(u32, Vec<u8>)]) -> Machine {
    let mut r = Restorer::new(state).unwrap();
    for (a, p) in pages {
        r.page(*a, p).unwrap();
    }
    r.finish().unwrap()
}

fn capture(m: &Machine) -> (MachineState, Vec<(u32, Vec<u8>)>) {
    let pages = m.nonzero_pages().map(|(a, p)| (a, p.to_vec())).collect();
    (m.capture_state().unwrap(), pages)
}

fn through_image(m: &Machine, compress: bool) -> Machine {
    let mut buf = Vec::new();
    write_image(m, &mut buf, 0, WriteOptions { compress }).unwrap();
    read_image(&buf[..], RestoreLimits::default()).unwrap().0
}

/// The uninterrupted run, and the same guest checkpointed at `at` (if it gets that far) and
/// restored both ways.
fn check(progs: &[UserProgram], config: Config, at: u64, compress: bool) {
    let reference = finish(boot(progs, config));
    let Some(m) = stop_at(boot(progs, config), at) else {
        return;
    };
    let (state, pages) = capture(&m);
    let imaged = through_image(&m, compress);
    // The source itself must be unharmed by being captured.
    assert_eq!(finish(m), reference, "source after capture");
    assert_eq!(finish(restore_direct(state, &pages)), reference, "direct");
    assert_eq!(finish(imaged), reference, "through the image");
}

fn builtins() -> Vec<Vec<UserProgram>> {
    vec![
        vec![programs::getpid_loop(0, 300).unwrap()],
        vec![programs::fib(0, 12).unwrap(), programs::fib(1, 11).unwrap()],
        (0..3)
            .map(|i| programs::chatter(i, b'A' + i as u8, 15).unwrap())
            .collect(),
    ]
}

/// A generated user program: arithmetic on registers, stores into its data page, a system
/// call now and then (write of its data, getpid, yield), exit with a status it computed.
fn generated(ops: &[(u8, u8, u32)]) -> UserProgram {
    let base = USER_SLOT_BASE;
    let data = base + 0x1000;
    let regs = [eax, ebx, ecx, edx, esi, edi, ebp];
    let mut a = CodeAssembler::new(32).unwrap();
    for (i, r) in regs.into_iter().enumerate() {
        a.mov(r, 0x1234_5678u32.rotate_left(i as u32 * 5)).unwrap();
    }
    for &(kind, r, v) in ops {
        let x = regs[r as usize % regs.len()];
        let y = regs[(v as usize) % regs.len()];
        match kind % 8 {
            0 => a.add(x, v as i32).unwrap(),
            1 => a.xor(x, y).unwrap(),
            2 => a.imul_2(x, y).unwrap(),
            3 => a.mov(dword_ptr(data + (v % 60) * 4), x).unwrap(),
            4 => a.add(x, dword_ptr(data + (v % 60) * 4)).unwrap(),
            5 => a.rol(x, v % 31).unwrap(),
            6 | 7 => {
                for r in regs {
                    a.push(r).unwrap();
                }
                match v % 3 {
                    0 => {
                        a.mov(eax, SYS_WRITE).unwrap();
                        a.mov(ebx, 1u32).unwrap();
                        a.mov(ecx, data + (v % 16)).unwrap();
                        a.mov(edx, 8u32).unwrap();
                    }
                    1 => a.mov(eax, SYS_GETPID).unwrap(),
                    _ => a.mov(eax, SYS_SCHED_YIELD).unwrap(),
                }
                a.int(0x80).unwrap();
                for r in regs.iter().rev() {
                    a.pop(*r).unwrap();
                }
            }
            _ => unreachable!(),
        }
    }
    a.mov(ebx, eax).unwrap();
    a.xor(ebx, esi).unwrap();
    a.and(ebx, 0x7fu32).unwrap();
    a.mov(eax, SYS_EXIT).unwrap();
    a.int(0x80).unwrap();
    let code = a.assemble(base as u64).unwrap();
    assert!(code.len() < 0x1000, "generated code fits its page");
    let initial: Vec<u8> = (0..256u32).map(|i| (i * 7 + 3) as u8).collect();
    UserProgram {
        name: "generated".into(),
        text: vec![(base, base + code.len() as u32)],
        segments: vec![(base, code), (data, initial)],
        entry: base,
        end: data + 0x1000,
    }
}

#[test]
fn builtins_resume_identically_in_both_configs() {
    for progs in builtins() {
        for config in [Config::Vmp, Config::Native] {
            let total = finish(boot(&progs, config)).retired;
            for at in [1, total / 3, total / 2 + 7, total - 2] {
                check(&progs, config, at.max(1), at % 2 == 0);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn generated_program_resumes_identically(
        ops in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u32>()), 1..120),
        frac in 0.0f64..1.0,
        vmp in any::<bool>(),
        builtin_beside in any::<bool>(),
    ) {
        let config = if vmp { Config::Vmp } else { Config::Native };
        let mut progs = vec![generated(&ops)];
        if builtin_beside {
            progs.push(programs::chatter(1, b'Z', 4).unwrap());
        }
        let total = finish(boot(&progs, config)).retired;
        check(&progs, config, ((total as f64 * frac) as u64).max(1), frac < 0.5);
    }
}

/// Each piece of the captured state matters: restoring without it (here: with it reset or
/// perturbed) changes how the run ends.
#[test]
fn leaving_out_a_piece_of_state_changes_the_end() {
    // Long enough for several timer interrupts after the capture point.
    let progs: Vec<UserProgram> = (0..3)
        .map(|i| programs::chatter(i, b'A' + i as u8, 200).unwrap())
        .collect();
    let reference = finish(boot(&progs, Config::Vmp));
    let m = stop_at(boot(&progs, Config::Vmp), reference.retired / 2).unwrap();
    let (state, pages) = capture(&m);
    let early = {
        let m = stop_at(boot(&progs, Config::Vmp), reference.retired / 4).unwrap();
        m.capture_state().unwrap()
    };
    type Cut = Box<dyn Fn(&mut MachineState, &mut Vec<(u32, Vec<u8>)>)>;
    let cuts: Vec<(&str, Cut)> = vec![
        (
            "engine context",
            Box::new(move |s, _| s.engine = early.engine.clone()),
        ),
        ("virtual cpu", Box::new(|s, _| s.vcpu = Default::default())),
        ("console", Box::new(|s, _| s.dev.console.clear())),
        ("instruction clock", Box::new(|s, _| s.retired = 0)),
        (
            "trap statistics",
            Box::new(|s, _| s.stats = TrapStats::default()),
        ),
        (
            "kernel data page",
            Box::new(|_, p| p.retain(|(a, _)| *a != KERNEL_DATA)),
        ),
    ];
    for (what, cut) in cuts {
        let (mut s, mut p) = (state.clone(), pages.clone());
        cut(&mut s, &mut p);
        let mut r = Restorer::new(s).unwrap();
        for (a, bytes) in &p {
            r.page(*a, bytes).unwrap();
        }
        let mut m = r.finish().unwrap();
        m.set_budget(50_000_000);
        let ended = match m.run(None) {
            Ok(_) => {
                let e = finish(m);
                Some(e)
            }
            Err(_) => None,
        };
        assert_ne!(ended.as_ref(), Some(&reference), "without the {what}");
    }
    // And the intact state does reproduce it.
    assert_eq!(finish(restore_direct(state, &pages)), reference);
}

/// Through the migration crate's trait: capture into a byte stream, restore, same end.
#[test]
fn migratable_round_trip_through_the_trait() {
    use gridbed_migration::Migratable;
    let progs = builtins().remove(1);
    let reference = finish(boot(&progs, Config::Vmp));
    let mut m = boot(&progs, Config::Vmp);
    assert_eq!(m.run_for(reference.retired / 2).unwrap(), None);
    let mut image = Vec::new();
    let n = m.capture(&mut image).unwrap();
    assert_eq!(n as usize, image.len());
    let moved = Machine::restore(&mut &image[..]).unwrap();
    assert_eq!(moved.position(), m.position());
    assert_eq!(finish(moved), reference);
    image.truncate(image.len() - 1);
    assert!(Machine::restore(&mut &image[..]).is_err());
}

/// Format v1's whole-image checksum is the crc32 of every byte before END, however the writer
/// computes it (it combines record crcs): an image written by an older build still reads, and
/// a reader that recomputed it byte by byte would agree. Also for a recycled destination RAM
/// buffer (pages the image leaves out must read as zero).
#[test]
fn image_crc_is_the_crc32_of_the_bytes_before_end() {
    for compress in [false, true] {
        let mut m = boot(&[programs::fib(0, 12).unwrap()], Config::Vmp);
        assert!(matches!(m.run(Some(2_000)).unwrap(), Exit::SliceEnd));
        let mut image = Vec::new();
        write_image(&m, &mut image, 0, WriteOptions { compress }).unwrap();
        let end = image.len() - (5 + 8 + 4);
        assert_eq!(image[end], 3, "END record last");
        let stored = u32::from_le_bytes(image[end + 9..end + 13].try_into().unwrap());
        assert_eq!(
            stored,
            crc32fast::hash(&image[..end]),
            "compress {compress}"
        );
        let want = finish(read_image(&image[..], RestoreLimits::default()).unwrap().0);
        // A recycled buffer that held a fully non-zero machine's RAM.
        gridbed_vmp::machine::reserve_restore_ram(1);
        let dirty = full_ram_machine();
        drop(dirty);
        let again = finish(read_image(&image[..], RestoreLimits::default()).unwrap().0);
        gridbed_vmp::machine::reserve_restore_ram(0);
        assert_eq!(again, want);
        assert_eq!(want, finish(m));
    }
}

/// A restored machine whose every RAM page holds non-zero bytes.
fn full_ram_machine() -> Machine {
    let m = boot(&[programs::getpid_loop(0, 10).unwrap()], Config::Vmp);
    let mut r = Restorer::new(m.capture_state().unwrap()).unwrap();
    let page = vec![0xa5u8; PAGE as usize];
    for addr in (RAM_BASE..RAM_TOP).step_by(PAGE as usize) {
        r.page(addr, &page).unwrap();
    }
    r.finish().unwrap()
}
