//! `experiment sweep NAME --seeds A..B [--jobs N]`: one simulated experiment over many seeds,
//! each seed in its own process (`experiment __sweep-one`), `--jobs` at a time; a journal makes
//! an interrupted sweep resume where it stopped; the merged summary gives metric distributions,
//! every seed's trace digest and, for each failing seed, the command that reproduces it.

pub mod journal;
pub mod record;
pub mod seeds;
pub mod summary;

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use wait_timeout::ChildExt;

use crate::registry::Experiment;
use journal::{Header, Journal};
use record::{SeedRecord, RECORD_MARK};
use summary::Summary;

/// Most bytes kept of a seed process's stdout or stderr.
const MAX_OUTPUT: u64 = 16 << 20;

pub struct SweepOptions {
    pub exp: Experiment,
    pub seeds: RangeInclusive<u64>,
    pub jobs: usize,
    pub out: PathBuf,
    /// `key=value` settings, for the reproduce commands.
    pub sets: Vec<String>,
    /// The parameter values they give (None: the defaults).
    pub values: Option<serde_json::Value>,
    pub quick: bool,
    /// Count a seed whose metrics miss their paper value or target as failing.
    pub fail_on_target: bool,
    /// Longest a seed may run before it is killed and counted as failing.
    pub timeout: Duration,
    /// The `experiment` binary that runs each seed.
    pub exe: PathBuf,
}

/// Runs the sweep; returns the summary (its `failed` says whether every seed passed).
pub fn run(o: &SweepOptions) -> anyhow::Result<Summary> {
    anyhow::ensure!(o.jobs >= 1, "--jobs must be at least 1");
    anyhow::ensure!(
        o.exp.modes.contains(&crate::outcome::Mode::Sim),
        "experiment '{}' has no sim mode: a sweep runs simulated seeds",
        o.exp.name
    );
    anyhow::ensure!(
        !(o.quick && o.values.is_some()),
        "--quick runs the experiment's reduced-size variant, which takes no --set or --platform"
    );
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("output directory {} cannot be created", o.out.display()))?;
    let header = Header::new(o.exp.name, o.quick, o.values.clone());
    let (mut journal, done) = Journal::open(&o.out.join("journal.jsonl"), &header)?;
    let todo: VecDeque<u64> = o.seeds.clone().filter(|s| !done.contains_key(s)).collect();
    let total = todo.len();
    if !done.is_empty() {
        eprintln!(
            "sweep: resuming: {} of {} seeds already in the journal",
            o.seeds.clone().filter(|s| done.contains_key(s)).count(),
            o.seeds.clone().count()
        );
    }
    let t0 = Instant::now();
    let queue = Arc::new(Mutex::new(todo));
    let input = Arc::new(serde_json::to_vec(&o.values)?);
    let (tx, rx) = mpsc::channel::<SeedRecord>();
    let mut workers = Vec::new();
    for _ in 0..o.jobs.min(total.max(1)) {
        let (queue, input, tx) = (queue.clone(), input.clone(), tx.clone());
        let (exe, name, quick, timeout) = (o.exe.clone(), o.exp.name, o.quick, o.timeout);
        workers.push(std::thread::spawn(move || loop {
            let Some(seed) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                return;
            };
            let rec = run_seed(&exe, name, seed, quick, &input, timeout);
            if tx.send(rec).is_err() {
                return;
            }
        }));
    }
    drop(tx);
    let bar = progress(total);
    let mut records: BTreeMap<u64, SeedRecord> = done
        .into_iter()
        .filter(|(s, _)| o.seeds.contains(s))
        .collect();
    let mut failures = 0usize;
    let mut journal_err = None;
    for rec in rx {
        if rec.error.is_some() {
            failures += 1;
        }
        if journal_err.is_none() {
            journal_err = journal.append(&rec).err();
        }
        bar.inc(1);
        bar.set_message(format!("{failures} failed"));
        records.insert(rec.seed, rec);
        if journal_err.is_some() {
            // Keep no more work going that could not be recorded.
            if let Ok(mut q) = queue.lock() {
                q.clear();
            }
        }
    }
    for w in workers {
        let _ = w.join();
    }
    bar.finish_and_clear();
    if let Some(e) = journal_err {
        return Err(e);
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let s = summary::merge(
        o.exp.name,
        o.quick,
        o.values.clone(),
        &o.sets,
        o.fail_on_target,
        &records,
    );
    let text = summary::text(&s, if total > 0 { wall_s } else { 0.0 }, o.jobs, &o.out);
    summary::write(&s, &records, &text, &o.out)?;
    print!("{text}");
    Ok(s)
}

fn progress(total: usize) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "[{elapsed_precise}] {bar:30} {pos}/{len} seeds, {msg}, eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Runs one seed in its own process and reads back its record; any failure of the process
/// (non-zero exit, no record, a timeout) is the seed's failure.
fn run_seed(
    exe: &PathBuf,
    name: &str,
    seed: u64,
    quick: bool,
    input: &[u8],
    timeout: Duration,
) -> SeedRecord {
    let t0 = Instant::now();
    let failed = |why: String| SeedRecord::failed(seed, why, t0.elapsed().as_secs_f64());
    let mut cmd = Command::new(exe);
    cmd.arg("__sweep-one").arg(name).arg(seed.to_string());
    if quick {
        cmd.arg("--quick");
    }
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start {}: {e}", exe.display())),
    };
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(MAX_OUTPUT).read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let status = match child.wait_timeout(timeout) {
        Ok(Some(st)) => Ok(st),
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("timed out after {} s", timeout.as_secs_f64()))
        }
        Err(e) => Err(format!("cannot wait for the seed's process: {e}")),
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let last_err = String::from_utf8_lossy(&stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    let status = match status {
        Ok(st) => st,
        Err(why) => return failed(why),
    };
    let text = String::from_utf8_lossy(&stdout);
    let rec = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RECORD_MARK))
        .map(serde_json::from_str::<SeedRecord>);
    match rec {
        Some(Ok(r)) if r.seed == seed => r,
        Some(Ok(r)) => failed(format!("the process answered for seed {} instead", r.seed)),
        Some(Err(e)) => failed(format!("unreadable record: {e}")),
        None if !status.success() => failed(format!(
            "process ended with {status}{}",
            if last_err.is_empty() {
                String::new()
            } else {
                format!(": {last_err}")
            }
        )),
        None => failed("the process printed no record".into()),
    }
}

/// The `__sweep-one` side: reads the parameter values (JSON, `null` for the defaults) on stdin,
/// runs the seed and prints its record.
pub fn run_one_from_stdin(exp: &Experiment, seed: u64, quick: bool) -> anyhow::Result<()> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_OUTPUT + 1)
        .read_to_end(&mut input)
        .context("reading the parameter values")?;
    anyhow::ensure!(
        input.len() as u64 <= MAX_OUTPUT,
        "parameter values over {MAX_OUTPUT} bytes"
    );
    let values: Option<serde_json::Value> =
        serde_json::from_slice(&input).context("parameter values are not JSON")?;
    if let (Some(def), Some(v)) = (&exp.params, &values) {
        (def.check)(v)?;
    }
    let rec = record::run_one(exp, seed, values.as_ref(), quick);
    println!("{RECORD_MARK}{}", serde_json::to_string(&rec)?);
    Ok(())
}
