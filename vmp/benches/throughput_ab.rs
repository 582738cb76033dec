//! Side-by-side guest instruction rates on a shared machine: the four configurations of the
//! `throughput` bench run in interleaved rounds, and each keeps its best round, so a load change
//! on the machine hits all of them alike. Prints one table (`cargo bench --bench throughput_ab`).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark measures wall time and may use OS threads

use std::time::Instant;

use gridbed_vmp::layout::{KERNEL_TEXT, RAM_BASE, RAM_TOP};
use gridbed_vmp::machine::{Config, GuestImage, Machine};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;
use unicorn_engine::{Arch, HookType, Mode, Prot, Unicorn};
use unicorn_engine_sys as sys;

const ITERS: u32 = 100_000;
const ROUNDS: usize = 15;
const RUNS_PER_ROUND: usize = 10;

fn code(forever: bool, unroll: usize) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut top = a.create_label();
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
    a.nop().unwrap();
    a.assemble(KERNEL_TEXT as u64).unwrap()
}

extern "C" fn count_block(_uc: *mut sys::uc_engine, _a: u64, _s: u32, ud: *mut std::ffi::c_void) {
    // SAFETY: `ud` is a live `u64` owned by `main` for the engine's whole life.
    unsafe { *ud.cast::<u64>() += 1 };
}

fn bare(text: &[u8], counter: Option<*mut u64>) -> Unicorn<'static, ()> {
    let mut uc = Unicorn::new(Arch::X86, Mode::MODE_32).unwrap();
    uc.mem_map(RAM_BASE as u64, (RAM_TOP - RAM_BASE) as u64, Prot::ALL)
        .unwrap();
    uc.mem_write(KERNEL_TEXT as u64, text).unwrap();
    if let Some(c) = counter {
        let mut id: sys::uc_hook = 0;
        let cb: extern "C" fn(*mut sys::uc_engine, u64, u32, *mut std::ffi::c_void) = count_block;
        // SAFETY: `cb` matches uc_cb_hookcode_t; the counter outlives the engine.
        let err = unsafe {
            sys::uc_hook_add(
                uc.get_handle(),
                &raw mut id,
                HookType::BLOCK.0 as i32,
                cb as *mut std::ffi::c_void,
                c.cast(),
                1,
                0,
            )
        };
        assert_eq!(err, sys::uc_error::OK);
    }
    uc
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing
    }
    for unroll in [1usize, 8] {
        let per_iter = 3 * unroll as u64 + 2;
        let n = ITERS as u64 * per_iter;
        let text = code(false, unroll);
        let stop = KERNEL_TEXT as u64 + text.len() as u64 - 1;
        let mut counter = Box::new(0u64);
        let mut plain = bare(&text, None);
        let mut hooked = bare(&text, Some(&raw mut *counter));
        let loop_text = code(true, unroll);
        let img = GuestImage {
            kernel_text: (KERNEL_TEXT, KERNEL_TEXT + loop_text.len() as u32),
            segments: vec![(KERNEL_TEXT, loop_text)],
            user_text: vec![],
            entry: KERNEL_TEXT,
        };
        let cpu = Preset::THIS_MACHINE.cpu;
        let mut native = Machine::new(Config::Native, cpu, &img).unwrap();
        let mut vmp = Machine::new(Config::Vmp, cpu, &img).unwrap();
        let names = [
            "bare_unicorn",
            "counting_block_hook",
            "monitor_native",
            "monitor_vmp",
        ];
        let mut best = [f64::INFINITY; 4];
        for _ in 0..ROUNDS {
            for (k, b) in best.iter_mut().enumerate() {
                let t = Instant::now();
                for _ in 0..RUNS_PER_ROUND {
                    match k {
                        0 => plain.emu_start(KERNEL_TEXT as u64, stop, 0, 0).unwrap(),
                        1 => hooked.emu_start(KERNEL_TEXT as u64, stop, 0, 0).unwrap(),
                        2 => drop(native.run(Some(n)).unwrap()),
                        _ => drop(vmp.run(Some(n)).unwrap()),
                    }
                }
                *b = b.min(t.elapsed().as_secs_f64() / RUNS_PER_ROUND as f64);
            }
        }
        println!("{per_iter} instructions per block (best of {ROUNDS} interleaved rounds):");
        for (name, t) in names.iter().zip(best) {
            println!(
                "  {name:<20} {:>7.0} M instructions/s  {:>5.1}% of bare",
                n as f64 / t / 1e6,
                best[0] / t * 100.0
            );
        }
        std::hint::black_box(*counter);
    }
}
