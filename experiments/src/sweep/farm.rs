//! Seeds spread over GXP hosts: every seed is a task of GXP's task farm (one seed at a time per
//! host; a seed whose host dies runs again on another, up to three attempts), run by the
//! `experiment` binary the hosts can execute. Resumption is the sweep's own journal: only seeds
//! not in it become tasks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use gridbed_gxp::front::controller::Controller;
use gridbed_gxp::front::farm::{FarmJournal, FarmOptions, FarmReport, TaskRecord};

use super::record::{SeedRecord, RECORD_MARK};

/// What every task runs with.
pub struct FarmPaths {
    /// The `experiment` binary on the hosts, as a shell word (quoted path, or `"$GXP_PROGRAM"`).
    pub exe: String,
    /// The parameter values (JSON) the seeds read on stdin, carried in the command itself.
    pub values: String,
}

/// Largest parameter values a farmed seed carries in its command (the kernel limits one
/// argument to 128 KiB; a platform file larger than this cannot be swept over GXP hosts).
pub const MAX_INLINE_VALUES: usize = 64 << 10;

impl FarmPaths {
    pub fn new(exe: String, values: &Option<serde_json::Value>) -> anyhow::Result<FarmPaths> {
        let values = serde_json::to_string(values)?;
        anyhow::ensure!(
            values.len() <= MAX_INLINE_VALUES,
            "the parameter values take {} bytes, more than the {MAX_INLINE_VALUES} a seed farmed to GXP hosts carries",
            values.len()
        );
        Ok(FarmPaths { exe, values })
    }
}

/// Single-quotes `s` for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The shell command of one seed's task; `timeout` (coreutils) bounds its run on the host.
pub fn task_command(
    p: &FarmPaths,
    name: &str,
    seed: u64,
    quick: bool,
    timeout: Duration,
) -> String {
    format!(
        "printf '%s' {} | timeout -k 5 {:.3} {} __sweep-one {} {seed}{}",
        sh_quote(&p.values),
        timeout.as_secs_f64(),
        p.exe,
        sh_quote(name),
        if quick { " --quick" } else { "" },
    )
}

/// The seed's record from its finished task: the record it printed, or why there is none.
pub fn record_of(seed: u64, t: &TaskRecord) -> SeedRecord {
    let printed = t
        .stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RECORD_MARK))
        .map(serde_json::from_str::<SeedRecord>);
    let on = format!("on {} (attempt {})", t.host, t.attempts);
    match (t.code, printed) {
        (Some(0), Some(Ok(r))) if r.seed == seed => r,
        (Some(0), Some(Ok(r))) => {
            SeedRecord::failed(seed, format!("{on}: answered for seed {}", r.seed), 0.0)
        }
        (_, Some(Err(e))) => SeedRecord::failed(seed, format!("{on}: unreadable record: {e}"), 0.0),
        (Some(124), _) => SeedRecord::failed(seed, format!("{on}: timed out"), 0.0),
        (Some(c), _) => SeedRecord::failed(
            seed,
            format!("{on}: process ended with exit status {c}"),
            0.0,
        ),
        (None, _) => SeedRecord::failed(seed, format!("lost: {} ({on})", t.status), 0.0),
    }
}

/// Takes each seed's record as its task ends (`lost`: the seed was lost with its hosts).
pub type OnRecord<'a> = &'a mut (dyn FnMut(SeedRecord, bool) -> Result<(), String> + Send);

/// The farm's tasks for `seeds`, and the callback that turns a finished task into its seed's
/// record for `on_record`.
pub fn tasks_of(
    paths: &FarmPaths,
    name: &str,
    seeds: &[u64],
    quick: bool,
    timeout: Duration,
) -> Vec<String> {
    seeds
        .iter()
        .map(|&s| task_command(paths, name, s, quick, timeout))
        .collect()
}

/// What a farm run left to say: seeds retried after host losses; Err if a record was not kept.
pub fn check_report(rep: &FarmReport) -> anyhow::Result<()> {
    if let Some(e) = &rep.journal_error {
        anyhow::bail!("recording a seed failed: {e}");
    }
    if rep.retried > 0 {
        eprintln!("sweep: {} seeds ran again after a host loss", rep.retried);
    }
    Ok(())
}

