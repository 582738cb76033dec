//! Mutual authentication of every connection with a per-cluster secret (HMAC-SHA256
//! challenge–response), done before any frame is read.
//!
//! ```text
//! dialer → listener  Hello   "GBH" | ver | dialer u32 | listener u32 | dialer epoch u64 | nonce_d[32]
//! listener → dialer  Reply   "GBH" | ver | listener u32 | listener epoch u64 | nonce_l[32] | mac_l[32]
//! dialer → listener  Proof   mac_d[32]
//! listener → dialer  Resume  status u8 | delivered u64
//! mac_l = HMAC(secret, "gridbed/2 listener" | Hello | Reply without mac)
//! mac_d = HMAC(secret, "gridbed/2 dialer"   | Hello | Reply)
//! ```
//! Each side's MAC covers the other side's fresh nonce, so a recorded exchange cannot be replayed;
//! the role labels differ, so a listener's answer cannot be reflected back as a dialer's proof.
//! The peer id in `Hello` is pinned for the connection's lifetime.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use thiserror::Error;

pub const HELLO_MAGIC: [u8; 3] = *b"GBH";
pub const HANDSHAKE_VERSION: u8 = 2;
pub const HELLO_LEN: usize = 3 + 1 + 4 + 4 + 8 + 32;
pub const REPLY_LEN: usize = 3 + 1 + 4 + 8 + 32 + 32;
pub const PROOF_LEN: usize = 32;
pub const RESUME_LEN: usize = 1 + 8;
/// Shortest secret accepted: 16 bytes (128 bits).
pub const MIN_SECRET_LEN: usize = 16;
/// The environment variable the process binaries read the cluster secret from.
pub const SECRET_ENV: &str = "GRIDBED_CLUSTER_SECRET";

type HmacSha256 = Hmac<Sha256>;

/// The secret every host of one cluster shares. Never printed.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the cluster secret has {0} bytes; at least {MIN_SECRET_LEN} are needed")]
    TooShort(usize),
    #[error("no cluster secret: set {SECRET_ENV} (at least {MIN_SECRET_LEN} bytes) in the environment of every host")]
    Missing,
}

impl ClusterSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<ClusterSecret, SecretError> {
        let b = bytes.into();
        if b.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort(b.len()));
        }
        Ok(ClusterSecret(b))
    }

    /// A fresh 32-byte secret from the OS (for clusters started inside one process).
    pub fn random() -> ClusterSecret {
        let mut b = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        ClusterSecret(b)
    }

    /// A fresh random secret as text, to hand to child processes in [`SECRET_ENV`].
    pub fn random_env_value() -> String {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Reads the secret from [`SECRET_ENV`] (never from the command line, where `ps` shows it).
    pub fn from_env() -> Result<ClusterSecret, SecretError> {
        match std::env::var_os(SECRET_ENV) {
            Some(v) => ClusterSecret::new(v.into_encoded_bytes()),
            None => Err(SecretError::Missing),
        }
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(label);
        for p in parts {
            m.update(p);
        }
        m
    }
}

const LISTENER_LABEL: &[u8] = b"gridbed/2 listener";
const DIALER_LABEL: &[u8] = b"gridbed/2 dialer";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("not a gridbed handshake (bad magic)")]
    BadMagic,
    #[error("handshake version {0} (this build speaks {HANDSHAKE_VERSION})")]
    BadVersion(u8),
    #[error("peer h{got} answered where h{want} was dialed")]
    WrongPeer { want: u32, got: u32 },
    #[error("peer claims host id {0}, not a host of this cluster")]
    UnknownHost(u32),
    #[error(
        "authentication failed: the peer does not hold this cluster's secret (wrong {SECRET_ENV}?)"
    )]
    BadMac,
    #[error("unknown resume status {0}")]
    BadStatus(u8),
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

fn check_prefix(b: &[u8]) -> Result<(), HandshakeError> {
    if b[0..3] != HELLO_MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    if b[3] != HANDSHAKE_VERSION {
        return Err(HandshakeError::BadVersion(b[3]));
    }
    Ok(())
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}
fn be64(b: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

/// The dialer's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub dialer: u32,
    pub listener: u32,
    pub dialer_epoch: u64,
    pub nonce: [u8; 32],
}

