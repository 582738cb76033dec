//! The routing-table protocol over random reachability graphs and delivery orders: tables converge
//! to BFS distances with loop-free paths, after the initial build, after leaves (also ones that
//! partition the graph) and after rejoins.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use gridbed_phoenix::overlay::router::{OverlayError, Route, Router, State};
use gridbed_phoenix::overlay::wire::{Advert, Body, Frame};
use gridbed_phoenix::overlay::{verify, Graph};
use gridbed_runtime::HostId;
use proptest::prelude::*;

/// A network of routers with FIFO links and a seeded, arbitrary interleaving across links.
struct Net {
    reach: Graph,
    nodes: BTreeMap<HostId, Router>,
    links: BTreeMap<(HostId, HostId), VecDeque<Frame>>,
    rng: u64,
    frames: u64,
}

impl Net {
    fn new(reach: Graph, seed: u64) -> Self {
        Net {
            reach,
            nodes: BTreeMap::new(),
            links: BTreeMap::new(),
            rng: seed | 1,
            frames: 0,
        }
    }

    fn rand(&mut self, n: usize) -> usize {
        // xorshift64*: deterministic per seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }

    fn start(&mut self, h: HostId, inc: u32) {
        let mut r = Router::new(h, inc, self.reach.adj.len() as u32);
        r.start(self.reach.adj[&h].iter().copied());
        self.nodes.insert(h, r);
        self.drain_out(h);
    }

    fn drain_out(&mut self, h: HostId) {
        let Some(r) = self.nodes.get_mut(&h) else {
            return;
        };
        for (to, f) in r.take_outgoing() {
            self.frames += 1;
            // Frames to machines that are not running are lost (no connection to open).
            if self.nodes.contains_key(&to) {
                self.links.entry((h, to)).or_default().push_back(f);
            }
        }
    }

    /// Delivers frames in a random order until nothing is in flight; departed machines vanish.
    fn run(&mut self) {
        let mut steps = 0u64;
        loop {
            let busy: Vec<(HostId, HostId)> = self
                .links
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(k, _)| *k)
                .collect();
            if busy.is_empty() {
                return;
            }
            // A batch: a random receiver takes the heads of 1..=3 of its incoming links.
            let (_, to) = busy[self.rand(busy.len())];
            let incoming: Vec<(HostId, HostId)> =
                busy.iter().filter(|(_, t)| *t == to).copied().collect();
            let k = 1 + self.rand(3);
            for _ in 0..k {
                let link = incoming[self.rand(incoming.len())];
                let Some(f) = self.links.get_mut(&link).and_then(VecDeque::pop_front) else {
                    continue;
                };
                if let Some(r) = self.nodes.get_mut(&to) {
                    r.handle(link.0, f)
                        .expect("well-formed frames from honest routers");
                }
            }
            self.drain_out(to);
            if self
                .nodes
                .get(&to)
                .is_some_and(|r| *r.state() == State::Departed)
            {
                self.nodes.remove(&to);
                self.links.retain(|(_, t), _| *t != to);
            }
            steps += 1;
            assert!(steps < 5_000_000, "no convergence");
        }
    }

    fn leave(&mut self, h: HostId) {
        if let Some(r) = self.nodes.get_mut(&h) {
            r.leave();
        }
        self.drain_out(h);
        if self
            .nodes
            .get(&h)
            .is_some_and(|r| *r.state() == State::Departed)
        {
            self.nodes.remove(&h);
        }
    }

    fn alive_graph(&self) -> Graph {
        let mut g = self.reach.clone();
        for h in self.reach.adj.keys() {
            if !self.nodes.contains_key(h) {
                g = g.without(*h);
            }
        }
        g
    }

    fn tables(&self) -> BTreeMap<HostId, BTreeMap<HostId, Route>> {
        self.nodes.iter().map(|(h, r)| (*h, r.table())).collect()
    }

    fn check(&self, when: &str) -> Result<(), TestCaseError> {
        let bad = verify(&self.alive_graph(), &self.tables(), 5);
        prop_assert!(bad.is_empty(), "{when}: {bad:?}");
        Ok(())
    }
}

