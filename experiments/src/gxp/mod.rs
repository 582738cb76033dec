//! The experiments the runner calls: `gxp-scale` ([`scale()`]) and `gxp-farm` ([`farm()`]).

pub mod farm;
pub mod scale;

use std::sync::Arc;

use gridbed_sim::Platform;

use anyhow::Context;
use gridbed_gxp::lang::rules::RuleSet;
use gridbed_gxp::sim::cost::LoginCost;
use gridbed_gxp::sim::world::World;
use gridbed_gxp::sim::{layout, layout_of, rules_for};

pub use farm::{farm, farm_with};
pub use scale::{scale, scale_with, ScalePoint};

/// LAN transport of the experiments: 100 Mbit/s switched Ethernet, the common LAN of GXP's
/// 2004–2006 clusters (simulator preset `ethernet-100`).
pub const LAN_TRANSPORT: &str = "ethernet-100";

/// A platform of `lans` LANs of `per_lan` hosts; LAN 0 (the login host's) is public, every other
/// LAN sits behind NAT with its first host as gateway. Returns the platform, the shared world and
/// the login rules that describe it.
pub fn nat_platform(
    lans: usize,
    per_lan: usize,
    cost: LoginCost,
) -> anyhow::Result<(Platform, Arc<World>, RuleSet)> {
    let private: Vec<usize> = (1..lans).collect();
    let platform = Platform::lans(lans, per_lan, LAN_TRANSPORT)
        .map_err(|e| anyhow::anyhow!("platform: {e}"))?
        .with_private_lans(&private);
    let (names, gw) = layout(lans, per_lan, &private);
    let world = Arc::new(World::new(names, gw, cost));
    Ok((platform, world, rules_for(lans, &private)))
}

/// The world and login rules of any platform (e.g. a researcher's platform file): hosts named LAN
/// by LAN, private LANs reached through their first host. LAN 0 holds the login host and must be
/// public, or no login could leave it.
pub fn platform_world(
    platform: Platform,
    cost: LoginCost,
) -> anyhow::Result<(Platform, Arc<World>, RuleSet)> {
    let lan0 = platform.lans.first().context("a platform needs a LAN")?;
    anyhow::ensure!(
        !lan0.private,
        "LAN {} holds the login host (host 0) and must be public",
        lan0.name
    );
    let sizes: Vec<usize> = platform.lans.iter().map(|l| l.hosts as usize).collect();
    let private: Vec<usize> = (0..sizes.len())
        .filter(|&l| platform.lans[l].private)
        .collect();
    let (names, gw) = layout_of(&sizes, &private);
    let world = Arc::new(World::new(names, gw, cost));
    let rules = rules_for(sizes.len(), &private);
    Ok((platform, world, rules))
}
