//! Applications over Phoenix: [`ledger`] (per-ID record of applied messages, for the exactly-once
//! checks), [`node_report`] (what a `phoenix-node` process reports), [`raytrace`] (the slides'
//! ray-tracing workload).

pub mod ledger;
pub mod node_report;
pub mod raytrace;
