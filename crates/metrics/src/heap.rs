//! A global allocator that counts heap bytes in use: Rust's stand-in for Go's
//! `go_memstats_alloc_bytes` / `go_memstats_heap_inuse_bytes` (see `docs/metrics.md`).
//!
//! Each binary installs it with
//! `#[global_allocator] static ALLOC: conduit_metrics::heap::CountingAllocator = CountingAllocator;`.
//! The cost is one relaxed atomic add or sub per allocation and free (measured in
//! `cargo bench -p conduit-tests --bench exposition`).

#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this module only forwards to System.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator plus a byte count of live allocations.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter
// has no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                IN_USE.fetch_add(new_size - layout.size(), Ordering::Relaxed);
            } else {
                IN_USE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Heap bytes currently allocated through the counting allocator, or `None` when the binary
/// does not install it (the count then never moves from zero: a running process with a metrics
/// registry always has live allocations).
pub fn heap_bytes() -> Option<usize> {
    match IN_USE.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}
