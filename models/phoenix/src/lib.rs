//! Phoenix: message passing over virtual node IDs while machines join and leave.
//!
//! The slides' API (ph_send, ph_recv, ph_assume, ph_release) over a fixed ID space far larger than the
//! number of machines. Each machine owns a set of ID intervals and the application data attached to
//! them; IDs move between machines with their data when machines join, leave or rebalance, and a
//! message to an ID always reaches the machine that owns it when it is delivered.
//!
//! # Architecture
//! - [`node`]: the protocol core, a pure state machine (routing, parking, forwarding, delivery);
//!   no clock, no network, so the property suites drive it directly (`testnet.rs`, test-only).
//! - [`handoff`], [`membership`]: moving IDs with data; join and leave. [`crash`]: reclaiming the
//!   IDs of a machine that crashed.
//! - [`runtime`]: the core driven over `gridbed_runtime::Host` (simulated or real); [`relay`]: paths
//!   through NAT gateways.
//! - [`wire`]: versioned, length-checked frames (postcard); [`ledger`], [`node_report`]: the checking
//!   application and what a `phoenix-node` process reports.
//! - [`overlay`]: machine-level routing tables built over the allowed connections only.
//! - [`raytrace`]: the slides' ray-tracing workload (renderer, tiles as ID data, the machine
//!   program).
//!
//! Elsewhere: the `phoenix-node` and `phoenix-raytracer` binaries (one machine per OS process over
//! TCP) and the real-mode ray-tracing driver are in `gridbed-phoenix-driver`; the experiments
//! (`phoenix-raytrace`, `phoenix-scale`, `phoenix-routes`) in `gridbed-experiments`.
//!
//! # Routing and its hop bound
//! Every machine keeps a table of ID ranges → (owner, epoch) covering the whole space; an ID's epoch
//! counts how often it changed hands, so a fact "range owned by m at epoch e" is never wrong about
//! the past and a newer fact always wins. There is no central directory: a message goes to the owner
//! the sender's table names; a machine that no longer owns the ID forwards it along its own (newer)
//! fact and sends the sender a correction; a machine whose fact is older than the one the message
//! was sent on parks it until the hand-off it is waiting for lands. Each forward strictly raises the
//! epoch the message travels on, so a message takes at most `1 + (e_d - e0)` machine-to-machine hops,
//! where `e0` is the epoch of the sender's fact and `e_d` the ID's epoch at delivery (checked on every
//! delivery: `Stats::bound_violations`). Under restricted connectivity (NAT, firewalls) a hop that
//! cannot connect directly is relayed private host → its gateway → the destination's gateway →
//! destination ([`relay`]), so the bound in network links is `3 * (1 + e_d - e0)`; the path between
//! two hosts is fixed, so per-pair FIFO order survives relaying.
//!
//! # Guarantees (checked by the property suites)
//! - Crash-free runs: a message sent to ID `v` is delivered exactly once, to the machine that owns
//!   `v` when it is delivered and holds `v`'s data, in order per (sender, ID), across any sequence
//!   of joins, leaves and ID moves; at every instant an ID has at most one owner, and exactly one
//!   once hand-offs have landed.
//! - Crashes ([`crash`]), the coordinator's included: the crashed machine's IDs are reclaimed by
//!   the owners of neighbouring IDs (exactly one owner again, never two), messages parked for it
//!   are rerouted, and the loss of its data is reported to the application ([`IdData::lost`],
//!   [`Node::take_lost`]). Messages that were inside the crashed machine, on a link to it or
//!   forwarded through it are lost; delivery stays at-most-once and in order per (sender, ID),
//!   and no owner waits forever behind a lost one.
//!
//! # Limits
//! - The membership coordinator can leave (it hands the role to a successor first) and crash (the
//!   member holding its replica takes over); see [`membership`] and [`crash`] for the failure
//!   model this needs (one crash among the coordinator and its replica holder at a time).
//! - Crash detection is external: a failure detector or the application calls `report_crash`; it
//!   must be accurate (fail-stop) and must repeat a report until it is acted on. The flush during
//!   recovery is all-to-all (n² small frames).
//! - A joiner retries its request on timeout only if the driver calls [`Node::tick`]; with
//!   `Start::Join` it has a single contact, so `Start::JoinAny` (several contacts) is needed to
//!   survive a contact that crashed or left.
//! - After a crash, each member sends one `Floor` per ID it ever sent to, so owners stop waiting
//!   for messages lost with the crashed machine; a straggler that arrives after its floor is
//!   dropped (at-most-once), even if it had not died.

pub mod crash;
pub mod data;
pub mod envelope;
pub mod handoff;
pub mod ids;
pub mod ledger;
pub mod membership;
pub mod node;
pub mod node_report;
pub mod overlay;
pub mod raytrace;
pub mod relay;
pub mod runtime;
pub mod stats;
pub mod table;
mod takeover;
pub mod wire;

pub use data::{IdData, NoData};
pub use ids::{Epoch, Id, IdRange, Piece};
pub use node::{Config, Node, Phase, PhoenixError, Start, Stats};
pub use runtime::{Phoenix, RunError, PORT};
pub use table::{Entry, RoutingTable};
pub use wire::Delivery;

#[cfg(test)]
mod testnet;
#[cfg(test)]
mod testnet_roles;
#[cfg(test)]
mod testnet_sweeps;
