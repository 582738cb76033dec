//! The protocol core: pure state machines, no clock and no network. [`node`] (routing, parking,
//! forwarding, delivery), [`handoff`] and [`membership`] (moving IDs with their data; join and
//! leave), [`crash`] and `takeover` (reclaiming a crashed machine's IDs, the coordinator's role),
//! [`table`] (ID ranges → owner and epoch), [`ids`], [`data`] (what travels with an ID), [`stats`],
//! [`relay`] (paths through NAT gateways).

pub mod crash;
pub mod data;
pub mod handoff;
pub mod ids;
pub mod membership;
pub mod node;
pub mod relay;
pub mod stats;
pub mod table;
mod takeover;
