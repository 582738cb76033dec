//! The launcher: explores the hosts of a hosts file with GXP (this process is the root daemon;
//! the program every host installs, checksum-verified by GXP's bootstrap, is this executable),
//! then runs jobs: one worker per role, each on its own host, started by one GXP `e` whose stdin
//! carries the secret, the job and the peers' addresses, and whose stdout carries each worker's
//! address and result. Every wait is bounded; dropping the cluster stops the whole tree.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use gridbed_gxp::front::controller::{Controller, ExecOptions};
use gridbed_gxp::tree::proto::{LoginMethod, Status, Stream};
use gridbed_gxp_driver::{start_root_with, Keepalive, Program};

use crate::hosts::HostsFile;
use crate::proto::{self, FromWorker, Job, MAX_LINE};

/// The command GXP runs on each worker's host: the installed copy of this program (GXP_PROGRAM,
/// the daemon's own checksum-verified executable), replacing the shell so a kill reaches it.
pub const WORKER_COMMAND: &str = "exec \"$GXP_PROGRAM\" __worker";

/// The login method's name in the rules the launcher writes.
const METHOD: &str = "gbssh";

pub struct LaunchOptions {
    /// The program installed on every host and run as daemon and worker (default: this
    /// executable).
    pub program: PathBuf,
    /// Bound on the whole explore (each login is bounded by GXP's own 60 s too).
    pub explore_timeout: Duration,
    /// The root's watch over its child links (a silent host is declared lost).
    pub keepalive: Keepalive,
}

impl LaunchOptions {
    pub fn this_program() -> anyhow::Result<LaunchOptions> {
        Ok(LaunchOptions {
            program: std::env::current_exe()?,
            explore_timeout: Duration::from_secs(120),
            keepalive: Keepalive {
                interval: Duration::from_secs(5),
                count: 3,
            },
        })
    }
}

/// A launch or a run that failed: one line per problem.
#[derive(Debug)]
pub struct ClusterError {
    pub lines: Vec<String>,
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lines.join("\n"))
    }
}

impl std::error::Error for ClusterError {}

fn one(line: String) -> ClusterError {
    ClusterError { lines: vec![line] }
}

/// Where one worker ran and what it returned.
#[derive(Clone, Debug)]
pub struct WorkerOutcome {
    /// The hosts-file target.
    pub target: String,
    /// The name the host's daemon reported.
    pub host: String,
    /// Where the worker listened.
    pub addr: Option<SocketAddr>,
    pub cores: Option<u32>,
    /// Logins between this machine and the host (1: direct; more: through `via=` gateways).
    pub hops: usize,
    /// The role's result, or one line saying why there is none.
    pub result: Result<serde_json::Value, String>,
}

/// One run: a role for each of some hosts (distinct), with bounds.
pub struct RunSpec {
    pub roles: Vec<(String, serde_json::Value)>,
    /// Bound on the whole run; workers still running then are stopped and reported.
    pub timeout: Duration,
    /// How long workers wait for each other's addresses.
    pub rendezvous: Duration,
}

pub struct Cluster {
    rt: tokio::runtime::Runtime,
    ctl: Option<Controller>,
    pub file: HostsFile,
    /// Target -> GXP host index.
    index: BTreeMap<String, u32>,
    /// Target -> the name its daemon reported.
    pub names: BTreeMap<String, String>,
}

/// The ssh login every host is reached with: the user's OpenSSH (and config, or the file's), never
/// prompting, with keepalives so a dead host is noticed, `--` before the target.
pub fn login_method(file: &HostsFile) -> LoginMethod {
    let mut argv: Vec<String> = vec!["ssh".into()];
    if let Some(c) = &file.ssh_config {
        argv.push("-F".into());
        argv.push(c.display().to_string());
    }
    for o in [
        "BatchMode=yes".to_string(),
        format!("ConnectTimeout={}", file.connect_timeout_s),
        "ServerAliveInterval=5".into(),
        "ServerAliveCountMax=3".into(),
    ] {
        argv.push("-o".into());
        argv.push(o);
    }
    argv.extend(["-T".into(), "--".into(), "{host}".into()]);
    LoginMethod {
        name: METHOD.into(),
        argv,
        env: vec![],
    }
}

