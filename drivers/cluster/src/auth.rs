//! Mutual authentication of a plain TCP connection between two workers of one run, with the real
//! transport's own handshake messages (`gridbed_real::handshake`: Hello → Reply with the
//! listener's HMAC over both fresh nonces → the dialer's proof), for the workers that move raw
//! bytes (block transfers) instead of speaking the reliable-link protocol. Fixed-size messages,
//! a time limit on every read: a peer without the secret learns nothing and holds nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gridbed_real::handshake::{self, Hello, Reply, HELLO_LEN, PROOF_LEN, REPLY_LEN};
use gridbed_real::ClusterSecret;

/// Bound on each handshake read.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn io(what: &str, e: std::io::Error) -> String {
    format!("handshake: {what}: {e}")
}

/// Dialer side: worker `me` proves the secret to worker `peer` and checks that `peer` holds it.
pub fn dial(s: &mut TcpStream, secret: &ClusterSecret, me: u32, peer: u32) -> Result<(), String> {
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| io("timeout", e))?;
    let hello = Hello::new(me, peer, 0).encode();
    s.write_all(&hello).map_err(|e| io("hello", e))?;
    let mut r = [0u8; REPLY_LEN];
    s.read_exact(&mut r)
        .map_err(|e| io("no reply (the peer refused this worker's secret?)", e))?;
    let reply = Reply(r);
    reply
        .verify(secret, &hello, peer)
        .map_err(|e| format!("worker {peer}: {e}"))?;
    s.write_all(&handshake::proof(secret, &hello, &reply))
        .map_err(|e| io("proof", e))?;
    s.set_read_timeout(None).map_err(|e| io("timeout", e))?;
    Ok(())
}

/// Listener side: worker `me` of `n` checks the dialer's secret; returns the dialer's index.
pub fn accept(s: &mut TcpStream, secret: &ClusterSecret, me: u32, n: u32) -> Result<u32, String> {
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| io("timeout", e))?;
    let mut hb = [0u8; HELLO_LEN];
    s.read_exact(&mut hb).map_err(|e| io("hello", e))?;
    let hello = Hello::decode(&hb, me, n).map_err(|e| format!("handshake: {e}"))?;
    let reply = Reply::new(secret, &hb, me, 0);
    s.write_all(&reply.0).map_err(|e| io("reply", e))?;
    let mut p = [0u8; PROOF_LEN];
    s.read_exact(&mut p).map_err(|e| {
        io(
            "no proof (the dialer does not hold this cluster's secret?)",
            e,
        )
    })?;
    handshake::verify_proof(secret, &hb, &reply, &p)
        .map_err(|e| format!("worker {}: {e}", hello.dialer))?;
    s.set_read_timeout(None).map_err(|e| io("timeout", e))?;
    Ok(hello.dialer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(a: &[u8], b: &[u8]) -> (Result<(), String>, Result<u32, String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (sa, sb) = (
            ClusterSecret::new(a.to_vec()).unwrap(),
            ClusterSecret::new(b.to_vec()).unwrap(),
        );
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            accept(&mut s, &sb, 0, 2)
        });
        let mut s = TcpStream::connect(addr).unwrap();
        let d = dial(&mut s, &sa, 1, 0);
        drop(s);
        (d, t.join().unwrap())
    }

    #[test]
    fn same_secret_passes_and_a_wrong_one_fails_on_both_sides() {
        let (d, a) = pair(b"0123456789abcdef", b"0123456789abcdef");
        assert_eq!(d, Ok(()));
        assert_eq!(a, Ok(1));
        let (d, a) = pair(b"0123456789abcdef", b"fedcba9876543210");
        assert!(d.unwrap_err().contains("authentication failed"));
        assert!(a.is_err());
    }
}