impl Hello {
    pub fn new(dialer: u32, listener: u32, dialer_epoch: u64) -> Hello {
        Hello {
            dialer,
            listener,
            dialer_epoch,
            nonce: nonce(),
        }
    }
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..3].copy_from_slice(&HELLO_MAGIC);
        b[3] = HANDSHAKE_VERSION;
        b[4..8].copy_from_slice(&self.dialer.to_be_bytes());
        b[8..12].copy_from_slice(&self.listener.to_be_bytes());
        b[12..20].copy_from_slice(&self.dialer_epoch.to_be_bytes());
        b[20..52].copy_from_slice(&self.nonce);
        b
    }
    /// Decodes and checks a `Hello` arriving at listener `me` of a cluster of `n_hosts`.
    pub fn decode(b: &[u8; HELLO_LEN], me: u32, n_hosts: u32) -> Result<Hello, HandshakeError> {
        check_prefix(b)?;
        let h = Hello {
            dialer: be32(b, 4),
            listener: be32(b, 8),
            dialer_epoch: be64(b, 12),
            nonce: b[20..52].try_into().expect("32 bytes"),
        };
        if h.listener != me {
            return Err(HandshakeError::WrongPeer {
                want: me,
                got: h.listener,
            });
        }
        if h.dialer >= n_hosts {
            return Err(HandshakeError::UnknownHost(h.dialer));
        }
        Ok(h)
    }
}

/// The listener's answer: its identity, its nonce and its proof of the secret.
pub struct Reply(pub [u8; REPLY_LEN]);

impl Reply {
    pub fn new(secret: &ClusterSecret, hello: &[u8; HELLO_LEN], me: u32, epoch: u64) -> Reply {
        let mut b = [0u8; REPLY_LEN];
        b[0..3].copy_from_slice(&HELLO_MAGIC);
        b[3] = HANDSHAKE_VERSION;
        b[4..8].copy_from_slice(&me.to_be_bytes());
        b[8..16].copy_from_slice(&epoch.to_be_bytes());
        b[16..48].copy_from_slice(&nonce());
        let mac = secret.mac(LISTENER_LABEL, &[hello, &b[..48]]).finalize();
        b[48..80].copy_from_slice(&mac.into_bytes());
        Reply(b)
    }
    /// Checks the listener's answer to `hello` (which dialed `want`); returns its epoch.
    pub fn verify(
        &self,
        secret: &ClusterSecret,
        hello: &[u8; HELLO_LEN],
        want: u32,
    ) -> Result<u64, HandshakeError> {
        let b = &self.0;
        check_prefix(b)?;
        let got = be32(b, 4);
        if got != want {
            return Err(HandshakeError::WrongPeer { want, got });
        }
        secret
            .mac(LISTENER_LABEL, &[hello, &b[..48]])
            .verify_slice(&b[48..80])
            .map_err(|_| HandshakeError::BadMac)?;
        Ok(be64(b, 8))
    }
}

/// The dialer's proof of the secret, bound to both nonces.
pub fn proof(secret: &ClusterSecret, hello: &[u8; HELLO_LEN], reply: &Reply) -> [u8; PROOF_LEN] {
    secret
        .mac(DIALER_LABEL, &[hello, &reply.0])
        .finalize()
        .into_bytes()
        .into()
}

pub fn verify_proof(
    secret: &ClusterSecret,
    hello: &[u8; HELLO_LEN],
    reply: &Reply,
    proof: &[u8; PROOF_LEN],
) -> Result<(), HandshakeError> {
    secret
        .mac(DIALER_LABEL, &[hello, &reply.0])
        .verify_slice(proof)
        .map_err(|_| HandshakeError::BadMac)
}

/// Where the dialer's retransmission starts, as the listener's receive state says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The listener delivered every sequence number up to this one from the dialer's epoch.
    From(u64),
    /// The listener has no state for the dialer's epoch (either side restarted): it takes the
    /// first frame as the start of the sequence.
    Fresh,
    /// The listener dropped the connection because the dialer misbehaved (`disconnect`); it had
    /// delivered up to this sequence number (0: none). Every frame the dialer had already written
    /// and that was not delivered is discarded; frames never written go out on the new connection.
    Discard(u64),
}

