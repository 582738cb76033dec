//! Task farming: a list of tasks dispatched to free hosts, one at a time per host; outputs and exit
//! codes collected; a task whose host dies is retried on another host; a journal of finished tasks
//! makes an interrupted run resumable (tasks that ended with an exit status are not run again;
//! tasks given up after host losses are).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::front::controller::{ControlError, Controller, KEEP_PER_HOST};
use crate::tree::proto::{Down, Event, ExecSpec, Order, Selection, Status, Stream};

/// One finished task, as kept in the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub idx: usize,
    pub cmd: String,
    pub host: String,
    /// Exit code, or None when the task never ended on a live host after all attempts.
    pub code: Option<i32>,
    pub status: String,
    pub stdout: String,
    pub attempts: u32,
}

/// Finished tasks by index. Real mode appends each record as a JSON line to a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FarmJournal {
    pub done: BTreeMap<usize, TaskRecord>,
}

impl FarmJournal {
    /// Parses JSON lines; a malformed line is an error naming its line number, except an
    /// unterminated last line: the record being written when the run was interrupted, whose task
    /// simply runs again.
    pub fn from_lines(text: &str) -> anyhow::Result<Self> {
        let mut j = FarmJournal::default();
        let lines: Vec<&str> = text.lines().collect();
        let cut_last = !text.is_empty() && !text.ends_with('\n');
        for (n, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<TaskRecord>(line) {
                Ok(r) => {
                    j.done.insert(r.idx, r);
                }
                Err(_) if cut_last && n + 1 == lines.len() => {}
                Err(e) => anyhow::bail!("journal line {}: {e}", n + 1),
            }
        }
        Ok(j)
    }

    pub fn line(r: &TaskRecord) -> String {
        serde_json::to_string(r).unwrap_or_default()
    }
}

/// Reads a task file: one command per line; blank lines and `#` comments skipped.
pub fn parse_tasks(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Records a finished task (see [`FarmOptions::on_done`]).
pub type OnDone<'a> = &'a mut (dyn FnMut(&TaskRecord) -> Result<(), String> + Send);

pub struct FarmOptions<'a> {
    /// Attempts per task before it is given up (host losses only; a non-zero exit is a result).
    pub max_attempts: u32,
    /// Stop dispatching after this many completions in this run (models an interruption).
    pub stop_after: Option<usize>,
    /// Called with each finished task (real mode appends it to the journal file); an error is
    /// kept in [`FarmReport::journal_error`] (the run goes on, but would not resume correctly).
    pub on_done: Option<OnDone<'a>>,
}

