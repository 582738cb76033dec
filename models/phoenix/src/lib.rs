//! Phoenix: message passing over virtual node IDs while machines join and leave.
//!
//! The slides' API (ph_send, ph_recv, ph_assume, ph_release) over a fixed ID space far larger than the
//! number of machines. Each machine owns a set of ID intervals and the application data attached to
//! them; IDs move between machines with their data when machines join, leave or rebalance, and a
//! message to an ID always reaches the machine that owns it when it is delivered.
//!
//! # Architecture
//! - [`protocol`]: the core, pure state machines with no clock and no network, so the property
//!   suites drive them directly (`testing/`, test-only): [`protocol::node`] (routing, parking,
//!   forwarding, delivery), [`protocol::handoff`] and [`protocol::membership`] (moving IDs with
//!   data; join and leave), [`protocol::crash`] (reclaiming the IDs of a machine that crashed),
//!   [`protocol::relay`] (paths through NAT gateways), tables, IDs, data.
//! - [`wire`]: versioned, length-checked frames (postcard) and the shared [`wire::envelope`].
//! - [`driver`]: the core driven over `gridbed_runtime::Host` (simulated or real).
//! - [`overlay`]: machine-level routing tables built over the allowed connections only.
//! - [`apps`]: the checking application ([`apps::ledger`]), what a `phoenix-node` process reports
//!   ([`apps::node_report`]), and the slides' ray-tracing workload ([`apps::raytrace`]).
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
//! destination ([`protocol::relay`]), so the bound in network links is `3 * (1 + e_d - e0)`; the path between
//! two hosts is fixed, so per-pair FIFO order survives relaying.
//!
//! # Guarantees (checked by the property suites)
//! - Crash-free runs: a message sent to ID `v` is delivered exactly once, to the machine that owns
//!   `v` when it is delivered and holds `v`'s data, in order per (sender, ID), across any sequence
//!   of joins, leaves and ID moves; at every instant an ID has at most one owner, and exactly one
//!   once hand-offs have landed.
//! - Crashes ([`protocol::crash`]), the coordinator's included: the crashed machine's IDs are reclaimed by
//!   the owners of neighbouring IDs (exactly one owner again, never two), messages parked for it
//!   are rerouted, and the loss of its data is reported to the application ([`IdData::lost`],
//!   [`Node::take_lost`]). Messages that were inside the crashed machine, on a link to it or
//!   forwarded through it are lost; delivery stays at-most-once and in order per (sender, ID),
//!   and no owner waits forever behind a lost one.
//!
//! # Limits
//! - The membership coordinator can leave (it hands the role to a successor first) and crash (the
//!   member holding its replica takes over); see [`protocol::membership`] and [`protocol::crash`] for the failure
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

pub mod apps;
pub mod driver;
pub mod overlay;
pub mod protocol;
pub mod wire;

pub use driver::{Phoenix, RunError, PORT};
pub use protocol::data::{IdData, NoData};
pub use protocol::ids::{Epoch, Id, IdRange, Piece};
pub use protocol::node::{Config, Node, Phase, PhoenixError, Start, Stats};
pub use protocol::table::{Entry, RoutingTable};
pub use wire::Delivery;

#[cfg(test)]
mod testing;
