//! The virtual devices behind the guest's I/O ports: a debug console, a PIT-style periodic timer,
//! a PIC-style end-of-interrupt register and a power-off port. Both configurations share them; in
//! `native` the real `in`/`out` reach them through unicorn's I/O hooks (the "hardware"), in `vmp`
//! through the monitor's emulation of the trapped instruction.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::layout::{PORT_CONSOLE, PORT_PIC_EOI, PORT_PIT_CH0, PORT_PIT_CMD, PORT_POWER};

/// The PIT's input clock in Hz (Intel 8254 datasheet; the IBM PC's 14.31818 MHz / 12).
pub const PIT_HZ: f64 = 1_193_182.0;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    pub console: Vec<u8>,
    /// Guest cycles per timer period (0: timer not programmed).
    pub timer_period: u64,
    /// Guest cycle count at which the next timer interrupt becomes pending.
    pub next_timer: u64,
    /// An interrupt was delivered and the guest has not yet written EOI.
    pub in_service: bool,
    pub exit_status: Option<u32>,
    pit_low: Option<u8>,
    guest_hz: f64,
}

impl Devices {
    pub fn new(guest_hz: f64) -> Self {
        Devices {
            guest_hz,
            ..Default::default()
        }
    }

    /// A port write at guest cycle `now`.
    pub fn write(&mut self, port: u16, value: u32, now: u64) {
        match port {
            PORT_CONSOLE => self.console.push(value as u8),
            PORT_PIT_CMD => self.pit_low = None,
            PORT_PIT_CH0 => match self.pit_low.take() {
                None => self.pit_low = Some(value as u8),
                Some(lo) => {
                    let divisor = u16::from_le_bytes([lo, value as u8]);
                    // The 8254 treats a reload value of 0 as 65536.
                    let divisor = if divisor == 0 {
                        65536.0
                    } else {
                        divisor as f64
                    };
                    self.timer_period = ((divisor / PIT_HZ) * self.guest_hz).max(1.0) as u64;
                    self.next_timer = now + self.timer_period;
                }
            },
            PORT_PIC_EOI => self.in_service = false,
            PORT_POWER => self.exit_status = Some(value),
            _ => {}
        }
    }

    /// A port read at guest cycle `now`.
    pub fn read(&mut self, port: u16, now: u64) -> u32 {
        match port {
            // Low byte of the remaining count, scaled back to PIT ticks.
            PORT_PIT_CH0 if self.timer_period > 0 => {
                let left = self.next_timer.saturating_sub(now) as f64;
                ((left / self.guest_hz * PIT_HZ) as u32) & 0xff
            }
            _ => 0xff,
        }
    }

    /// Whether a timer interrupt is due at `now` and may be raised (not still in service).
    pub fn irq_due(&self, now: u64) -> bool {
        self.timer_period > 0 && !self.in_service && now >= self.next_timer
    }

    /// Marks the due interrupt delivered and schedules the next period after `now`.
    pub fn irq_taken(&mut self, now: u64) {
        self.in_service = true;
        while self.next_timer <= now {
            self.next_timer += self.timer_period;
        }
    }
}

/// The multiprocessor's per-processor interrupt controller: this processor's id (CPUID's initial
/// APIC id), IPIs it sent and not yet handed to the coherence protocol, and IPI vectors pending
/// here. Not part of a checkpoint (a checkpoint holds one uniprocessor guest); off on one
/// processor, where the IPI port is an unassigned port.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ipi {
    pub enabled: bool,
    pub cpu_id: u8,
    pub ncpus: u8,
    /// (destination, vector) sent by this processor, in program order.
    pub outbox: Vec<(u16, u8)>,
    /// Vectors raised here and not yet delivered (an IRR: one bit per vector).
    pub pending: BTreeSet<u8>,
    /// IPIs raised here (delivered or not), for the report.
    pub received: u64,
}

impl Ipi {
    /// A write of `value` to the IPI port; false if ignored (bad vector or destination, like an
    /// APIC's illegal-vector error).
    pub fn send(&mut self, value: u32) -> bool {
        let vector = (value & 0xFF) as u8;
        let dest = (value >> 8) & 0xFF;
        if !self.enabled || vector < 32 {
            return false;
        }
        if dest == crate::layout::IPI_ALL_BUT_SELF {
            for c in 0..self.ncpus {
                if c != self.cpu_id {
                    self.outbox.push((c as u16, vector));
                }
            }
        } else if dest == self.cpu_id as u32 {
            self.raise(vector);
        } else if dest < self.ncpus as u32 {
            self.outbox.push((dest as u16, vector));
        } else {
            return false;
        }
        true
    }

    pub fn raise(&mut self, vector: u8) {
        self.received += 1;
        self.pending.insert(vector);
    }
}
