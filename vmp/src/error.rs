//! Errors of the virtual processor. Every guest misbehaviour becomes one of these, naming the guest
//! EIP and, where there is an instruction, its disassembly.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VmpError {
    #[error("unicorn: {0}")]
    Engine(String),
    #[error("guest instruction at eip {eip:#010x} cannot be decoded (bytes {bytes})")]
    Undecodable { eip: u32, bytes: String },
    #[error("unsupported privileged instruction at eip {eip:#010x}: {asm}")]
    Unsupported { eip: u32, asm: String },
    #[error("guest triple fault at eip {eip:#010x} ({asm}): {why}")]
    TripleFault { eip: u32, asm: String, why: String },
    #[error("guest exceeded its budget of {budget} instructions at eip {eip:#010x} ({asm})")]
    Runaway { eip: u32, asm: String, budget: u64 },
    #[error("guest accessed unmapped memory at {addr:#010x} from eip {eip:#010x} ({asm})")]
    Unmapped { eip: u32, addr: u64, asm: String },
    #[error("guest halted with interrupts disabled at eip {eip:#010x}: it can never wake up")]
    DeadHalt { eip: u32 },
    #[error("bad ELF: {0}")]
    BadElf(String),
    #[error("bad guest image: {0}")]
    BadImage(String),
}

impl From<unicorn_engine::uc_error> for VmpError {
    fn from(e: unicorn_engine::uc_error) -> Self {
        VmpError::Engine(format!("{e:?}"))
    }
}

pub type Result<T> = std::result::Result<T, VmpError>;
