//! Monitor costs in thread CPU time, which a loaded shared machine disturbs far less than the
//! wall-clock criterion benches: per trap (getpid's int/iret pair, a kernel-mode `cli` loop) and
//! guest instructions per second with no trap at all.
//! `cargo run --release -p gridbed-vmp --example trap_cost [getpid-native|getpid-vmp|cli|loop]`.

use gridbed_vmp::guest::{build_image, programs};
use gridbed_vmp::layout::KERNEL_TEXT;
use gridbed_vmp::machine::{Config, GuestImage, Machine};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;
use unicorn_engine::{Arch, Mode, Prot, Unicorn};

/// Thread CPU seconds (local copy of `gridbed_vmp::run::thread_cpu_s`, so this example also
/// builds against older versions of the crate for before/after comparisons).
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The same compute loop on bare unicorn (no monitor, no hooks): 5 instructions per iteration.
fn bare_unicorn_mips() -> anyhow::Result<f64> {
    const ITERS: u32 = 10_000_000;
    let mut a = CodeAssembler::new(32)?;
    let mut top = a.create_label();
    a.mov(edx, ITERS)?;
    a.set_label(&mut top)?;
    a.add(eax, ecx)?;
    a.xor(ebx, eax)?;
    a.lea(ecx, ptr(ecx + ebx * 2 + 1))?;
    a.dec(edx)?;
    a.jnz(top)?;
    a.nop()?;
    let text = a.assemble(KERNEL_TEXT as u64)?;
    let mut uc = Unicorn::new(Arch::X86, Mode::MODE_32).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    uc.mem_map(KERNEL_TEXT as u64, 0x1000, Prot::ALL)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    uc.mem_write(KERNEL_TEXT as u64, &text)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let stop = KERNEL_TEXT as u64 + text.len() as u64 - 1;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = cpu_now();
        uc.emu_start(KERNEL_TEXT as u64, stop, 0, 0)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        best = best.min(cpu_now() - t0);
    }
    Ok(ITERS as f64 * 5.0 / best * 1e-6)
}

/// Best of 7: CPU seconds per unit of `work`, where one call of `step` does `units()` units.
fn best(m: &mut Machine, slice: u64, units: impl Fn(&Machine) -> u64) -> anyhow::Result<f64> {
    m.run(Some(slice))?; // warm the translation cache
    let mut best = f64::MAX;
    for _ in 0..7 {
        let (u0, t0) = (units(m), cpu_now());
        m.run(Some(slice))?;
        let (u, t) = (units(m) - u0, cpu_now() - t0);
        best = best.min(t / u.max(1) as f64);
    }
    Ok(best)
}

fn kernel_loop(body: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>) -> GuestImage {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    body(&mut a).unwrap();
    a.jmp(top).unwrap();
    let text = a.assemble(KERNEL_TEXT as u64).unwrap();
    let end = KERNEL_TEXT + text.len() as u32;
    GuestImage {
        segments: vec![(KERNEL_TEXT, text)],
        kernel_text: (KERNEL_TEXT, end),
        user_text: vec![],
        entry: KERNEL_TEXT,
    }
}

fn main() -> anyhow::Result<()> {
    let only = std::env::args().nth(1);
    let want = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let cpu = Preset::THIS_MACHINE.cpu;
    let getpid = build_image(&[programs::getpid_loop(0, u32::MAX)?], 0)?;
    for (name, config) in [
        ("getpid-native", Config::Native),
        ("getpid-vmp", Config::Vmp),
    ] {
        if want(name) {
            let mut m = Machine::new(config, cpu, &getpid)?;
            let s = best(&mut m, 2_000_000, |m| m.monitor().stats.deliveries)?;
            println!("{name}: {:.0} ns CPU per getpid()", s * 1e9);
        }
    }
    if want("cli") {
        let mut m = Machine::new(Config::Vmp, cpu, &kernel_loop(|a| a.cli()))?;
        let s = best(&mut m, 2_000_000, |m| m.monitor().stats.total())?;
        println!("cli: {:.0} ns CPU per trap-and-emulate", s * 1e9);
    }
    if want("loop") {
        // An ordinary compute loop: nothing traps, only the monitor's block hook runs.
        let img = kernel_loop(|a| {
            a.add(eax, ecx)?;
            a.xor(ebx, eax)?;
            a.lea(ecx, ptr(ecx + ebx * 2 + 1))
        });
        println!(
            "loop-bare-unicorn: {:.0} M guest instructions per CPU second",
            bare_unicorn_mips()?
        );
        for config in [Config::Native, Config::Vmp] {
            let mut m = Machine::new(config, cpu, &img)?;
            let s = best(&mut m, 50_000_000, |m| m.monitor().retired)?;
            println!(
                "loop-{config:?}: {:.0} M guest instructions per CPU second",
                1e-6 / s
            );
        }
    }
    Ok(())
}
