//! What the simulated machines share outside the network: host names (an /etc/hosts), each host's
//! disk (survives a crash), accounts, and the GXP program the login host starts with.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use gridbed_runtime::HostId;
use sha2::{Digest, Sha256};

use super::cost::LoginCost;

/// A file's bytes; identical verified installs share one buffer (like a copy-on-write disk).
pub type FileBytes = Arc<Vec<u8>>;

pub struct World {
    names: Vec<String>,
    by_name: BTreeMap<String, HostId>,
    /// For the flat (pdsh-style) baseline: the gateway through which a private host is reached.
    gateway: Vec<Option<HostId>>,
    /// Hosts where the user has no account: logins are refused.
    denied: BTreeSet<HostId>,
    binary: FileBytes,
    binary_sha: String,
    disks: Mutex<BTreeMap<HostId, BTreeMap<String, FileBytes>>>,
    ports: Mutex<BTreeMap<HostId, u16>>,
    pub cost: LoginCost,
}

/// Where GXP installs itself on a host (per user), and under which name (content-addressed, so a
/// host holding another version is detected and gets this one).
pub fn install_path(sha: &str) -> String {
    format!("~/.gxp/bin/gxp-{}", &sha[..16])
}

impl World {
    /// `names[i]` is host i's name; `gateway[i]` its NAT gateway for direct logins (None: public).
    /// The login host (0) holds the program, a deterministic byte string of `cost.binary_bytes`.
    pub fn new(names: Vec<String>, gateway: Vec<Option<HostId>>, cost: LoginCost) -> Self {
        let mut binary = Vec::with_capacity(cost.binary_bytes);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while binary.len() < cost.binary_bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            binary.extend_from_slice(&x.to_le_bytes());
        }
        binary.truncate(cost.binary_bytes);
        let binary_sha = hex::encode(Sha256::digest(&binary));
        let binary = Arc::new(binary);
        let by_name = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), HostId(i as u32)))
            .collect();
        let mut disks = BTreeMap::new();
        let mut root_disk = BTreeMap::new();
        root_disk.insert(install_path(&binary_sha), binary.clone());
        disks.insert(HostId(0), root_disk);
        World {
            names,
            by_name,
            gateway,
            denied: BTreeSet::new(),
            binary,
            binary_sha,
            disks: Mutex::new(disks),
            ports: Mutex::new(BTreeMap::new()),
            cost,
        }
    }

    pub fn with_denied(mut self, hosts: impl IntoIterator<Item = HostId>) -> Self {
        self.denied.extend(hosts);
        self
    }

    pub fn name(&self, h: HostId) -> String {
        self.names
            .get(h.0 as usize)
            .cloned()
            .unwrap_or_else(|| format!("{h}"))
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn resolve(&self, name: &str) -> Option<HostId> {
        self.by_name.get(name).copied()
    }

    pub fn gateway(&self, h: HostId) -> Option<HostId> {
        self.gateway.get(h.0 as usize).copied().flatten()
    }

    pub fn is_denied(&self, h: HostId) -> bool {
        self.denied.contains(&h)
    }

    pub fn binary(&self) -> (FileBytes, &str) {
        (self.binary.clone(), &self.binary_sha)
    }

    /// A fresh port number on `h` (session endpoints; never reused within a run).
    pub fn fresh_port(&self, h: HostId) -> u16 {
        let mut p = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let next = p.entry(h).or_insert(1000);
        *next = next.checked_add(1).unwrap_or(1001);
        *next
    }

    pub fn read(&self, h: HostId, path: &str) -> Option<FileBytes> {
        self.disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&h)
            .and_then(|d| d.get(path).cloned())
    }

    pub fn write(&self, h: HostId, path: &str, data: FileBytes) {
        self.disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(h)
            .or_default()
            .insert(path.to_string(), data);
    }

    /// Atomic rename, as `rename(2)`: false if `from` does not exist.
    pub fn rename(&self, h: HostId, from: &str, to: &str) -> bool {
        let mut d = self.disks.lock().unwrap_or_else(|e| e.into_inner());
        let disk = d.entry(h).or_default();
        match disk.remove(from) {
            Some(f) => {
                disk.insert(to.to_string(), f);
                true
            }
            None => false,
        }
    }

    pub fn remove(&self, h: HostId, path: &str) {
        if let Some(d) = self
            .disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&h)
        {
            d.remove(path);
        }
    }

    /// Whether `h` holds, under its install path, a program whose content hashes to `sha`. The
    /// content is checked, not the name: a corrupt or planted file there does not count.
    pub fn verified_copy(&self, h: HostId, sha: &str) -> bool {
        let Some(f) = self.read(h, &install_path(sha)) else {
            return false;
        };
        // The shared buffer of verified installs is immutable and hashes to `binary_sha`.
        (Arc::ptr_eq(&f, &self.binary) && sha == self.binary_sha)
            || hex::encode(Sha256::digest(f.as_slice())) == sha
    }

    /// Hosts holding this build of GXP.
    pub fn installed_count(&self) -> usize {
        let path = install_path(&self.binary_sha);
        self.disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|d| d.contains_key(&path))
            .count()
    }

    /// Installs bytes received over a login channel: write to a temporary name, verify the
    /// checksum, rename into place. A corrupt transfer leaves nothing behind.
    /// `want` is the sha256 the parent passed down.
    pub fn install(
        &self,
        h: HostId,
        bytes: Vec<u8>,
        tmp_suffix: u16,
        want: &str,
    ) -> Result<(), String> {
        if want.len() < 16 {
            return Err("malformed program checksum".into());
        }
        let tmp = format!("{}.tmp.{tmp_suffix}", install_path(want));
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != want {
            return Err(format!(
                "checksum mismatch (got {}, want {})",
                &sha[..16],
                &want[..16]
            ));
        }
        // Identical content: keep one shared buffer instead of the received copy.
        let file = if sha == self.binary_sha {
            self.binary.clone()
        } else {
            Arc::new(bytes)
        };
        self.write(h, &tmp, file);
        if !self.rename(h, &tmp, &install_path(want)) {
            return Err("rename failed".into());
        }
        Ok(())
    }
}