impl Resume {
    pub fn encode(self) -> [u8; RESUME_LEN] {
        let mut b = [0u8; RESUME_LEN];
        let (status, n) = match self {
            Resume::From(n) => (0, n),
            Resume::Fresh => (1, 0),
            Resume::Discard(n) => (2, n),
        };
        b[0] = status;
        b[1..9].copy_from_slice(&n.to_be_bytes());
        b
    }
    pub fn decode(b: &[u8; RESUME_LEN]) -> Result<Resume, HandshakeError> {
        match b[0] {
            0 => Ok(Resume::From(be64(b, 1))),
            1 => Ok(Resume::Fresh),
            2 => Ok(Resume::Discard(be64(b, 1))),
            s => Err(HandshakeError::BadStatus(s)),
        }
    }
}

/// The dialer's side, on a blocking socket (tools and tests that speak to a real host).
pub fn dial_blocking(
    s: &mut (impl std::io::Read + std::io::Write),
    secret: &ClusterSecret,
    hello: &Hello,
) -> anyhow::Result<(u64, Resume)> {
    let h = hello.encode();
    s.write_all(&h)?;
    let mut r = [0u8; REPLY_LEN];
    s.read_exact(&mut r)?;
    let reply = Reply(r);
    let epoch = reply.verify(secret, &h, hello.listener)?;
    s.write_all(&proof(secret, &h, &reply))?;
    let mut res = [0u8; RESUME_LEN];
    s.read_exact(&mut res)?;
    Ok((epoch, Resume::decode(&res)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> ClusterSecret {
        ClusterSecret::new(vec![b; 32]).unwrap()
    }

    #[test]
    fn both_sides_verify_with_the_same_secret() {
        let s = secret(1);
        let hello = Hello::new(0, 1, 77);
        let h = hello.encode();
        assert_eq!(Hello::decode(&h, 1, 2), Ok(hello));
        let reply = Reply::new(&s, &h, 1, 99);
        assert_eq!(reply.verify(&s, &h, 1), Ok(99));
        let p = proof(&s, &h, &reply);
        assert_eq!(verify_proof(&s, &h, &reply, &p), Ok(()));
    }

    #[test]
    fn a_wrong_secret_fails_on_either_side() {
        let (good, bad) = (secret(1), secret(2));
        let h = Hello::new(0, 1, 7).encode();
        let reply = Reply::new(&bad, &h, 1, 9);
        assert_eq!(reply.verify(&good, &h, 1), Err(HandshakeError::BadMac));
        let reply = Reply::new(&good, &h, 1, 9);
        let p = proof(&bad, &h, &reply);
        assert_eq!(
            verify_proof(&good, &h, &reply, &p),
            Err(HandshakeError::BadMac)
        );
    }

    #[test]
    fn a_listener_answer_is_not_a_dialer_proof_and_not_replayable() {
        let s = secret(1);
        let h = Hello::new(0, 1, 7).encode();
        let reply = Reply::new(&s, &h, 1, 9);
        let reflected: [u8; 32] = reply.0[48..80].try_into().unwrap();
        assert_eq!(
            verify_proof(&s, &h, &reply, &reflected),
            Err(HandshakeError::BadMac)
        );
        // The same proof against a fresh listener nonce fails.
        let p = proof(&s, &h, &reply);
        let reply2 = Reply::new(&s, &h, 1, 9);
        assert_eq!(
            verify_proof(&s, &h, &reply2, &p),
            Err(HandshakeError::BadMac)
        );
    }

    #[test]
    fn hello_checks_ids_and_version() {
        let mut h = Hello::new(5, 1, 0).encode();
        assert_eq!(Hello::decode(&h, 1, 3), Err(HandshakeError::UnknownHost(5)));
        assert_eq!(
            Hello::decode(&h, 2, 9),
            Err(HandshakeError::WrongPeer { want: 2, got: 1 })
        );
        h[3] = 1;
        assert_eq!(Hello::decode(&h, 1, 9), Err(HandshakeError::BadVersion(1)));
        assert_eq!(
            ClusterSecret::new(vec![0; 3]).unwrap_err(),
            SecretError::TooShort(3)
        );
    }
}
