//! The controller's command loop, shared by `e` and network pipes: it sends the command, streams
//! stdin to the hosts under a flow-control window, collects outputs and exit statuses, and (for a
//! pipe) feeds the merged stdout to a local consumer while draining that consumer's own output —
//! all concurrently, so `yes {{ head -1 }}` ends and a large input never sits whole in memory.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::task::Poll;

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{Sink, StreamExt};

use crate::front::controller::{
    ControlError, Controller, ExecReport, HostResult, OutputSink, KEEP_PER_HOST, KEEP_TOTAL,
};
use crate::tree::proto::{
    Down, Event, ExecSpec, Order, Selection, Status, Stream, Up, OUTPUT_CHUNK,
};

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
    /// Hold the hosts' output back to this many unacknowledged bytes each ([`OUTPUT_WINDOW`]).
    pub output_window: Option<u64>,
    /// See [`crate::front::controller::ExecOptions::deadline`].
    pub deadline: Option<futures::future::BoxFuture<'b, ()>>,
}

/// Status of a host that had not ended when the command's deadline passed.
pub const DEADLINE_MISSED: &str = "no answer before the deadline";

/// What the loop waits for next.
enum Step {
    Event(Option<Up>),
    Input(Option<Vec<u8>>),
    ConsumerOut(Option<Vec<u8>>),
    ConsumerReady(bool),
    Deadline,
}

/// Sent and acknowledged stdin bytes per running host.
struct Window {
    sent: u64,
    acked: BTreeMap<u32, u64>,
}

impl Window {
    fn open(&self) -> bool {
        let floor = self.acked.values().min().copied().unwrap_or(self.sent);
        self.sent.saturating_sub(floor) < STDIN_WINDOW
    }

    /// Credits `bytes` acknowledged by `host`. A host acknowledging more than was sent breaks the
    /// protocol (or lies to open the window for everyone): the acknowledgement is ignored.
    fn ack(&mut self, host: u32, bytes: u64) {
        let sent = self.sent;
        if let Some(a) = self.acked.get_mut(&host) {
            if let Some(v) = a.checked_add(bytes).filter(|&v| v <= sent) {
                *a = v;
            }
        }
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
            mut deadline,
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
        let mut kept_total = 0usize;
        let mut dropped = 0u64;
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
                // Last: what already arrived counts before the deadline does.
                if let (Some(d), false) = (deadline.as_mut(), waiting.is_empty()) {
                    if d.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Step::Deadline);
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
                        window.sent = window.sent.saturating_add(chunk.len() as u64);
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
                Step::Deadline => {
                    deadline = None;
                    for h in std::mem::take(&mut waiting) {
                        if let Some(r) = results.get_mut(&h) {
                            r.status = Status::Failed(DEADLINE_MISSED.into());
                        }
                    }
                    window.acked.clear();
                    // Stop whatever still runs; a late exit status is ignored.
                    self.send(Down::All {
                        order: Order::Kill { exec },
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
                                l(host, &r.name, stream, &data);
                            }
                            let n = data.len() as u64;
                            match stream {
                                Stream::Stderr => {
                                    let k = keep(&mut r.stderr, &data, &mut kept_total);
                                    dropped += n - k as u64;
                                    if output_window.is_some() {
                                        self.ack_output(exec, host, n)?;
                                    }
                                }
                                Stream::Stdout => {
                                    if keep_stdout {
                                        let k = keep(&mut r.stdout, &data, &mut kept_total);
                                        dropped += n - k as u64;
                                        if merged.len() < KEEP_TOTAL {
                                            let m = data.len().min(KEEP_TOTAL - merged.len());
                                            merged.extend_from_slice(&data[..m]);
                                        }
                                    }
                                    if c_in.is_some() {
                                        queue.push_back((host, data));
                                    } else if output_window.is_some() {
                                        // Taken by the live sink (or dropped after the consumer
                                        // closed): consumed either way.
                                        self.ack_output(exec, host, n)?;
                                    }
                                }
                            }
                        }
                        Event::StdinAck { exec: e, bytes } if e == exec => window.ack(host, bytes),
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
            dropped,
        };
        self.selection.record(&report);
        Ok(report)
    }

    /// Tells `host` that `bytes` of its output were consumed.
    pub(crate) fn ack_output(&self, exec: u64, host: u32, bytes: u64) -> Result<(), ControlError> {
        let Some(path) = self.table.get(host).map(|e| e.path.clone()) else {
            return Ok(());
        };
        self.send(Down::To {
            path,
            order: Order::OutputAck { exec, bytes },
        })
    }
}

