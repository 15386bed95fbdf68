//! The analytics page: `GET /` and its two assets, compiled into the binary
//! (`query/assets/`). The page's only data source is the range endpoint of the same origin;
//! its Content-Security-Policy forbids loading anything from anywhere else.

use analytics_http::{App, Body, Handler, Route};
use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

/// `/`, `/assets/page.js`, `/assets/page.css`: open (the data requests carry the key).
pub const fn routes<A: App>() -> [Route<A>; 3] {
    [
        Route::open("/", Handler::Fixed(index)),
        Route::open("/assets/page.js", Handler::Fixed(script)),
        Route::open("/assets/page.css", Handler::Fixed(style)),
    ]
}

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/page.js");
const STYLE: &str = include_str!("../assets/page.css");

/// Only this origin, for everything; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn index() -> Response<Body> {
    asset(INDEX, "text/html; charset=utf-8")
}

fn script() -> Response<Body> {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

fn style() -> Response<Body> {
    asset(STYLE, "text/css; charset=utf-8")
}

/// An asset, with the page's security headers.
fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(http_body_util::Full::new(Bytes::from_static(
        body.as_bytes(),
    )));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_asset_and_nothing_loads_from_elsewhere() {
        for answer in [index, script, style] {
            let resp = answer();
            assert!(resp.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'"));
        }
        for text in [INDEX, SCRIPT, STYLE] {
            assert!(!text.contains("http://") || text.contains("http://www.w3.org/2000/svg"));
            assert!(!text.contains("https://"), "an absolute URL in an asset");
            assert!(!text.contains("//cdn"), "a CDN in an asset");
        }
    }
}
