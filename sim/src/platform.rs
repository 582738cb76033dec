//! Platforms: hosts grouped in LANs, LANs joined by a backbone. Loadable from TOML.

use gridbed_runtime::HostId;
use serde::{Deserialize, Serialize};

use crate::presets;
use crate::transport::{check_range, Transport, MAX_RATE, MAX_US, MIN_RATE};
use crate::SimError;

/// Most hosts a platform may have: the largest experiment simulates 10,000; a platform file
/// beyond this is a mistake, not a plan, and would only exhaust memory.
pub const MAX_HOSTS: usize = 100_000;

/// Most CPU-bound background jobs on one host (each is a share of its processor).
pub const MAX_BACKGROUND_JOBS: u32 = 1000;

/// Slowest and fastest CPU accepted, cycles per second: from 1 MHz (any compute call of a u64 of
/// cycles then still ends within the range of virtual time) to 10 THz.
pub const MIN_CPU_HZ: f64 = 1e6;
pub const MAX_CPU_HZ: f64 = 1e13;

/// One LAN: hosts sharing a transport.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lan {
    pub name: String,
    pub hosts: u32,
    /// Name of a preset transport, used when `transport` is absent.
    #[serde(default)]
    pub preset: Option<String>,
    /// Explicit transport parameters (override the preset).
    #[serde(default)]
    pub transport: Option<Transport>,
    /// Behind NAT/firewall: only the LAN's first host (its gateway) talks across LANs.
    #[serde(default)]
    pub private: bool,
}

/// Inter-LAN link: each LAN has an uplink of this rate into a backbone with this latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backbone {
    /// Uplink rate of each LAN, Mbit/s.
    pub uplink_mbit_s: f64,
    /// One-way latency added between LANs, microseconds (campus/WAN distance).
    pub latency_us: f64,
}

impl Default for Backbone {
    fn default() -> Self {
        // A 1 Gbit/s uplink per LAN and 1 ms between LANs: sites of one campus or one city, as in
        // the GXP/Phoenix deployments (several LANs of one university and its partners).
        Backbone {
            uplink_mbit_s: 1000.0,
            latency_us: 1000.0,
        }
    }
}

/// Per-host overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostOverride {
    pub host: u32,
    #[serde(default)]
    pub cpu_hz: Option<f64>,
    /// CPU-bound jobs of other users sharing this host's processor.
    #[serde(default)]
    pub background_jobs: u32,
}

/// A whole simulated platform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    pub lans: Vec<Lan>,
    #[serde(default)]
    pub backbone: Backbone,
    /// Default CPU speed, cycles per second.
    #[serde(default = "default_cpu_hz")]
    pub cpu_hz: f64,
    #[serde(default)]
    pub hosts: Vec<HostOverride>,
}

fn default_cpu_hz() -> f64 {
    1e9
}

/// Resolved per-host facts, in host-id order.
#[derive(Clone, Debug)]
pub struct HostSpec {
    pub lan: usize,
    pub cpu_hz: f64,
    pub background_jobs: u32,
    pub gateway: bool,
}

impl Platform {
    /// Two hosts on one LAN with preset transport `name`.
    pub fn preset(name: &str) -> Result<Platform, SimError> {
        Platform::lans(1, 2, name)
    }

    /// `lans` LANs of `hosts_per_lan` hosts each, all with preset transport `transport`.
    pub fn lans(lans: usize, hosts_per_lan: usize, transport: &str) -> Result<Platform, SimError> {
        if presets::transport(transport).is_none() {
            return Err(SimError::UnknownPreset(
                transport.to_string(),
                presets::PRESET_NAMES.join(", "),
            ));
        }
        let lans = (0..lans)
            .map(|i| Lan {
                name: format!("lan{i}"),
                hosts: hosts_per_lan as u32,
                preset: Some(transport.to_string()),
                transport: None,
                private: false,
            })
            .collect();
        Ok(Platform {
            lans,
            backbone: Backbone::default(),
            cpu_hz: default_cpu_hz(),
            hosts: Vec::new(),
        })
    }

