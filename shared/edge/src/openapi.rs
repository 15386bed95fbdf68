//! The HTTP contract, `docs/openapi.yaml` (OpenAPI 3.1), compiled into command and query and
//! served whole at `GET /openapi.yaml`, so that tools can point at a running service.

use analytics_http::{App, Body, Handler, Route};
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;

/// The document, as in the repository.
pub const DOCUMENT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/openapi.yaml"
));

/// `GET`/`HEAD /openapi.yaml`: open, like the health endpoints.
pub const fn route<A: App>() -> Route<A> {
    Route::open("/openapi.yaml", Handler::Fixed(response))
}

/// The document as a response.
pub fn response() -> Response<Body> {
    let mut r = Response::new(http_body_util::Full::new(Bytes::from_static(
        DOCUMENT.as_bytes(),
    )));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
    r
}
