//! The error type every handler answers with, and its responses: a validation reason is a
//! one-line `400`, a dependency failure a `503` with `Retry-After`, and nothing internal ever
//! reaches the body.

use super::{text, Body, Scope, MAX_TARGET_BYTES};
use hyper::header::{HeaderValue, ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Response, StatusCode};

/// Errors a handler answers with. Messages are written for the client: a validation reason,
/// or a generic dependency message (details go to the logs, never to the response).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static [Method] },
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("the API key lacks the {scope} scope")]
    Forbidden { scope: Scope },
    /// A write from a page whose origin `--cors-allow-origins` does not list.
    #[error("origin {0} is not allowed")]
    OriginRefused(String),
    /// A key presented in a way or from a place it may not be used (`403`), e.g. a write key
    /// as the `key` query parameter; the text says how to use it.
    #[error("{0}")]
    KeyMisused(&'static str),
    #[error("rate limit exceeded")]
    TooManyRequests { retry_after_secs: u32 },
    #[error("request target too long")]
    UriTooLong,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("unsupported media type, expected {0}")]
    UnsupportedMediaType(&'static str),
    /// A body in a `Content-Encoding` the route does not decode (named by the client).
    #[error("unsupported Content-Encoding {0}")]
    UnsupportedEncoding(String),
    #[error("{message}")]
    Unavailable {
        message: &'static str,
        retry_after_secs: u32,
    },
}

impl HttpError {
    pub fn into_response(self) -> Response<Body> {
        match self {
            HttpError::BadRequest(reason) => {
                text(StatusCode::BAD_REQUEST, format!("bad request: {reason}\n"))
            }
            HttpError::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
            HttpError::MethodNotAllowed { allow } => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                r.headers_mut().insert(ALLOW, allow_header(allow));
                r
            }
            HttpError::Unauthorized => {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: missing or unknown API key; send Authorization: Bearer <key>\n",
                );
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            HttpError::Forbidden { scope } => text(
                StatusCode::FORBIDDEN,
                format!("forbidden: this API key lacks the {scope} scope\n"),
            ),
            HttpError::OriginRefused(origin) => text(
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: origin '{}' is not allowed (--cors-allow-origins)\n",
                    origin.escape_debug()
                ),
            ),
            HttpError::KeyMisused(why) => text(StatusCode::FORBIDDEN, format!("forbidden: {why}\n")),
            HttpError::TooManyRequests { retry_after_secs } => {
                let mut r = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many requests: retry after {retry_after_secs} s\n"),
                );
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
                r
            }
            HttpError::PayloadTooLarge(reason) => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("payload too large: {reason}\n"),
            ),
            HttpError::UnsupportedMediaType(expected) => text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported media type: send Content-Type: {expected}\n"),
            ),
            HttpError::UnsupportedEncoding(named) => text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported media type: Content-Encoding '{}'; send gzip, deflate or an uncompressed body\n",
                    named.escape_debug()
                ),
            ),
            HttpError::UriTooLong => text(
                StatusCode::URI_TOO_LONG,
                format!("request target longer than {MAX_TARGET_BYTES} bytes\n"),
            ),
            HttpError::Unavailable {
                message,
                retry_after_secs,
            } => {
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n"));
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
                r
            }
        }
    }
}

/// The `Allow` header of a route answering `methods`: their names, comma-separated.
pub(crate) fn allow_header(methods: &[Method]) -> HeaderValue {
    let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    HeaderValue::from_str(&names.join(", ")).expect("method names are valid header text")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_is_made_from_the_route_methods() {
        let r = HttpError::MethodNotAllowed {
            allow: &[Method::GET, Method::HEAD],
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        let r = HttpError::MethodNotAllowed {
            allow: &[Method::POST],
        }
        .into_response();
        assert_eq!(r.headers()[ALLOW], "POST");
    }
}
