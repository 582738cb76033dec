//! The cost of moving bytes through one host-to-host transport, from physical parameters.
//!
//! A message is cut into packets that flow through three pipelined stages: the sending host's
//! software (write calls, protocol processing, copies), the wire, and the receiving host's software.
//! In steady state one packet leaves every `cycle` = the slowest stage, unless a flow-control window
//! smaller than the bandwidth-delay product stalls the sender for acknowledgements. This yields the
//! Hockney form `T(S) = alpha + beta * S`:
//! - `beta`  = cycle / payload-per-packet (seconds per byte, the inverse large-block bandwidth);
//! - `alpha` = one-way latency + the fixed per-message costs of the first packet (the knee).
//!
//! The form is what makes the simulator's guarantees hold by construction: time is monotone in size,
//! and two messages cost at least one (each pays `alpha`).

use serde::{Deserialize, Serialize};

/// Physical and software parameters of one transport (a host stack over a link).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transport {
    /// Link signalling rate available to this transport's frames, Mbit/s.
    pub link_mbit_s: f64,
    /// One-way latency of adapter + wire + switch, microseconds (no host software).
    pub latency_us: f64,
    /// Largest packet the protocol sends (headers included, link framing excluded), bytes.
    pub mtu_bytes: u32,
    /// Protocol headers inside each packet (TCP/IP, LAPI), bytes.
    pub header_bytes: u32,
    /// Link framing per packet outside the MTU (preamble, CRC, inter-frame gap, route bytes), bytes.
    pub framing_bytes: u32,
    /// Host protocol processing per packet, per side (interrupt, protocol, dispatcher), microseconds.
    pub per_packet_us: f64,
    /// Host memory-copy bandwidth, MB/s (10^6 bytes/s).
    pub copy_mb_s: f64,
    /// Copies of each byte per side between the user buffer and the adapter (0 = zero copy).
    pub copies: f64,
    /// Whether a software checksum pass reads each byte on each side (costs half a copy).
    pub software_checksum: bool,
    /// Largest write/put the API accepts in one call; larger blocks loop. None = unlimited.
    pub max_write_bytes: Option<u64>,
    /// Fixed cost of one write/put call (system call or library entry), microseconds.
    pub per_call_us: f64,
    /// Flow-control window (socket buffer), bytes. None = no window stall.
    pub window_bytes: Option<u64>,
    /// Whether acknowledgement frames share the forward link (half-duplex shared medium).
    pub acks_share_link: bool,
    /// Data packets per acknowledgement (delayed ACK), when acks are modelled.
    pub packets_per_ack: u32,
    /// Size on the wire of one acknowledgement frame, framing included, bytes.
    pub ack_frame_bytes: u32,
}

/// Which stage limits the steady-state rate.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bottleneck {
    SenderHost,
    Wire,
    ReceiverHost,
    Window,
}

/// Per-packet stage times and the derived Hockney parameters of one transport.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cost {
    /// Payload bytes per packet actually used (MTU payload, capped by the window).
    pub payload_per_packet: f64,
    pub send_host_s: f64,
    pub wire_s: f64,
    pub recv_host_s: f64,
    /// Round trip of one packet and its acknowledgement (window stall computation).
    pub packet_rtt_s: f64,
    /// Steady-state time between packets.
    pub cycle_s: f64,
    pub bottleneck: Bottleneck,
    /// Fixed per-message time, seconds.
    pub alpha_s: f64,
    /// Time per byte, seconds.
    pub beta_s: f64,
}

impl Cost {
    /// Time to move `bytes` from one host's user buffer into another's.
    pub fn transfer_time(&self, bytes: u64) -> f64 {
        self.alpha_s + self.beta_s * bytes as f64
    }

    /// Large-block bandwidth in Mbit/s (10^6 bits/s).
    pub fn bandwidth_mbit_s(&self) -> f64 {
        8.0 / self.beta_s / 1e6
    }
}

const US: f64 = 1e-6;

/// Slowest and fastest rate accepted (Mbit/s for links, MB/s for copies): 1 kbit/s keeps a 64 MiB
/// message under a week of virtual time; 10^9 is a petabit.
pub const MIN_RATE: f64 = 1e-3;
pub const MAX_RATE: f64 = 1e9;
/// Longest per-message or per-packet time accepted, microseconds (1000 s).
pub const MAX_US: f64 = 1e9;
/// Most copies of each byte per side.
pub const MAX_COPIES: f64 = 1000.0;
/// Largest packet, header, framing or ack size, bytes (16 MiB: sums of four stay in a u32).
pub const MAX_PACKET_BYTES: u32 = 1 << 24;
/// Largest write-call size or window, bytes (1 TiB).
pub const MAX_BUFFER_BYTES: u64 = 1 << 40;

