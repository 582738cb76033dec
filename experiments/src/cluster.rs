//! Real mode across a cluster (`experiment run NAME --mode real --hosts FILE`): where each
//! experiment's roles go, the roles a worker (`experiment __worker` on a cluster host) can play,
//! and turning the workers' results into the experiment's output with its placement.
//!
//! - `vmp-getpid`: the whole real measurement runs in one worker on the first host of the file.
//! - `migration-bandwidth`: the source on the first host, the sink on the second; blocks move
//!   over TCP between their own addresses after a mutual handshake on the run's secret.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridbed_cluster_driver::worker::{self, WorkerCtx};
use gridbed_cluster_driver::{auth, Cluster, ClusterError, HostsFile, LaunchOptions, RunSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::migration::bandwidth;
use crate::outcome::{ExperimentOutput, Mode};
use crate::params::ParamRecord;
use crate::provenance::{PlacedWorker, Placement, Provenance};
use crate::registry::{self, Experiment};

/// Experiments that run across the hosts of a hosts file.
pub const CLUSTER_EXPERIMENTS: &[&str] = &["vmp-getpid", "migration-bandwidth"];

/// Bound on one run of one experiment on the cluster.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long workers wait for each other's addresses.
const RENDEZVOUS: Duration = Duration::from_secs(60);
/// Bound on the sink's connection to the source (and the source's wait for it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker is asked to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Role {
    /// A whole real-mode experiment in this worker.
    Experiment {
        name: String,
        seed: u64,
        values: Option<Value>,
    },
    /// migration-bandwidth's source: accepts the sink's connection and times the blocks, one
    /// session per write size (`None`: the whole block in one write).
    BlocksSource {
        sink: u32,
        sizes: Vec<usize>,
        writes: Vec<Option<usize>>,
        reps: usize,
    },
    /// migration-bandwidth's sink: connects to the source and acknowledges blocks.
    BlocksSink { source: u32, sessions: usize },
}

impl Role {
    fn label(&self) -> &'static str {
        match self {
            Role::Experiment { .. } => "experiment",
            Role::BlocksSource { .. } => "source",
            Role::BlocksSink { .. } => "sink",
        }
    }
}

/// `experiment __worker`: serve one role for the launcher.
pub fn worker_main() -> i32 {
    worker::serve(run_role)
}

fn run_role(ctx: WorkerCtx) -> anyhow::Result<Value> {
    let role: Role = serde_json::from_value(ctx.role.clone()).context("bad role")?;
    let machine = Provenance::here();
    let result = match role {
        Role::Experiment { name, seed, values } => {
            let exp = registry::find(&name)?;
            let (out, params) = exp.run_values(Mode::Real, seed, values.as_ref())?;
            serde_json::json!({ "output": out, "params": params })
        }
        Role::BlocksSource {
            sink,
            sizes,
            writes,
            reps,
        } => {
            // Connections that fail the handshake (a stranger, a stale worker of another run)
            // are refused and the source keeps waiting for its sink, up to CONNECT_TIMEOUT.
            ctx.listener.set_nonblocking(true)?;
            let end = Instant::now() + CONNECT_TIMEOUT;
            let mut refused: Vec<String> = Vec::new();
            let mut s = loop {
                match ctx.listener.accept() {
                    Ok((mut s, from)) => {
                        s.set_nonblocking(false)?;
                        match auth::accept(&mut s, &ctx.secret, ctx.idx, ctx.n) {
                            Ok(who) if who == sink => break s,
                            Ok(who) => refused.push(format!("{from}: worker {who}, not the sink")),
                            Err(e) => {
                                eprintln!("source: refused a connection from {from}: {e}");
                                refused.push(format!("{from}: {e}"));
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e.into()),
                }
                if Instant::now() >= end {
                    anyhow::bail!(
                        "the sink did not connect within {CONNECT_TIMEOUT:?}{}",
                        if refused.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " ({} connection(s) refused; last: {})",
                                refused.len(),
                                refused.last().map(String::as_str).unwrap_or("")
                            )
                        }
                    );
                }
            };
            s.set_nodelay(true)?;
            let mut paths = Vec::new();
            for w in writes {
                let pts = gridbed_migration_driver::blocks::send_blocks(
                    &mut s,
                    w.unwrap_or(usize::MAX),
                    &sizes,
                    reps,
                )
                .context("sending blocks to the sink")?;
                paths.push(serde_json::json!({ "write": w, "points": pts }));
            }
            serde_json::json!({ "paths": paths })
        }
        Role::BlocksSink { source, sessions } => {
            let addr = *ctx
                .peers
                .get(source as usize)
                .context("no address for the source")?;
            let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                .with_context(|| format!("connecting to the source at {addr}"))?;
            s.set_nodelay(true)?;
            auth::dial(&mut s, &ctx.secret, ctx.idx, source)
                .map_err(|e| anyhow::anyhow!("source at {addr}: {e}"))?;
            for _ in 0..sessions {
                gridbed_migration_driver::blocks::serve_sink(&mut s)
                    .context("receiving blocks from the source")?;
            }
            serde_json::json!({ "sessions": sessions })
        }
    };
    Ok(serde_json::json!({
        "result": result,
        "machine": machine,
        "host": ctx.host,
        "addr": ctx.addr.to_string(),
    }))
}

