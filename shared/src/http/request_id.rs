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
            let copy = super::carve(v.len(), |b| b.extend_from_slice(v.as_bytes()));
            if let Ok(copy) = HeaderValue::from_maybe_shared(copy) {
                return copy;
            }
        }
    }
    generated_id(process_nonce(), REQUEST_SEQ.fetch_add(1, Ordering::Relaxed))
}

/// `{nonce:08x}-{sequence:016x}`, written without the formatting machinery into a slice of
/// the thread's chunk (hot path: [`super::carve`]).
fn generated_id(nonce: u32, n: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 25];
    for (i, b) in id[..8].iter_mut().enumerate() {
        *b = HEX[(nonce >> (28 - 4 * i) & 0xf) as usize];
    }
    id[8] = b'-';
    for (i, b) in id[9..].iter_mut().enumerate() {
        *b = HEX[(n >> (60 - 4 * i) & 0xf) as usize];
    }
    let id = super::carve(id.len(), |b| b.extend_from_slice(&id));
    HeaderValue::from_maybe_shared(id).expect("hex is a valid header value")
}

fn process_nonce() -> u32 {
    use std::sync::OnceLock;
    static NONCE: OnceLock<u32> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.subsec_nanos() ^ std::process::id().rotate_left(16)) ^ (t.as_secs() as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_nonce_and_sequence_in_hex() {
        assert_eq!(
            generated_id(0xdead_beef, 0x2a).to_str().unwrap(),
            format!("{:08x}-{:016x}", 0xdead_beefu32, 0x2a)
        );
        assert_eq!(
            generated_id(1, u64::MAX).to_str().unwrap(),
            "00000001-ffffffffffffffff"
        );
    }
}
