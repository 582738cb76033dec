//! Pre-copy of a running guest: the stream's rounds restore a machine that ends exactly as the
//! unmigrated run; the rounds really iterate; a truncated or corrupted stream is refused (an
//! error, never a panic or a half-built machine); and between two `vmp` processes the halves
//! print what the uninterrupted run prints, a broken link leaves the guest at the source, and
//! the receiver refuses a bad stream with one line.
#![allow(clippy::disallowed_methods)] // real-mode tests: fake peers on OS threads

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gridbed_vmp::checkpoint::precopy::{read_stream, write_stream, PrecopyOptions};
use gridbed_vmp::checkpoint::RestoreLimits;
use gridbed_vmp::guest::programs;
use gridbed_vmp::layout::{PAGE, RAM_BASE, RAM_TOP};
use gridbed_vmp::machine::{Exit, Machine};
use gridbed_vmp::run::{boot_programs, RunOptions};
use gridbed_vmp::time::Preset;
use gridbed_vmp::Config;

/// 2 MiB filled, a working set of 64 pages, a store every ~22 instructions.
fn guest() -> Machine {
    let p = programs::dirty(0, 512, 64, 40_000, 5).unwrap();
    boot_programs(&[p], RunOptions::new(Config::Vmp, Preset::PC_2005.cpu)).unwrap()
}

fn finish(mut m: Machine) -> (Vec<u8>, u32, u64) {
    match m.run(None).unwrap() {
        Exit::PowerOff(code) => (m.console().to_vec(), code, m.monitor().retired),
        e => panic!("ended with {e:?}"),
    }
}

const OPTS: PrecopyOptions = PrecopyOptions {
    compress: false,
    stop_pages: 4,
    max_rounds: 8,
    slice: 3_000,
};

/// A stream taken after 30 000 instructions, and the source machine after it.
fn stream(opts: PrecopyOptions) -> (Vec<u8>, Machine, Vec<u32>, u64) {
    let mut m = guest();
    assert!(matches!(m.run(Some(30_000)).unwrap(), Exit::SliceEnd));
    let mut bytes = Vec::new();
    let (ended, rep) = write_stream(&mut bytes, &mut m, opts).unwrap();
    assert_eq!(ended, None, "the guest ended during the live rounds");
    assert_eq!(rep.bytes, bytes.len() as u64);
    (bytes, m, rep.round_pages, rep.pages_resent)
}

#[test]
fn precopied_guest_ends_like_the_unmigrated_one() {
    let whole = finish(guest());
    assert!(String::from_utf8_lossy(&whole.0).starts_with("dirty: 40000 writes, sum "));
    for compress in [false, true] {
        let (bytes, source, rounds, resent) = stream(PrecopyOptions { compress, ..OPTS });
        // The rounds iterated: round 0 holds the filled pages, later ones the working set the
        // guest dirtied meanwhile, and pages went more than once.
        assert!(rounds.len() >= 3, "{rounds:?}");
        assert!(rounds[0] >= 512, "{rounds:?}");
        assert!(rounds[1..].iter().all(|n| *n <= 64 + 16), "{rounds:?}");
        assert!(resent > 0);
        let (m, summary, n) = read_stream(&bytes[..], RestoreLimits::default()).unwrap();
        assert_eq!(n as usize, rounds.len());
        // Every RAM page equals the source's at the freeze (the source has not run since).
        for addr in (RAM_BASE..RAM_TOP).step_by(PAGE as usize) {
            assert!(m.page(addr) == source.page(addr), "page {addr:#x} differs");
        }
        assert_eq!(summary.state.machine.retired, source.monitor().retired);
        assert_eq!(finish(m), whole, "restored, compress {compress}");
        // Tracking on the source did not change its own run either.
        assert_eq!(finish(source), whole, "source, compress {compress}");
    }
}

#[test]
fn truncated_or_corrupted_streams_are_refused() {
    let (bytes, ..) = stream(OPTS);
    let len = bytes.len();
    let mut cuts: Vec<usize> = (0..200).chain(len - 100..len).collect();
    cuts.extend((0..200).map(|k| k * len / 200));
    for cut in cuts {
        let r = read_stream(&bytes[..cut], RestoreLimits::default());
        assert!(r.is_err(), "cut at {cut} of {len} accepted");
    }
    let mut at: Vec<usize> = (0..120).chain(len - 60..len).collect();
    at.extend((0..300).map(|k| k * len / 300 + 7).filter(|a| *a < len));
    for a in at {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[a] ^= bit;
            let r = read_stream(&b[..], RestoreLimits::default());
            assert!(r.is_err(), "flip {bit:#x} at {a} of {len} accepted");
        }
    }
    let err = read_stream(&bytes[..], RestoreLimits { max_pages: 100 })
        .err()
        .unwrap();
    assert!(err.to_string().contains("no room"), "{err}");
}