    /// Reads and parses a TOML platform file (errors are one line and name the file).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Platform, SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Platform(format!("cannot read {}: {e}", path.display())))?;
        Platform::from_toml(&text).map_err(|e| match e {
            SimError::Platform(m) => SimError::Platform(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses a TOML platform.
    pub fn from_toml(text: &str) -> Result<Platform, SimError> {
        let p: Platform = toml::from_str(text)
            .map_err(|e| SimError::Platform(e.to_string().replace('\n', " ")))?;
        p.validate()?;
        Ok(p)
    }

    /// Marks LANs as private (behind NAT/firewall).
    pub fn with_private_lans(mut self, lans: &[usize]) -> Self {
        for &l in lans {
            if let Some(lan) = self.lans.get_mut(l) {
                lan.private = true;
            }
        }
        self
    }

    pub fn with_cpu_hz(mut self, hz: f64) -> Self {
        self.cpu_hz = hz;
        self
    }

    pub fn with_backbone(mut self, backbone: Backbone) -> Self {
        self.backbone = backbone;
        self
    }

    fn override_mut(&mut self, host: HostId) -> &mut HostOverride {
        if let Some(i) = self.hosts.iter().position(|o| o.host == host.0) {
            return &mut self.hosts[i];
        }
        self.hosts.push(HostOverride {
            host: host.0,
            ..Default::default()
        });
        self.hosts.last_mut().expect("just pushed")
    }

    pub fn with_host_cpu_hz(mut self, host: HostId, hz: f64) -> Self {
        self.override_mut(host).cpu_hz = Some(hz);
        self
    }

    pub fn with_background_load(mut self, host: HostId, jobs: u32) -> Self {
        self.override_mut(host).background_jobs = jobs;
        self
    }

    pub fn host_count(&self) -> usize {
        self.lans.iter().map(|l| l.hosts as usize).sum()
    }

    /// The LAN index of host `h` (panics if `h` is out of range: a scenario bug).
    pub fn lan_of(&self, h: HostId) -> usize {
        let mut first = 0u32;
        for (i, lan) in self.lans.iter().enumerate() {
            if h.0 < first + lan.hosts {
                return i;
            }
            first += lan.hosts;
        }
        panic!(
            "host {h} is not on this platform of {} hosts",
            self.host_count()
        )
    }

    /// The transport of LAN `lan`.
    pub fn transport_of(&self, lan: usize) -> Transport {
        let l = &self.lans[lan];
        l.transport
            .clone()
            .or_else(|| l.preset.as_deref().and_then(presets::transport))
            .expect("validated: every LAN has a transport")
    }

    /// Checks the platform is usable: hosts within [`MAX_HOSTS`], every speed, rate and time a
    /// finite number within its bounds ([`MIN_CPU_HZ`], [`MIN_RATE`], ...), LAN names unique,
    /// every LAN with a valid transport, at most one override per host, each naming a host.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Platform(m));
        let total: u64 = self.lans.iter().map(|l| u64::from(l.hosts)).sum();
        if total == 0 {
            return bad("a platform needs at least one host".into());
        }
        if total > MAX_HOSTS as u64 {
            return bad(format!(
                "{total} hosts: at most {MAX_HOSTS} (each simulated host holds tasks and buffers)"
            ));
        }
        if let Some(lan) = self.lans.iter().find(|l| l.hosts == 0) {
            return bad(format!("LAN {} has no hosts", lan.name));
        }
        let range =
            |name: &str, v, lo, hi| check_range(name, v, lo, hi).map_err(SimError::Platform);
        range("cpu_hz", self.cpu_hz, MIN_CPU_HZ, MAX_CPU_HZ)?;
        let b = &self.backbone;
        range(
            "backbone uplink_mbit_s",
            b.uplink_mbit_s,
            MIN_RATE,
            MAX_RATE,
        )?;
        range("backbone latency_us", b.latency_us, 0.0, MAX_US)?;
        let mut names = std::collections::BTreeSet::new();
        for lan in &self.lans {
            if lan.name.trim().is_empty() {
                return bad("a LAN has an empty name".into());
            }
            if !names.insert(lan.name.as_str()) {
                return bad(format!("two LANs are named {}", lan.name));
            }
        }
        for lan in &self.lans {
            match (&lan.transport, &lan.preset) {
                (Some(t), _) => t
                    .validate()
                    .map_err(|e| SimError::Platform(format!("LAN {}: {e}", lan.name)))?,
                (None, Some(p)) if presets::transport(p).is_some() => {}
                (None, Some(p)) => {
                    return Err(SimError::UnknownPreset(
                        p.clone(),
                        presets::PRESET_NAMES.join(", "),
                    ))
                }
                (None, None) => {
                    return Err(SimError::Platform(format!(
                        "LAN {} has neither preset nor transport",
                        lan.name
                    )))
                }
            }
        }
        let mut overridden = std::collections::BTreeSet::new();
        for o in &self.hosts {
            if !overridden.insert(o.host) {
                return bad(format!("two overrides for host {}", o.host));
            }
            if o.host as usize >= self.host_count() {
                return Err(SimError::Platform(format!(
                    "override for host {} but only {} hosts",
                    o.host,
                    self.host_count()
                )));
            }
            if let Some(hz) = o.cpu_hz {
                range(
                    &format!("host {}: cpu_hz", o.host),
                    hz,
                    MIN_CPU_HZ,
                    MAX_CPU_HZ,
                )?;
            }
            if o.background_jobs > MAX_BACKGROUND_JOBS {
                return bad(format!(
                    "host {}: {} background jobs, at most {MAX_BACKGROUND_JOBS}",
                    o.host, o.background_jobs
                ));
            }
        }
        Ok(())
    }

    /// Resolves per-host facts.
    pub fn host_specs(&self) -> Vec<HostSpec> {
        let mut specs = Vec::with_capacity(self.host_count());
        for (i, lan) in self.lans.iter().enumerate() {
            for k in 0..lan.hosts {
                specs.push(HostSpec {
                    lan: i,
                    cpu_hz: self.cpu_hz,
                    background_jobs: 0,
                    gateway: k == 0,
                });
            }
        }
        for o in &self.hosts {
            let s = &mut specs[o.host as usize];
            if let Some(hz) = o.cpu_hz {
                s.cpu_hz = hz;
            }
            s.background_jobs = o.background_jobs;
        }
        specs
    }

    /// Whether `a` and `b` can talk directly: same LAN, or each is public or its LAN's gateway.
    pub fn reachable(&self, specs: &[HostSpec], a: HostId, b: HostId) -> bool {
        let (sa, sb) = (&specs[a.0 as usize], &specs[b.0 as usize]);
        if sa.lan == sb.lan {
            return true;
        }
        let open = |s: &HostSpec| !self.lans[s.lan].private || s.gateway;
        open(sa) && open(sb)
    }
}
