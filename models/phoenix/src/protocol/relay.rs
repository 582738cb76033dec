//! Next hop under restricted connectivity (NAT / firewalls).
//!
//! Which hosts sit behind a gateway is deployment knowledge (like GXP's host list), given as a
//! static map `private host → its LAN's gateway`. The path from A to B is a pure function of that map
//! and `can_reach`, so every frame from A to B takes the same path and per-link FIFO order is kept
//! end to end: A → (A's gateway) → (B's gateway) → B, at most 3 links.

use std::collections::BTreeMap;

use gridbed_runtime::HostId;

/// The host to hand a frame for `dst` to, seen from `me`.
pub fn next_hop(
    me: HostId,
    dst: HostId,
    gateways: &BTreeMap<HostId, HostId>,
    can_reach: impl Fn(HostId) -> bool,
) -> HostId {
    if can_reach(dst) {
        return dst;
    }
    if let Some(&g) = gateways.get(&me) {
        if g != me {
            return g;
        }
    }
    if let Some(&g) = gateways.get(&dst) {
        if g != me && can_reach(g) {
            return g;
        }
    }
    // No known path: try directly and let the send report the failure.
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LAN 0 public {0,1}; LAN 1 private {2 (gateway), 3}; LAN 2 private {4 (gateway), 5}.
    fn reach(a: u32, b: u32) -> bool {
        let lan = |h: u32| h / 2;
        let gateway = |h: u32| h == 2 || h == 4;
        let public = |h: u32| lan(h) == 0;
        lan(a) == lan(b) || ((public(a) || gateway(a)) && (public(b) || gateway(b)))
    }

    #[test]
    fn paths_use_gateways_and_reach_the_destination() {
        let gw: BTreeMap<HostId, HostId> = [(3, 2), (5, 4), (2, 2), (4, 4)]
            .into_iter()
            .map(|(a, b)| (HostId(a), HostId(b)))
            .collect();
        for a in 0..6 {
            for b in 0..6 {
                let mut at = a;
                let mut links = 0;
                while at != b {
                    let nh = next_hop(HostId(at), HostId(b), &gw, |h| reach(at, h.0)).0;
                    assert!(reach(at, nh), "{a}->{b}: link {at}->{nh} not allowed");
                    at = nh;
                    links += 1;
                    assert!(links <= 3, "{a}->{b} takes more than 3 links");
                }
            }
        }
    }
}
