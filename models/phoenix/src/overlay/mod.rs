//! Routing tables under restricted connectivity (NAT, firewalls), built by the machines themselves.
//!
//! Every machine builds its own table *destination machine → (next hop, hop count)* over the
//! connections it is allowed to open (`Host::can_reach`), with no central manager and no static
//! gateway map (compare [`crate::protocol::relay`], which needs `private host → gateway` given up front).
//!
//! # What the paper did, and what we follow
//! Kaneda, Taura, Yonezawa, "Routing and resource discovery in Phoenix Grid-enabled message
//! passing library", CCGrid 2004, pp. 670–677. From its abstract (the only part we could find;
//! the body was not available to us): the system "runs a distributed resource discovery and
//! routing table construction algorithm, rather than assuming all such pieces of information are
//! available in a static configuration file"; on 400 nodes in three LANs its elapsed time "is
//! only approximately twice as long as that of offline route calculation that just connects
//! nodes based on a fully given configuration". So:
//! - **Offline computation** (our baseline, [`driver::run_offline`]): every machine is given the
//!   whole configuration (the reachability graph), connects to its neighbours in it (a hello each
//!   way per link, over the same link model) and computes its table locally with one BFS.
//! - **The distributed algorithm**: its details are not in the abstract, so the choice is ours:
//!   a distance-vector protocol (below). Differences from the paper that we know of: machines
//!   here learn the candidate hosts from the runtime (`Host::hosts`) instead of discovering them
//!   by gossip, so "resource discovery" is reduced to one hello per allowed link.
//!
//! # The protocol ([`router::Router`], a pure state machine)
//! - **Links**: a machine says `Hello` to every host it can reach; any frame from a host makes it
//!   a neighbour and earns it our whole table.
//! - **Distance vector** with hop counts: a route to `d` via neighbour `n` costs `n`'s advertised
//!   hops + 1; news from the current next hop is always taken (better or worse), news from another
//!   neighbour only if strictly shorter. Updates are triggered (no periodic timer) and batched:
//!   one frame per neighbour per batch of received frames, carrying only changed entries.
//! - **Poisoned reverse**: a route through `n` is advertised to `n` as `POISON` (unreachable), so
//!   two machines never route to `d` through each other.
//! - **Corrective replies** replace periodic refreshes: a neighbour that advertises `d` at more
//!   hops than our route + 1 (e.g. it just lost its path and advertises "unreachable") gets our
//!   route back at once. Without them a machine that lost its next hop would never hear of an
//!   alternative that did not change.
//! - **Departures**: a leaving machine says `Bye` to each neighbour and waits for each `ByeAck`
//!   (per-link FIFO: nothing reaches it afterwards). The neighbours withdraw routes through it and
//!   flood a tombstone *(machine, incarnation)*, so no machine counts to infinity towards a machine
//!   that left. A machine that comes back uses a higher incarnation.
//! - **Unreachable = `inf`** = the number of machines (no simple path is longer): if a departure
//!   partitions the graph, distances to the cut-off side count up to `inf` and are dropped.
//!
//! Converged tables equal BFS distances over the graph of live machines (each entry's hop count
//! is the BFS distance and following next hops reaches the destination loop-free): checked by
//! [`check::verify`] in the experiment and by `tests/overlay_*.rs` over random graphs and seeds.
//! Transient loops are possible while updates are in flight (as in any distance vector); no
//! guarantee is made before convergence.
//!
//! Cost in a dense graph: the first exchange sends each neighbour the tables as they fill, so a
//! machine of degree `k` in a graph of `n` machines sends `O(k · n)` adverts in total when nothing
//! is lost, about `n` per link.
//!
//! # Files
//! [`wire`] (versioned, length-checked frames), [`router`] (the state machine), [`check`] (graph,
//! BFS, verification, the offline table), [`driver`] (the state machine over `Host`, the offline
//! baseline over `Host`).

pub mod check;
pub mod driver;
pub mod router;
pub mod wire;

pub use check::{verify, Graph};
pub use driver::{run_offline, OverlayNode, Probe, CYCLES_PER_ITEM, PORT};
pub use router::{OverlayError, Route, Router, RouterStats, State};
