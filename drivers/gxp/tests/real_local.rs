//! Real mode with the local launcher (plain processes as test hosts): a daemon killed mid-command
//! gives partial results with per-host status and nothing hangs; bad input gives a one-line error
//! and a non-zero exit.

mod support;

use std::time::{Duration, Instant};

use gridbed_gxp::front::controller::ExecOptions;
use gridbed_gxp::tree::proto::Status;
use gridbed_gxp_driver::{start_root, Program};
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
            .exec("echo start; sleep 2; echo done", ExecOptions::default())
            .await
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10), "did not hang");
        for r in &rep.results {
            if r.name == "n2" {
                // Partial result: what it printed before its daemon died, and its status.
                assert_eq!(
                    (r.status.clone(), r.stdout.as_slice()),
                    (Status::Lost, &b"start\n"[..]),
                    "{rep:?}"
                );
            } else {
                assert_eq!(
                    (r.status.clone(), r.stdout.as_slice()),
                    (Status::Code(0), &b"start\ndone\n"[..]),
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

#[test]
fn interactive_prompt_shows_succeeded_selected_total_and_selections_follow_last_results() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gxp"))
        .env("GXP_LOCAL_ROOT", home.path())
        .env("GXP_NAME", "root")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = "use local .* n[0-9]\nexplore n1 n2\ne test $GXP_HOSTNAME != n2\nsel failed\n\
                  e echo $GXP_HOSTNAME\nsel save bad\nsel all\nsel use bad\nquit\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "interactive gxp hung");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    // The prompt before each line, in order: [succeeded/selected/total].
    let prompts: Vec<&str> = s
        .match_indices("] gxp> ")
        .map(|(i, _)| &s[s[..i].rfind('[').unwrap()..i + 1])
        .collect();
    assert_eq!(
        prompts,
        [
            "[0/1/1]", "[0/1/1]", "[0/3/3]", "[2/3/3]", "[0/1/3]", "[1/1/3]", "[1/1/3]", "[1/3/3]",
            "[1/1/3]"
        ],
        "{s}"
    );
    assert!(
        s.contains("n2: n2\n") && !s.contains("n1: n1\n"),
        "sel failed chose n2 only: {s}"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn cd_sets_the_working_directory_on_every_host_and_a_bad_one_fails_per_host() {
    let home = tempfile::tempdir().unwrap();
    let lines: Vec<String> = [
        "use local .* n[0-9]",
        "explore n1 n2",
        "cd /tmp",
        "eg pwd",
        "cd /nonexistent-gxp-dir",
        "e pwd",
    ]
    .map(String::from)
    .to_vec();
    let out = gxp(
        &lines,
        &[
            ("GXP_LOCAL_ROOT", home.path().display().to_string()),
            ("GXP_NAME", "root".into()),
        ],
        Duration::from_secs(60),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("(3)\n/tmp\n"), "all three hosts in /tmp: {s}");
    assert!(
        s.contains("3 hosts: 0 ok, 3 failed")
            && s.contains("working directory /nonexistent-gxp-dir"),
        "{s}"
    );
    assert_eq!(out.status.code(), Some(1), "{s}");
}
