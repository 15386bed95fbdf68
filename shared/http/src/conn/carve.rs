//! Short-lived small [`Bytes`] (a generated `X-Request-Id`, a three-line body) carved from a
//! per-thread chunk instead of one allocation each.
//!
//! A chunk of [`CHUNK_BYTES`] is allocated per worker thread and handed out in slices: each
//! slice costs an uncontended reference-count increment and, when hyper drops it, a
//! decrement, where its own `malloc` and `free` cost several times that on the GET path
//! (docs/benchmarks-notes.md). A chunk is freed when its last slice is dropped, so memory
//! stays bounded by the answers in flight (plus one chunk per thread).

use bytes::{Bytes, BytesMut};
use std::cell::RefCell;

/// Bytes allocated at a time per thread.
const CHUNK_BYTES: usize = 16 * 1024;

thread_local! {
    static CHUNK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The bytes `write` appends to an empty buffer with room for at least `max` bytes, as a
/// slice of this thread's chunk. Writing more than `max` is correct, only slower.
pub fn carve(max: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
    CHUNK.with(|chunk| {
        let mut chunk = chunk.borrow_mut();
        if chunk.capacity() < max {
            *chunk = BytesMut::with_capacity(CHUNK_BYTES.max(max));
        }
        write(&mut chunk);
        chunk.split().freeze()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_keep_their_bytes_across_chunks() {
        let mut kept = Vec::new();
        for i in 0..5_000u32 {
            let text = format!("value {i}");
            kept.push((
                text.clone(),
                carve(16, |b| b.extend_from_slice(text.as_bytes())),
            ));
            // Some dropped early, as answers are.
            if i % 3 == 0 {
                kept.pop();
            }
        }
        assert!(kept.len() > 3_000);
        for (text, bytes) in &kept {
            assert_eq!(&bytes[..], text.as_bytes());
        }
    }

    #[test]
    fn writing_more_than_announced_still_works() {
        let big = vec![7u8; 3 * CHUNK_BYTES];
        let a = carve(4, |b| b.extend_from_slice(b"abc"));
        let b = carve(1, |b| b.extend_from_slice(&big));
        let c = carve(4, |b| b.extend_from_slice(b"xyz"));
        assert_eq!(
            (&a[..], &b[..], &c[..]),
            (&b"abc"[..], &big[..], &b"xyz"[..])
        );
    }
}
