//! A fault-injecting TCP proxy for tests: it sits between hosts on loopback and, at random, resets
//! connections (dropping the bytes in flight), stalls them and delays them. Faults are bounded in
//! number and in time, so a test through it always ends.
//!
//! Plain OS threads and blocking sockets: it runs beside any tokio runtime without sharing it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

/// What the proxy does to the traffic through it.
#[derive(Clone, Debug)]
pub struct Chaos {
    pub seed: u64,
    /// Chance, per chunk forwarded, that the connection is reset (chunk dropped, both sides closed).
    pub reset: f64,
    /// Chance per chunk of a stall of up to `stall_max`.
    pub stall: f64,
    pub stall_max: Duration,
    /// Chance per chunk of a short delay of up to `delay_max`.
    pub delay: f64,
    pub delay_max: Duration,
    /// At most this many faults (resets + stalls + delays) in all.
    pub max_faults: u64,
    /// No faults after this much time since the proxy started.
    pub window: Duration,
}

impl Chaos {
    /// A proxy that only forwards.
    pub fn none() -> Chaos {
        Chaos {
            seed: 0,
            reset: 0.0,
            stall: 0.0,
            stall_max: Duration::ZERO,
            delay: 0.0,
            delay_max: Duration::ZERO,
            max_faults: 0,
            window: Duration::ZERO,
        }
    }
}

/// Counters of what the proxy did.
#[derive(Default, Debug)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    pub stalls: AtomicU64,
    pub delays: AtomicU64,
    pub bytes: AtomicU64,
}

pub struct ChaosProxy {
    addr: SocketAddr,
    stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

struct Shared {
    upstream: SocketAddr,
    chaos: Chaos,
    start: Instant,
    faults: AtomicU64,
    stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl ChaosProxy {
    /// Listens on a fresh loopback port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr, chaos: Chaos) -> std::io::Result<ChaosProxy> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            upstream,
            chaos,
            start: Instant::now(),
            faults: AtomicU64::new(0),
            stats: stats.clone(),
            stop: stop.clone(),
            streams: streams.clone(),
        });
        std::thread::spawn(move || {
            for (n, conn) in l.incoming().enumerate() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(shared.upstream) else {
                    continue;
                };
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let pair = || Some((client.try_clone().ok()?, server.try_clone().ok()?));
                let (Some((c2, s2)), Some((c3, s3))) = (pair(), pair()) else {
                    continue;
                };
                shared.streams.lock().extend([c3, s3]);
                let seed = shared.chaos.seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let (a, b) = (shared.clone(), shared.clone());
                std::thread::spawn(move || pump(client, server, seed, &a));
                std::thread::spawn(move || pump(s2, c2, seed ^ 1, &b));
            }
        });
        Ok(ChaosProxy {
            addr,
            stats,
            stop,
            streams,
        })
    }

    /// The address to dial instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.streams.lock().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so it sees the stop flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// Copies `from` → `to` chunk by chunk, injecting faults, until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, seed: u64, sh: &Shared) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 16 * 1024];
    let c = &sh.chaos;
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let faulty =
            sh.start.elapsed() < c.window && sh.faults.load(Ordering::Relaxed) < c.max_faults;
        if faulty {
            let roll: f64 = rng.gen();
            if roll < c.reset {
                sh.faults.fetch_add(1, Ordering::Relaxed);
                sh.stats.resets.fetch_add(1, Ordering::Relaxed);
                break;
            } else if roll < c.reset + c.stall {
                sh.faults.fetch_add(1, Ordering::Relaxed);
                sh.stats.stalls.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(c.stall_max.mul_f64(rng.gen()));
            } else if roll < c.reset + c.stall + c.delay {
                sh.faults.fetch_add(1, Ordering::Relaxed);
                sh.stats.delays.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(c.delay_max.mul_f64(rng.gen()));
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sh.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
