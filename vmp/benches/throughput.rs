//! Raw guest instructions per second: bare unicorn, bare unicorn with the cheapest possible block
//! hook (the floor of any per-block accounting), and the same loop under the monitor (native and
//! vmp configurations, whose hooks must cost little when nothing traps). Two loop bodies: 5
//! instructions per translation block (the worst case for per-block costs) and 26.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridbed_vmp::layout::{KERNEL_TEXT, RAM_BASE, RAM_TOP};
use gridbed_vmp::machine::{Config, GuestImage, Machine};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;
use unicorn_engine::{Arch, HookType, Mode, Prot, Unicorn};
use unicorn_engine_sys as sys;

const ITERS: u32 = 100_000;

/// Instructions per loop iteration (= per block) with `unroll` copies of the 3-instruction body.
fn per_iter(unroll: usize) -> u64 {
    3 * unroll as u64 + 2
}

/// An ordinary compute loop: no sensitive instruction inside.
fn code(forever: bool, unroll: usize) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut top = a.create_label();
    let mut end = a.create_label();
    a.mov(edx, ITERS).unwrap();
    a.set_label(&mut top).unwrap();
    for _ in 0..unroll {
        a.add(eax, ecx).unwrap();
        a.xor(ebx, eax).unwrap();
        a.lea(ecx, ptr(ecx + ebx * 2 + 1)).unwrap();
    }
    a.dec(edx).unwrap();
    a.jnz(top).unwrap();
    if forever {
        a.jmp(top).unwrap();
    }
    a.set_label(&mut end).unwrap();
    a.nop().unwrap();
    a.assemble(KERNEL_TEXT as u64).unwrap()
}

extern "C" fn count_block(
    _uc: *mut sys::uc_engine,
    _addr: u64,
    _size: u32,
    ud: *mut std::ffi::c_void,
) {
    // SAFETY: `ud` is the benchmark's live `u64` counter; nothing else touches it meanwhile.
    unsafe { *ud.cast::<u64>() += 1 };
}

fn bench_loop(c: &mut Criterion, group: &str, unroll: usize) {
    let mut g = c.benchmark_group(group);
    g.sample_size(20);
    g.measurement_time(std::time::Duration::from_secs(3));
    let n = ITERS as u64 * per_iter(unroll);
    g.throughput(Throughput::Elements(n));
    let text = code(false, unroll);
    let mut uc = Unicorn::new(Arch::X86, Mode::MODE_32).unwrap();
    uc.mem_map(RAM_BASE as u64, (RAM_TOP - RAM_BASE) as u64, Prot::ALL)
        .unwrap();
    uc.mem_write(KERNEL_TEXT as u64, &text).unwrap();
    let stop = KERNEL_TEXT as u64 + text.len() as u64 - 1;
    g.bench_function("bare_unicorn", |b| {
        b.iter(|| uc.emu_start(KERNEL_TEXT as u64, stop, 0, 0).unwrap())
    });
    // The same engine with one block hook whose callback only adds to a counter (called
    // directly from the generated code, as the monitor's is).
    let mut counted = Box::new(0u64);
    let mut id: sys::uc_hook = 0;
    let cb: extern "C" fn(*mut sys::uc_engine, u64, u32, *mut std::ffi::c_void) = count_block;
    // SAFETY: `cb` matches uc_cb_hookcode_t; `counted` outlives the engine, dropped below first.
    let err = unsafe {
        sys::uc_hook_add(
            uc.get_handle(),
            &raw mut id,
            HookType::BLOCK.0 as i32,
            cb as *mut std::ffi::c_void,
            (&raw mut *counted).cast(),
            1,
            0,
        )
    };
    assert_eq!(err, sys::uc_error::OK);
    uc.ctl_remove_cache(KERNEL_TEXT as u64, stop + 1).unwrap();
    g.bench_function("bare_unicorn_counting_block_hook", |b| {
        b.iter(|| uc.emu_start(KERNEL_TEXT as u64, stop, 0, 0).unwrap())
    });
    drop(uc);
    let text = code(true, unroll);
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
            b.iter(|| m.run(Some(n)).unwrap())
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    bench_loop(c, "guest_instructions", 1);
    bench_loop(c, "guest_instructions_26_per_block", 8);
}

criterion_group!(benches, bench);
criterion_main!(benches);