/// Appends to `buf` what fits under [`KEEP_PER_HOST`] and the command's [`KEEP_TOTAL`] (counted in
/// `total`); returns the bytes kept.
pub(crate) fn keep(buf: &mut Vec<u8>, data: &[u8], total: &mut usize) -> usize {
    let room = KEEP_PER_HOST
        .saturating_sub(buf.len())
        .min(KEEP_TOTAL.saturating_sub(*total));
    let k = data.len().min(room);
    buf.extend_from_slice(&data[..k]);
    *total += k;
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::controller::ExecOptions;
    use crate::tree::node::{Action, Node};

    /// Lets the other tasks of the local executor run once.
    async fn yield_once() {
        let mut yielded = false;
        futures::future::poll_fn(|cx| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await
    }

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

    #[test]
    fn stdin_acknowledgements_beyond_what_was_sent_are_ignored() {
        let mut w = Window {
            sent: 10,
            acked: [(1, 0), (2, 0)].into_iter().collect(),
        };
        w.ack(1, u64::MAX);
        w.ack(2, 4);
        w.ack(2, u64::MAX - 1);
        assert_eq!((w.acked[&1], w.acked[&2]), (0, 4));
        w.ack(1, 10);
        assert!(w.open());
        w.sent = STDIN_WINDOW + 3;
        assert!(w.open(), "host 2 is one byte inside the window");
        w.sent += 1;
        assert!(!w.open());
    }

    /// A lone host acknowledging far more stdin than it got must neither crash the controller nor
    /// open the window for good.
    #[test]
    fn a_forged_stdin_ack_cannot_crash_or_open_the_window() {
        let (otx, mut orx) = mpsc::unbounded::<Down>();
        let (etx, erx) = mpsc::unbounded::<Up>();
        let mut ctl = Controller::new(otx, erx, "root", "root");
        let (_, a) = ctl.table.begin_login(0, "a");
        ctl.table.login_ok(a, "a".into());
        let input = vec![0u8; 4 * STDIN_WINDOW as usize];
        let report = futures::executor::block_on(async {
            let opts = ExecOptions {
                stdin: Some(input),
                ..Default::default()
            };
            let hosts = [a];
            let run = ctl.exec_on("cat", &hosts, opts);
            let tree = async {
                let Some(Down::All {
                    order: Order::Exec(spec),
                }) = orx.next().await
                else {
                    panic!("expected the command");
                };
                let send = |event: Event| {
                    etx.unbounded_send(Up {
                        route: vec![0],
                        event,
                    })
                    .unwrap()
                };
                send(Event::StdinAck {
                    exec: spec.exec,
                    bytes: u64::MAX,
                });
                send(Event::StdinAck {
                    exec: spec.exec,
                    bytes: u64::MAX,
                });
                // Count the stdin the controller sends (letting it run in between) before the
                // host ends.
                let mut sent = 0u64;
                for _ in 0..200 {
                    yield_once().await;
                    while let Ok(d) = orx.try_recv() {
                        if let Down::All {
                            order: Order::Stdin { data, .. },
                        } = d
                        {
                            sent += data.len() as u64;
                        }
                    }
                }
                send(Event::Exited {
                    exec: spec.exec,
                    status: Status::Code(0),
                });
                sent
            };
            futures::join!(run, tree)
        });
        let (report, sent) = (report.0.unwrap(), report.1);
        assert_eq!(report.results[0].status, Status::Code(0));
        assert!(sent <= STDIN_WINDOW, "window held: {sent} bytes sent");
    }

    /// A host printing far more than is kept: the controller holds it to its window, acknowledges
    /// what it took, keeps at most [`KEEP_PER_HOST`] per stream, and says how much it dropped.
    #[test]
    fn e_output_is_windowed_and_kept_output_is_capped() {
        let (otx, mut orx) = mpsc::unbounded::<Down>();
        let (etx, erx) = mpsc::unbounded::<Up>();
        let mut ctl = Controller::new(otx, erx, "root", "root");
        let (_, a) = ctl.table.begin_login(0, "a");
        ctl.table.login_ok(a, "a".into());
        let chunks = 3 * KEEP_PER_HOST / OUTPUT_CHUNK;
        let (report, (window, acked)) = futures::executor::block_on(async {
            let mut shown = 0usize;
            let mut sink = |_: u32, _: &str, _: Stream, d: &[u8]| shown += d.len();
            let opts = ExecOptions {
                sink: Some(&mut sink),
                ..Default::default()
            };
            let hosts = [a];
            let run = ctl.exec_on("yes", &hosts, opts);
            let tree = async {
                let Some(Down::All {
                    order: Order::Exec(spec),
                }) = orx.next().await
                else {
                    panic!("expected the command");
                };
                let window = spec.output_window.expect("e sets an output window");
                let mut acked = 0u64;
                let mut sent = 0u64;
                for i in 0..2 * chunks {
                    // Like the real daemon: never more than the window unacknowledged.
                    while sent - acked + OUTPUT_CHUNK as u64 > window {
                        match orx.next().await {
                            Some(Down::To {
                                order: Order::OutputAck { bytes, .. },
                                ..
                            }) => acked += bytes,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    let stream = if i % 2 == 0 {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    };
                    etx.unbounded_send(Up {
                        route: vec![0],
                        event: Event::Output {
                            exec: spec.exec,
                            stream,
                            data: vec![b'y'; OUTPUT_CHUNK],
                        },
                    })
                    .unwrap();
                    sent += OUTPUT_CHUNK as u64;
                }
                etx.unbounded_send(Up {
                    route: vec![0],
                    event: Event::Exited {
                        exec: spec.exec,
                        status: Status::Code(0),
                    },
                })
                .unwrap();
                (window, acked)
            };
            let (r, w) = futures::join!(run, tree);
            assert_eq!(shown, 2 * chunks * OUTPUT_CHUNK, "everything shown live");
            (r.unwrap(), w)
        });
        assert!(window <= OUTPUT_WINDOW);
        assert!(acked > 0);
        let r = &report.results[0];
        assert_eq!(
            (r.stdout.len(), r.stderr.len()),
            (KEEP_PER_HOST, KEEP_PER_HOST)
        );
        assert_eq!(report.dropped, 4 * KEEP_PER_HOST as u64);
        assert!(
            report.summary().contains("not kept"),
            "{}",
            report.summary()
        );
    }

    /// A host the controller believes alive but that never answers (a daemon that lost the order,
    /// or one wrongly reported alive): the deadline turns it into a per-host failure, the host
    /// that answered keeps its result, and the command is stopped everywhere.
    #[test]
    fn a_silent_host_fails_at_the_deadline_instead_of_hanging_the_command() {
        let (otx, mut orx) = mpsc::unbounded::<Down>();
        let (etx, erx) = mpsc::unbounded::<Up>();
        let mut ctl = Controller::new(otx, erx, "root", "root");
        let mut hosts = Vec::new();
        for t in ["a", "b"] {
            let (_, i) = ctl.table.begin_login(0, t);
            ctl.table.login_ok(i, t.to_string());
            hosts.push(i);
        }
        let (fire, fired) = futures::channel::oneshot::channel::<()>();
        let report = futures::executor::block_on(async {
            let opts = ExecOptions {
                deadline: Some(Box::pin(async move {
                    let _ = fired.await;
                })),
                ..Default::default()
            };
            let run = ctl.exec_on("sleep 9", &hosts, opts);
            let tree = async {
                let Some(Down::All {
                    order: Order::Exec(spec),
                }) = orx.next().await
                else {
                    panic!("expected the command");
                };
                etx.unbounded_send(Up {
                    route: vec![0],
                    event: Event::Exited {
                        exec: spec.exec,
                        status: Status::Code(0),
                    },
                })
                .unwrap();
                // b never answers; time passes.
                let _ = fire.send(());
                // Bounded: without a deadline nothing would ever come, and the test must fail,
                // not hang.
                let mut kill = false;
                for _ in 0..200 {
                    yield_once().await;
                    while let Ok(d) = orx.try_recv() {
                        kill |= matches!(d, Down::All { order: Order::Kill { exec } } if exec == spec.exec);
                    }
                    if kill {
                        break;
                    }
                }
                assert!(kill, "the command is stopped at the deadline");
            };
            futures::join!(run, tree).0
        })
        .unwrap();
        assert_eq!(report.results[0].status, Status::Code(0));
        assert_eq!(
            report.results[1].status,
            Status::Failed(DEADLINE_MISSED.into())
        );
    }
}
