//! A virtual processor as a task on a host: its modelled time is charged with `compute`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use gridbed_runtime::{Addr, BoxFuture, Host, HostId, Mailbox, NetError};
use gridbed_vmp::guest::{build_image, programs};
use gridbed_vmp::host::run_on_host;
use gridbed_vmp::machine::{Config, Machine};
use gridbed_vmp::time::Preset;

#[derive(Default)]
struct CountingHost {
    cycles: AtomicU64,
    calls: AtomicU64,
    slept: Mutex<Duration>,
}

impl Host for CountingHost {
    fn id(&self) -> HostId {
        HostId(0)
    }
    fn name(&self) -> String {
        "counting".into()
    }
    fn hosts(&self) -> Vec<HostId> {
        vec![HostId(0)]
    }
    fn can_reach(&self, _: HostId) -> bool {
        true
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        *self.slept.lock().unwrap() += d;
        Box::pin(async {})
    }
    fn rng_u64(&self) -> u64 {
        4
    }
    fn compute(&self, cycles: u64) -> BoxFuture<'static, ()> {
        self.cycles.fetch_add(cycles, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async {})
    }
    fn cpu_hz(&self) -> f64 {
        3.0e9
    }
    fn spawn(&self, _: &str, _: BoxFuture<'static, ()>) {}
    fn bind(&self, p: u16) -> Result<Box<dyn Mailbox>, NetError> {
        Err(NetError::PortInUse(p))
    }
    fn send(&self, _: u16, to: Addr, _: Vec<u8>) -> BoxFuture<'static, Result<(), NetError>> {
        Box::pin(async move { Err(NetError::Unreachable(to)) })
    }
    fn disconnect(&self, _: HostId) {}
    fn event(&self, _: &str) {}
}

#[test]
fn getpid_guest_charges_its_modelled_time_to_the_host() {
    let p = Preset::PC_2005;
    let img = build_image(&[programs::getpid_loop(0, 1000).unwrap()], 100).unwrap();
    let mut m = Machine::new(Config::Vmp, p.cpu, &img).unwrap();
    let host = CountingHost::default();
    let r = futures::executor::block_on(run_on_host(&host, &mut m, &p, 2_000)).unwrap();
    assert_eq!(r.exit_status, 0);
    assert!(r.slices > 5, "ran in slices: {}", r.slices);
    // Charged = modelled guest + monitor time at the host's 3 GHz: ~55 us per modelled getpid.
    let mon = m.monitor();
    let expect =
        (p.cpu.seconds(p.cpu.cycles(mon.retired)) + p.trap.monitor_seconds(&mon.stats)) * 3.0e9;
    let got = host.cycles.load(Ordering::Relaxed) as f64;
    assert!(
        (got - expect).abs() / expect < 1e-6,
        "charged {got} expected {expect}"
    );
    assert!(
        got / 3.0e9 > 0.05,
        "vmp getpid loop should cost tens of ms on the 2005 model"
    );
    // The boot idles until the first 100 Hz tick.
    assert!(*host.slept.lock().unwrap() >= Duration::from_millis(9));
}
