//! Experiments of document 1 beyond Figure 3: load-driven migration of a delayed parallel process
//! (Figure 1) and the placement-vs-migration question of its reference \[1\] (Eager et al. 1988).

pub mod contention;
pub mod eager;
