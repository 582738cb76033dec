//! The local ends of network pipes in real mode: `sh -c` on this machine, stdin and stdout streamed
//! through bounded channels so neither end is ever held whole in memory.

use std::process::Stdio;

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use gridbed_gxp::front::pipe::{LocalProc, LocalRunner, LOCAL_QUEUE};
use gridbed_gxp::tree::proto::{Status, OUTPUT_CHUNK};

/// Runs pipeline ends with `sh -c`; their stderr goes to this process's stderr.
pub struct ShellLocal;

impl LocalRunner for ShellLocal {
    fn timer(&self, d: std::time::Duration) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }

    fn start(&self, cmd: &str) -> LocalProc {
        let (stdin, mut in_rx) = mpsc::channel::<Vec<u8>>(LOCAL_QUEUE);
        let (mut out_tx, stdout) = mpsc::channel::<Vec<u8>>(LOCAL_QUEUE);
        let (done_tx, done) = oneshot::channel();
        let (kill, kill_rx) = oneshot::channel::<()>();
        let spawned = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = done_tx.send(Status::Failed(format!("cannot start sh: {e}")));
                return LocalProc {
                    stdin,
                    stdout,
                    done,
                    kill,
                };
            }
        };
        if let Some(mut w) = child.stdin.take() {
            tokio::spawn(async move {
                while let Some(d) = in_rx.next().await {
                    if w.write_all(&d).await.is_err() {
                        break; // it closed its stdin: dropping `in_rx` tells the controller
                    }
                }
            });
        }
        if let Some(mut r) = child.stdout.take() {
            tokio::spawn(async move {
                let mut buf = vec![0u8; OUTPUT_CHUNK];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 || out_tx.send(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            });
        }
        tokio::spawn(async move {
            let st = tokio::select! {
                s = child.wait() => s,
                k = kill_rx => {
                    if k.is_ok() {
                        let _ = child.start_kill();
                    }
                    child.wait().await
                }
            };
            let _ = done_tx.send(match st {
                Ok(s) => match s.code() {
                    Some(c) => Status::Code(c),
                    None => {
                        use std::os::unix::process::ExitStatusExt;
                        Status::Signal(s.signal().unwrap_or(0))
                    }
                },
                Err(e) => Status::Failed(e.to_string()),
            });
        });
        LocalProc {
            stdin,
            stdout,
            done,
            kill,
        }
    }
}
