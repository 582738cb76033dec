//! The controller's command loop, shared by `e` and network pipes: it sends the command, streams
//! stdin to the hosts under a flow-control window, collects outputs and exit statuses, and (for a
//! pipe) feeds the merged stdout to a local consumer while draining that consumer's own output —
//! all concurrently, so `yes {{ head -1 }}` ends and a large input never sits whole in memory.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::task::Poll;

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{Sink, StreamExt};

use crate::controller::{ControlError, Controller, ExecReport, HostResult, OutputSink};
use crate::proto::{Down, Event, ExecSpec, Order, Selection, Status, Stream, Up, OUTPUT_CHUNK};

/// Stdin bytes a command may have in flight: the controller sends the next chunk only while every
/// host still running has acknowledged all but this many bytes. 1 MiB (16 chunks) covers the
/// bandwidth-delay product of a 100 Mbit/s WAN path with 80 ms round trips (1 MB), and bounds what
/// each daemon and the controller hold for one command.
pub const STDIN_WINDOW: u64 = 1 << 20;

/// Stdout bytes one host may have unacknowledged in a pipe: 4 chunks keep a host streaming while
/// the controller passes the previous ones on, and bound what the controller queues for the
/// consumer to 256 KiB per host.
pub const OUTPUT_WINDOW: u64 = 4 * OUTPUT_CHUNK as u64;

/// A local command consuming the merged stdout of the hosts (the `cmd3` of a pipe).
pub(crate) struct Consumer<'a> {
    /// Its stdin; closed (dropped) once every host has ended.
    pub stdin: mpsc::Sender<Vec<u8>>,
    /// Its stdout, passed to `sink` as it comes.
    pub stdout: mpsc::Receiver<Vec<u8>>,
    pub sink: &'a mut (dyn FnMut(&[u8]) + Send),
}

/// Where a command's input comes from and where its output goes.
pub(crate) struct ExecIo<'a, 'b> {
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    /// Stdin for every host (None: closed at once).
    pub stdin: Option<BoxStream<'a, Vec<u8>>>,
    /// Live output (host name, stream, bytes).
    pub live: Option<OutputSink<'b>>,
    /// Keep every host's stdout in its [`HostResult`] (false for pipes: it goes to the consumer).
    pub keep_stdout: bool,
    pub consumer: Option<Consumer<'a>>,
    /// Hold the hosts' stdout back to this many unacknowledged bytes each ([`OUTPUT_WINDOW`]).
    pub output_window: Option<u64>,
}

/// What the loop waits for next.
enum Step {
    Event(Option<Up>),
    Input(Option<Vec<u8>>),
    ConsumerOut(Option<Vec<u8>>),
    ConsumerReady(bool),
}

/// Sent and acknowledged stdin bytes per running host.
struct Window {
    sent: u64,
    acked: BTreeMap<u32, u64>,
}

impl Window {
    fn open(&self) -> bool {
        let floor = self.acked.values().min().copied().unwrap_or(self.sent);
        self.sent - floor < STDIN_WINDOW
    }
}