/// A connected random graph: a random spanning tree plus each other pair with probability p.
fn graph(n: u32, p_percent: u64, seed: u64) -> Graph {
    let mut s = seed | 1;
    let mut rnd = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    };
    let mut edges = BTreeSet::new();
    for i in 1..n {
        let parent = (rnd() % u64::from(i)) as u32;
        edges.insert((parent, i));
    }
    for a in 0..n {
        for b in a + 1..n {
            if rnd() % 100 < p_percent {
                edges.insert((a, b));
            }
        }
    }
    let nodes: Vec<HostId> = (0..n).map(HostId).collect();
    Graph::from_reach(&nodes, |a, b| edges.contains(&(a.0.min(b.0), a.0.max(b.0))))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Build, then a leave (possibly partitioning), two concurrent leaves, and a rejoin.
    #[test]
    fn tables_converge_to_bfs_through_churn(
        n in 2u32..16,
        p in 0u64..60,
        gseed in any::<u64>(),
        seed in any::<u64>(),
        pick in any::<u32>(),
    ) {
        let g = graph(n, p, gseed);
        let mut net = Net::new(g, seed);
        for h in 0..n {
            net.start(HostId(h), 0);
        }
        net.run();
        net.check("initial build")?;

        let x = HostId(pick % n);
        net.leave(x);
        net.run();
        prop_assert!(!net.nodes.contains_key(&x), "{x} did not finish leaving");
        net.check("after one leave")?;

        net.start(x, 1);
        net.run();
        net.check("after the rejoin")?;

        if n >= 4 {
            let a = HostId((pick / 7) % n);
            let b = HostId((pick / 131) % n);
            net.leave(a);
            net.leave(b);
            net.run();
            net.check("after concurrent leaves")?;
            net.start(a, 2);
            if b != a {
                net.start(b, 2);
            }
            net.run();
            net.check("after concurrent rejoins")?;
        }
    }
}

#[test]
fn a_line_has_growing_hop_counts_and_a_middle_leave_partitions_it() {
    let nodes: Vec<HostId> = (0..5).map(HostId).collect();
    let g = Graph::from_reach(&nodes, |a, b| a.0.abs_diff(b.0) == 1);
    let mut net = Net::new(g, 7);
    for h in &nodes {
        net.start(*h, 0);
    }
    net.run();
    let t = net.nodes[&HostId(0)].table();
    assert_eq!(t[&HostId(4)].hops, 4);
    assert_eq!(t[&HostId(4)].next, HostId(1));
    net.leave(HostId(2));
    net.run();
    let t = net.nodes[&HostId(0)].table();
    assert_eq!(t.len(), 1, "only h1 is left on this side: {t:?}");
    assert!(verify(&net.alive_graph(), &net.tables(), 5).is_empty());
}

#[test]
fn tables_are_not_trivially_correct() {
    // Before any frame is delivered tables are empty, and the check says so.
    let nodes: Vec<HostId> = (0..3).map(HostId).collect();
    let g = Graph::from_reach(&nodes, |_, _| true);
    let mut net = Net::new(g, 1);
    for h in &nodes {
        net.start(*h, 0);
    }
    assert_eq!(verify(&net.alive_graph(), &net.tables(), 100).len(), 6);
    net.run();
    assert!(verify(&net.alive_graph(), &net.tables(), 100).is_empty());
}

#[test]
fn bad_frames_are_errors_not_panics() {
    let mut r = Router::new(HostId(0), 0, 10);
    let spoof = Frame {
        src: HostId(2),
        inc: 0,
        body: Body::Hello,
    };
    assert!(matches!(
        r.handle(HostId(1), spoof),
        Err(OverlayError::Spoofed { .. })
    ));
    let me = Frame {
        src: HostId(0),
        inc: 0,
        body: Body::Hello,
    };
    assert!(matches!(
        r.handle(HostId(0), me),
        Err(OverlayError::FromSelf(_))
    ));
    let a = Advert {
        dest: HostId(5),
        inc: 0,
        hops: 1,
    };
    let dup = Frame {
        src: HostId(1),
        inc: 0,
        body: Body::Update {
            adverts: vec![a, a],
            gone: vec![],
        },
    };
    assert!(matches!(
        r.handle(HostId(1), dup),
        Err(OverlayError::Duplicate { .. })
    ));
    assert!(r.table().is_empty(), "a rejected frame changes nothing");
    // Absurd hop counts are clamped to "unreachable", never overflow.
    let huge = Frame {
        src: HostId(1),
        inc: 0,
        body: Body::Update {
            adverts: vec![Advert {
                dest: HostId(5),
                inc: 0,
                hops: u32::MAX - 1,
            }],
            gone: vec![],
        },
    };
    r.handle(HostId(1), huge).unwrap();
    assert_eq!(
        r.table().keys().copied().collect::<Vec<_>>(),
        vec![HostId(1)]
    );
}
