fn main() {
    for name in gridbed_sim::presets::PRESET_NAMES {
        let c = gridbed_sim::presets::transport(name).unwrap().cost();
        println!("{name:14} {:8.1} Mbit/s bottleneck {:?} alpha {:.1}us  40MB {:.4}s  send {:.1} wire {:.1} recv {:.1} rtt {:.1} us", c.bandwidth_mbit_s(), c.bottleneck, c.alpha_s*1e6, c.transfer_time(40_000_000), c.send_host_s*1e6, c.wire_s*1e6, c.recv_host_s*1e6, c.packet_rtt_s*1e6);
    }
}