impl Cluster {
    /// Logs into every host of `file` (through its gateway for `via=`), installing the program
    /// where it is missing. Every host that cannot be reached is one line of the error; then the
    /// hosts that were reached are stopped again.
    pub fn launch(file: &HostsFile, opts: &LaunchOptions) -> Result<Cluster, ClusterError> {
        if let Some(c) = &file.ssh_config {
            if !c.is_file() {
                return Err(one(format!("ssh_config {}: no such file", c.display())));
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| one(format!("cannot start the launcher's runtime: {e}")))?;
        let program = Program::load(&opts.program).map_err(|e| one(format!("{e:#}")))?;
        let mut ctl = {
            let _g = rt.enter();
            start_root_with(program, opts.keepalive)
        };
        ctl.rules.set_method(login_method(file));
        let root = ctl
            .table
            .get(0)
            .map(|e| e.target.clone())
            .unwrap_or_default();
        for h in &file.hosts {
            let from = h.via.as_deref().unwrap_or(&root);
            ctl.rules
                .add(METHOD, &regex_escape(from), &regex_escape(&h.target))
                .map_err(|e| one(format!("line {}: {e}", h.line)))?;
        }
        let targets: Vec<String> = file.hosts.iter().map(|h| h.target.clone()).collect();
        let explored = rt.block_on(async {
            tokio::time::timeout(opts.explore_timeout, ctl.explore(&targets)).await
        });
        let mut c = Cluster {
            rt,
            ctl: Some(ctl),
            file: file.clone(),
            index: BTreeMap::new(),
            names: BTreeMap::new(),
        };
        let report = match explored {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(one(format!("explore: {e}"))),
            Err(_) => {
                return Err(one(format!(
                    "explore: the hosts were not all reached or refused within {:?}",
                    opts.explore_timeout
                )))
            }
        };
        if !report.failed.is_empty() {
            let lines = report
                .failed
                .iter()
                .map(|(t, why)| {
                    let line = file.find(t).map(|h| h.line).unwrap_or(0);
                    // GXP's reason starts with the target already.
                    let why = why.strip_prefix(&format!("{t}: ")).unwrap_or(why);
                    format!("host {t} (hosts file line {line}): login failed: {why}")
                })
                .collect();
            return Err(ClusterError { lines });
        }
        let ctl = c.ctl.as_ref().expect("controller");
        for h in &file.hosts {
            let Some(i) = ctl.table.by_target(&h.target) else {
                return Err(one(format!("host {}: not in GXP's table", h.target)));
            };
            c.index.insert(h.target.clone(), i);
            c.names.insert(h.target.clone(), ctl.table.name_of(i));
        }
        Ok(c)
    }

    /// Runs one job. Err only for a job that cannot start (unknown target, two roles on one
    /// host, the tree gone); a worker that fails is an outcome with `result: Err`.
    pub fn run(&mut self, spec: &RunSpec) -> Result<Vec<WorkerOutcome>, ClusterError> {
        let mut sel: Vec<(u32, String, serde_json::Value)> = Vec::new();
        for (t, role) in &spec.roles {
            let Some(&i) = self.index.get(t) else {
                return Err(one(format!("host {t}: not a host of this cluster")));
            };
            if sel.iter().any(|(j, _, _)| *j == i) {
                return Err(one(format!("host {t}: two roles on one host in one run")));
            }
            sel.push((i, t.clone(), role.clone()));
        }
        if sel.is_empty() {
            return Err(one("a run needs at least one role".into()));
        }
        // GXP numbers the workers of a selection by ascending host index (GXP_EXEC_IDX); the
        // root is never selected, so the selection is always an explicit index set.
        sel.sort_by_key(|(i, _, _)| *i);
        let hosts: Vec<u32> = sel.iter().map(|(i, _, _)| *i).collect();
        let job = Job {
            roles: sel.iter().map(|(_, _, r)| r.clone()).collect(),
            listen: sel
                .iter()
                .map(|(_, t, _)| self.file.find(t).and_then(|h| h.addr))
                .collect(),
            cores: sel
                .iter()
                .map(|(_, t, _)| self.file.find(t).and_then(|h| h.cores))
                .collect(),
            rendezvous_s: spec.rendezvous.as_secs().max(1),
            deadline_s: spec.timeout.as_secs() + 5,
        };
        // A fresh secret per run, over the login channels only. A user's own secret in the
        // environment is taken instead (so outside processes of the same cluster can join).
        let secret = std::env::var(gridbed_real::handshake::SECRET_ENV)
            .ok()
            .filter(|s| s.len() >= 16 && !s.contains(char::is_whitespace))
            .unwrap_or_else(gridbed_real::ClusterSecret::random_env_value);
        let (tx, rx) = futures::channel::mpsc::unbounded::<Vec<u8>>();
        let _ = tx.unbounded_send(
            format!("{}{}", proto::secret_line(&secret), proto::job_line(&job)).into_bytes(),
        );
        let n = sel.len();
        let rank: BTreeMap<u32, u32> = hosts
            .iter()
            .enumerate()
            .map(|(k, &h)| (h, k as u32))
            .collect();
        let targets: Vec<String> = sel.iter().map(|(_, t, _)| t.clone()).collect();
        let mut bufs: BTreeMap<(u32, bool), Vec<u8>> = BTreeMap::new();
        let mut ready: Vec<Option<SocketAddr>> = vec![None; n];
        let mut results: Vec<Option<Result<serde_json::Value, String>>> = vec![None; n];
        let mut peers_sent = false;
        let mut sink = |host: u32, _name: &str, stream: Stream, data: &[u8]| {
            let Some(&k) = rank.get(&host) else { return };
            let k = k as usize;
            let is_out = stream == Stream::Stdout;
            let buf = bufs.entry((host, is_out)).or_default();
            buf.extend_from_slice(data);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if !is_out {
                    eprintln!("[{}] {line}", targets[k]);
                    continue;
                }
                match proto::parse_from_worker(&line) {
                    None => eprintln!("[{}] {line}", targets[k]),
                    Some(Err(e)) => {
                        results[k].get_or_insert(Err(format!("protocol error: {e}")));
                    }
                    Some(Ok(m)) => {
                        // A worker speaks only for its own index (the host GXP attributes the
                        // output to, never what the line claims).
                        let claimed = match &m {
                            FromWorker::Ready { idx, .. }
                            | FromWorker::Result { idx, .. }
                            | FromWorker::Fail { idx, .. } => *idx as usize,
                        };
                        if claimed != k {
                            results[k].get_or_insert(Err(format!(
                                "worker claims index {claimed}, GXP ran it as {k}"
                            )));
                            continue;
                        }
                        match m {
                            FromWorker::Ready { addr, .. } => ready[k] = Some(addr),
                            FromWorker::Result { value, .. } => {
                                results[k].get_or_insert(Ok(value));
                            }
                            FromWorker::Fail { why, .. } => {
                                results[k].get_or_insert(Err(why));
                            }
                        }
                    }
                }
            }
            if buf.len() > MAX_LINE {
                buf.clear();
                results[k].get_or_insert(Err(format!("a line over {MAX_LINE} bytes")));
            }
            if !peers_sent && ready.iter().all(Option::is_some) {
                peers_sent = true;
                let peers: Vec<SocketAddr> = ready.iter().flatten().copied().collect();
                let _ = tx.unbounded_send(proto::peers_line(&peers).into_bytes());
            }
        };
        let ctl = self
            .ctl
            .as_mut()
            .ok_or_else(|| one("the cluster is stopped".into()))?;
        let timeout = spec.timeout;
        let report = self.rt.block_on(async {
            let opts = ExecOptions {
                stdin_stream: Some(rx.boxed()),
                sink: Some(&mut sink),
                deadline: Some(Box::pin(tokio::time::sleep(timeout))),
                ..Default::default()
            };
            ctl.exec_on(WORKER_COMMAND, &hosts, opts).await
        });
        let report = report.map_err(|e| one(format!("run: {e}")))?;
        let mut out = Vec::new();
        for (k, (i, t, _)) in sel.iter().enumerate() {
            let status = report
                .results
                .iter()
                .find(|r| r.index == *i)
                .map(|r| r.status.clone())
                .unwrap_or(Status::Lost);
            let result = match (results[k].take(), &status) {
                (Some(Ok(v)), s) if s.success() => Ok(v),
                (Some(Err(why)), _) => Err(why),
                (_, Status::Failed(why)) if why.contains("deadline") => {
                    Err(format!("no result within {timeout:?}: worker stopped"))
                }
                (_, s) => Err(format!("worker ended without a result ({s})")),
            };
            out.push(WorkerOutcome {
                target: t.clone(),
                host: self.names.get(t).cloned().unwrap_or_default(),
                addr: ready[k],
                cores: self.file.find(t).and_then(|h| h.cores),
                hops: ctl_hops(self.ctl.as_ref(), *i),
                result,
            });
        }
        Ok(out)
    }