/// Farms `seeds` out to the controller's selected hosts.
pub async fn run(
    ctl: &mut Controller,
    paths: &FarmPaths,
    name: &str,
    seeds: &[u64],
    quick: bool,
    timeout: Duration,
    on_record: OnRecord<'_>,
) -> anyhow::Result<()> {
    let tasks = tasks_of(paths, name, seeds, quick, timeout);
    let mut on_done = |t: &TaskRecord| -> Result<(), String> {
        on_record(record_of(seeds[t.idx], t), t.code.is_none())
    };
    let mut journal = FarmJournal::default();
    let rep = ctl
        .farm(
            &tasks,
            &mut journal,
            FarmOptions {
                on_done: Some(&mut on_done),
                ..FarmOptions::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("task farm: {e}"))?;
    check_report(&rep)
}

/// Farms `seeds` out to every host of a launched cluster (the program installed there runs them).
pub fn run_on_cluster(
    cluster: &mut gridbed_cluster_driver::Cluster,
    values: &Option<serde_json::Value>,
    name: &str,
    seeds: &[u64],
    quick: bool,
    timeout: Duration,
    on_record: OnRecord<'_>,
) -> anyhow::Result<()> {
    let paths = FarmPaths::new("\"$GXP_PROGRAM\"".into(), values)?;
    let tasks = tasks_of(&paths, name, seeds, quick, timeout);
    let mut on_done = |t: &TaskRecord| -> Result<(), String> {
        on_record(record_of(seeds[t.idx], t), t.code.is_none())
    };
    let rep = cluster
        .farm(&tasks, &mut on_done)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    check_report(&rep)
}

/// The `gxp` program the local hosts run: `$GRIDBED_GXP`, else `gxp` beside this executable.
pub fn gxp_program(exe: &Path) -> anyhow::Result<PathBuf> {
    let p = match std::env::var_os("GRIDBED_GXP") {
        Some(p) => PathBuf::from(p),
        None => exe.with_file_name("gxp"),
    };
    anyhow::ensure!(
        p.is_file(),
        "no gxp program at {} (build it: cargo build --release -p gridbed-gxp-driver, or set GRIDBED_GXP)",
        p.display()
    );
    Ok(p)
}

/// Starts a GXP root and logs into `n` local hosts (the local launcher: plain processes on this
/// machine, each with its own home under `home`, each installing the program itself).
pub async fn local_hosts(gxp: &Path, home: &Path, n: usize) -> anyhow::Result<Controller> {
    let program = gridbed_gxp_driver::Program::load(gxp)?;
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    // The local launcher reads its root from the environment when the controller is made.
    std::env::set_var("GXP_LOCAL_ROOT", home);
    let mut ctl = gridbed_gxp_driver::start_root(program);
    ctl.rules
        .add_line("use local .* sweep-host-[0-9]+")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let targets: Vec<String> = (1..=n).map(|i| format!("sweep-host-{i}")).collect();
    let ex = ctl
        .explore(&targets)
        .await
        .map_err(|e| anyhow::anyhow!("explore: {e}"))?;
    for (t, why) in &ex.failed {
        eprintln!("sweep: {t}: login failed: {why}");
    }
    anyhow::ensure!(!ex.reached.is_empty(), "no local GXP host could be started");
    ctl.selection
        .by_regex(&ctl.table, "sweep-host-[0-9]+")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ctl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(code: Option<i32>, stdout: &str) -> TaskRecord {
        TaskRecord {
            idx: 0,
            cmd: "c".into(),
            host: "h1".into(),
            code,
            status: match code {
                Some(c) => format!("exit {c}"),
                None => "lost".into(),
            },
            stdout: stdout.into(),
            attempts: 1,
        }
    }

    #[test]
    fn task_outcomes_become_seed_records() {
        let mut ok = SeedRecord::failed(5, String::new(), 0.2);
        ok.error = None;
        let line = format!(
            "noise\n{RECORD_MARK}{}\n",
            serde_json::to_string(&ok).unwrap()
        );
        assert_eq!(record_of(5, &task(Some(0), &line)), ok);
        assert!(record_of(6, &task(Some(0), &line))
            .error
            .unwrap()
            .contains("answered for seed 5"));
        assert!(record_of(5, &task(Some(124), ""))
            .error
            .unwrap()
            .contains("timed out"));
        assert!(record_of(5, &task(Some(2), ""))
            .error
            .unwrap()
            .contains("exit status 2"));
        assert!(record_of(5, &task(None, ""))
            .error
            .unwrap()
            .starts_with("lost"));
        let bad = format!("{RECORD_MARK}{{not json\n");
        assert!(record_of(5, &task(Some(0), &bad))
            .error
            .unwrap()
            .contains("unreadable"));
    }

    #[test]
    fn task_commands_quote_their_paths() {
        let v = Some(serde_json::json!({"a": "it's"}));
        let p = FarmPaths::new(sh_quote("/opt/it's/experiment"), &v).unwrap();
        let c = task_command(&p, "phoenix-scale", 9, true, Duration::from_secs(60));
        assert_eq!(
            c,
            "printf '%s' '{\"a\":\"it'\\''s\"}' | timeout -k 5 60.000 '/opt/it'\\''s/experiment' __sweep-one 'phoenix-scale' 9 --quick"
        );
        // The shell gives the command exactly these values on stdin.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {}", sh_quote(&p.values)))
            .output()
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Option<serde_json::Value>>(&out.stdout).unwrap(),
            v
        );
        let big = Some(serde_json::json!("x".repeat(MAX_INLINE_VALUES)));
        assert!(FarmPaths::new("e".into(), &big).is_err());
    }
}
