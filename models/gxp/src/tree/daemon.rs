//! The daemon loop, written once for both drivers: what reaches a daemon (its parent's orders,
//! its children's events, the ends of logins, its commands' output) goes into the [`Node`], and
//! the node's actions come out as calls on the driver's [`Effects`] — simulated messages and
//! built-in commands in [`crate::sim`], pipes and processes in the `gridbed-gxp-driver` crate.

use std::collections::{BTreeMap, VecDeque};

use gridbed_runtime::BoxFuture;

use crate::tree::node::{Action, Node};
use crate::tree::proto::{Down, ExecSpec, LoginMethod, Status, Stream, Up};

/// One event for the daemon. `L` is the driver's handle of a child link.
pub enum Input<L> {
    FromParent(Down),
    FromChild(u32, Up),
    LoginDone {
        child: u32,
        index: u32,
        target: String,
        /// The name the new daemon reported and the link to it, or why the login failed.
        outcome: Result<(String, L), String>,
    },
    ChildLost(u32),
    Output {
        exec: u64,
        stream: Stream,
        data: Vec<u8>,
    },
    /// A command read `bytes` of the stdin handed to it (drivers that acknowledge after the
    /// pipe write).
    StdinConsumed {
        exec: u64,
        bytes: u64,
    },
    Exited {
        exec: u64,
        status: Status,
    },
    /// The parent link closed or sent garbage: the daemon stops.
    ParentGone,
}

/// What a driver does on the node's behalf.
pub trait Effects: Send {
    /// The driver's handle of a child link.
    type Link: Send;
    /// The cost of handling one input (the simulator charges the daemon's CPU per message).
    fn on_input(&mut self) -> BoxFuture<'_, ()>;
    fn to_parent(&mut self, up: Up) -> BoxFuture<'_, ()>;
    fn to_child(&mut self, link: &Self::Link, down: Down) -> BoxFuture<'_, ()>;
    /// Starts a login; its end comes back as [`Input::LoginDone`].
    fn login(&mut self, child: u32, index: u32, target: String, method: LoginMethod);
    /// Starts a command; its output and end come back as [`Input::Output`] / [`Input::Exited`].
    fn run(&mut self, spec: ExecSpec, exec_idx: u32);
    /// Hands stdin bytes to a command; `Some(n)` when the command took them at once (they are
    /// acknowledged now), `None` when the driver reports consumption later
    /// ([`Input::StdinConsumed`]) or the command is gone.
    fn stdin(&mut self, exec: u64, data: Vec<u8>) -> Option<u64>;
    fn stdin_eof(&mut self, exec: u64);
    /// The parent acknowledged `bytes` of a command's output: it may send more.
    fn output_ack(&mut self, exec: u64, bytes: u64);
    fn kill(&mut self, exec: u64);
    /// A command ended: the driver forgets it.
    fn exited(&mut self, exec: u64);
    /// The daemon stops (its child links are already closed).
    fn shutdown(&mut self) -> BoxFuture<'_, ()>;
}

/// A daemon: its node and its child links.
pub struct Daemon<L> {
    node: Node,
    links: BTreeMap<u32, L>,
}

impl<L> Daemon<L> {
    /// The daemon of tree index `index` (0 is the root).
    pub fn new(index: u32) -> Self {
        Daemon {
            node: Node::new(index),
            links: BTreeMap::new(),
        }
    }

    /// Handles one input; false once the daemon has stopped.
    pub async fn step<E: Effects<Link = L>>(&mut self, fx: &mut E, input: Input<L>) -> bool {
        fx.on_input().await;
        let acts = match input {
            Input::FromParent(d) => self.node.from_parent(d),
            Input::FromChild(c, up) => self.node.from_child(c, up),
            Input::LoginDone {
                child,
                index,
                target,
                outcome,
            } => {
                let outcome = outcome.map(|(name, link)| {
                    self.links.insert(child, link);
                    name
                });
                self.node.login_done(child, index, target, outcome)
            }
            Input::ChildLost(c) => {
                self.links.remove(&c);
                self.node.child_lost(c)
            }
            Input::Output { exec, stream, data } => self.node.local_output(exec, stream, data),
            Input::StdinConsumed { exec, bytes } => self.node.stdin_consumed(exec, bytes),
            Input::Exited { exec, status } => {
                fx.exited(exec);
                self.node.local_exited(exec, status)
            }
            Input::ParentGone => vec![Action::Quit],
        };
        self.act(fx, acts).await
    }

    async fn act<E: Effects<Link = L>>(&mut self, fx: &mut E, acts: Vec<Action>) -> bool {
        let mut queue = VecDeque::from(acts);
        while let Some(a) = queue.pop_front() {
            match a {
                Action::ToParent(up) => fx.to_parent(up).await,
                Action::ToChild(c, down) => {
                    if let Some(l) = self.links.get(&c) {
                        fx.to_child(l, down).await;
                    }
                }
                Action::Login {
                    child,
                    index,
                    target,
                    method,
                } => fx.login(child, index, target, method),
                Action::Run { spec, exec_idx } => fx.run(spec, exec_idx),
                Action::Stdin { exec, data } => {
                    if let Some(n) = fx.stdin(exec, data) {
                        // The acknowledgement goes out at once, before the rest of the batch.
                        for a in self.node.stdin_consumed(exec, n).into_iter().rev() {
                            queue.push_front(a);
                        }
                    }
                }
                Action::StdinEof { exec } => fx.stdin_eof(exec),
                Action::OutputAck { exec, bytes } => fx.output_ack(exec, bytes),
                Action::Kill { exec } => fx.kill(exec),
                Action::Quit => {
                    // Dropping the child links closes them, which tells each child to stop.
                    self.links.clear();
                    fx.shutdown().await;
                    return false;
                }
            }
        }
        true
    }
}
