//! Process migration (document 1): `migration-bandwidth`, the memory-transfer time of Figure 3.

pub mod bandwidth;
pub mod bandwidth_sim;
