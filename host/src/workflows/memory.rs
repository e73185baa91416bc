//! The memory budget of a workflow run.
//!
//! Rhai caps each value (string, array and map sizes) but not what a run holds in all, and
//! every account's scripts share the daemon's process: one run binding a large array to many
//! variables could take the whole machine's memory. The daemon's global allocator therefore
//! counts, on a thread that is running a script, the bytes allocated minus the bytes freed
//! since the run began (a run's script has a blocking thread of its own); the engine's
//! progress hook ends the run once the count passes the budget. The I/O of host calls is not
//! counted (its buffers are freed by other threads, which would make the count drift), what
//! they hand the script is. Outside a run the allocator only reads one thread-local flag.
//!
//! `tracking-allocator` offers allocation groups, but wraps every allocation of the process
//! with a header and a tracker call; this wrapper adds nothing outside a script's thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, with the per-thread count of a running script's bytes.
pub struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: the allocator runs during thread teardown too, when the slots are gone.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = HELD.try_with(|h| h.set(h.get().saturating_add(delta)));
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; the count is a side
// effect that allocates nothing.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Counts this thread's allocations until dropped.
pub struct Counting(());

impl Counting {
    pub fn start() -> Counting {
        HELD.with(|h| h.set(0));
        COUNTING.with(|c| c.set(true));
        Counting(())
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        let _ = COUNTING.try_with(|c| c.set(false));
    }
}

/// Runs `f` without counting its allocations (and frees) on this thread.
pub fn paused<T>(f: impl FnOnce() -> T) -> T {
    let _p = Paused::new();
    f()
}

/// Stops counting on this thread until dropped (for work of the daemon's that a host call
/// starts, such as tasks other threads run and free).
pub struct Paused {
    was: bool,
}

impl Paused {
    #[allow(clippy::new_without_default, reason = "a guard, made where it starts")]
    pub fn new() -> Paused {
        Paused {
            was: COUNTING.with(|c| c.replace(false)),
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = COUNTING.try_with(|c| c.set(self.was));
    }
}

/// Bytes this thread holds since its [`Counting`] started (0 when not counting).
pub fn held() -> usize {
    HELD.try_with(Cell::get).unwrap_or(0).max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_counts_what_it_holds_while_counting() {
        let _c = Counting::start();
        let before = held();
        let v = vec![0u8; 4 << 20];
        assert!(held() >= before + (4 << 20));
        drop(v);
        assert!(held() < before + (1 << 20));
    }
}
