//! Running a command on a real host: `sh -c CMD` with GXP's environment, stdin fed from the tree,
//! stdout/stderr streamed back in chunks, killable.

use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::proto::{ExecSpec, Status, Stream, OUTPUT_CHUNK};

/// What a running command reports.
pub enum ExecEvent {
    Output(Stream, Vec<u8>),
    Exited(Status),
}

/// Handle to feed and stop a running command.
pub struct ExecHandle {
    pub stdin: UnboundedSender<Option<Vec<u8>>>,
    pub kill: UnboundedSender<()>,
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
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    tokio::spawn(supervise(spawned, stdin_rx, kill_rx, report));
    ExecHandle {
        stdin: stdin_tx,
        kill: kill_tx,
    }
}

async fn supervise(
    spawned: std::io::Result<tokio::process::Child>,
    mut stdin_rx: UnboundedReceiver<Option<Vec<u8>>>,
    mut kill_rx: UnboundedReceiver<()>,
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
        tokio::spawn(async move {
            while let Some(Some(data)) = stdin_rx.recv().await {
                if w.write_all(&data).await.is_err() {
                    break; // the command closed its stdin: drop the rest
                }
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
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; OUTPUT_CHUNK];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                r(ExecEvent::Output(stream, buf[..n].to_vec()));
            }
        }));
    }
    let status = tokio::select! {
        s = child.wait() => s,
        _ = kill_rx.recv() => { let _ = child.start_kill(); child.wait().await }
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
