//! `X-Request-Id`: the client's (up to 128 bytes), or `{nonce:08x}-{sequence:016x}`.

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Request;
use std::sync::atomic::{AtomicU64, Ordering};

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// The header, named once (a `&str` name is parsed again on every use).
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's id, copied (a clone would point into hyper's read buffer, see `dispatch`),
/// or a new one.
pub(super) fn request_id(req: &Request<Incoming>) -> HeaderValue {
    // A scan of the few headers rather than a hashed lookup: cheaper for the handful a
    // client sends.
    if let Some((_, v)) = req.headers().iter().find(|(name, _)| *name == X_REQUEST_ID) {
        if !v.is_empty() && v.len() <= 128 {
            let copy = crate::carve(v.len(), |b| b.extend_from_slice(v.as_bytes()));
            if let Ok(copy) = HeaderValue::from_maybe_shared(copy) {
                return copy;
            }
        }
    }
    generated_id(nonce_prefix(), REQUEST_SEQ.fetch_add(1, Ordering::Relaxed))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `{prefix}{sequence:016x}`, written without the formatting machinery into a slice of the
/// thread's chunk (hot path: [`crate::carve`]).
fn generated_id(prefix: &[u8; 9], n: u64) -> HeaderValue {
    let mut id = [0u8; 25];
    id[..9].copy_from_slice(prefix);
    for (i, b) in id[9..].iter_mut().enumerate() {
        *b = HEX[(n >> (60 - 4 * i) & 0xf) as usize];
    }
    let id = crate::carve(id.len(), |b| b.extend_from_slice(&id));
    HeaderValue::from_maybe_shared(id).expect("hex is a valid header value")
}

/// `{nonce:08x}-`: the process's part of every id it generates, written once.
fn nonce_prefix() -> &'static [u8; 9] {
    use std::sync::OnceLock;
    static PREFIX: OnceLock<[u8; 9]> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let nonce = (t.subsec_nanos() ^ std::process::id().rotate_left(16)) ^ (t.as_secs() as u32);
        prefix_of(nonce)
    })
}

fn prefix_of(nonce: u32) -> [u8; 9] {
    let mut p = [b'-'; 9];
    for (i, b) in p[..8].iter_mut().enumerate() {
        *b = HEX[(nonce >> (28 - 4 * i) & 0xf) as usize];
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_nonce_and_sequence_in_hex() {
        assert_eq!(
            generated_id(&prefix_of(0xdead_beef), 0x2a)
                .to_str()
                .unwrap(),
            format!("{:08x}-{:016x}", 0xdead_beefu32, 0x2a)
        );
        assert_eq!(
            generated_id(&prefix_of(1), u64::MAX).to_str().unwrap(),
            "00000001-ffffffffffffffff"
        );
        assert_eq!(
            generated_id(&prefix_of(u32::MAX), 0x0123_4567_89ab_cdef)
                .to_str()
                .unwrap(),
            "ffffffff-0123456789abcdef"
        );
        let prefix = nonce_prefix();
        assert!(prefix[..8].iter().all(|b| HEX.contains(b)) && prefix[8] == b'-');
        assert_eq!(nonce_prefix(), prefix, "one prefix per process");
    }
}