    /// The GXP_EXEC_IDX each of `targets` gets when a run puts one role on each of them (GXP
    /// numbers a selection's workers by ascending host index); None for an unknown target.
    pub fn worker_indices(&self, targets: &[String]) -> Option<Vec<u32>> {
        let idx: Vec<u32> = targets
            .iter()
            .map(|t| self.index.get(t).copied())
            .collect::<Option<_>>()?;
        let mut sorted = idx.clone();
        sorted.sort_unstable();
        Some(
            idx.iter()
                .map(|i| sorted.iter().position(|j| j == i).unwrap_or(0) as u32)
                .collect(),
        )
    }

    /// Farms shell `tasks` over every host of the cluster with GXP's task farm: one task per
    /// host at a time, a task whose host dies runs again on another (up to three attempts);
    /// `"$GXP_PROGRAM"` in a task is the program installed on its host. `on_done` gets each
    /// finished task.
    pub fn farm(
        &mut self,
        tasks: &[String],
        on_done: gridbed_gxp::front::farm::OnDone<'_>,
    ) -> Result<gridbed_gxp::front::farm::FarmReport, ClusterError> {
        let ctl = self
            .ctl
            .as_mut()
            .ok_or_else(|| one("the cluster is stopped".into()))?;
        ctl.selection.set(self.index.values().copied().collect());
        let mut journal = gridbed_gxp::front::farm::FarmJournal::default();
        let opts = gridbed_gxp::front::farm::FarmOptions {
            on_done: Some(on_done),
            ..Default::default()
        };
        self.rt
            .block_on(ctl.farm(tasks, &mut journal, opts))
            .map_err(|e| one(format!("task farm: {e}")))
    }