impl Controller {
    /// Runs `cmd` on `hosts` (indices of alive hosts) and waits until every host has ended and the
    /// consumer, if any, has read everything.
    pub(crate) async fn run_exec(
        &mut self,
        cmd: &str,
        hosts: &[u32],
        io: ExecIo<'_, '_>,
    ) -> Result<ExecReport, ControlError> {
        // Only alive hosts can answer; waiting for any other would never end.
        let alive: BTreeSet<u32> = self.table.alive().collect();
        let hosts: Vec<u32> = hosts
            .iter()
            .copied()
            .filter(|h| alive.contains(h))
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect();
        if hosts.is_empty() {
            return Err(ControlError::NothingSelected);
        }
        let ExecIo {
            cwd,
            env,
            stdin: mut input,
            mut live,
            keep_stdout,
            consumer,
            output_window,
        } = io;
        let exec = self.new_exec_id();
        let selection = if hosts.len() == alive.len() {
            Selection::All
        } else {
            Selection::from_indices(hosts.iter().copied())
        };
        self.send(Down::All {
            order: Order::Exec(ExecSpec {
                exec,
                cmd: cmd.to_string(),
                cwd,
                selection,
                num_execs: hosts.len() as u32,
                exec_idx: None,
                env,
                stdin_open: input.is_some(),
                output_window,
            }),
        })?;

        let mut results: BTreeMap<u32, HostResult> = hosts
            .iter()
            .map(|&i| {
                let name = self.table.name_of(i);
                let r = HostResult {
                    index: i,
                    name,
                    status: Status::Lost,
                    stdout: vec![],
                    stderr: vec![],
                };
                (i, r)
            })
            .collect();
        let mut waiting: BTreeSet<u32> = hosts.iter().copied().collect();
        let mut window = Window {
            sent: 0,
            acked: hosts.iter().map(|&h| (h, 0)).collect(),
        };
        let mut merged = Vec::new();
        let (mut c_in, mut c_out, mut sink) = match consumer {
            Some(c) => (Some(c.stdin), Some(c.stdout), Some(c.sink)),
            None => (None, None, None),
        };
        // Stdout waiting for the consumer, with the host it came from (to acknowledge it).
        let mut queue: VecDeque<(u32, Vec<u8>)> = VecDeque::new();
        let mut killed = false;
        loop {
            if waiting.is_empty() {
                input = None; // nobody reads any more: the caller stops the producer
                if queue.is_empty() {
                    c_in = None; // EOF for the consumer
                }
                if c_out.is_none() && (c_in.is_none() || queue.is_empty()) {
                    break;
                }
            }
            let want_input = !waiting.is_empty() && window.open();
            let rx = &mut self.rx;
            let step = futures::future::poll_fn(|cx| {
                if let Some(o) = c_out.as_mut() {
                    if let Poll::Ready(x) = o.poll_next_unpin(cx) {
                        return Poll::Ready(Step::ConsumerOut(x));
                    }
                }
                if let (Some(i), false) = (c_in.as_mut(), queue.is_empty()) {
                    if let Poll::Ready(r) = Sink::<Vec<u8>>::poll_ready(std::pin::Pin::new(i), cx) {
                        return Poll::Ready(Step::ConsumerReady(r.is_ok()));
                    }
                }
                if !waiting.is_empty() {
                    if let Poll::Ready(x) = rx.poll_next_unpin(cx) {
                        return Poll::Ready(Step::Event(x));
                    }
                }
                if let (Some(s), true) = (input.as_mut(), want_input) {
                    if let Poll::Ready(x) = s.poll_next_unpin(cx) {
                        return Poll::Ready(Step::Input(x));
                    }
                }
                Poll::Pending
            })
            .await;
            match step {
                Step::ConsumerOut(Some(d)) => {
                    if let Some(s) = sink.as_mut() {
                        s(&d);
                    }
                }
                Step::ConsumerOut(None) => c_out = None,
                Step::ConsumerReady(true) => {
                    if let (Some(i), Some((host, d))) = (c_in.as_mut(), queue.pop_front()) {
                        let n = d.len() as u64;
                        if i.start_send(d).is_err() {
                            c_in = None;
                        } else if output_window.is_some() {
                            self.ack_output(exec, host, n)?;
                        }
                    }
                }
                Step::ConsumerReady(false) => c_in = None,
                Step::Input(Some(d)) => {
                    for chunk in d.chunks(OUTPUT_CHUNK) {
                        window.sent += chunk.len() as u64;
                        self.send(Down::All {
                            order: Order::Stdin {
                                exec,
                                data: chunk.to_vec(),
                            },
                        })?;
                    }
                }
                Step::Input(None) => {
                    input = None;
                    self.send(Down::All {
                        order: Order::StdinEof { exec },
                    })?;
                }
                Step::Event(None) => break, // root gone: the rest stay Lost
                Step::Event(Some(up)) => {
                    for i in self.apply_structure(&up) {
                        waiting.remove(&i);
                        window.acked.remove(&i);
                    }
                    let Some(host) = self.table.by_path(&up.route) else {
                        continue;
                    };
                    let Some(r) = results.get_mut(&host) else {
                        continue;
                    };
                    match up.event {
                        Event::Output {
                            exec: e,
                            stream,
                            data,
                        } if e == exec => {
                            if let Some(l) = live.as_mut() {
                                l(&r.name, stream, &data);
                            }
                            match stream {
                                Stream::Stderr => r.stderr.extend(data),
                                Stream::Stdout => {
                                    if keep_stdout {
                                        merged.extend_from_slice(&data);
                                        r.stdout.extend_from_slice(&data);
                                    }
                                    if c_in.is_some() {
                                        queue.push_back((host, data));
                                    } else if output_window.is_some() {
                                        // Taken by the live sink (or dropped after the consumer
                                        // closed): consumed either way.
                                        let n = data.len() as u64;
                                        self.ack_output(exec, host, n)?;
                                    }
                                }
                            }
                        }
                        Event::StdinAck { exec: e, bytes } if e == exec => {
                            if let Some(a) = window.acked.get_mut(&host) {
                                *a += bytes;
                            }
                        }
                        Event::Exited { exec: e, status } if e == exec => {
                            r.status = status;
                            waiting.remove(&host);
                            window.acked.remove(&host);
                        }
                        _ => {}
                    }
                }
            }
            // The consumer stopped reading (like `head`): stop the hosts, as SIGPIPE would.
            if sink.is_some() && c_in.is_none() && !waiting.is_empty() && !killed {
                killed = true;
                queue.clear();
                self.send(Down::All {
                    order: Order::Kill { exec },
                })?;
            }
        }
        let report = ExecReport {
            exec,
            results: results.into_values().collect(),
            merged_stdout: merged,
            cut: killed,
        };
        self.selection.record(&report);
        Ok(report)
    }

