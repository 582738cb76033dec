//! The daemon's routing logic, free of I/O so the simulated and the real daemon share it.
//!
//! A daemon knows only its parent link, its child links (numbered by the controller) and the commands
//! it runs itself. Orders come down either addressed by a path of child numbers or to everybody;
//! events go up with the route filled in hop by hop.

use std::collections::{BTreeMap, BTreeSet};

use crate::tree::proto::{Down, Event, ExecSpec, LoginMethod, Order, Status, Stream, Up};

/// What the I/O layer must do after feeding the node an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    ToParent(Up),
    ToChild(u32, Down),
    /// Start a login; report its end with [`Node::login_done`].
    Login {
        child: u32,
        index: u32,
        target: String,
        method: LoginMethod,
    },
    /// Run a command here; report output with [`Node::local_output`] and the end with
    /// [`Node::local_exited`]. `exec_idx` is this host's `GXP_EXEC_IDX`.
    Run {
        spec: ExecSpec,
        exec_idx: u32,
    },
    Stdin {
        exec: u64,
        data: Vec<u8>,
    },
    StdinEof {
        exec: u64,
    },
    OutputAck {
        exec: u64,
        bytes: u64,
    },
    Kill {
        exec: u64,
    },
    /// Stop this daemon (after forwarding Quit to the children).
    Quit,
}

/// One daemon's routing state.
#[derive(Debug)]
pub struct Node {
    /// This host's index in the controller's host table (`GXP_EXEC_IDX` base).
    pub index: u32,
    children: BTreeMap<u32, String>,
    running: BTreeSet<u64>,
}

impl Node {
    pub fn new(index: u32) -> Self {
        Node {
            index,
            children: BTreeMap::new(),
            running: BTreeSet::new(),
        }
    }

    pub fn children(&self) -> impl Iterator<Item = (&u32, &String)> {
        self.children.iter()
    }

    pub fn is_running(&self, exec: u64) -> bool {
        self.running.contains(&exec)
    }

    /// An order from the parent (or, at the root, from the controller).
    pub fn from_parent(&mut self, down: Down) -> Vec<Action> {
        match down {
            Down::To { mut path, order } => {
                if path.is_empty() {
                    return self.apply(order, false);
                }
                let child = path.remove(0);
                if self.children.contains_key(&child) {
                    vec![Action::ToChild(child, Down::To { path, order })]
                } else {
                    // The child is gone: tell the controller so it does not wait for it.
                    self.lost_reply(child, &order)
                }
            }
            Down::All { order } => {
                let mut acts: Vec<Action> = self
                    .children
                    .keys()
                    .map(|c| {
                        Action::ToChild(
                            *c,
                            Down::All {
                                order: order.clone(),
                            },
                        )
                    })
                    .collect();
                acts.extend(self.apply(order, true));
                acts
            }
        }
    }

    fn lost_reply(&self, child: u32, order: &Order) -> Vec<Action> {
        match order {
            Order::Login { .. } | Order::Exec(_) => {
                vec![Action::ToParent(Up {
                    route: vec![],
                    event: Event::ChildLost { child },
                })]
            }
            _ => vec![],
        }
    }

    fn apply(&mut self, order: Order, broadcast: bool) -> Vec<Action> {
        match order {
            Order::Login {
                child,
                index,
                target,
                method,
            } => {
                if broadcast {
                    return vec![]; // logins are always addressed; ignore a malformed broadcast
                }
                // Checked here too, not only by the controller: this is where the login command
                // is built, whoever sent the order.
                if let Err(e) = crate::lang::rules::check_target(&target) {
                    return vec![Action::ToParent(Up {
                        route: vec![],
                        event: Event::LoginDone {
                            child,
                            index,
                            target,
                            outcome: Err(e),
                        },
                    })];
                }
                vec![Action::Login {
                    child,
                    index,
                    target,
                    method,
                }]
            }
            Order::Exec(spec) => {
                let exec_idx = if broadcast {
                    if !spec.selection.contains(self.index) {
                        return vec![];
                    }
                    spec.selection.rank(self.index).unwrap_or(self.index)
                } else {
                    spec.exec_idx.unwrap_or(0)
                };
                if !self.running.insert(spec.exec) {
                    return vec![]; // duplicate order: run once
                }
                vec![Action::Run { spec, exec_idx }]
            }
            Order::Stdin { exec, data } => self.if_running(exec, Action::Stdin { exec, data }),
            Order::StdinEof { exec } => self.if_running(exec, Action::StdinEof { exec }),
            Order::OutputAck { exec, bytes } => {
                self.if_running(exec, Action::OutputAck { exec, bytes })
            }
            Order::Kill { exec } => self.if_running(exec, Action::Kill { exec }),
            Order::Quit => vec![Action::Quit],
        }
    }

    fn if_running(&self, exec: u64, a: Action) -> Vec<Action> {
        if self.running.contains(&exec) {
            vec![a]
        } else {
            vec![]
        }
    }

    /// An event from child `child`: stamp the route and pass it up.
    pub fn from_child(&mut self, child: u32, mut up: Up) -> Vec<Action> {
        if !self.children.contains_key(&child) {
            return vec![]; // a link we no longer know: drop
        }
        up.route.insert(0, child);
        vec![Action::ToParent(up)]
    }