    /// The hosts-file targets in file order.
    pub fn targets(&self) -> Vec<String> {
        self.file.hosts.iter().map(|h| h.target.clone()).collect()
    }

    /// Stops every daemon (and so every worker) of the tree and waits a little for the logins to
    /// close.
    pub fn stop(&mut self) {
        if let Some(ctl) = self.ctl.take() {
            ctl.quit();
            self.rt.block_on(async {
                tokio::time::sleep(Duration::from_millis(300)).await;
            });
            drop(ctl);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Depth of host `i` in the GXP tree (the root is 0).
fn ctl_hops(ctl: Option<&Controller>, i: u32) -> usize {
    ctl.and_then(|c| c.table.get(i)).map_or(0, |e| e.depth())
}

/// `s` as a regular expression matching exactly `s` (login rules are regexes over names).
fn regex_escape(s: &str) -> String {
    let mut r = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            r.push(c);
        } else if c.is_ascii() && !c.is_ascii_control() && c != ' ' {
            r.push('\\');
            r.push(c);
        } else {
            // Non-ASCII or space: matched by code point, which needs no escape in Rust's regex.
            r.push_str(&format!("\\x{{{:x}}}", c as u32));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_match_only_themselves() {
        let mut rules = gridbed_gxp::lang::rules::RuleSet::default();
        rules
            .add("ssh", &regex_escape("a.b-c@d"), &regex_escape("x+y"))
            .unwrap();
        assert_eq!(rules.rules_from("a.b-c@d"), vec![0]);
        assert!(rules.rules_from("aXb-c@d").is_empty());
        assert_eq!(rules.rules_to("x+y"), vec![0]);
        assert!(rules.rules_to("xxy").is_empty());
    }
}
