//! What a machine counts: deliveries, hops, frames sent by kind, and the checks that must stay 0.

use std::collections::BTreeMap;

use crate::wire::{Body, RoutedKind};

/// Counters for experiments and property checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Application messages that reached their owner's inbox.
    pub delivered: u64,
    pub hops_sum: u64,
    pub hops_max: u32,
    /// Deliveries whose hop count exceeded the documented bound (must stay 0).
    pub bound_violations: u64,
    /// Deliveries with a sequence number already delivered (must stay 0).
    pub duplicates: u64,
    pub forwarded: u64,
    pub parked: u64,
    /// Frames sent, by kind.
    pub sent: BTreeMap<&'static str, u64>,
    /// Frames rejected as malformed or semantically invalid.
    pub rejected: u64,
    /// Hand-offs that overlapped IDs already owned (must stay 0).
    pub overlaps: u64,
    /// Frames that reached this machine after it departed (must stay 0).
    pub after_departure: u64,
    /// Frames from a machine declared crashed, dropped (its late frames must not resurrect IDs).
    pub from_crashed: u64,
    /// Messages to reclaimed IDs dropped because a later one from the same sender was already
    /// delivered (only possible after a crash: sequence counters were lost with the machine).
    pub stale_dropped: u64,
    /// Messages skipped by a `Floor` after a crash (never delivered: presumed lost in the crash).
    pub floor_skipped: u64,
    /// Join requests re-sent after `Config::join_timeout`.
    pub join_retries: u64,
    /// Times this machine took over the coordinator role (successor after a crash or a leave).
    pub takeovers: u64,
}

/// A short name per frame kind, for message counters.
pub fn kind_name(body: &Body) -> &'static str {
    match body {
        Body::Routed(r) => match r.kind {
            RoutedKind::App { .. } => "app",
            RoutedKind::Donate { .. } => "donate",
            RoutedKind::Assume { .. } => "assume",
            RoutedKind::Floor { .. } => "floor",
        },
        Body::Facts(_) => "facts",
        Body::Handoff(h) if h.bootstrap.is_some() => "handoff-join",
        Body::Handoff(_) => "handoff",
        Body::JoinReq { .. } => "join-req",
        Body::JoinDone { .. } => "join-done",
        Body::LeaveReq { .. } => "leave-req",
        Body::LeaveGo { .. } => "leave-go",
        Body::Departing { .. } => "departing",
        Body::Farewell { .. } => "farewell",
        Body::LeaveComplete { .. } => "leave-complete",
        Body::Gone => "gone",
        Body::Suspect { .. } => "suspect",
        Body::CoordState { .. } => "coord-state",
        Body::CoordAck { .. } => "coord-ack",
        Body::NewCoordinator { .. } => "new-coordinator",
        Body::CrashBegin { .. } => "crash-begin",
        Body::CrashFlush { .. } => "crash-flush",
        Body::Census { .. } => "census",
        Body::Reclaim { .. } => "reclaim",
    }
}