/// Refuses, before any login, a plan with a real-mode step that has no cluster placement.
pub fn check_plan(plan: &[crate::runner::Step]) -> anyhow::Result<()> {
    for st in plan {
        if st.mode == Mode::Real && !CLUSTER_EXPERIMENTS.contains(&st.exp.name) {
            anyhow::bail!(
                "--hosts: experiment '{}' has no cluster mode yet (with --hosts: {})",
                st.exp.name,
                CLUSTER_EXPERIMENTS.join(", ")
            );
        }
    }
    Ok(())
}

/// Reads the hosts file (one-line error naming the line) — before anything runs.
pub fn load_hosts(path: &std::path::Path) -> anyhow::Result<HostsFile> {
    HostsFile::load(path).map_err(|e| anyhow::anyhow!("hosts file {e}"))
}

/// Logs into every host and installs this program there.
pub fn launch(file: &HostsFile) -> Result<Cluster, ClusterError> {
    let opts = LaunchOptions::this_program().map_err(|e| ClusterError {
        lines: vec![format!("{e:#}")],
    })?;
    Cluster::launch(file, &opts)
}

/// Runs one real-mode step of `exp` on the cluster; returns the output, the parameters it ran
/// with and where it ran.
pub fn run_step(
    cluster: &mut Cluster,
    exp: &Experiment,
    seed: u64,
    values: Option<&Value>,
) -> anyhow::Result<(ExperimentOutput, Vec<ParamRecord>, Placement)> {
    let targets = cluster.targets();
    let need = match exp.name {
        "vmp-getpid" => 1,
        "migration-bandwidth" => 2,
        other => anyhow::bail!(
            "experiment '{other}' has no cluster mode yet (with --hosts: {})",
            CLUSTER_EXPERIMENTS.join(", ")
        ),
    };
    anyhow::ensure!(
        targets.len() >= need,
        "{} on a cluster needs {need} hosts; the hosts file has {}",
        exp.name,
        targets.len()
    );
    // Parameter values as the experiment's own machinery fills and records them.
    let (values, records) = match (&exp.params, values) {
        (Some(def), Some(v)) => (Some(v.clone()), def.records(Mode::Real, v)),
        (Some(def), None) => {
            let v = (def.defaults)(Mode::Real);
            let r = def.records(Mode::Real, &v);
            (Some(v), r)
        }
        (None, _) => (None, Vec::new()),
    };
    let roles: Vec<(String, Role)> = match exp.name {
        "vmp-getpid" => vec![(
            targets[0].clone(),
            Role::Experiment {
                name: exp.name.into(),
                seed,
                values: values.clone(),
            },
        )],
        _ => {
            let p: bandwidth::Params = serde_json::from_value(
                values
                    .clone()
                    .context("migration-bandwidth has parameters")?,
            )?;
            let pair = [targets[0].clone(), targets[1].clone()];
            let k = cluster
                .worker_indices(&pair)
                .context("the first two hosts are not in the cluster")?;
            vec![
                (
                    targets[0].clone(),
                    Role::BlocksSource {
                        sink: k[1],
                        sizes: bandwidth::real_sizes(&p),
                        writes: vec![Some(8 * 1024), None],
                        reps: 3,
                    },
                ),
                (
                    targets[1].clone(),
                    Role::BlocksSink {
                        source: k[0],
                        sessions: 2,
                    },
                ),
            ]
        }
    };
    let spec = RunSpec {
        roles: roles
            .iter()
            .map(|(t, r)| Ok((t.clone(), serde_json::to_value(r)?)))
            .collect::<anyhow::Result<_>>()?,
        timeout: RUN_TIMEOUT,
        rendezvous: RENDEZVOUS,
    };
    let outcomes = cluster.run(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut problems = Vec::new();
    let mut placement = Placement {
        transport: "cluster".into(),
        workers: Vec::new(),
    };
    let mut results = Vec::new();
    for (o, (_, role)) in outcomes.iter().zip(&roles) {
        match &o.result {
            Ok(v) => results.push(v.clone()),
            Err(why) => {
                problems.push(format!(
                    "{} worker on host {}: {why}",
                    role.label(),
                    o.target
                ));
                results.push(Value::Null);
            }
        }
        let machine = o
            .result
            .as_ref()
            .ok()
            .and_then(|v| serde_json::from_value::<Provenance>(v["machine"].clone()).ok());
        placement.workers.push(PlacedWorker {
            role: role.label().into(),
            target: o.target.clone(),
            host: o.host.clone(),
            addr: o.addr.map(|a| a.to_string()).unwrap_or_default(),
            cores: o.cores,
            hops: o.hops,
            machine,
        });
    }
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    let out = match exp.name {
        "vmp-getpid" => {
            let mut out: ExperimentOutput =
                serde_json::from_value(results[0]["result"]["output"].clone())
                    .context("the worker's output")?;
            out.notes.push(format!(
                "Ran on cluster host {} ({}), launched through GXP over ssh.",
                placement.workers[0].host, placement.workers[0].addr
            ));
            out
        }
        _ => {
            let p: bandwidth::Params =
                serde_json::from_value(values.context("migration-bandwidth has parameters")?)?;
            #[derive(Deserialize)]
            struct Path {
                write: Option<usize>,
                points: Vec<(usize, f64)>,
            }
            let paths: Vec<Path> = serde_json::from_value(results[0]["result"]["paths"].clone())
                .context("the source's measurements")?;
            let (src, dst) = (&placement.workers[0], &placement.workers[1]);
            let measured = paths
                .into_iter()
                .map(|p| {
                    let (label, metric) = match p.write {
                        Some(n) => (
                            format!(
                                "cluster {} -> {}: TCP, {} KiB writes",
                                src.host,
                                dst.host,
                                n / 1024
                            ),
                            "tcp_8k_writes_mbit_s",
                        ),
                        None => (
                            format!("cluster {} -> {}: TCP, large writes", src.host, dst.host),
                            "tcp_large_writes_mbit_s",
                        ),
                    };
                    (label, metric.to_string(), p.points)
                })
                .collect();
            bandwidth::real_output(
                &p,
                measured,
                &format!(
                    "Cluster mode: blocks move from the source worker on {} ({}) to the sink worker on {} ({}) over TCP between their own addresses, after a mutual HMAC handshake on the run's secret; best of 3 per size. The SP/2 curves are the simulated ones, shown for comparison.",
                    src.host, src.addr, dst.host, dst.addr
                ),
            )?
        }
    };
    Ok((out, records, placement))
}
