//! The controller (GXP's front end, `gxpc`): owns the host table, plans explore, runs commands and
//! collects their results. It talks to the root daemon over two in-process channels, so it is the
//! same code in simulation and in real mode and never touches a clock.

use std::collections::{BTreeMap, BTreeSet};

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::StreamExt;

use crate::explore::{Explorer, Fanout};
use crate::hosts::{HostState, HostTable};
use crate::proto::{Down, Event, ExecSpec, Order, Selection, Status, Stream, Up, OUTPUT_CHUNK};
use crate::rules::RuleSet;
use crate::selection::SelectionState;

/// Result of one `explore`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExploreReport {
    /// Target names reached in this explore.
    pub reached: Vec<String>,
    /// Targets not reached, with the reason.
    pub failed: Vec<(String, String)>,
    pub rounds: usize,
}

/// One host's part of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostResult {
    pub index: u32,
    pub name: String,
    pub status: Status,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Result of one command on the selected hosts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecReport {
    pub exec: u64,
    /// By host index.
    pub results: Vec<HostResult>,
    /// All hosts' stdout chunks in arrival order (what a network pipe's right side reads).
    pub merged_stdout: Vec<u8>,
}

impl ExecReport {
    pub fn succeeded(&self) -> usize {
        self.results.iter().filter(|r| r.status.success()).count()
    }

    /// One-line summary: `3 hosts: 2 ok, 1 failed (exit 1: c)`.
    pub fn summary(&self) -> String {
        let bad: Vec<String> = self
            .results
            .iter()
            .filter(|r| !r.status.success())
            .map(|r| format!("{}: {}", r.name, r.status))
            .collect();
        let mut s = format!(
            "{} hosts: {} ok, {} failed",
            self.results.len(),
            self.succeeded(),
            bad.len()
        );
        if !bad.is_empty() {
            let shown: Vec<String> = bad.iter().take(8).cloned().collect();
            s.push_str(&format!(
                " ({}{})",
                shown.join("; "),
                if bad.len() > 8 { "; ..." } else { "" }
            ));
        }
        s
    }
}

/// Receives output as it arrives (live, prefixed display).
pub type OutputSink<'a> = &'a mut (dyn FnMut(&str, Stream, &[u8]) + Send);

/// Options of a command.
#[derive(Default)]
pub struct ExecOptions<'a> {
    /// Bytes broadcast to every host's stdin (then EOF). None: stdin is closed at once.
    pub stdin: Option<Vec<u8>>,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub sink: Option<OutputSink<'a>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the root daemon is gone")]
    RootGone,
    #[error("no host selected")]
    NothingSelected,
}

pub struct Controller {
    tx: UnboundedSender<Down>,
    rx: UnboundedReceiver<Up>,
    pub table: HostTable,
    pub rules: RuleSet,
    pub fanout: Fanout,
    pub selection: SelectionState,
    next_exec: u64,
}

impl Controller {
    /// `tx`/`rx` are the root daemon's parent link; `root_target`/`root_name` name the login host.
    pub fn new(
        tx: UnboundedSender<Down>,
        rx: UnboundedReceiver<Up>,
        root_target: &str,
        root_name: &str,
    ) -> Self {
        Controller {
            tx,
            rx,
            table: HostTable::with_root(root_target, root_name),
            rules: RuleSet::default(),
            fanout: Fanout::default(),
            selection: SelectionState::default(),
            next_exec: 1,
        }
    }

    pub(crate) fn send(&self, d: Down) -> Result<(), ControlError> {
        self.tx
            .unbounded_send(d)
            .map_err(|_| ControlError::RootGone)
    }

    pub(crate) fn new_exec_id(&mut self) -> u64 {
        let e = self.next_exec;
        self.next_exec += 1;
        e
    }

    /// Next event from the tree; structural events (lost links) are applied to the table first.
    /// Returns the event and, for a lost link, the indices of the hosts lost with it.
    pub(crate) async fn next_event(&mut self) -> Result<(Up, Vec<u32>), ControlError> {
        let up = self.rx.next().await.ok_or(ControlError::RootGone)?;
        let mut lost = Vec::new();
        if let Event::ChildLost { child } = &up.event {
            let mut p = up.route.clone();
            p.push(*child);
            lost = self.table.lose_subtree(&p);
        }
        Ok((up, lost))
    }

