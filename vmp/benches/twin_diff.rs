//! Per 4 KiB page, side by side in one run: a bare memcpy of the page; the write fault + twin
//! (a guest store to a protected page, the monitor's TLB-fill trap, the copy); diff against the
//! twin + apply on another copy (64 changed bytes in 8 runs, and a fully rewritten page), and the
//! multiprocessor's diff from the written-byte record. Then guest stores to already-written pages
//! with and without the written-byte record (its memory-write hook is called on every store).

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

/// A machine whose kernel text is the code `a` assembled.
fn machine(mut a: CodeAssembler) -> Machine {
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
    machine(a)
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
    let mut written = gridbed_vmp::machine::wtrack::WrittenBytes::default();
    for k in 0..8 {
        written.mark(k * 500, 8);
    }
    g.bench_function("written-byte diff+apply, 64 bytes written", |b| {
        b.iter(|| {
            let d = diff::make_written(0x1000, black_box(&cur), black_box(&written));
            diff::apply(&mut other, None, None, &d, None);
        })
    });
    let mut all = gridbed_vmp::machine::wtrack::WrittenBytes::default();
    all.mark(0, PAGE_BYTES);
    g.bench_function("written-byte diff+apply, whole page written", |b| {
        b.iter(|| {
            let d = diff::make_written(0x1000, black_box(&cur), black_box(&all));
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

    // Guest stores into pages already written this epoch (no fault): the store loop alone, then
    // with the written-byte hook. Per iteration STORES stores (about 3 instructions each).
    let mut g = c.benchmark_group("guest stores");
    g.sample_size(30);
    g.measurement_time(std::time::Duration::from_secs(3));
    g.throughput(Throughput::Elements(STORES));
    for hook in [false, true] {
        let mut m = store_loop();
        m.start_tracking(None).unwrap();
        if hook {
            m.track_written_bytes().unwrap();
        }
        m.run(Some(STORES * 3 + 4)).unwrap();
        let name = if hook {
            "store, written-byte hook on"
        } else {
            "store, write tracking only"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                m.run(Some(STORES * 3)).unwrap();
            })
        });
    }
    g.finish();
}

/// Stores per measured iteration of the store loop.
const STORES: u64 = 4096;

/// A guest storing one word after another over one 4 KiB page, forever.
fn store_loop() -> Machine {
    let mut a = CodeAssembler::new(32).unwrap();
    let (mut top, mut inner) = (a.create_label(), a.create_label());
    a.set_label(&mut top).unwrap();
    a.mov(ecx, 1024u32).unwrap();
    a.set_label(&mut inner).unwrap();
    a.mov(dword_ptr(ecx * 4 + DATA as i32 - 4), ecx).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(inner).unwrap();
    a.jmp(top).unwrap();
    machine(a)
}

criterion_group!(benches, bench);
criterion_main!(benches);
