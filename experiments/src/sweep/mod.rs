//! `experiment sweep NAME --seeds A..B [--jobs N | --local-hosts N]`: one simulated experiment
//! over many seeds, each seed in its own process (`experiment __sweep-one`), `--jobs` at a time
//! or as tasks of GXP's task farm over GXP hosts (`farm`); a journal makes
//! an interrupted sweep resume where it stopped; the merged summary gives metric distributions,
//! every seed's trace digest and, for each failing seed, the command that reproduces it.

pub mod farm;
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

/// Where the seeds run.
#[derive(Clone, Debug, PartialEq)]
pub enum Spread {
    /// Child processes of this one, this many at a time.
    Processes(usize),
    /// GXP's task farm over this many local GXP hosts (the local launcher), one seed per host
    /// at a time.
    LocalGxp(usize),
    /// GXP's task farm over the hosts of a hosts file (`--hosts`, logins over ssh; the
    /// `experiment` program installs itself on every host).
    Cluster(PathBuf, Box<gridbed_cluster_driver::HostsFile>),
}

impl Spread {
    fn describe(&self) -> String {
        match self {
            Spread::Processes(n) => format!("{n} jobs"),
            Spread::LocalGxp(n) => format!("GXP task farm over {n} local hosts"),
            Spread::Cluster(p, f) => format!(
                "GXP task farm over the {} hosts of {}",
                f.hosts.len(),
                p.display()
            ),
        }
    }
}

pub struct SweepOptions {
    pub exp: Experiment,
    pub seeds: RangeInclusive<u64>,
    pub spread: Spread,
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
    anyhow::ensure!(
        !matches!(o.spread, Spread::Processes(0) | Spread::LocalGxp(0)),
        "--jobs and --local-hosts must be at least 1"
    );
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
    let (journal, done) = Journal::open(&o.out.join("journal.jsonl"), &header)?;
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
    let mut sink = Sink {
        journal,
        records: done
            .into_iter()
            .filter(|(s, _)| o.seeds.contains(s))
            .collect(),
        failures: 0,
        bar: progress(total),
    };
    match o.spread {
        Spread::Processes(jobs) => in_processes(o, jobs, todo, &mut sink)?,
        Spread::LocalGxp(hosts) => on_local_gxp(o, hosts, todo, &mut sink)?,
        Spread::Cluster(_, ref file) => on_cluster(o, file, todo, &mut sink)?,
    }
    sink.bar.finish_and_clear();
    let records = sink.records;
    let wall_s = t0.elapsed().as_secs_f64();
    let mut s = summary::merge(
        o.exp.name,
        o.quick,
        o.values.clone(),
        &o.sets,
        o.fail_on_target,
        &records,
    );
    s.wall_s = if total > 0 { wall_s } else { 0.0 };
    s.ran_seeds = total;
    s.spread = o.spread.describe();
    let text = summary::text(&s, &o.out);
    summary::write(&s, &records, &text, &o.out)?;
    print!("{text}");
    Ok(s)
}

/// Takes finished seeds: journal, progress, records.
struct Sink {
    journal: Journal,
    records: BTreeMap<u64, SeedRecord>,
    failures: usize,
    bar: indicatif::ProgressBar,
}

impl Sink {
    /// Records one seed; `journal: false` for a seed lost with its hosts (it runs again when the
    /// sweep is resumed).
    fn accept(&mut self, rec: SeedRecord, journal: bool) -> anyhow::Result<()> {
        if rec.error.is_some() {
            self.failures += 1;
        }
        let written = if journal {
            self.journal.append(&rec)
        } else {
            Ok(())
        };
        self.bar.inc(1);
        self.bar.set_message(format!("{} failed", self.failures));
        self.records.insert(rec.seed, rec);
        written
    }
}

/// Each seed in a child process of this one, `jobs` at a time.
fn in_processes(
    o: &SweepOptions,
    jobs: usize,
    todo: VecDeque<u64>,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    let workers_n = jobs.min(todo.len().max(1));
    let queue = Arc::new(Mutex::new(todo));
    let input = Arc::new(serde_json::to_vec(&o.values)?);
    let (tx, rx) = mpsc::channel::<SeedRecord>();
    let mut workers = Vec::new();
    for _ in 0..workers_n {
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
    let mut first_err = None;
    for rec in rx {
        if let Err(e) = sink.accept(rec, true) {
            // Start no more work that could not be recorded.
            if let Ok(mut q) = queue.lock() {
                q.clear();
            }
            first_err.get_or_insert(e);
        }
    }
    for w in workers {
        let _ = w.join();
    }
    first_err.map_or(Ok(()), Err)
}

/// The seeds as tasks of GXP's farm over the hosts of a hosts file.
fn on_cluster(
    o: &SweepOptions,
    file: &gridbed_cluster_driver::HostsFile,
    todo: VecDeque<u64>,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    if todo.is_empty() {
        return Ok(());
    }
    let seeds: Vec<u64> = todo.into_iter().collect();
    let mut cluster = crate::cluster::launch(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("sweep: {} hosts up", file.hosts.len());
    let mut on_record = |rec: SeedRecord, lost: bool| -> Result<(), String> {
        sink.accept(rec, !lost).map_err(|e| format!("{e:#}"))
    };
    let result = farm::run_on_cluster(
        &mut cluster,
        &o.values,
        o.exp.name,
        &seeds,
        o.quick,
        o.timeout,
        &mut on_record,
    );
    cluster.stop();
    result
}

/// The seeds as tasks of GXP's farm over `hosts` local GXP hosts.
fn on_local_gxp(
    o: &SweepOptions,
    hosts: usize,
    todo: VecDeque<u64>,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    let gxp = farm::gxp_program(&o.exe)?;
    let paths = farm::FarmPaths::new(farm::sh_quote(&o.exe.display().to_string()), &o.values)?;
    let seeds: Vec<u64> = todo.into_iter().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the GXP controller's runtime")?;
    rt.block_on(async {
        let mut ctl = farm::local_hosts(&gxp, &o.out.join("gxp-hosts"), hosts).await?;
        let mut on_record = |rec: SeedRecord, lost: bool| -> Result<(), String> {
            sink.accept(rec, !lost).map_err(|e| format!("{e:#}"))
        };
        let result = if seeds.is_empty() {
            Ok(())
        } else {
            farm::run(
                &mut ctl,
                &paths,
                o.exp.name,
                &seeds,
                o.quick,
                o.timeout,
                &mut on_record,
            )
            .await
        };
        ctl.quit();
        // Let the daemons read their quit order and exit before the runtime goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        result
    })
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
