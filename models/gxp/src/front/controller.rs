//! The controller (GXP's front end, `gxpc`): owns the host table, plans explore, runs commands and
//! collects their results. It talks to the root daemon over two in-process channels, so it is the
//! same code in simulation and in real mode and never touches a clock.

use std::collections::BTreeMap;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::StreamExt;

use crate::front::exec_loop::ExecIo;
use crate::front::selection::SelectionState;
use crate::lang::hosts::{HostState, HostTable};
use crate::lang::rules::RuleSet;
use crate::tree::explore::{Explorer, Fanout};
use crate::tree::proto::{Down, Event, Order, Status, Stream, Up, OUTPUT_CHUNK};

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
    /// All hosts' stdout chunks in arrival order (kept by `e`; a pipe streams them instead).
    pub merged_stdout: Vec<u8>,
    /// The hosts were stopped because the pipe's consumer stopped reading (SIGPIPE semantics).
    pub cut: bool,
    /// Output bytes shown live but not kept in the results (beyond [`KEEP_PER_HOST`] per host and
    /// stream, or [`KEEP_TOTAL`] for the whole command).
    pub dropped: u64,
}

/// Output kept per host and stream in an [`ExecReport`] (and per task by the farm). The live
/// display sees everything; only the copy kept for grouping and reports is capped, so a host
/// printing gigabytes cannot exhaust the controller.
pub const KEEP_PER_HOST: usize = 1 << 20;
/// Output kept for one command over all hosts and streams (the merged stdout counts apart).
pub const KEEP_TOTAL: usize = 64 << 20;

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
        if self.cut {
            s.push_str(", stopped when the consumer stopped reading");
        }
        if self.dropped > 0 {
            s.push_str(&format!(
                ", {} output bytes shown but not kept (limit {} KiB per host)",
                self.dropped,
                KEEP_PER_HOST >> 10
            ));
        }
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

/// Receives output as it arrives (live, prefixed display): host index, host name, stream, bytes.
/// The index identifies the host; the name is only for display (two hosts may share one).
pub type OutputSink<'a> = &'a mut (dyn FnMut(u32, &str, Stream, &[u8]) + Send);

