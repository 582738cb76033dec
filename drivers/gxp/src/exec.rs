//! Running a command on a real host: `sh -c CMD` with GXP's environment, stdin fed from the tree,
//! stdout/stderr streamed back in chunks, killable.

use std::process::Stdio;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::process::Command;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

use gridbed_gxp::tree::proto::{ExecSpec, Status, Stream, OUTPUT_CHUNK};

/// What a running command reports.
pub enum ExecEvent {
    Output(Stream, Vec<u8>),
    /// This many stdin bytes were written to the command (or dropped after it closed its stdin).
    StdinConsumed(u64),
    Exited(Status),
}

/// Handle to feed and stop a running command.
pub struct ExecHandle {
    pub stdin: UnboundedSender<Option<Vec<u8>>>,
    pub kill: UnboundedSender<()>,
    /// Output flow control (None: no output window).
    credit: Option<Arc<Credit>>,
}

/// The output window of one command: the bytes it may still send up, and the bytes sent up but not
/// yet acknowledged.
struct Credit {
    permits: Semaphore,
    unacked: AtomicU64,
}

impl ExecHandle {
    /// The controller consumed `bytes` of output: let that much more be read. An acknowledgement
    /// comes from the wire, so only bytes actually sent and not yet acknowledged count: a bogus
    /// one can neither widen the window nor overflow the semaphore.
    pub fn output_credit(&self, bytes: u64) {
        let Some(c) = &self.credit else { return };
        let mut taken = 0;
        let _ = c
            .unacked
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                taken = u.min(bytes);
                Some(u - taken)
            });
        if let Ok(n) = usize::try_from(taken) {
            c.permits.add_permits(n);
        }
    }
}

/// Starts `spec` as `sh -c`; events go to `report` (the last one is `Exited`).
pub fn start(
    spec: &ExecSpec,
    host_name: &str,
    exec_idx: u32,
    report: impl Fn(ExecEvent) + Send + Sync + 'static,
) -> ExecHandle {
    let (stdin_tx, stdin_rx) = unbounded_channel::<Option<Vec<u8>>>();
    let (kill_tx, kill_rx) = unbounded_channel::<()>();
    if !spec.stdin_open {
        let _ = stdin_tx.send(None);
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&spec.cmd);
    cmd.env("GXP_HOSTNAME", host_name)
        .env("GXP_EXEC_IDX", exec_idx.to_string())
        .env("GXP_NUM_EXECS", spec.num_execs.to_string());
    // The installed program itself, so a command can start another role of it (the cluster
    // launcher's workers are the same checksum-verified executable as the daemon).
    if let Ok(exe) = std::env::current_exe() {
        cmd.env("GXP_PROGRAM", exe);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if let Some(d) = &spec.cwd {
        cmd.current_dir(d);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a kill reaches what `sh` started too (`sleep 1; yes`): an
        // orphan holding the output pipes would keep the command from ever being reported ended.
        .process_group(0);
    // The usual reason a spawn fails is the working directory: name it.
    let spawned = cmd.spawn().map_err(|e| match &spec.cwd {
        Some(d) => std::io::Error::new(e.kind(), format!("{e} (working directory {d})")),
        None => e,
    });
    // Stdout and stderr share the window; each reader holds a chunk's worth while it waits for
    // data, so below two chunks one stream could starve the other.
    let credit = spec.output_window.map(|w| {
        Arc::new(Credit {
            permits: Semaphore::new(
                usize::try_from(w)
                    .unwrap_or(usize::MAX >> 4)
                    .clamp(2 * OUTPUT_CHUNK, Semaphore::MAX_PERMITS >> 1),
            ),
            unacked: AtomicU64::new(0),
        })
    });
    tokio::spawn(supervise(
        spawned,
        stdin_rx,
        kill_rx,
        credit.clone(),
        report,
    ));
    ExecHandle {
        stdin: stdin_tx,
        kill: kill_tx,
        credit,
    }
}

async fn supervise(
    spawned: std::io::Result<tokio::process::Child>,
    mut stdin_rx: UnboundedReceiver<Option<Vec<u8>>>,
    mut kill_rx: UnboundedReceiver<()>,
    credit: Option<Arc<Credit>>,
    report: impl Fn(ExecEvent) + Send + Sync + 'static,
) {
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return report(ExecEvent::Exited(Status::Failed(format!(
                "cannot start sh: {e}"
            ))))
        }
    };
    let report = std::sync::Arc::new(report);
    if let Some(mut w) = child.stdin.take() {
        let r = report.clone();
        tokio::spawn(async move {
            let mut open = true;
            while let Some(Some(data)) = stdin_rx.recv().await {
                // After the command closed its stdin the rest is dropped, but still acknowledged so
                // the controller's window keeps moving for the other hosts.
                if open && w.write_all(&data).await.is_err() {
                    open = false;
                }
                r(ExecEvent::StdinConsumed(data.len() as u64));
            }
            let _ = w.shutdown().await;
        });
    }
    let mut readers = Vec::new();
    for (stream, pipe) in [
        (
            Stream::Stdout,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
        (
            Stream::Stderr,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let r = report.clone();
        // Both streams are flow-controlled: a host printing gigabytes to stderr must be held back
        // as much as one printing to stdout.
        let credit = credit.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; OUTPUT_CHUNK];
            loop {
                // Take a chunk's worth of credit before reading; give back what the read left.
                if let Some(c) = &credit {
                    match c.permits.acquire_many(OUTPUT_CHUNK as u32).await {
                        Ok(p) => p.forget(),
                        Err(_) => break, // closed: the command was killed
                    }
                }
                let n = pipe.read(&mut buf).await.unwrap_or(0);
                if let Some(c) = &credit {
                    c.unacked.fetch_add(n as u64, Ordering::SeqCst);
                    c.permits.add_permits(OUTPUT_CHUNK - n);
                }
                if n == 0 {
                    break;
                }
                r(ExecEvent::Output(stream, buf[..n].to_vec()));
            }
        }));
    }
    let status = tokio::select! {
        s = child.wait() => s,
        _ = kill_rx.recv() => {
            kill_group(&mut child);
            // A reader waiting for credit would wait forever: nobody reads a killed command.
            if let Some(c) = &credit {
                c.permits.close();
            }
            child.wait().await
        }
    };
    for r in readers {
        let _ = r.await;
    }
    let status = match status {
        Ok(s) => match s.code() {
            Some(c) => Status::Code(c),
            None => {
                use std::os::unix::process::ExitStatusExt;
                Status::Signal(s.signal().unwrap_or(0))
            }
        },
        Err(e) => Status::Failed(e.to_string()),
    };
    report(ExecEvent::Exited(status));
}

