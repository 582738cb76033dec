//! A header announcing a huge payload must not make the reader allocate it before the bytes
//! arrive: the largest single allocation stays near what was really received.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use gridbed_real::frame::{read_frame, Header, MAX_PAYLOAD};

struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Largest = Largest;

#[test]
fn an_announced_gigabyte_allocates_only_what_arrives() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut wire = Header::data(1, 2, 3, 4, MAX_PAYLOAD as u32)
        .encode()
        .to_vec();
    wire.extend_from_slice(&[7u8; 1000]);
    LARGEST.store(0, Ordering::Relaxed);
    let r = rt.block_on(read_frame(&mut &wire[..], |_| MAX_PAYLOAD));
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(r.is_err(), "a truncated frame was accepted");
    assert!(
        largest < 1 << 20,
        "allocated {largest} bytes for 1000 received"
    );
}
