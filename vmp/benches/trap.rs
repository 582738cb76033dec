//! Cost of one trap-and-emulate on this machine: a kernel-mode `cli` loop trapped through a
//! pre-scan hook and through a real #GP, and the getpid() system call (int 0x80 + iret traps).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridbed_vmp::guest::{build_image, programs};
use gridbed_vmp::layout::KERNEL_TEXT;
use gridbed_vmp::machine::{Config, GuestImage, Machine};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;

/// Guest instructions per measured iteration; the loop `cli; jmp` traps on every other one.
const SLICE: u64 = 2_000;

fn cli_loop(scan: bool) -> Machine {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.cli().unwrap();
    a.jmp(top).unwrap();
    let text = a.assemble(KERNEL_TEXT as u64).unwrap();
    let end = KERNEL_TEXT + text.len() as u32;
    let img = GuestImage {
        segments: vec![(KERNEL_TEXT, text)],
        kernel_text: if scan { (KERNEL_TEXT, end) } else { (0, 0) },
        user_text: vec![],
        entry: KERNEL_TEXT,
    };
    Machine::new(Config::Vmp, Preset::THIS_MACHINE.cpu, &img).unwrap()
}

fn traps_per_slice(m: &mut Machine) -> u64 {
    let before = m.monitor().stats.total();
    m.run(Some(SLICE)).unwrap();
    m.monitor().stats.total() - before
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("trap");
    g.sample_size(20);
    g.measurement_time(std::time::Duration::from_secs(3));
    for (name, scan) in [("cli_via_hook", true), ("cli_via_gp_fault", false)] {
        let mut m = cli_loop(scan);
        let traps = traps_per_slice(&mut m);
        g.throughput(Throughput::Elements(traps));
        g.bench_function(name, |b| b.iter(|| m.run(Some(SLICE)).unwrap()));
    }
    // getpid(): each call is an `int 0x80` delivered through the virtual IDT and an emulated iret.
    let img = build_image(&[programs::getpid_loop(0, u32::MAX).unwrap()], 0).unwrap();
    for config in [Config::Native, Config::Vmp] {
        let mut m = Machine::new(config, Preset::THIS_MACHINE.cpu, &img).unwrap();
        m.run(Some(10_000)).unwrap();
        let d0 = m.monitor().stats.deliveries;
        m.run(Some(SLICE * 10)).unwrap();
        let calls = m.monitor().stats.deliveries - d0;
        g.throughput(Throughput::Elements(calls));
        g.bench_function(format!("getpid_{config:?}").to_lowercase(), |b| {
            b.iter(|| m.run(Some(SLICE * 10)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
