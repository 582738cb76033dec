//! gridbed-experiments