impl Default for FarmOptions<'_> {
    fn default() -> Self {
        FarmOptions {
            max_attempts: 3,
            stop_after: None,
            on_done: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FarmReport {
    /// Tasks finished in this run.
    pub finished: usize,
    /// Tasks skipped because the journal had them.
    pub skipped: usize,
    /// Re-dispatches after a host loss.
    pub retried: usize,
    /// Tasks given up after `max_attempts` host losses.
    pub abandoned: usize,
    pub dispatched: usize,
    pub interrupted: bool,
    /// The first failure to record a finished task (journal write or sync), and how many failed.
    pub journal_error: Option<String>,
    pub journal_failures: usize,
}

struct Running {
    task: usize,
    host: u32,
    stdout: Vec<u8>,
}

impl Controller {
    /// Farms `tasks` out to the selected hosts. Tasks already in `journal` (same index and command)
    /// are skipped; finished tasks are added to it.
    pub async fn farm(
        &mut self,
        tasks: &[String],
        journal: &mut FarmJournal,
        mut opts: FarmOptions<'_>,
    ) -> Result<FarmReport, ControlError> {
        let hosts = self.selected();
        if hosts.is_empty() {
            return Err(ControlError::NothingSelected);
        }
        let mut rep = FarmReport::default();
        let mut pending: VecDeque<usize> = VecDeque::new();
        for (i, t) in tasks.iter().enumerate() {
            // Only a task that ended with an exit status is done; one given up after host losses
            // (or killed by a signal) has not produced its result and runs again.
            if journal
                .done
                .get(&i)
                .is_some_and(|r| &r.cmd == t && r.code.is_some())
            {
                rep.skipped += 1;
            } else {
                pending.push_back(i);
            }
        }
        let mut attempts: BTreeMap<usize, u32> = BTreeMap::new();
        let mut free: VecDeque<u32> = hosts.into_iter().collect();
        let mut running: BTreeMap<u64, Running> = BTreeMap::new();
        let n = tasks.len() as u32;
        loop {
            let stop = opts.stop_after.is_some_and(|s| rep.finished >= s);
            if stop && !pending.is_empty() {
                rep.interrupted = true;
                return Ok(rep); // running tasks are abandoned, as when the controller is killed
            }
            while !pending.is_empty() && !free.is_empty() {
                let host = free.pop_front().unwrap_or(0);
                let Some(path) = self
                    .table
                    .get(host)
                    .filter(|e| e.state == crate::lang::hosts::HostState::Alive)
                    .map(|e| e.path.clone())
                else {
                    continue;
                };
                let task = pending.pop_front().unwrap_or(0);
                *attempts.entry(task).or_default() += 1;
                let exec = self.new_exec_id();
                let spec = ExecSpec {
                    exec,
                    cmd: tasks[task].clone(),
                    cwd: self.cwd.clone(),
                    selection: Selection::All,
                    num_execs: n,
                    exec_idx: Some(task as u32),
                    env: vec![],
                    stdin_open: false,
                    // Taken at once (kept up to KEEP_PER_HOST): the window only bounds what is
                    // in flight towards the controller.
                    output_window: Some(crate::front::exec_loop::OUTPUT_WINDOW),
                };
                self.send(Down::To {
                    path,
                    order: Order::Exec(spec),
                })?;
                running.insert(
                    exec,
                    Running {
                        task,
                        host,
                        stdout: Vec::new(),
                    },
                );
                rep.dispatched += 1;
            }
            if running.is_empty() {
                if pending.is_empty() {
                    return Ok(rep);
                }
                // Tasks left but no live host: give them up.
                for t in pending.drain(..) {
                    let rec = record(
                        t,
                        &tasks[t],
                        "-",
                        Status::Lost,
                        Vec::new(),
                        attempts.get(&t).copied().unwrap_or(0),
                    );
                    finish(journal, &mut opts, &mut rep, rec);
                    rep.abandoned += 1;
                }
                return Ok(rep);
            }
            let (up, lost) = self.next_event().await?;
            for h in lost {
                let execs: Vec<u64> = running
                    .iter()
                    .filter(|(_, r)| r.host == h)
                    .map(|(e, _)| *e)
                    .collect();
                for e in execs {
                    let r = running.remove(&e).expect("present");
                    if attempts.get(&r.task).copied().unwrap_or(0) >= opts.max_attempts {
                        let name = self.table.name_of(h);
                        let rec = record(
                            r.task,
                            &tasks[r.task],
                            &name,
                            Status::Lost,
                            r.stdout,
                            opts.max_attempts,
                        );
                        finish(journal, &mut opts, &mut rep, rec);
                        rep.abandoned += 1;
                    } else {
                        pending.push_front(r.task);
                        rep.retried += 1;
                    }
                }
                free.retain(|f| *f != h);
            }
            let Some(host) = self.table.by_path(&up.route) else {
                continue;
            };
            match up.event {
                Event::Output { exec, stream, data } => {
                    if let Some(r) = running.get_mut(&exec).filter(|r| r.host == host) {
                        if stream == Stream::Stdout {
                            let room = KEEP_PER_HOST.saturating_sub(r.stdout.len());
                            r.stdout.extend_from_slice(&data[..data.len().min(room)]);
                        }
                        self.ack_output(exec, host, data.len() as u64)?;
                    }
                }
                Event::Exited { exec, status }
                    if running.get(&exec).is_some_and(|r| r.host == host) =>
                {
                    let r = running.remove(&exec).expect("present");
                    let name = self.table.name_of(host);
                    let rec = record(
                        r.task,
                        &tasks[r.task],
                        &name,
                        status,
                        r.stdout,
                        attempts.get(&r.task).copied().unwrap_or(1),
                    );
                    finish(journal, &mut opts, &mut rep, rec);
                    rep.finished += 1;
                    free.push_back(host);
                }
                _ => {}
            }
        }
    }
}

fn record(
    idx: usize,
    cmd: &str,
    host: &str,
    status: Status,
    stdout: Vec<u8>,
    attempts: u32,
) -> TaskRecord {
    let code = match status {
        Status::Code(c) => Some(c),
        _ => None,
    };
    TaskRecord {
        idx,
        cmd: cmd.to_string(),
        host: host.to_string(),
        code,
        status: status.to_string(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        attempts,
    }
}

fn finish(
    journal: &mut FarmJournal,
    opts: &mut FarmOptions<'_>,
    rep: &mut FarmReport,
    rec: TaskRecord,
) {
    if let Some(f) = opts.on_done.as_mut() {
        if let Err(e) = f(&rec) {
            rep.journal_failures += 1;
            rep.journal_error.get_or_insert(e);
        }
    }
    journal.done.insert(rec.idx, rec);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_file_and_journal_roundtrip() {
        assert_eq!(parse_tasks("a\n\n# c\n b \n"), vec!["a", "b"]);
        let r = TaskRecord {
            idx: 2,
            cmd: "x".into(),
            host: "h".into(),
            code: Some(0),
            status: "exit 0".into(),
            stdout: "o\n".into(),
            attempts: 1,
        };
        let j = FarmJournal::from_lines(&format!("{}\n", FarmJournal::line(&r))).unwrap();
        assert_eq!(j.done[&2], r);
        let e = FarmJournal::from_lines("{bad\n").unwrap_err().to_string();
        assert!(e.starts_with("journal line 1"), "{e}");
        let line = FarmJournal::line(&r);
        let cut = format!("{line}\n{}", &line[..10]);
        assert_eq!(
            FarmJournal::from_lines(&cut).unwrap().done.len(),
            1,
            "cut last line skipped"
        );
        let e = FarmJournal::from_lines(&format!("{}\n{line}\n", &line[..10])).unwrap_err();
        assert!(
            e.to_string().starts_with("journal line 1"),
            "a cut line inside is an error"
        );
    }

    use crate::tree::proto::{Up, OUTPUT_CHUNK};
    use futures::StreamExt;

    /// A controller with `n` alive hosts below the root (which runs tasks too), and a fake tree that answers every
    /// addressed command with `out` bytes of stdout and exit 0.
    /// Returns the report, the commands run and the output bytes acknowledged.
    fn farm_with(
        n: usize,
        tasks: &[String],
        journal: &mut FarmJournal,
        opts: FarmOptions<'_>,
        out: usize,
    ) -> (FarmReport, Vec<String>, u64) {
        let (otx, mut orx) = futures::channel::mpsc::unbounded::<Down>();
        let (etx, erx) = futures::channel::mpsc::unbounded::<Up>();
        let mut ctl = Controller::new(otx, erx, "root", "root");
        for i in 0..n {
            let (_, idx) = ctl.table.begin_login(0, &format!("h{i}"));
            ctl.table.login_ok(idx, format!("h{i}"));
        }
        let (done_tx, mut done_rx) = futures::channel::oneshot::channel::<()>();
        futures::executor::block_on(async {
            let run = async {
                let r = ctl.farm(tasks, journal, opts).await;
                let _ = done_tx.send(());
                r
            };
            let tree = async {
                let mut cmds = Vec::new();
                let mut acked = 0;
                // Until the farm returns (then the rest of `orx` is drained below).
                loop {
                    let next = futures::select_biased! {
                        d = orx.next() => d,
                        _ = done_rx => None,
                    };
                    let Some(Down::To { path, order }) = next else {
                        break;
                    };
                    let spec = match order {
                        Order::Exec(spec) => spec,
                        Order::OutputAck { bytes, .. } => {
                            acked += bytes;
                            continue;
                        }
                        _ => continue,
                    };
                    cmds.push(spec.cmd.clone());
                    let up = |event| {
                        etx.unbounded_send(Up {
                            route: path.clone(),
                            event,
                        })
                        .unwrap()
                    };
                    for c in vec![b'o'; out].chunks(OUTPUT_CHUNK) {
                        up(Event::Output {
                            exec: spec.exec,
                            stream: Stream::Stdout,
                            data: c.to_vec(),
                        });
                    }
                    up(Event::Exited {
                        exec: spec.exec,
                        status: Status::Code(0),
                    });
                }
                (cmds, acked)
            };
            let (r, (cmds, mut acked)) = futures::join!(run, tree);
            while let Ok(d) = orx.try_recv() {
                if let Down::To {
                    order: Order::OutputAck { bytes, .. },
                    ..
                } = d
                {
                    acked += bytes;
                }
            }
            (r.unwrap(), cmds, acked)
        })
    }

    #[test]
    fn task_output_is_windowed_and_capped() {
        let tasks: Vec<String> = ["t0", "t1"].map(String::from).to_vec();
        let mut j = FarmJournal::default();
        let (rep, _, acked) = farm_with(1, &tasks, &mut j, FarmOptions::default(), 3 << 20);
        assert_eq!(rep.finished, 2);
        assert!(j.done.values().all(|r| r.stdout.len() == KEEP_PER_HOST));
        assert!(
            acked >= 3 << 20,
            "the first task's output was acknowledged ({acked})"
        );
    }

    #[test]
    fn only_tasks_with_an_exit_status_are_skipped_on_resume() {
        let tasks: Vec<String> = ["t0", "t1", "t2"].map(String::from).to_vec();
        let rec = |idx: usize, code: Option<i32>| TaskRecord {
            idx,
            cmd: tasks[idx].clone(),
            host: "h0".into(),
            code,
            status: if code.is_some() {
                "exit 0"
            } else {
                "host lost"
            }
            .into(),
            stdout: String::new(),
            attempts: 3,
        };
        let text = format!(
            "{}\n{}\n",
            FarmJournal::line(&rec(0, None)),
            FarmJournal::line(&rec(1, Some(0)))
        );
        let mut j = FarmJournal::from_lines(&text).unwrap();
        let (rep, cmds, _) = farm_with(1, &tasks, &mut j, FarmOptions::default(), 0);
        assert_eq!(rep.skipped, 1, "only t1 ended with a status");
        assert_eq!(cmds, vec!["t0", "t2"], "the abandoned t0 runs again");
        assert_eq!(j.done[&0].code, Some(0));
    }

    #[test]
    fn journal_write_failures_are_reported() {
        let tasks: Vec<String> = ["t0", "t1"].map(String::from).to_vec();
        let mut fail = |_: &TaskRecord| Err("No space left on device".to_string());
        let opts = FarmOptions {
            on_done: Some(&mut fail),
            ..Default::default()
        };
        let (rep, _, _) = farm_with(2, &tasks, &mut FarmJournal::default(), opts, 0);
        assert_eq!(rep.finished, 2);
        assert_eq!(rep.journal_failures, 2);
        assert_eq!(
            rep.journal_error.as_deref(),
            Some("No space left on device")
        );
    }
}
