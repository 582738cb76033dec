//! The reachability graph, BFS shortest paths, and the check of routing tables against them.
//! Also the "offline computation" itself: a machine that knows the whole graph runs one BFS.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use gridbed_runtime::HostId;

use super::router::Route;

/// Undirected graph of the allowed direct connections between live machines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Graph {
    pub adj: BTreeMap<HostId, BTreeSet<HostId>>,
}

impl Graph {
    /// The graph over `nodes` where `reach(a, b)` allows a link (taken as symmetric: a link
    /// exists only if both directions are allowed).
    pub fn from_reach(nodes: &[HostId], reach: impl Fn(HostId, HostId) -> bool) -> Self {
        let mut adj: BTreeMap<HostId, BTreeSet<HostId>> =
            nodes.iter().map(|n| (*n, BTreeSet::new())).collect();
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                if a != b && reach(*a, *b) && reach(*b, *a) {
                    adj.entry(*a).or_default().insert(*b);
                    adj.entry(*b).or_default().insert(*a);
                }
            }
        }
        Graph { adj }
    }

    /// Directed edge count (each link twice).
    pub fn arcs(&self) -> usize {
        self.adj.values().map(BTreeSet::len).sum()
    }

    /// The graph without `h`.
    pub fn without(&self, h: HostId) -> Self {
        let mut g = self.clone();
        g.adj.remove(&h);
        for s in g.adj.values_mut() {
            s.remove(&h);
        }
        g
    }

    /// BFS distances from `src` (to every reachable machine, `src` itself at 0).
    pub fn bfs(&self, src: HostId) -> BTreeMap<HostId, u32> {
        self.bfs_tree(src)
            .into_iter()
            .map(|(d, (_, h))| (d, h))
            .collect()
    }

    /// BFS from `src`: destination → (first hop, distance). Neighbours are visited in id order,
    /// so the first hop is deterministic.
    pub fn bfs_tree(&self, src: HostId) -> BTreeMap<HostId, (HostId, u32)> {
        let mut out = BTreeMap::new();
        if !self.adj.contains_key(&src) {
            return out;
        }
        out.insert(src, (src, 0));
        let mut q = VecDeque::from([src]);
        while let Some(u) = q.pop_front() {
            let (first, du) = out[&u];
            for v in &self.adj[&u] {
                if !out.contains_key(v) {
                    let hop = if u == src { *v } else { first };
                    out.insert(*v, (hop, du + 1));
                    q.push_back(*v);
                }
            }
        }
        out
    }

    /// The offline computation of one machine's table (what a machine given the whole
    /// configuration computes locally).
    pub fn table_of(&self, src: HostId) -> BTreeMap<HostId, Route> {
        self.bfs_tree(src)
            .into_iter()
            .filter(|(d, _)| *d != src)
            .map(|(d, (next, hops))| (d, Route { next, hops, inc: 0 }))
            .collect()
    }
}

/// Checks every machine's table against BFS over `g`: one entry per reachable destination with
/// the BFS distance, the next hop a neighbour one link closer, and the path it implies reaching
/// the destination in exactly `hops` links without revisiting a machine. Returns the problems
/// (at most `limit` of them).
pub fn verify(
    g: &Graph,
    tables: &BTreeMap<HostId, BTreeMap<HostId, Route>>,
    limit: usize,
) -> Vec<String> {
    let mut bad = Vec::new();
    let mut push = |s: String| {
        if bad.len() < limit {
            bad.push(s);
        }
    };
    let dist: BTreeMap<HostId, BTreeMap<HostId, u32>> =
        g.adj.keys().map(|n| (*n, g.bfs(*n))).collect();
    for (src, d_src) in &dist {
        let Some(table) = tables.get(src) else {
            push(format!("{src}: no table"));
            continue;
        };
        for (dest, want) in d_src {
            if dest == src {
                continue;
            }
            match table.get(dest) {
                None => push(format!("{src}: no route to {dest} (BFS distance {want})")),
                Some(r) if r.hops != *want => push(format!(
                    "{src}: route to {dest} has {} hops, BFS distance is {want}",
                    r.hops
                )),
                Some(r) => {
                    if !g.adj[src].contains(&r.next) {
                        push(format!(
                            "{src}: next hop {} to {dest} is not a neighbour",
                            r.next
                        ));
                    } else if let Some(e) = walk(tables, *src, *dest, *want) {
                        push(e);
                    }
                }
            }
        }
        for dest in table.keys() {
            if !d_src.contains_key(dest) {
                push(format!("{src}: route to unreachable or absent {dest}"));
            }
        }
    }
    for src in tables.keys() {
        if !g.adj.contains_key(src) {
            push(format!("{src}: table of a machine outside the graph"));
        }
    }
    bad
}

/// Follows next hops from `src` to `dest`; errors on a loop, a dead end or a wrong length.
fn walk(
    tables: &BTreeMap<HostId, BTreeMap<HostId, Route>>,
    src: HostId,
    dest: HostId,
    want: u32,
) -> Option<String> {
    let mut seen = BTreeSet::from([src]);
    let mut at = src;
    let mut links = 0;
    while at != dest {
        let Some(r) = tables.get(&at).and_then(|t| t.get(&dest)) else {
            return Some(format!("{src}->{dest}: dead end at {at}"));
        };
        at = r.next;
        links += 1;
        if !seen.insert(at) {
            return Some(format!("{src}->{dest}: loop through {at}"));
        }
    }
    (links != want).then(|| format!("{src}->{dest}: path of {links} links, BFS distance {want}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u32) -> HostId {
        HostId(i)
    }

    /// 0-1-2-3 path plus 0-2 chord.
    fn g() -> Graph {
        let edges = [(0, 1), (1, 2), (2, 3), (0, 2)];
        Graph::from_reach(&[h(0), h(1), h(2), h(3)], |a, b| {
            edges
                .iter()
                .any(|&(x, y)| (a.0, b.0) == (x, y) || (a.0, b.0) == (y, x))
        })
    }

    #[test]
    fn offline_tables_pass_and_errors_are_caught() {
        let g = g();
        assert_eq!(g.bfs(h(0))[&h(3)], 2);
        assert_eq!(g.arcs(), 8);
        let mut tables: BTreeMap<_, _> = g.adj.keys().map(|n| (*n, g.table_of(*n))).collect();
        assert!(verify(&g, &tables, 10).is_empty());
        // A wrong hop count, then a two-machine loop with right counts elsewhere.
        tables.get_mut(&h(0)).unwrap().get_mut(&h(3)).unwrap().hops = 3;
        assert_eq!(verify(&g, &tables, 10).len(), 1);
        tables.get_mut(&h(0)).unwrap().get_mut(&h(3)).unwrap().hops = 2;
        tables.get_mut(&h(2)).unwrap().get_mut(&h(3)).unwrap().next = h(0);
        assert!(!verify(&g, &tables, 10).is_empty());
        // Removing a machine: tables that still route to it are wrong.
        let g2 = g.without(h(3));
        let t2: BTreeMap<_, _> = g
            .adj
            .keys()
            .filter(|n| **n != h(3))
            .map(|n| (*n, g.table_of(*n)))
            .collect();
        assert!(!verify(&g2, &t2, 10).is_empty());
    }
}