/// `v` finite and within `lo..=hi` (NaN and infinities fail), or a one-line error naming it.
pub(crate) fn check_range(name: &str, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a number from {lo} to {hi}, got {v}"
        ))
    }
}

impl Transport {
    /// Checks that every parameter is physically meaningful, and bounded so that the derived
    /// costs are finite and no sum of byte counts overflows (the file is user input).
    pub fn validate(&self) -> Result<(), String> {
        let ranges = [
            ("link_mbit_s", self.link_mbit_s, MIN_RATE, MAX_RATE),
            ("copy_mb_s", self.copy_mb_s, MIN_RATE, MAX_RATE),
            ("latency_us", self.latency_us, 0.0, MAX_US),
            ("per_packet_us", self.per_packet_us, 0.0, MAX_US),
            ("copies", self.copies, 0.0, MAX_COPIES),
            ("per_call_us", self.per_call_us, 0.0, MAX_US),
        ];
        for (name, v, lo, hi) in ranges {
            check_range(name, v, lo, hi)?;
        }
        let sizes = [
            ("mtu_bytes", self.mtu_bytes),
            ("header_bytes", self.header_bytes),
            ("framing_bytes", self.framing_bytes),
            ("ack_frame_bytes", self.ack_frame_bytes),
        ];
        for (name, v) in sizes {
            if v > MAX_PACKET_BYTES {
                return Err(format!(
                    "{name} must be at most {MAX_PACKET_BYTES}, got {v}"
                ));
            }
        }
        if self.mtu_bytes <= self.header_bytes {
            return Err(format!(
                "mtu_bytes ({}) must exceed header_bytes ({})",
                self.mtu_bytes, self.header_bytes
            ));
        }
        for (name, v) in [
            ("max_write_bytes", self.max_write_bytes),
            ("window_bytes", self.window_bytes),
        ] {
            if let Some(v) = v.filter(|v| !(1..=MAX_BUFFER_BYTES).contains(v)) {
                return Err(format!(
                    "{name} must be 1 to {MAX_BUFFER_BYTES} when set, got {v}"
                ));
            }
        }
        if self.acks_share_link && self.packets_per_ack == 0 {
            return Err("packets_per_ack must be at least 1".into());
        }
        Ok(())
    }

    /// Derives stage times and the Hockney parameters.
    pub fn cost(&self) -> Cost {
        let mtu_payload = f64::from(self.mtu_bytes - self.header_bytes);
        let payload = match self.window_bytes {
            Some(w) => mtu_payload.min(w as f64),
            None => mtu_payload,
        };
        let per_byte_host =
            (self.copies + if self.software_checksum { 0.5 } else { 0.0 }) / (self.copy_mb_s * 1e6);
        let calls_per_packet = match self.max_write_bytes {
            Some(m) => payload / m as f64,
            None => 0.0,
        };
        let per_packet = self.per_packet_us * US;
        let send_host_s =
            per_packet + payload * per_byte_host + calls_per_packet * self.per_call_us * US;
        let recv_host_s = per_packet + payload * per_byte_host;
        let link_bytes_per_s = self.link_mbit_s * 1e6 / 8.0;
        let frame = payload + f64::from(self.header_bytes + self.framing_bytes);
        let ack_share = if self.acks_share_link {
            f64::from(self.ack_frame_bytes) / f64::from(self.packets_per_ack)
        } else {
            0.0
        };
        let wire_s = (frame + ack_share) / link_bytes_per_s;
        let latency = self.latency_us * US;
        // A packet's acknowledgement returns after its own trip through all stages, the latency
        // twice, and one packet-processing step on each side for the ack itself.
        let packet_rtt_s = send_host_s + wire_s + recv_host_s + 2.0 * latency + 2.0 * per_packet;
        let (mut cycle_s, mut bottleneck) = (send_host_s, Bottleneck::SenderHost);
        if wire_s > cycle_s {
            (cycle_s, bottleneck) = (wire_s, Bottleneck::Wire);
        }
        if recv_host_s > cycle_s {
            (cycle_s, bottleneck) = (recv_host_s, Bottleneck::ReceiverHost);
        }
        if let Some(w) = self.window_bytes {
            let in_flight = (w as f64 / payload).floor().max(1.0);
            let window_cycle = packet_rtt_s / in_flight;
            if window_cycle > cycle_s {
                (cycle_s, bottleneck) = (window_cycle, Bottleneck::Window);
            }
        }
        // Fixed per-message cost: one call, one packet's processing on each side, the latency.
        let headers_s = f64::from(self.header_bytes + self.framing_bytes) / link_bytes_per_s;
        let alpha_s = latency + self.per_call_us * US + 2.0 * per_packet + headers_s;
        Cost {
            payload_per_packet: payload,
            send_host_s,
            wire_s,
            recv_host_s,
            packet_rtt_s,
            cycle_s,
            bottleneck,
            alpha_s,
            beta_s: cycle_s / payload,
        }
    }
}
