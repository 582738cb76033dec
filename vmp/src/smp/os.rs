//! User programs under the SMP guest kernel (`guest::smp_kernel`): every processor boots the
//! same kernel image; each program runs as a process on the processor it is placed on.

use gridbed_runtime::ClusterRef;

use super::{run_vm, CpuStart, SmpError, SmpOptions, VmOutcome};
use crate::guest::{smp_kernel, UserProgram};
use crate::layout::KERNEL_TEXT;

/// Default timer of the SMP kernel: Linux 2.6's HZ on i386 was 1000 until 2.6.13, then 250;
/// the uniprocessor runner's default is used so that both configurations tick alike.
pub const DEFAULT_TIMER_HZ: u32 = crate::run::DEFAULT_TIMER_HZ;

/// Boots the SMP kernel on every processor of `opts.cpu_hosts` with `programs` (each with the
/// processor it is placed on) and runs until it powers off.
pub async fn run(
    cluster: ClusterRef,
    programs: Vec<(UserProgram, u32)>,
    timer_hz: u32,
    opts: SmpOptions,
) -> Result<VmOutcome, SmpError> {
    let ncpus = opts.cpu_hosts.len() as u32;
    let image = smp_kernel::build_image(&programs, ncpus, timer_hz)?;
    let starts = image
        .stacks
        .iter()
        .map(|&stack_top| CpuStart {
            entry: KERNEL_TEXT,
            stack_top,
            text: image.kernel_text,
            user_text: image.user_text.clone(),
        })
        .collect();
    run_vm(cluster, image.segments, starts, opts).await
}

impl VmOutcome {
    /// The machine's exit status: what the processor that powered off wrote (process 0's
    /// exit status under the SMP kernel); `None` if no processor powered off.
    pub fn exit_status(&self) -> Option<u32> {
        self.cpus.iter().find(|c| c.powered_off).map(|c| c.status)
    }
}