    /// Reaches `targets` through the login rules, round after round.
    pub async fn explore(&mut self, targets: &[String]) -> Result<ExploreReport, ControlError> {
        let mut ex = Explorer::new(&self.rules, &self.table, targets);
        let mut report = ExploreReport::default();
        loop {
            let plan = ex.plan(&self.rules, &self.table, self.fanout);
            if plan.is_empty() {
                break;
            }
            report.rounds += 1;
            // index -> target slot, for the logins in flight this round
            let mut inflight: BTreeMap<u32, usize> = BTreeMap::new();
            for a in &plan {
                let target = ex.target_name(a.target).to_string();
                let method = self.rules.method_for(a.rule, &target);
                let (child, index) = self.table.begin_login(a.parent, &target);
                let path = self
                    .table
                    .get(a.parent)
                    .map(|e| e.path.clone())
                    .unwrap_or_default();
                inflight.insert(index, a.target);
                self.send(Down::To {
                    path,
                    order: Order::Login {
                        child,
                        index,
                        target,
                        method,
                    },
                })?;
            }
            while !inflight.is_empty() {
                let (up, lost) = self.next_event().await?;
                if let Event::LoginDone { index, outcome, .. } = up.event {
                    if let Some(t) = inflight.remove(&index) {
                        match outcome {
                            Ok(name) => {
                                self.table.login_ok(index, name);
                                report.reached.push(ex.target_name(t).to_string());
                                ex.finished(t, Ok(()));
                            }
                            Err(e) => {
                                self.table.login_failed(index, e.clone());
                                ex.finished(t, Err(e));
                            }
                        }
                    }
                }
                for i in lost {
                    if let Some(t) = inflight.remove(&i) {
                        ex.finished(t, Err("parent lost during login".into()));
                    }
                }
            }
        }
        report.failed = ex.unreached(&self.table);
        Ok(report)
    }

    /// The hosts the next command runs on: the current selection's alive hosts.
    pub fn selected(&self) -> Vec<u32> {
        self.selection.resolve(&self.table)
    }

    /// `e CMD` on the selected hosts.
    pub async fn exec(
        &mut self,
        cmd: &str,
        opts: ExecOptions<'_>,
    ) -> Result<ExecReport, ControlError> {
        let hosts = self.selected();
        self.exec_on(cmd, &hosts, opts).await
    }

    /// Runs `cmd` on `hosts` (indices of alive hosts) in parallel and waits for all of them.
    pub async fn exec_on(
        &mut self,
        cmd: &str,
        hosts: &[u32],
        mut opts: ExecOptions<'_>,
    ) -> Result<ExecReport, ControlError> {
        if hosts.is_empty() {
            return Err(ControlError::NothingSelected);
        }
        let exec = self.new_exec_id();
        let all_alive = hosts.len() == self.table.alive_count();
        let selection = if all_alive {
            Selection::All
        } else {
            Selection::from_indices(hosts.iter().copied())
        };
        let spec = ExecSpec {
            exec,
            cmd: cmd.to_string(),
            cwd: opts.cwd.clone(),
            selection,
            num_execs: hosts.len() as u32,
            exec_idx: None,
            env: opts.env.clone(),
            stdin_open: opts.stdin.is_some(),
        };
        self.send(Down::All {
            order: Order::Exec(spec),
        })?;
        if let Some(data) = opts.stdin.take() {
            for chunk in data.chunks(OUTPUT_CHUNK) {
                self.send(Down::All {
                    order: Order::Stdin {
                        exec,
                        data: chunk.to_vec(),
                    },
                })?;
            }
            self.send(Down::All {
                order: Order::StdinEof { exec },
            })?;
        }

        let mut results: BTreeMap<u32, HostResult> = hosts
            .iter()
            .map(|&i| {
                let name = self
                    .table
                    .get(i)
                    .map(|e| e.name.clone())
                    .unwrap_or_default();
                (
                    i,
                    HostResult {
                        index: i,
                        name,
                        status: Status::Lost,
                        stdout: vec![],
                        stderr: vec![],
                    },
                )
            })
            .collect();
        let mut waiting: BTreeSet<u32> = hosts.iter().copied().collect();
        let mut merged = Vec::new();
        while !waiting.is_empty() {
            let (up, lost) = match self.next_event().await {
                Ok(x) => x,
                Err(_) => break, // root gone: the rest stay Lost
            };
            for i in lost {
                waiting.remove(&i);
            }
            let Some(host) = self.table.by_path(&up.route) else {
                continue;
            };
            match up.event {
                Event::Output {
                    exec: e,
                    stream,
                    data,
                } if e == exec => {
                    if let Some(r) = results.get_mut(&host) {
                        if let Some(sink) = opts.sink.as_mut() {
                            sink(&r.name, stream, &data);
                        }
                        if stream == Stream::Stdout {
                            merged.extend_from_slice(&data);
                            r.stdout.extend(data);
                        } else {
                            r.stderr.extend(data);
                        }
                    }
                }
                Event::Exited { exec: e, status } if e == exec => {
                    if let Some(r) = results.get_mut(&host) {
                        r.status = status;
                        waiting.remove(&host);
                    }
                }
                _ => {}
            }
        }
        let report = ExecReport {
            exec,
            results: results.into_values().collect(),
            merged_stdout: merged,
        };
        self.selection.record(&report);
        Ok(report)
    }

    /// Stops every daemon of the tree.
    pub fn quit(&self) {
        let _ = self.send(Down::All { order: Order::Quit });
    }

    /// `[succeeded/selected/total]` as GXP's prompt shows it.
    pub fn prompt_counts(&self) -> (usize, usize, usize) {
        let sel = self.selected();
        let ok = sel
            .iter()
            .filter(|i| self.selection.last_ok.contains(i))
            .count();
        (ok, sel.len(), self.table.alive_count())
    }

    /// Alive hosts, (index, reported name, depth).
    pub fn alive_hosts(&self) -> Vec<(u32, String, usize)> {
        self.table
            .entries()
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state == HostState::Alive)
            .map(|(i, e)| (i as u32, e.name.clone(), e.depth()))
            .collect()
    }
}
