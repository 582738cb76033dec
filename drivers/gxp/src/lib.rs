//! GXP on real machines: logins through the system OpenSSH client (or a local launcher for test
//! hosts), the daemon tree over the login commands' stdin/stdout, commands run by `sh -c`.

pub mod daemon;
pub mod exec;
pub mod login;

mod local;

pub use daemon::{daemon_main, host_name, start_root, start_root_with, Keepalive};
pub use local::ShellLocal;
pub use login::Program;
