//! Running a command on a real host: `sh -c CMD` with GXP's environment, stdin fed from the tree,
//! stdout/stderr streamed back in chunks, killable.

use std::process::Stdio;

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::process::Command;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

use gridbed_gxp::proto::{ExecSpec, Status, Stream, OUTPUT_CHUNK};

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
    /// Bytes of stdout the command may still send up (None: no output window).
    credit: Option<Arc<Semaphore>>,
}

impl ExecHandle {
    /// The controller consumed `bytes` of stdout: let that much more be read.
    pub fn output_credit(&self, bytes: u64) {
        if let Some(c) = &self.credit {
            c.add_permits(usize::try_from(bytes).unwrap_or(OUTPUT_CHUNK));
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
    // A window below one chunk could never let a read through.
    let credit = spec.output_window.map(|w| {
        Arc::new(Semaphore::new(
            usize::try_from(w)
                .unwrap_or(usize::MAX >> 4)
                .clamp(OUTPUT_CHUNK, Semaphore::MAX_PERMITS),
        ))
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
    credit: Option<Arc<Semaphore>>,
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
        // Only stdout is flow-controlled: it is what a pipe's consumer reads.
        let credit = credit.clone().filter(|_| stream == Stream::Stdout);
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; OUTPUT_CHUNK];
            loop {
                // Take a chunk's worth of credit before reading; give back what the read left.
                if let Some(c) = &credit {
                    match c.acquire_many(OUTPUT_CHUNK as u32).await {
                        Ok(p) => p.forget(),
                        Err(_) => break, // closed: the command was killed
                    }
                }
                let n = pipe.read(&mut buf).await.unwrap_or(0);
                if let Some(c) = &credit {
                    c.add_permits(OUTPUT_CHUNK - n);
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
                c.close();
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
