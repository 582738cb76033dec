//! Test networks: pure nodes over in-memory FIFO links with adversarial interleaving
//! ([`testnet`]), driven by the property suites of [`roles`] and [`sweeps`].

mod roles;
mod sweeps;
pub(crate) mod testnet;
