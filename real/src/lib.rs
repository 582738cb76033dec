//! gridbed-real
