//! `GET /t.js`: the tracker script for web pages (`command/assets/t.js`), compiled in. Open
//! (no key: the page's own `data-key` is what its events carry), cacheable for five minutes
//! and then revalidated by its `ETag` (a `304` when `If-None-Match` names it).

use analytics_http::{empty, Body};
use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::{HeaderMap, Response, StatusCode};

/// The script.
pub const SCRIPT: &str = include_str!("../assets/t.js");

/// The script's entity tag: a 64-bit FNV-1a hash of its bytes, so it changes with the script.
const ETAG_VALUE: &str = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const fn fnv(bytes: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut i = 0;
        while i < bytes.len() {
            h ^= bytes[i] as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        h
    }
    const TAG: [u8; 20] = {
        let h = fnv(SCRIPT.as_bytes());
        let mut out = *b"\"t-0000000000000000\"";
        let mut i = 0;
        while i < 16 {
            out[3 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
            i += 1;
        }
        out
    };
    match std::str::from_utf8(&TAG) {
        Ok(s) => s,
        Err(_) => panic!("hex digits are UTF-8"),
    }
};

/// Whether the request's `If-None-Match` names the script's current tag (or `*`).
pub fn fresh(headers: &HeaderMap) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == ETAG_VALUE || t == "*")
}

/// The script, or `304` when the client's copy is current.
pub fn answer(fresh: bool) -> Response<Body> {
    let mut r = if fresh {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        let mut r = Response::new(http_body_util::Full::new(Bytes::from_static(
            SCRIPT.as_bytes(),
        )));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
        r
    };
    let h = r.headers_mut();
    h.insert(ETAG, HeaderValue::from_static(ETAG_VALUE));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // Loadable by pages that isolate themselves (Cross-Origin-Embedder-Policy).
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_the_scripts_and_revalidation_answers_304() {
        assert!(ETAG_VALUE.starts_with("\"t-") && ETAG_VALUE.len() == 20);
        let r = answer(false);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[ETAG], ETAG_VALUE);
        let mut h = HeaderMap::new();
        assert!(!fresh(&h));
        h.insert(
            IF_NONE_MATCH,
            HeaderValue::from_static("\"t-0\", W/\"other\""),
        );
        assert!(!fresh(&h));
        h.insert(
            IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{ETAG_VALUE}")).unwrap(),
        );
        assert!(fresh(&h));
        let r = answer(true);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[ETAG], ETAG_VALUE);
    }

    /// Small enough for every page: under 3 KB gzipped (measured, not assumed).
    #[test]
    fn the_script_is_small_and_self_contained() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(SCRIPT.as_bytes()).unwrap();
        let size = gz.finish().unwrap().len();
        assert!(size < 3 * 1024, "t.js is {size} bytes gzipped");
        for forbidden in ["import ", "require(", "eval(", "document.write"] {
            assert!(!SCRIPT.contains(forbidden), "{forbidden}");
        }
    }
}
