//! `vmp ... --checkpoint-at N --image DIR`, `vmp restore DIR` and `vmp image DIR`: the two halves
//! of a checkpointed run print exactly what the uninterrupted run prints and exit the same way;
//! a bad image is refused with one line and a non-zero exit before anything runs.

use std::path::Path;
use std::process::{Command, Output};

fn vmp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmp"))
        .args(args)
        .output()
        .expect("vmp runs")
}

fn checkpointed(guest: &[&str], at: u64, dir: &Path, extra: &[&str]) -> (Vec<u8>, Output) {
    let at = at.to_string();
    let mut args = guest.to_vec();
    args.extend(["--checkpoint-at", &at, "--image", dir.to_str().unwrap()]);
    args.extend(extra);
    let first = vmp(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = vmp(&["restore", dir.to_str().unwrap()]);
    let mut both = first.stdout;
    both.extend_from_slice(&second.stdout);
    (both, second)
}

#[test]
fn checkpointed_run_prints_and_exits_like_the_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let guests: [&[&str]; 3] = [
        &["builtin", "fib", "--n", "14"],
        &["builtin", "chatter", "--n", "6", "--timer-hz", "20000"],
        &["builtin", "getpid", "--n", "200", "--config", "native"],
    ];
    for (g, guest) in guests.iter().enumerate() {
        let whole = vmp(guest);
        assert!(whole.status.code().is_some());
        for (k, at) in [1u64, 900, 2500].into_iter().enumerate() {
            let dir = tmp.path().join(format!("g{g}-{k}"));
            let extra: &[&str] = if k == 1 { &["--no-compress"] } else { &[] };
            let (out, restored) = checkpointed(guest, at, &dir, extra);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&whole.stdout),
                "{guest:?} at {at}"
            );
            assert_eq!(restored.status.code(), whole.status.code(), "{guest:?}");
            let shown = vmp(&["image", dir.to_str().unwrap()]);
            assert!(shown.status.success());
            assert!(String::from_utf8_lossy(&shown.stdout).contains("checksums verified"));
        }
    }
    // fib(14) = 377: the exit status is 377 & 0xff, so the comparison above saw a non-zero code.
    assert_eq!(vmp(guests[0]).status.code(), Some(121));
}

/// One line on stderr, non-zero exit, no guest output: nothing ran.
fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("vmp: error: "), "{err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    assert!(out.stdout.is_empty(), "something ran");
}

#[test]
fn bad_images_are_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let guest = ["builtin", "chatter", "--n", "4"];
    checkpointed(&guest, 1500, &good, &[]);
    let bytes = std::fs::read(good.join("image.gbi")).unwrap();
    let with = |name: &str, b: &[u8]| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("image.gbi"), b).unwrap();
        d
    };
    let run = |d: &Path| vmp(&["restore", d.to_str().unwrap()]);
    for cut in [0, 7, 15, 40, bytes.len() / 2, bytes.len() - 1] {
        let d = with(&format!("cut{cut}"), &bytes[..cut]);
        refused(&run(&d), "truncated");
    }
    let len = bytes.len();
    for at in [20, len / 3, len - 20, len - 3] {
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        let d = with(&format!("flip{at}"), &b);
        refused(&run(&d), "corrupted");
    }
    let mut b = bytes.clone();
    b[8] = 9;
    refused(&run(&with("version", &b)), "version 9 is not supported");
    let mut b = bytes.clone();
    b[0] = b'X';
    refused(&run(&with("magic", &b)), "bad magic");
    let mut b = bytes.clone();
    b.push(0);
    refused(&run(&with("trailing", &b)), "after the end record");
    refused(&run(&tmp.path().join("missing")), "cannot open");
    let out = vmp(&["restore", good.to_str().unwrap(), "--mem-limit-mib", "0"]);
    refused(&out, "no room");
    // `vmp image` checks the same way.
    refused(
        &vmp(&[
            "image",
            with("cut-image", &bytes[..len / 2]).to_str().unwrap(),
        ]),
        "truncated",
    );
}

#[test]
fn an_image_that_cannot_be_written_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let out = vmp(&[
        "builtin",
        "getpid",
        "--n",
        "50",
        "--checkpoint-at",
        "100",
        "--image",
        blocker.join("img").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("vmp: error: i/o"), "{err}");
}

/// Real mode: a guest moves between two `vmp` processes over loopback TCP; the two halves print
/// what the uninterrupted run prints and the receiver exits with the guest's status. A receiver
/// that is not there leaves the guest running at the source.
#[test]
fn guest_migrates_between_two_processes_over_loopback() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let guest = ["builtin", "fib", "--n", "14"];
    let whole = vmp(&guest);
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
    let mut args = guest.to_vec();
    args.extend(["--migrate-at", "3000", "--migrate-to", &addr]);
    let src = vmp(&args);
    assert!(
        src.status.success(),
        "{}",
        String::from_utf8_lossy(&src.stderr)
    );
    assert!(String::from_utf8_lossy(&src.stderr).contains("migrated to"));
    let dst = rx.wait_with_output().unwrap();
    let mut both = src.stdout.clone();
    both.extend_from_slice(&dst.stdout);
    assert_eq!(
        String::from_utf8_lossy(&both),
        String::from_utf8_lossy(&whole.stdout)
    );
    assert_eq!(dst.status.code(), whole.status.code());
    // Nobody listening: the source keeps the guest and finishes it itself.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let mut args = guest.to_vec();
    args.extend(["--migrate-at", "3000", "--migrate-to", &dead]);
    let alone = vmp(&args);
    assert_eq!(alone.stdout, whole.stdout);
    assert_eq!(alone.status.code(), whole.status.code());
}
