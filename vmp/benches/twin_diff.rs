//! Per 4 KiB page, side by side in one run: a bare memcpy of the page; the write fault + twin
//! (a guest store to a protected page, the monitor's TLB-fill trap, the copy); diff against the
//! twin + apply on another copy (64 changed bytes in 8 runs, and a fully rewritten page).

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridbed_vmp::layout::{KERNEL_TEXT, PAGE};
use gridbed_vmp::machine::{Config, GuestImage, Machine};
use gridbed_vmp::smp::diff::{self, PAGE_BYTES};
use gridbed_vmp::time::Preset;
use iced_x86::code_asm::*;

/// Pages the guest writes per measured iteration.
const PAGES: u32 = 256;
const DATA: u32 = 0x0040_0000;

/// A guest that stores one word into each of `PAGES` pages, forever.
fn writer() -> Machine {
    let mut a = CodeAssembler::new(32).unwrap();
    let (mut top, mut inner) = (a.create_label(), a.create_label());
    a.set_label(&mut top).unwrap();
    a.mov(edi, DATA).unwrap();
    a.mov(ecx, PAGES).unwrap();
    a.set_label(&mut inner).unwrap();
    a.mov(dword_ptr(edi), ecx).unwrap();
    a.add(edi, PAGE).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(inner).unwrap();
    a.jmp(top).unwrap();
    let text = a.assemble(KERNEL_TEXT as u64).unwrap();
    let end = KERNEL_TEXT + text.len() as u32;
    let img = GuestImage {
        segments: vec![(KERNEL_TEXT, text)],
        kernel_text: (KERNEL_TEXT, end),
        user_text: vec![],
        entry: KERNEL_TEXT,
    };
    Machine::new(Config::Vmp, Preset::THIS_MACHINE.cpu, &img).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("page");
    g.sample_size(30);
    g.measurement_time(std::time::Duration::from_secs(3));
    g.throughput(Throughput::Bytes(PAGE_BYTES as u64));

    let src = vec![0x5Au8; PAGE_BYTES];
    let mut dst = vec![0u8; PAGE_BYTES];
    g.bench_function("memcpy", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });

    let mut twin = src.clone();
    let mut cur = src.clone();
    for k in 0..8 {
        cur[k * 500..k * 500 + 8].fill(0xA5);
    }
    let mut other = src.clone();
    g.bench_function("diff+apply, 64 bytes changed", |b| {
        b.iter(|| {
            let d = diff::make(0x1000, black_box(&twin), black_box(&cur));
            diff::apply(&mut other, None, None, &d, None);
        })
    });
    twin.iter_mut().for_each(|b| *b = !*b);
    g.bench_function("diff+apply, whole page changed", |b| {
        b.iter(|| {
            let d = diff::make(0x1000, black_box(&twin), black_box(&cur));
            diff::apply(&mut other, None, None, &d, None);
        })
    });

    // Write fault + twin: one guest pass over PAGES protected pages per iteration, divided by
    // PAGES (the pass's ~4 instructions per page are included).
    let mut m = writer();
    let twins: Arc<Mutex<Vec<Box<[u8]>>>> = Arc::default();
    let t = twins.clone();
    m.start_tracking(Some(Box::new(move |_, bytes| {
        t.lock().unwrap().push(bytes.into())
    })))
    .unwrap();
    g.throughput(Throughput::Bytes(PAGE_BYTES as u64 * PAGES as u64));
    g.bench_function("write fault + twin (x256 pages)", |b| {
        b.iter(|| {
            m.take_dirty().unwrap();
            twins.lock().unwrap().clear();
            m.run(Some(PAGES as u64 * 4 + 2)).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