/// SIGKILLs the command's process group (falls back to the child alone if it has no pid left).
fn kill_group(child: &mut tokio::process::Child) {
    match child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
        Some(pid) => unsafe {
            libc::kill(-pid, libc::SIGKILL);
        },
        None => {
            let _ = child.start_kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridbed_gxp::tree::proto::Selection;
    use std::time::Duration;

    /// An acknowledgement for bytes never sent (here the largest one the wire can carry) must not
    /// panic the daemon nor let the command send more than its window.
    #[tokio::test]
    async fn bogus_output_acks_neither_panic_nor_widen_the_window() {
        let window = 2 * OUTPUT_CHUNK as u64;
        let spec = ExecSpec {
            exec: 1,
            cmd: "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2".into(),
            cwd: None,
            selection: Selection::All,
            num_execs: 1,
            exec_idx: None,
            env: vec![],
            stdin_open: false,
            output_window: Some(window),
        };
        let (tx, mut rx) = unbounded_channel();
        let h = start(&spec, "h", 0, move |ev| {
            let _ = tx.send(ev);
        });
        h.output_credit(u64::MAX);
        h.output_credit(u64::MAX);
        let mut total = 0u64;
        // Without acknowledgements the command stops at its window.
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            if let ExecEvent::Output(_, d) = ev {
                total += d.len() as u64;
            }
        }
        assert!(
            total > 0 && total <= window,
            "{total} bytes past a {window}-byte window"
        );
        // Honest acknowledgements let it finish, stderr included.
        h.output_credit(total);
        let mut by_stream = [total, 0];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(ExecEvent::Output(s, d))) => {
                    by_stream[(s == Stream::Stderr) as usize] += d.len() as u64;
                    h.output_credit(d.len() as u64);
                }
                Ok(Some(ExecEvent::Exited(st))) => {
                    assert_eq!(st, Status::Code(0));
                    break;
                }
                Ok(Some(ExecEvent::StdinConsumed(_))) => {}
                other => panic!("command did not finish: {:?}", other.is_ok()),
            }
        }
        assert_eq!(by_stream[0] + by_stream[1], 2_000_000);
    }
}
