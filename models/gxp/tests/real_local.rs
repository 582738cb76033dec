//! Real mode with the local launcher (plain processes as test hosts): a daemon killed mid-command
//! gives partial results with per-host status and nothing hangs; bad input gives a one-line error
//! and a non-zero exit.

mod support;

use std::time::{Duration, Instant};

use gridbed_gxp::controller::ExecOptions;
use gridbed_gxp::proto::Status;
use gridbed_gxp::real::{start_root, Program};
use support::gxp;

#[test]
fn daemon_killed_mid_command_is_reported_lost_and_the_rest_complete() {
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("GXP_LOCAL_ROOT", home.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ctl =
            start_root(Program::load(std::path::Path::new(env!("CARGO_BIN_EXE_gxp"))).unwrap());
        ctl.rules.add_line("use local .* n[0-9]").unwrap();
        let ex = ctl
            .explore(&["n1".into(), "n2".into(), "n3".into()])
            .await
            .unwrap();
        assert_eq!(ex.reached.len(), 3, "{ex:?}");
        ctl.selection.by_regex(&ctl.table, "n.").unwrap();
        let pids = ctl
            .exec("echo $PPID", ExecOptions::default())
            .await
            .unwrap();
        let n2 = pids.results.iter().find(|r| r.name == "n2").unwrap();
        let pid = String::from_utf8_lossy(&n2.stdout).trim().to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = tokio::process::Command::new("kill")
                .args(["-9", &pid])
                .status()
                .await;
        });
        let t0 = Instant::now();
        let rep = ctl
            .exec("sleep 2; echo done", ExecOptions::default())
            .await
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10), "did not hang");
        for r in &rep.results {
            if r.name == "n2" {
                assert_eq!(r.status, Status::Lost, "{rep:?}");
            } else {
                assert_eq!(
                    (r.status.clone(), r.stdout.as_slice()),
                    (Status::Code(0), &b"done\n"[..]),
                    "{}",
                    r.name
                );
            }
        }
        assert!(
            rep.summary()
                .contains("3 hosts: 2 ok, 1 failed (n2: host lost)"),
            "{}",
            rep.summary()
        );
        assert_eq!(ctl.table.alive_count(), 3, "root + n1 + n3");
        ctl.quit();
    });
}

#[test]
fn bad_input_gives_one_line_errors_and_nonzero_exit() {
    let cases = [
        ("e {{ x", "never closed"),
        ("explore n[3-1]", "bad range"),
        ("use telnet a b", "unknown login method"),
        ("frobnicate", "unknown command"),
    ];
    for (line, msg) in cases {
        let out = gxp(&[line.to_string()], &[], Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(
            err.contains(msg) && err.trim().lines().count() == 1,
            "{line}: {err}"
        );
    }
}
