//! GXP on real machines: logins through the system OpenSSH client (or a local launcher for test
//! hosts), the daemon tree over the login commands' stdin/stdout, commands run by `sh -c`.

pub mod daemon;
pub mod exec;
pub mod login;

use std::process::Stdio;

use gridbed_runtime::BoxFuture;
use tokio::io::AsyncWriteExt;

use crate::pipe::LocalRunner;
use crate::proto::Status;

pub use daemon::{daemon_main, host_name, start_root};
pub use login::Program;

/// The local ends of network pipes: `sh -c` on this machine.
pub struct ShellLocal;

impl LocalRunner for ShellLocal {
    fn run<'a>(&'a self, cmd: &'a str, stdin: Vec<u8>) -> BoxFuture<'a, (Vec<u8>, Status)> {
        Box::pin(async move {
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => return (Vec::new(), Status::Failed(format!("cannot start sh: {e}"))),
            };
            if let Some(mut w) = child.stdin.take() {
                tokio::spawn(async move {
                    let _ = w.write_all(&stdin).await;
                    let _ = w.shutdown().await;
                });
            }
            match child.wait_with_output().await {
                Ok(o) => {
                    let st = match o.status.code() {
                        Some(c) => Status::Code(c),
                        None => Status::Signal(0),
                    };
                    (o.stdout, st)
                }
                Err(e) => (Vec::new(), Status::Failed(e.to_string())),
            }
        })
    }
}
