//! The simulated login and daemon cost model, 2005-era (GXP's published runs used Linux PCs of about
//! 1–3 GHz on 100 Mbit/1 Gbit Ethernet, running OpenSSH and a Python daemon). None of these numbers
//! is in the seed document; each is an estimate of the era's software, stated beside it, and the
//! experiments print them in their notes. Link costs (latency, bandwidth) come from the simulator's
//! transport presets, not from here.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct LoginCost {
    /// Client-side CPU of one ssh login: DH-1024 group exchange + host-key RSA verify + RSA user-key
    /// signature. OpenSSH 3.x/4.x on a 1 GHz PIII: ~25 ms (`openssl speed`: RSA-1024 sign ~5 ms,
    /// DH-1024 ~10 ms, plus cipher setup).
    pub ssh_client_cycles: u64,
    /// Server-side CPU: sshd fork, privilege separation, DH, host-key signature, authorized_keys
    /// check, shell start. ~60 ms on a 1 GHz machine (estimate of the era's `time ssh host true`
    /// minus the client part).
    pub ssh_server_cycles: u64,
    /// Protocol round trips of an ssh login (version exchange, KEXINIT, DH reply/NEWKEYS, userauth,
    /// channel open + exec): 5 (RFC 4253/4252/4254 message flow).
    pub ssh_round_trips: u32,
    /// Size of one handshake message, bytes (KEXDH reply with host key and signature ~ 1 KB).
    pub ssh_msg_bytes: usize,
    /// Size of the GXP program sent on first contact. GXP 2/3 is a few dozen Python files, a few
    /// hundred KB (estimate: 200 KB).
    pub binary_bytes: usize,
    /// Starting the daemon: Python interpreter start + imports ~0.1 s at 1 GHz (estimate).
    pub daemon_start_cycles: u64,
    /// Handling one protocol message in the (Python) daemon: ~40 us at 1 GHz (estimate: unpickling
    /// and dispatching a small message in CPython 2.4).
    pub msg_cycles: u64,
    /// fork+exec of a short command such as `hostname`: ~1 ms at 1 GHz (lmbench-era fork+exec).
    pub spawn_cycles: u64,
    /// Connection timeout of a login whose target does not answer (ssh ConnectTimeout-style).
    pub login_timeout: Duration,
    /// Keepalive: a silent child link is pinged after this long (ssh ServerAliveInterval 30 s is a
    /// common setting)…
    pub keepalive_interval: Duration,
    /// …and declared lost after this many unanswered intervals (ServerAliveCountMax default 3).
    pub keepalive_count: u32,
}

impl Default for LoginCost {
    fn default() -> Self {
        LoginCost {
            ssh_client_cycles: 25_000_000,
            ssh_server_cycles: 60_000_000,
            ssh_round_trips: 5,
            ssh_msg_bytes: 1024,
            binary_bytes: 200 * 1024,
            daemon_start_cycles: 100_000_000,
            msg_cycles: 40_000,
            spawn_cycles: 1_000_000,
            login_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_count: 3,
        }
    }
}

impl LoginCost {
    /// One-line description for experiment notes.
    pub fn describe(&self) -> String {
        format!(
            "login model (2005-era estimates, 1 GHz CPU): ssh client {} Mcycles, sshd {} Mcycles, {} round trips of {} B, \
             GXP program {} KB sent on first contact, daemon start {} Mcycles, {} kcycles per daemon message, \
             {} kcycles per fork+exec, login timeout {:?}, keepalive {:?} x {}",
            self.ssh_client_cycles / 1_000_000,
            self.ssh_server_cycles / 1_000_000,
            self.ssh_round_trips,
            self.ssh_msg_bytes,
            self.binary_bytes / 1024,
            self.daemon_start_cycles / 1_000_000,
            self.msg_cycles / 1000,
            self.spawn_cycles / 1000,
            self.login_timeout,
            self.keepalive_interval,
            self.keepalive_count
        )
    }
}
