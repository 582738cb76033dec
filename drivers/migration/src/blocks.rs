//! Moving memory blocks between two OS processes on this machine (real mode of the
//! migration-bandwidth experiment). The parent times each block from its first write until the
//! sink acknowledges the last byte; the sink is a child process (the `experiment` binary's hidden
//! `__sink` command) so the bytes really cross a process boundary.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the blocks travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockPath {
    /// Loopback TCP, at most this many bytes per write() call (the paper's SP/2 situation).
    TcpLimitedWrites(usize),
    /// Loopback TCP, the whole block handed to the kernel at once.
    TcpLargeWrites,
    /// A Unix-domain socket: no TCP/IP processing, one kernel copy each way.
    Unix,
}

impl BlockPath {
    pub fn label(&self) -> String {
        match self {
            BlockPath::TcpLimitedWrites(n) => format!("this machine: TCP, {} KiB writes", n / 1024),
            BlockPath::TcpLargeWrites => "this machine: TCP, large writes".into(),
            BlockPath::Unix => "this machine: Unix socket".into(),
        }
    }
}

trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}

/// The sink side: reads `u64 length | bytes` records and acknowledges each with one byte; a zero
/// length ends the session.
pub fn run_sink(kind: &str, addr: &str) -> io::Result<()> {
    let mut s: Box<dyn Duplex> = match kind {
        "tcp" => {
            let s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
        "unix" => Box::new(UnixStream::connect(addr)?),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown sink kind '{other}'"),
            ))
        }
    };
    serve_sink(&mut s)
}

/// The sink's loop on an established connection: `u64 length | bytes` records, each acknowledged
/// with one byte, until a zero length. Reads into a fixed 1 MiB buffer whatever the announced
/// length (the bytes are discarded).
pub fn serve_sink<S: Read + Write + ?Sized>(s: &mut S) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut len = [0u8; 8];
        s.read_exact(&mut len)?;
        let mut left = u64::from_be_bytes(len);
        if left == 0 {
            return Ok(());
        }
        while left > 0 {
            let n = (left as usize).min(buf.len());
            s.read_exact(&mut buf[..n])?;
            left -= n as u64;
        }
        s.write_all(&[1])?;
    }
}

/// Kills the sink child on every exit path.
struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Measures the time to move each block size over `path`: the best of `reps` repetitions
/// (the minimum filters out scheduling noise on a shared machine). `sink_cmd` must start a process
/// that runs [`run_sink`] with the two arguments appended.
pub fn measure(
    sink_cmd: &mut Command,
    path: BlockPath,
    sizes: &[usize],
    reps: usize,
) -> io::Result<Vec<(usize, f64)>> {
    let dir = std::env::temp_dir().join(format!("gridbed-sink-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock_path = dir.join(format!("{:?}.sock", path).replace(['(', ')'], ""));
    let _ = std::fs::remove_file(&sock_path);
    let (mut conn, _child): (Box<dyn Duplex>, ChildGuard) = match path {
        BlockPath::Unix => {
            let l = UnixListener::bind(&sock_path)?;
            let child = ChildGuard(
                sink_cmd
                    .arg("unix")
                    .arg(&sock_path)
                    .stdin(Stdio::null())
                    .spawn()?,
            );
            (
                {
                    l.set_nonblocking(true)?;
                    let s =
                        accept_within(|| l.accept().map(|(s, _)| s), |s| s.set_nonblocking(false))?;
                    Box::new(s)
                },
                child,
            )
        }
        _ => {
            let l = TcpListener::bind("127.0.0.1:0")?;
            let addr = l.local_addr()?.to_string();
            let child = ChildGuard(
                sink_cmd
                    .arg("tcp")
                    .arg(&addr)
                    .stdin(Stdio::null())
                    .spawn()?,
            );
            l.set_nonblocking(true)?;
            let s = accept_within(|| l.accept().map(|(s, _)| s), |s| s.set_nonblocking(false))?;
            s.set_nodelay(true)?;
            (Box::new(s), child)
        }
    };
    let chunk = match path {
        BlockPath::TcpLimitedWrites(n) => n.max(1),
        _ => usize::MAX,
    };
    let out = send_blocks(&mut conn, chunk, sizes, reps)?;
    let _ = std::fs::remove_file(&sock_path);
    Ok(out)
}

/// Times each block size over an established connection to a sink ([`serve_sink`]), at most
/// `chunk` bytes per write() call: the best of `reps` repetitions from the first write until the
/// sink acknowledges the last byte; ends the session with a zero length.
pub fn send_blocks<S: Read + Write + ?Sized>(
    conn: &mut S,
    chunk: usize,
    sizes: &[usize],
    reps: usize,
) -> io::Result<Vec<(usize, f64)>> {
    let max = sizes.iter().copied().max().unwrap_or(0);
    let block = vec![0xA5u8; max];
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t0 = Instant::now();
            conn.write_all(&(size as u64).to_be_bytes())?;
            for piece in block[..size].chunks(chunk.min(size.max(1))) {
                conn.write_all(piece)?;
            }
            conn.flush()?;
            let mut ack = [0u8; 1];
            conn.read_exact(&mut ack)?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        out.push((size, best));
    }
    conn.write_all(&0u64.to_be_bytes())?;
    conn.flush()?;
    Ok(out)
}

/// Accepts one connection from the sink process (on a listener already set non-blocking), giving up
/// after 10 s so that a sink that died cannot hang the experiment; `blocking` restores blocking I/O
/// on the accepted stream.
fn accept_within<S>(
    accept: impl Fn() -> io::Result<S>,
    blocking: impl Fn(&S) -> io::Result<()>,
) -> io::Result<S> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match accept() {
            Ok(s) => {
                blocking(&s)?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "sink process did not connect within 10 s",
                ))
            }
            Err(e) => return Err(e),
        }
    }
}
