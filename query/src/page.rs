//! The analytics page: `GET /` and its two assets, compiled into the binary
//! (`query/assets/`). The page's only data source is the range endpoint of the same origin;
//! its Content-Security-Policy forbids loading anything from anywhere else.

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response};
use shared::http::{Body, Route};

const GET_HEAD: &[Method] = &[Method::GET, Method::HEAD];

/// `/`, `/assets/page.js`, `/assets/page.css`: open (the data requests carry the key).
pub const INDEX_ROUTE: Route = asset_route("/");
pub const SCRIPT_ROUTE: Route = asset_route("/assets/page.js");
pub const STYLE_ROUTE: Route = asset_route("/assets/page.css");

const fn asset_route(path: &'static str) -> Route {
    Route {
        path,
        methods: GET_HEAD,
        allow: "GET, HEAD",
        hot: &[],
        scope: None,
    }
}

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/page.js");
const STYLE: &str = include_str!("../assets/page.css");

/// Only this origin, for everything; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The asset at `path`, if it is one of the three routes above.
pub fn response(path: &str) -> Option<Response<Body>> {
    let (body, content_type) = match path {
        "/" => (INDEX, "text/html; charset=utf-8"),
        "/assets/page.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/assets/page.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
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
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_asset_and_nothing_loads_from_elsewhere() {
        for r in [INDEX_ROUTE, SCRIPT_ROUTE, STYLE_ROUTE] {
            let resp = response(r.path).expect(r.path);
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
        assert!(response("/other").is_none());
    }
}
