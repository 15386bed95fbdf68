//! Large buffers go back to the system once freed.
//!
//! The processor's big allocations are short-lived: the changelog records of a checkpoint
//! (up to 512 KB each, tens of megabytes in all after a busy interval, held twice, by this
//! code and by librdkafka, until acknowledged) and the consumer's fetch buffers. glibc serves
//! allocations above a threshold with their own mappings, returned to the system when freed,
//! but it raises that threshold each time such a block is freed (up to 32 MB), after which
//! the same buffers come from the heap, which it seldom gives back: the resident memory then
//! kept the high-water mark of every checkpoint, some 10 to 30 bytes per tracked (hour, user)
//! pair on top of the state itself (`make bench` row 6, docs/benchmarks-notes.md). Fixing
//! the threshold at [`MMAP_THRESHOLD`] keeps it where it is. The state's own segments (64 KB,
//! `crate::hashed`) stay below it and live as long as their hour.

/// Allocations of at least this many bytes get mappings of their own.
pub const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes glibc's mmap threshold (a no-op elsewhere). Call once, at start.
pub fn return_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread
    // exists, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
