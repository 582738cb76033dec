//! The virtual devices behind the guest's I/O ports: a debug console, a PIT-style periodic timer,
//! a PIC-style end-of-interrupt register and a power-off port. Both configurations share them; in
//! `native` the real `in`/`out` reach them through unicorn's I/O hooks (the "hardware"), in `vmp`
//! through the monitor's emulation of the trapped instruction.

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