    /// Tells `host` that `bytes` of its stdout were consumed.
    fn ack_output(&self, exec: u64, host: u32, bytes: u64) -> Result<(), ControlError> {
        let Some(path) = self.table.get(host).map(|e| e.path.clone()) else {
            return Ok(());
        };
        self.send(Down::To {
            path,
            order: Order::OutputAck { exec, bytes },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::ExecOptions;
    use crate::node::{Action, Node};

    /// A daemon can only speak for its own subtree: the root daemon's node stamps the link a frame
    /// came in on, so a leaf claiming another host's route names no host, and is dropped.
    #[test]
    fn a_host_cannot_pass_its_output_off_as_another_hosts() {
        let (otx, mut orx) = mpsc::unbounded::<Down>();
        let (etx, erx) = mpsc::unbounded::<Up>();
        let mut ctl = Controller::new(otx, erx, "root", "root");
        for t in ["a", "b"] {
            let (_, i) = ctl.table.begin_login(0, t);
            ctl.table.login_ok(i, t.to_string());
        }
        let mut root = Node::new(0);
        root.login_done(0, 1, "a".into(), Ok("a".into()));
        root.login_done(1, 2, "b".into(), Ok("b".into()));
        let mut from = |child: u32, route: Vec<u32>, event: Event| {
            for a in root.from_child(child, Up { route, event }) {
                if let Action::ToParent(up) = a {
                    etx.unbounded_send(up).unwrap();
                }
            }
        };
        let report = futures::executor::block_on(async {
            let run = ctl.exec_on("cmd", &[1, 2], ExecOptions::default());
            let tree = async {
                let Some(Down::All {
                    order: Order::Exec(spec),
                }) = orx.next().await
                else {
                    panic!("expected the command");
                };
                let out = |d: &str| Event::Output {
                    exec: spec.exec,
                    stream: Stream::Stdout,
                    data: d.as_bytes().to_vec(),
                };
                let exited = |c| Event::Exited {
                    exec: spec.exec,
                    status: Status::Code(c),
                };
                // Host a (child link 0) forges b's route (link 1 of the root) and a deeper one.
                from(0, vec![1], out("forged\n"));
                from(0, vec![1], exited(9));
                from(0, vec![], out("mine\n"));
                from(0, vec![], exited(0));
                from(1, vec![], out("theirs\n"));
                from(1, vec![], exited(0));
            };
            futures::join!(run, tree).0
        })
        .unwrap();
        let by_name = |n: &str| report.results.iter().find(|r| r.name == n).unwrap();
        assert_eq!(by_name("a").stdout, b"mine\n");
        assert_eq!(by_name("b").stdout, b"theirs\n");
        assert_eq!(by_name("b").status, Status::Code(0));
        assert!(!String::from_utf8_lossy(&report.merged_stdout).contains("forged"));
    }
}
