//! Downtime of migrating a running 256 MiB guest over loopback TCP: pre-copy side by side with
//! stop-and-copy, same guest, same run. The guest (`programs::dirty`) fills 244 MiB, then stores
//! to one page of a working set after another with a busy loop in between: its dirtying rate is
//! stated per arm (stores per second at full speed, measured here without migration).
//!
//! Source and destination are two threads of this process on a real loopback connection, so
//! one clock times the freeze (source) and the moment the destination holds the committed guest.
//! Each migrated guest is then run to its end and must print what the unmigrated run printed.
//!
//! `cargo bench -p gridbed-vmp --bench precopy` (GRIDBED_PRECOPY_REPS=N, default 3 per arm).
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time and uses OS threads

use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use gridbed_vmp::checkpoint::precopy::{self, PrecopyOptions, SourceEnd};
use gridbed_vmp::checkpoint::{tcp, RestoreLimits, WriteOptions};

/// Both strategies send raw pages (the guest's pages are mostly zero bytes and would shrink to
/// almost nothing under lz4, which is not what a 256 MiB guest's memory looks like).
const RAW: WriteOptions = WriteOptions { compress: false };
use gridbed_vmp::guest::programs;
use gridbed_vmp::layout::PAGE;
use gridbed_vmp::machine::{reserve_restore_ram, Exit, Machine};
use gridbed_vmp::run::{boot_programs, RunOptions};
use gridbed_vmp::time::Preset;
use gridbed_vmp::Config;

const FILL_PAGES: u32 = 244 * 256;
const HOT_PAGES: u32 = 8192;
/// Instructions before the migration starts (past the fill, into the store phase).
const START_AT: u64 = 2_000_000;

#[derive(Clone, Copy)]
struct Arm {
    spin: u32,
    writes: u32,
}

fn boot(arm: Arm) -> Machine {
    let p = programs::dirty(0, FILL_PAGES, HOT_PAGES, arm.writes, arm.spin).unwrap();
    let mut ro = RunOptions::new(Config::Vmp, Preset::PC_2005.cpu);
    ro.budget = u64::MAX;
    boot_programs(&[p], ro).unwrap()
}

fn to_end(m: &mut Machine) -> (Vec<u8>, u32) {
    match m.run(None).unwrap() {
        Exit::PowerOff(code) => (m.console().to_vec(), code),
        e => panic!("guest ended with {e:?}"),
    }
}

/// Stores per second of the guest at full speed (no tracking, no migration).
fn store_rate(arm: Arm) -> f64 {
    let mut m = boot(arm);
    m.run(Some(START_AT)).unwrap();
    let n = 20_000_000;
    let t = Instant::now();
    m.run(Some(n)).unwrap();
    let per_store = (2 * arm.spin + 12) as f64;
    n as f64 / per_store / t.elapsed().as_secs_f64()
}

struct Outcome {
    downtime_ms: f64,
    total_ms: f64,
    bytes: u64,
    rounds: usize,
    resent: u64,
    last_round: u32,
}

/// One migration; `precopy` None is stop-and-copy.
fn migrate(arm: Arm, precopy: Option<PrecopyOptions>, want: &(Vec<u8>, u32)) -> Outcome {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    let dst = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let (m, _, rounds) =
            precopy::receive_any(s, RestoreLimits::default(), Duration::from_secs(60)).unwrap();
        (Instant::now(), m, rounds)
    });
    let mut m = boot(arm);
    assert!(matches!(m.run(Some(START_AT)).unwrap(), Exit::SliceEnd));
    let s = TcpStream::connect(at).unwrap();
    let start = Instant::now();
    let (frozen, bytes, rounds, resent, last_round) = match precopy {
        Some(po) => {
            let (end, rep) = precopy::send_guest(s, &mut m, po).unwrap();
            assert!(matches!(end, SourceEnd::Migrated), "{end:?}");
            let frozen = start + Duration::from_secs_f64(rep.live_s);
            let last = *rep.round_pages.last().unwrap();
            (
                frozen,
                rep.bytes,
                rep.round_pages.len(),
                rep.pages_resent,
                last,
            )
        }
        None => {
            let pages = m.nonzero_pages().count() as u32;
            let delivered = m.console().len() as u64;
            let mut counted = Counting(s, 0);
            assert!(tcp::send_guest_on(&mut counted, &m, delivered, RAW).unwrap());
            (start, counted.1, 1, 0, pages)
        }
    };
    drop(m);
    let (resumed, mut restored, _) = dst.join().unwrap();
    let out = Outcome {
        downtime_ms: (resumed - frozen).as_secs_f64() * 1e3,
        total_ms: (resumed - start).as_secs_f64() * 1e3,
        bytes,
        rounds,
        resent,
        last_round,
    };
    assert_eq!(
        &to_end(&mut restored),
        want,
        "migrated guest ended differently"
    );
    out
}

/// A connection that counts what is written through it.
struct Counting(TcpStream, u64);

impl std::io::Write for Counting {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(b)?;
        self.1 += n as u64;
        Ok(n)
    }
    fn write_vectored(&mut self, b: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = self.0.write_vectored(b)?;
        self.1 += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl std::io::Read for Counting {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let reps: usize = std::env::var("GRIDBED_PRECOPY_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    reserve_restore_ram(1);
    let po = PrecopyOptions::default();
    println!(
        "guest: {} MiB filled, working set {} pages; pre-copy: stop at <= {} pages, <= {} rounds, {} instructions per 512 KiB batch; {} reps, median",
        FILL_PAGES / 256,
        HOT_PAGES,
        po.stop_pages,
        po.max_rounds,
        po.slice,
        reps
    );
    println!(
        "{:>6} {:>12} {:>9} | {:>10} {:>10} {:>11} {:>6} {:>8} {:>10}",
        "spin",
        "stores/s",
        "MiB/s",
        "strategy",
        "downtime",
        "total",
        "rounds",
        "resent",
        "last round"
    );
    for arm in [
        Arm {
            spin: 5000,
            writes: 12_000,
        },
        Arm {
            spin: 500,
            writes: 80_000,
        },
    ] {
        let rate = store_rate(arm);
        let want = to_end(&mut boot(arm));
        for (name, strat) in [("stop-copy", None), ("pre-copy", Some(po))] {
            let runs: Vec<Outcome> = (0..reps).map(|_| migrate(arm, strat, &want)).collect();
            let last = &runs[runs.len() - 1];
            println!(
                "{:>6} {:>12.0} {:>9.1} | {:>10} {:>7.2} ms {:>8.1} ms {:>6} {:>8} {:>10}   ({} bytes)",
                arm.spin,
                rate,
                rate * PAGE as f64 / (1 << 20) as f64,
                name,
                median(runs.iter().map(|o| o.downtime_ms).collect()),
                median(runs.iter().map(|o| o.total_ms).collect()),
                last.rounds,
                last.resent,
                last.last_round,
                last.bytes
            );
        }
    }
}
