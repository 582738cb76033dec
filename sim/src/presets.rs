//! Transport presets. The source document (Yazawa & Horiguchi, JAIST, c. 2000) gives the link rates
//! only: SP Switch 1200 Mbit/s peak, Ethernet 100Base-TX 100 Mbit/s. Everything else is a physical
//! or software quantity of that era's IBM SP nodes (AIX 4.3 on PowerPC 604e/POWER3 class CPUs),
//! documented beside each value. Three host numbers are shared by all three SP-era presets, because
//! the same node ran all three transports:
//! - memory copy 150 MB/s: STREAM Copy of PowerPC 604e / POWER3 SMP nodes of 1998-99 was 100-300 MB/s
//!   (McCalpin's STREAM table); we take the low-middle of the range for a loaded SMP node.
//! - TCP/IP per-packet processing 40 us and write() call 30 us: AIX 4.3 network stack path lengths on
//!   a ~200-375 MHz CPU (tens of microseconds per packet, per the era's netperf results).
//! - socket buffers 16 KiB: AIX 4.3 defaults tcp_sendspace = tcp_recvspace = 16384.
//!
//! These host numbers are estimates, not measurements from the document: they are the model's free
//! parameters, and the report prints the stage that limits each transport so their role is visible.

use crate::transport::Transport;

/// Names of all presets, in display order.
pub const PRESET_NAMES: &[&str] = &[
    "sp2-lapi",
    "sp2-tcp",
    "ethernet-100",
    "gige-tcp",
    "10g-tcp",
    "100g-rdma",
];

const SP_NODE_COPY_MB_S: f64 = 150.0;
const AIX_TCP_PER_PACKET_US: f64 = 40.0;
const AIX_WRITE_CALL_US: f64 = 30.0;
const AIX_SOCKET_BUFFER: u64 = 16 * 1024;

/// Returns the preset transport called `name`.
pub fn transport(name: &str) -> Option<Transport> {
    Some(match name {
        // LAPI over the SP Switch: user-level, no kernel buffers. The library copies each 1 KB switch
        // packet between the user buffer and the adapter's pinned FIFO once per side (LAPI on the SP
        // Switch is "zero kernel copy", not zero copy). Switch packets: 1024 bytes with a 48-byte LAPI
        // header; 8 bytes of route/CRC framing. Per-packet dispatcher cost 11 us (LAPI's polling
        // dispatcher, an estimate for the era). No socket window: LAPI's own flow control is
        // credit-based and deep enough not to stall a single stream.
        "sp2-lapi" => Transport {
            link_mbit_s: 1200.0,
            latency_us: 20.0,
            mtu_bytes: 1024,
            header_bytes: 48,
            framing_bytes: 8,
            per_packet_us: 11.0,
            copy_mb_s: SP_NODE_COPY_MB_S,
            copies: 1.0,
            software_checksum: false,
            max_write_bytes: None,
            per_call_us: 10.0,
            window_bytes: None,
            acks_share_link: false,
            packets_per_ack: 1,
            ack_frame_bytes: 0,
        },
        // Kernel TCP/IP over the SP Switch (css0): IP MTU 65520, but the 16 KiB socket buffer caps the
        // data in flight to one packet, so each 16 KiB waits for its ACK (stop-and-wait). Two copies
        // per side (user <-> mbuf, mbuf <-> adapter FIFO) plus the software TCP checksum. Writes are
        // limited to 8 KiB per call: the per-write loop the paper blames.
        "sp2-tcp" => Transport {
            link_mbit_s: 1200.0,
            latency_us: 20.0,
            mtu_bytes: 65520,
            header_bytes: 40,
            framing_bytes: 8,
            per_packet_us: AIX_TCP_PER_PACKET_US,
            copy_mb_s: SP_NODE_COPY_MB_S,
            copies: 2.0,
            software_checksum: true,
            max_write_bytes: Some(8 * 1024),
            per_call_us: AIX_WRITE_CALL_US,
            window_bytes: Some(AIX_SOCKET_BUFFER),
            acks_share_link: false,
            packets_per_ack: 1,
            ack_frame_bytes: 0,
        },
        // Kernel TCP/IP over 100Base-TX: MTU 1500, 40 bytes TCP/IP headers (AIX rfc1323=0: no
        // timestamps), 38 bytes Ethernet framing (14 header + 4 FCS + 8 preamble + 12 inter-frame gap).
        // The SP's 100 Mbit Ethernet went through a repeater hub (half duplex), so delayed ACKs
        // (RFC 1122: one per two segments; 64-byte minimum frame + 20 bytes preamble/gap = 84 bytes)
        // take their share of the medium. CSMA/CD collisions are not modelled.
        "ethernet-100" => Transport {
            link_mbit_s: 100.0,
            latency_us: 30.0,
            mtu_bytes: 1500,
            header_bytes: 40,
            framing_bytes: 38,
            per_packet_us: AIX_TCP_PER_PACKET_US,
            copy_mb_s: SP_NODE_COPY_MB_S,
            copies: 1.0,
            software_checksum: true,
            max_write_bytes: Some(8 * 1024),
            per_call_us: AIX_WRITE_CALL_US,
            window_bytes: Some(AIX_SOCKET_BUFFER),
            acks_share_link: true,
            packets_per_ack: 2,
            ack_frame_bytes: 84,
        },
        // Modern Linux TCP over switched full-duplex Gigabit Ethernet: one copy per side at ~10 GB/s,
        // checksum offloaded, ~1 us per packet with GRO/TSO batching, 4 MiB autotuned window.
        "gige-tcp" => modern_tcp(1_000.0, 25.0, 1.0),
        // 10 GbE: same host stack, lower switch latency.
        "10g-tcp" => modern_tcp(10_000.0, 10.0, 0.5),
        // 100 Gbit/s RDMA (InfiniBand EDR class): zero copy, 4 KiB MTU, NIC does the protocol
        // (~0.05 us host cost per packet for completion handling), ~1.5 us one-way latency.
        "100g-rdma" => Transport {
            link_mbit_s: 100_000.0,
            latency_us: 1.5,
            mtu_bytes: 4096,
            header_bytes: 58,
            framing_bytes: 8,
            per_packet_us: 0.05,
            copy_mb_s: 10_000.0,
            copies: 0.0,
            software_checksum: false,
            max_write_bytes: None,
            per_call_us: 0.3,
            window_bytes: None,
            acks_share_link: false,
            packets_per_ack: 1,
            ack_frame_bytes: 0,
        },
        _ => return None,
    })
}

fn modern_tcp(link_mbit_s: f64, latency_us: f64, per_packet_us: f64) -> Transport {
    Transport {
        link_mbit_s,
        latency_us,
        // TSO/GRO: the host handles 64 KiB super-packets; the wire still carries 1500-byte frames,
        // whose framing is charged through header_bytes + framing_bytes per 64 KiB below.
        mtu_bytes: 65_536,
        header_bytes: 40 * 44,
        framing_bytes: 38 * 44,
        per_packet_us,
        copy_mb_s: 10_000.0,
        copies: 1.0,
        software_checksum: false,
        max_write_bytes: None,
        per_call_us: 2.0,
        window_bytes: Some(4 * 1024 * 1024),
        acks_share_link: false,
        packets_per_ack: 1,
        ack_frame_bytes: 0,
    }
}
