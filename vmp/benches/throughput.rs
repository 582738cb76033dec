//! Raw guest instructions per second: bare unicorn, and the same loop under the monitor (native
//! and vmp configurations, whose hooks must cost little when nothing traps).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridbed_vmp::layout::{KERNEL_TEXT, RAM_BASE, RAM_TOP};
use gridbed_vmp::machine::{Config, GuestImage, Machine};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;
use unicorn_engine::{Arch, Mode, Prot, Unicorn};

const ITERS: u32 = 100_000;
/// Instructions per loop iteration below.
const PER_ITER: u64 = 5;

/// An ordinary compute loop: no sensitive instruction inside.
fn code(forever: bool) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut top = a.create_label();
    let mut end = a.create_label();
    a.mov(edx, ITERS).unwrap();
    a.set_label(&mut top).unwrap();
    a.add(eax, ecx).unwrap();
    a.xor(ebx, eax).unwrap();
    a.lea(ecx, ptr(ecx + ebx * 2 + 1)).unwrap();
    a.dec(edx).unwrap();
    a.jnz(top).unwrap();
    if forever {
        a.jmp(top).unwrap();
    }
    a.set_label(&mut end).unwrap();
    a.nop().unwrap();
    a.assemble(KERNEL_TEXT as u64).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("guest_instructions");
    g.sample_size(20);
    g.measurement_time(std::time::Duration::from_secs(3));
    g.throughput(Throughput::Elements(ITERS as u64 * PER_ITER));
    let text = code(false);
    let mut uc = Unicorn::new(Arch::X86, Mode::MODE_32).unwrap();
    uc.mem_map(RAM_BASE as u64, (RAM_TOP - RAM_BASE) as u64, Prot::ALL)
        .unwrap();
    uc.mem_write(KERNEL_TEXT as u64, &text).unwrap();
    let stop = KERNEL_TEXT as u64 + text.len() as u64 - 1;
    g.bench_function("bare_unicorn", |b| {
        b.iter(|| uc.emu_start(KERNEL_TEXT as u64, stop, 0, 0).unwrap())
    });
    let text = code(true);
    let end = KERNEL_TEXT + text.len() as u32;
    let img = GuestImage {
        segments: vec![(KERNEL_TEXT, text)],
        kernel_text: (KERNEL_TEXT, end),
        user_text: vec![],
        entry: KERNEL_TEXT,
    };
    for config in [Config::Native, Config::Vmp] {
        let mut m = Machine::new(config, Preset::THIS_MACHINE.cpu, &img).unwrap();
        g.bench_function(format!("monitor_{config:?}").to_lowercase(), |b| {
            b.iter(|| m.run(Some(ITERS as u64 * PER_ITER)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
