//! Process migration (document 1): `migration-bandwidth` (the memory-transfer time of Figure 3),
//! `migration-contention` (load-driven migration of a delayed parallel process, Figure 1) and
//! `eager-1988` (the placement-vs-migration question of its reference \[1\]).

pub mod bandwidth;
pub mod bandwidth_sim;
pub mod contention;
pub mod eager;
pub mod strategies;