/// Options of a command.
#[derive(Default)]
pub struct ExecOptions<'a> {
    /// Bytes broadcast to every host's stdin (then EOF). None: stdin is closed at once.
    pub stdin: Option<Vec<u8>>,
    /// Stdin broadcast as the stream yields it (EOF when it ends), for a conversation with the
    /// hosts (the cluster launcher answers what the workers report). Takes precedence over
    /// `stdin`.
    pub stdin_stream: Option<futures::stream::BoxStream<'a, Vec<u8>>>,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub sink: Option<OutputSink<'a>>,
    /// When it completes, hosts that have not ended are stopped and reported
    /// [`Status::Failed`] ("no answer before the deadline"): a host wrongly believed alive, or
    /// one whose daemon hangs without its link breaking, cannot hold the command for ever. The
    /// driver's clock makes it (the controller itself never reads one).
    pub deadline: Option<futures::future::BoxFuture<'a, ()>>,
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
    pub(crate) rx: UnboundedReceiver<Up>,
    pub table: HostTable,
    pub rules: RuleSet,
    pub fanout: Fanout,
    pub selection: SelectionState,
    /// Working directory of commands on the hosts (GXP's `cd`); None: each daemon's own.
    pub cwd: Option<String>,
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
            cwd: None,
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
        let lost = self.apply_structure(&up);
        Ok((up, lost))
    }

    /// Applies a lost link to the table; returns the indices of the hosts lost with it.
    pub(crate) fn apply_structure(&mut self, up: &Up) -> Vec<u32> {
        match &up.event {
            Event::ChildLost { child } => {
                let mut p = up.route.clone();
                p.push(*child);
                self.table.lose_subtree(&p)
            }
            _ => Vec::new(),
        }
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
            // index -> (target slot, path of the parent asked to log in, child number), for the
            // logins in flight this round
            let mut inflight: BTreeMap<u32, (usize, Vec<u32>, u32)> = BTreeMap::new();
            for a in &plan {
                let target = ex.target_name(a.target).to_string();
                let method = self.rules.method_for(a.rule, &target);
                let (child, index) = self.table.begin_login(a.parent, &target);
                let path = self
                    .table
                    .get(a.parent)
                    .map(|e| e.path.clone())
                    .unwrap_or_default();
                inflight.insert(index, (a.target, path.clone(), child));
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
                if let Event::LoginDone {
                    child,
                    index,
                    outcome,
                    ..
                } = up.event
                {
                    // Only the parent that was asked may report the login: the route is stamped
                    // by the daemons above the sender, so any other daemon's report names
                    // another path and is ignored.
                    let asked = inflight
                        .get(&index)
                        .is_some_and(|(_, p, c)| *p == up.route && *c == child);
                    let slot = if asked { inflight.remove(&index) } else { None };
                    if let Some((t, _, _)) = slot {
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
                    if let Some((t, _, _)) = inflight.remove(&i) {
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
        opts: ExecOptions<'_>,
    ) -> Result<ExecReport, ControlError> {
        let ExecOptions {
            stdin,
            stdin_stream,
            cwd,
            env,
            sink,
            deadline,
        } = opts;
        let stdin = stdin.map(|data| {
            let chunks: Vec<Vec<u8>> = data.chunks(OUTPUT_CHUNK).map(<[u8]>::to_vec).collect();
            futures::stream::iter(chunks).boxed()
        });
        let stdin = stdin_stream.or(stdin);
        let io = ExecIo {
            cwd: cwd.or_else(|| self.cwd.clone()),
            env,
            stdin,
            live: sink,
            keep_stdout: true,
            consumer: None,
            // Hosts wait for the controller to take their output (it acknowledges each chunk
            // once shown and kept), so what is in flight towards it stays bounded.
            output_window: Some(crate::front::exec_loop::OUTPUT_WINDOW),
            deadline,
        };
        self.run_exec(cmd, hosts, io).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::node::{Action, Node};

    /// A daemon can report only the logins it was asked to do: host a, asked for nothing, claims
    /// that the login of index 2 (asked of the root) succeeded, under a name of its choice.
    #[test]
    fn login_done_counts_only_from_the_parent_that_was_asked() {
        let (otx, mut orx) = futures::channel::mpsc::unbounded::<Down>();
        let (etx, erx) = futures::channel::mpsc::unbounded::<Up>();
        let mut ctl = Controller::new(otx, erx, "root", "root");
        let (_, a) = ctl.table.begin_login(0, "a");
        ctl.table.login_ok(a, "a".into());
        ctl.rules.add_line("use ssh root b").unwrap();
        let mut root = Node::new(0);
        root.login_done(0, a, "a".into(), Ok("a".into()));
        let report = futures::executor::block_on(async {
            let targets = ["b".to_string()];
            let run = ctl.explore(&targets);
            let tree = async {
                let Some(Down::To {
                    path,
                    order: Order::Login { child, index, .. },
                }) = orx.next().await
                else {
                    panic!("expected a login order");
                };
                assert!(path.is_empty(), "b is logged into from the root");
                let forged = Event::LoginDone {
                    child,
                    index,
                    target: "b".into(),
                    outcome: Ok("forged".into()),
                };
                for act in root.from_child(
                    0,
                    Up {
                        route: vec![],
                        event: forged,
                    },
                ) {
                    if let Action::ToParent(up) = act {
                        etx.unbounded_send(up).unwrap();
                    }
                }
                // The real answer: the root's login failed.
                for act in root.login_done(child, index, "b".into(), Err("refused".into())) {
                    if let Action::ToParent(up) = act {
                        etx.unbounded_send(up).unwrap();
                    }
                }
            };
            futures::join!(run, tree).0
        })
        .unwrap();
        assert!(report.reached.is_empty(), "{report:?}");
        assert_eq!(
            report.failed,
            vec![("b".to_string(), "refused".to_string())]
        );
        assert!(ctl.table.entries().iter().all(|e| e.name != "forged"));
    }
}
