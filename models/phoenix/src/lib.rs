//! Phoenix: message passing over virtual node IDs while machines join and leave.
//!
//! The slides' API (ph_send, ph_recv, ph_assume, ph_release) over a fixed ID space far larger than the
//! number of machines. Each machine owns a set of ID intervals and the application data attached to
//! them; IDs move between machines with their data when machines join, leave or rebalance, and a
//! message to an ID always reaches the machine that owns it when it is delivered.
//!
//! - [`node`]: the protocol core, a pure state machine (routing, parking, forwarding, delivery);
//!   its module doc states the routing scheme and the hop bound.
//! - [`handoff`], [`membership`]: moving IDs with data; join and leave.
//! - [`runtime`]: the core driven over `gridbed_runtime::Host` (simulated or real); [`relay`]: paths
//!   through NAT gateways.
//! - [`wire`]: versioned, length-checked frames (postcard); [`ledger`]: the checking application.
//! - [`raytrace`], [`experiments`]: the slides' ray-tracing evaluation and the scale experiment.
//!
//! Guarantee (crash-free runs, checked by the property suites): a message sent to ID `v` is delivered
//! exactly once, to the machine that owns `v` when it is delivered and holds `v`'s data, in order per
//! (sender, ID), across any sequence of joins, leaves and ID moves; at every instant an ID has at
//! most one owner, and exactly one once hand-offs have landed.
//!
//! Not handled: machine crashes (a crashed machine's IDs are not reclaimed), and the membership
//! coordinator (the lowest initial machine) cannot leave.

pub mod data;
pub mod experiments;
pub mod handoff;
pub mod ids;
pub mod ledger;
pub mod membership;
pub mod node;
pub mod raytrace;
pub mod relay;
pub mod runtime;
pub mod table;
pub mod wire;

pub use data::{IdData, NoData};
pub use ids::{Epoch, Id, IdRange, Piece};
pub use node::{Config, Node, Phase, PhoenixError, Start, Stats};
pub use runtime::{Phoenix, RunError, PORT};
pub use table::{Entry, RoutingTable};
pub use wire::Delivery;

#[cfg(test)]
mod testnet;
