//! The real task farm through local-launcher hosts: a daemon killed mid-task has its task retried
//! on another host and the run completes; a controller killed mid-run leaves a journal from which
//! the next run resumes, running only what had not finished, and leaves no daemon behind.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use gridbed_gxp::front::controller::ExecOptions;
use gridbed_gxp::front::farm::{FarmJournal, FarmOptions};
use gridbed_gxp_driver::{start_root, Program};
use support::run_gxp;

#[test]
fn task_of_a_killed_daemon_is_retried_on_another_host() {
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("GXP_LOCAL_ROOT", home.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ctl = start_root(Program::load(Path::new(env!("CARGO_BIN_EXE_gxp"))).unwrap());
        ctl.rules.add_line("use local .* n[0-9]").unwrap();
        let ex = ctl
            .explore(&["n1".into(), "n2".into(), "n3".into()])
            .await
            .unwrap();
        assert_eq!(ex.reached.len(), 3, "{ex:?}");
        ctl.selection.by_regex(&ctl.table, "n.").unwrap();
        // The daemon of n2 is the parent of the shell running a command there.
        let n2 = ctl.table.by_target("n2").unwrap();
        let pid = ctl
            .exec_on("echo $PPID", &[n2], ExecOptions::default())
            .await
            .unwrap();
        let pid = String::from_utf8_lossy(&pid.results[0].stdout)
            .trim()
            .to_string();
        assert!(pid.parse::<u32>().is_ok(), "{pid:?}");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let _ = tokio::process::Command::new("kill")
                .args(["-9", &pid])
                .status()
                .await;
        });
        let tasks: Vec<String> = (0..6)
            .map(|_| "sleep 1; echo task $GXP_EXEC_IDX on $GXP_HOSTNAME".to_string())
            .collect();
        let mut journal = FarmJournal::default();
        let t0 = Instant::now();
        let rep = ctl
            .farm(&tasks, &mut journal, FarmOptions::default())
            .await
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(30), "did not hang");
        assert_eq!(journal.done.len(), 6, "{journal:?}");
        assert!(rep.retried >= 1 && rep.abandoned == 0, "{rep:?}");
        for r in journal.done.values() {
            assert_eq!(r.code, Some(0), "{r:?}");
            assert_ne!(r.host, "n2", "n2 died before finishing anything: {r:?}");
            assert_eq!(r.stdout, format!("task {} on {}\n", r.idx, r.host));
        }
        assert!(
            journal.done.values().any(|r| r.attempts == 2),
            "the task n2 had ran a second time elsewhere: {journal:?}"
        );
        assert_eq!(ctl.table.alive_count(), 3, "root + n1 + n3");
        ctl.quit();
    });
}

/// Processes whose command line mentions `dir` (the fake hosts' daemons live under it).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            found.push(cmd);
        }
    }
    found
}

#[test]
fn interrupted_farm_resumes_from_its_journal_without_rerunning_finished_tasks() {
    let home = tempfile::tempdir().unwrap();
    let d = home.path().display().to_string();
    let tasks = (0..8)
        .map(|_| "sleep 0.4; echo done $GXP_EXEC_IDX")
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(home.path().join("tasks"), tasks).unwrap();
    let journal = home.path().join("journal");
    let env = [
        ("GXP_LOCAL_ROOT", format!("{d}/hosts")),
        ("GXP_NAME", "root".into()),
    ];
    let lines: Vec<String> = vec![
        "use local .* n[0-9]".into(),
        "explore n1 n2".into(),
        "sel re n.".into(),
        format!("farm {d}/tasks {d}/journal"),
    ];
    // First run: the controller is SIGKILLed once three tasks are in the journal.
    let journal_lines = || {
        std::fs::read_to_string(&journal)
            .map(|s| s.matches('\n').count())
            .unwrap_or(0)
    };
    let (first, _) = run_gxp(
        &lines,
        &env,
        Duration::from_secs(60),
        Some(&|| journal_lines() >= 3),
    );
    assert_eq!(first.status.code(), None, "killed by the signal");
    let kept = FarmJournal::from_lines(&std::fs::read_to_string(&journal).unwrap()).unwrap();
    let before: BTreeSet<usize> = kept.done.keys().copied().collect();
    assert!(
        (3..8).contains(&before.len()),
        "interrupted mid-run: {before:?}"
    );
    // The daemons saw their parent go and stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_under(home.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "daemons left behind: {:?}",
            processes_under(home.path())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Second run: only the rest runs.
    let (second, _) = run_gxp(&lines, &env, Duration::from_secs(60), None);
    let s = String::from_utf8_lossy(&second.stdout);
    assert!(
        s.contains(&format!(
            "farm: 8 tasks, {} run now, {} from journal",
            8 - before.len(),
            before.len()
        )),
        "{s}"
    );
    assert_eq!(second.status.code(), Some(0), "{s}");
    let text = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(text.lines().count(), 8, "each task recorded once: {text}");
    let all = FarmJournal::from_lines(&text).unwrap();
    for (i, r) in &all.done {
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (Some(0), &*format!("done {i}\n"))
        );
        if before.contains(i) {
            assert_eq!(r, &kept.done[i], "a finished task was not run again");
        }
    }
}
