//! Capture + restore of a guest whose 256 MiB of RAM is all non-zero, side by side with a memcpy
//! of the same bytes; and the image streamed over a loopback TCP socket, side by side with a bare
//! socket copy of as many bytes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark measures wall time and may use OS threads

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridbed_vmp::checkpoint::{read_image, write_image, RestoreLimits, WriteOptions};
use gridbed_vmp::guest::{build_image, programs};
use gridbed_vmp::layout::{PAGE, RAM_BASE, RAM_TOP};
use gridbed_vmp::machine::snapshot::Restorer;
use gridbed_vmp::machine::{reserve_restore_ram, Config, Machine};
use gridbed_vmp::time::Preset;

const RAW: WriteOptions = WriteOptions { compress: false };

/// A booted guest whose every RAM page then gets distinct non-zero bytes.
fn full_machine() -> Machine {
    let image = build_image(&[programs::getpid_loop(0, 10).unwrap()], 100).unwrap();
    let m = Machine::new(Config::Vmp, Preset::PC_2005.cpu, &image).unwrap();
    let state = m.capture_state().unwrap();
    let mut r = Restorer::new(state).unwrap();
    let mut page = vec![0u8; PAGE as usize];
    for (n, addr) in (RAM_BASE..RAM_TOP).step_by(PAGE as usize).enumerate() {
        page.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i as u8) ^ (n as u8) | 1);
        r.page(addr, &page).unwrap();
    }
    r.finish().unwrap()
}

fn local(c: &mut Criterion) {
    let m = full_machine();
    let mut image = Vec::new();
    write_image(&m, &mut image, 0, RAW).unwrap();
    let ram = (RAM_TOP - RAM_BASE) as u64;
    let mut g = c.benchmark_group("checkpoint-256MiB");
    g.sample_size(10).throughput(Throughput::Bytes(ram));
    let src = vec![7u8; ram as usize];
    let mut dst = vec![0u8; ram as usize];
    g.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(&src)));
    let mut buf = Vec::with_capacity(image.len());
    g.bench_function("capture (raw pages, to memory)", |b| {
        b.iter(|| {
            buf.clear();
            write_image(&m, &mut buf, 0, RAW).unwrap()
        })
    });
    // A fresh process's restore: every page of guest RAM is new to the host (a fault and a
    // clear each).
    reserve_restore_ram(0);
    g.bench_function("restore (from memory, fresh RAM)", |b| {
        b.iter(|| read_image(&image[..], RestoreLimits::default()).unwrap())
    });
    // A destination that prepared its memory before the migration (`vmp receive` does).
    reserve_restore_ram(1);
    g.bench_function("restore (from memory, prepared RAM)", |b| {
        b.iter(|| read_image(&image[..], RestoreLimits::default()).unwrap())
    });
    // The §7 target: both halves back to back.
    g.bench_function("capture + restore (prepared RAM)", |b| {
        b.iter(|| {
            buf.clear();
            write_image(&m, &mut buf, 0, RAW).unwrap();
            read_image(&buf[..], RestoreLimits::default()).unwrap()
        })
    });
    reserve_restore_ram(0);
    g.bench_function("capture + restore (fresh RAM)", |b| {
        b.iter(|| {
            buf.clear();
            write_image(&m, &mut buf, 0, RAW).unwrap();
            read_image(&buf[..], RestoreLimits::default()).unwrap()
        })
    });
    g.finish();
}

/// Sends `send(stream)`'s bytes to a reader thread running `recv` on loopback.
fn over_loopback(send: impl FnOnce(&mut TcpStream), recv: impl FnOnce(TcpStream) + Send + 'static) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    let t = thread::spawn(move || recv(l.accept().unwrap().0));
    let mut s = TcpStream::connect(at).unwrap();
    send(&mut s);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    t.join().unwrap();
}

fn transfer(c: &mut Criterion) {
    let m = full_machine();
    let mut image = Vec::new();
    write_image(&m, &mut image, 0, RAW).unwrap();
    let n = image.len();
    let mut g = c.benchmark_group("transfer-loopback");
    g.sample_size(10).throughput(Throughput::Bytes(n as u64));
    let bytes = std::sync::Arc::new(vec![5u8; n]);
    g.bench_function("bare socket copy", |b| {
        b.iter(|| {
            let bytes = bytes.clone();
            over_loopback(
                move |s| s.write_all(&bytes).unwrap(),
                |mut r| {
                    let mut sink = vec![0u8; 1 << 20];
                    while r.read(&mut sink).unwrap() > 0 {}
                },
            )
        })
    });
    // The receiver writes into guest RAM, so the same bytes copied into a buffer of that size
    // (reused, so already backed) are the closer baseline.
    let ram_sized = std::sync::Arc::new(std::sync::Mutex::new(vec![0u8; n]));
    g.bench_function("bare socket copy into a RAM-sized buffer", |b| {
        b.iter(|| {
            let bytes = bytes.clone();
            let into = ram_sized.clone();
            over_loopback(
                move |s| s.write_all(&bytes).unwrap(),
                move |mut r| {
                    let mut into = into.lock().unwrap();
                    r.read_exact(&mut into).unwrap();
                },
            )
        })
    });
    reserve_restore_ram(1);
    g.bench_function("image: capture -> socket -> restore", |b| {
        b.iter(|| {
            over_loopback(
                // As `tcp::send_guest` does: the writer batches pages into vectored writes.
                |s| {
                    let mut w = std::io::BufWriter::with_capacity(64 << 10, s);
                    write_image(&m, &mut w, 0, RAW).unwrap();
                    w.flush().unwrap();
                },
                |r| {
                    let r = std::io::BufReader::with_capacity(1 << 20, r);
                    read_image(r, RestoreLimits::default()).unwrap();
                },
            )
        })
    });
    g.finish();
}

criterion_group!(benches, local, transfer);
criterion_main!(benches);