    /// A login this daemon performed ended.
    pub fn login_done(
        &mut self,
        child: u32,
        index: u32,
        target: String,
        outcome: Result<String, String>,
    ) -> Vec<Action> {
        if outcome.is_ok() {
            self.children.insert(child, target.clone());
        }
        vec![Action::ToParent(Up {
            route: vec![],
            event: Event::LoginDone {
                child,
                index,
                target,
                outcome,
            },
        })]
    }

    /// The link to a child broke.
    pub fn child_lost(&mut self, child: u32) -> Vec<Action> {
        if self.children.remove(&child).is_none() {
            return vec![];
        }
        vec![Action::ToParent(Up {
            route: vec![],
            event: Event::ChildLost { child },
        })]
    }

    pub fn local_output(&self, exec: u64, stream: Stream, data: Vec<u8>) -> Vec<Action> {
        vec![Action::ToParent(Up {
            route: vec![],
            event: Event::Output { exec, stream, data },
        })]
    }

    /// `bytes` of stdin of a local command were consumed: credit for the controller's window.
    pub fn stdin_consumed(&self, exec: u64, bytes: u64) -> Vec<Action> {
        vec![Action::ToParent(Up {
            route: vec![],
            event: Event::StdinAck { exec, bytes },
        })]
    }

    pub fn local_exited(&mut self, exec: u64, status: Status) -> Vec<Action> {
        self.running.remove(&exec);
        vec![Action::ToParent(Up {
            route: vec![],
            event: Event::Exited { exec, status },
        })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::proto::Selection;

    fn spec(exec: u64, sel: Selection) -> ExecSpec {
        ExecSpec {
            exec,
            cmd: "hostname".into(),
            cwd: None,
            selection: sel,
            num_execs: 2,
            exec_idx: None,
            env: vec![],
            stdin_open: false,
            output_window: None,
        }
    }

    #[test]
    fn routes_addressed_orders_and_stamps_routes() {
        let mut n = Node::new(0);
        n.login_done(4, 1, "a".into(), Ok("a".into()));
        let m = LoginMethod {
            name: "ssh".into(),
            argv: vec![],
            env: vec![],
        };
        let acts = n.from_parent(Down::To {
            path: vec![4, 2],
            order: Order::Login {
                child: 0,
                index: 9,
                target: "x".into(),
                method: m,
            },
        });
        assert!(
            matches!(&acts[..], [Action::ToChild(4, Down::To { path, .. })] if path == &vec![2])
        );
        let up = Up {
            route: vec![2],
            event: Event::Exited {
                exec: 1,
                status: Status::Code(0),
            },
        };
        assert_eq!(
            n.from_child(4, up),
            vec![Action::ToParent(Up {
                route: vec![4, 2],
                event: Event::Exited {
                    exec: 1,
                    status: Status::Code(0)
                }
            })]
        );
        // Unknown child link: dropped, never re-labelled.
        assert!(n
            .from_child(
                7,
                Up {
                    route: vec![],
                    event: Event::ChildLost { child: 0 }
                }
            )
            .is_empty());
    }

    #[test]
    fn broadcast_runs_only_where_selected_with_rank() {
        let mut n = Node::new(5);
        n.login_done(0, 6, "c".into(), Ok("c".into()));
        let acts = n.from_parent(Down::All {
            order: Order::Exec(spec(1, Selection::from_indices([2, 5]))),
        });
        assert_eq!(acts.len(), 2);
        assert!(matches!(&acts[1], Action::Run { exec_idx: 1, .. }));
        let acts = n.from_parent(Down::All {
            order: Order::Exec(spec(2, Selection::from_indices([2]))),
        });
        assert_eq!(acts.len(), 1, "forwarded but not run");
        assert!(n.is_running(1) && !n.is_running(2));
        assert_eq!(
            n.from_parent(Down::All {
                order: Order::Stdin {
                    exec: 2,
                    data: vec![1]
                }
            })
            .len(),
            1
        );
    }

    #[test]
    fn login_to_a_dash_target_is_refused_not_started() {
        let mut n = Node::new(0);
        let m = LoginMethod {
            name: "ssh".into(),
            argv: vec!["ssh".into(), "{host}".into()],
            env: vec![],
        };
        let acts = n.from_parent(Down::To {
            path: vec![],
            order: Order::Login {
                child: 0,
                index: 1,
                target: "-oProxyCommand=touch /tmp/p".into(),
                method: m,
            },
        });
        assert!(
            matches!(
                &acts[..],
                [Action::ToParent(Up {
                    event: Event::LoginDone {
                        outcome: Err(_),
                        ..
                    },
                    ..
                })]
            ),
            "{acts:?}"
        );
    }

    #[test]
    fn order_for_a_lost_child_reports_loss() {
        let mut n = Node::new(0);
        let acts = n.from_parent(Down::To {
            path: vec![3],
            order: Order::Exec(spec(1, Selection::All)),
        });
        assert!(matches!(
            &acts[..],
            [Action::ToParent(Up {
                event: Event::ChildLost { child: 3 },
                ..
            })]
        ));
    }
}