fn vmp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmp"))
        .args(args)
        .output()
        .expect("vmp runs")
}

/// A `vmp receive` on a free loopback port, its address and the rest of its stderr.
fn receiver() -> (std::process::Child, String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader};
    let mut rx = Command::new(env!("CARGO_BIN_EXE_vmp"))
        .args(["receive", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(rx.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    // Keep draining stderr so the receiver never blocks on it.
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
        rest
    });
    (rx, addr, rest)
}

const GUEST: [&str; 12] = [
    "builtin",
    "dirty",
    "--n",
    "60000",
    "--fill-mib",
    "4",
    "--hot-pages",
    "128",
    "--spin",
    "5",
    "--timer-hz",
    "5000",
];

fn precopy_args(to: &str) -> Vec<String> {
    let mut a: Vec<String> = GUEST.iter().map(|s| s.to_string()).collect();
    a.extend(
        [
            "--migrate-at",
            "40000",
            "--migrate-to",
            to,
            "--strategy",
            "precopy",
            "--precopy-slice",
            "3000",
            "--precopy-stop-pages",
            "8",
        ]
        .map(String::from),
    );
    a
}

#[test]
fn precopy_between_two_processes_over_loopback() {
    let whole = vmp(&GUEST);
    assert_eq!(whole.status.code(), Some(0));
    let (rx, addr, _) = receiver();
    let args = precopy_args(&addr);
    let src = vmp(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&src.stderr);
    assert!(src.status.success(), "{err}");
    assert!(err.contains("by pre-copy"), "{err}");
    let dst = rx.wait_with_output().unwrap();
    let mut both = src.stdout.clone();
    both.extend_from_slice(&dst.stdout);
    assert_eq!(
        String::from_utf8_lossy(&both),
        String::from_utf8_lossy(&whole.stdout)
    );
    assert_eq!(dst.status.code(), whole.status.code());
}

/// A fake destination that takes `keep` bytes (all, when None, until the source falls silent)
/// and hangs up without a verdict; returns what it read.
fn fake_destination(keep: Option<usize>) -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let want = keep.map_or(buf.len(), |k| (k - got.len()).min(buf.len()));
            if want == 0 {
                break;
            }
            match s.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    });
    (addr, t)
}

#[test]
fn a_broken_link_or_a_bad_stream_leaves_the_guest_at_the_source() {
    let whole = vmp(&GUEST);
    // The destination hangs up half-way: the source runs the guest to its end itself.
    let (addr, t) = fake_destination(Some(200_000));
    let args = precopy_args(&addr);
    let alone = vmp(&args.iter().map(String::as_str).collect::<Vec<_>>());
    t.join().unwrap();
    assert!(
        String::from_utf8_lossy(&alone.stderr).contains("runs on here"),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
    assert_eq!(alone.stdout, whole.stdout);
    assert_eq!(alone.status.code(), whole.status.code());
    // A whole stream, never acknowledged: kept at the source again.
    let (addr, t) = fake_destination(None);
    let args = precopy_args(&addr);
    let kept = vmp(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stream = t.join().unwrap();
    assert_eq!(kept.stdout, whole.stdout);
    assert_eq!(kept.status.code(), whole.status.code());
    // That stream, corrupted, cut or of another version, is refused by a real receiver with
    // one line and a non-zero exit, and nothing runs there.
    let len = stream.len();
    let mut flipped = stream.clone();
    flipped[len / 2] ^= 0x10;
    let mut version = stream.clone();
    version[8] = 7;
    let cases: [(&[u8], &str); 3] = [
        (&flipped, "corrupted"),
        (&stream[..len - 10], "truncated"),
        (&version, "version 7 is not supported"),
    ];
    for (bytes, needle) in cases {
        let (rx, addr, stderr) = receiver();
        let mut s = TcpStream::connect(&addr).unwrap();
        // The receiver may refuse (and hang up) before it has read everything.
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut verdict = Vec::new();
        let _ = s.read_to_end(&mut verdict);
        let out = rx.wait_with_output().unwrap();
        assert!(!out.status.success(), "{needle}: accepted");
        assert!(out.stdout.is_empty(), "{needle}: something ran");
        assert_ne!(verdict, b"A", "{needle}: acknowledged");
        let err = stderr.join().unwrap();
        assert_eq!(err.lines().count(), 1, "not one line: {err}");
        assert!(err.starts_with("vmp: error: "), "{err}");
        assert!(err.contains(needle), "'{needle}' not in: {err}");
    }
}
