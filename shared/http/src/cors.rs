//! Cross-origin requests (CORS) on a public listener, for pages and dashboards served from
//! other origins: `--cors-allow-origins`, a comma list of exact origins or `*`; empty (the
//! default) leaves the listener as it was, without CORS.
//!
//! On a route with a [`Scope`] (the service's API), once origins are configured:
//!
//! | request | answer |
//! | --- | --- |
//! | `OPTIONS` from an allowed `Origin` (a preflight) | `204` with `Access-Control-Allow-Origin` (that origin), `-Allow-Methods` (the route's), `-Allow-Headers`, `-Max-Age`, `Vary: Origin` |
//! | `OPTIONS` from an origin not allowed | `403`, no `Access-Control-*` header |
//! | `OPTIONS` without `Origin` | `204` with `Allow` |
//! | any other method from an allowed origin | as without CORS, plus `Access-Control-Allow-Origin`, `-Expose-Headers: Retry-After, X-Request-Id` and `Vary: Origin`, on errors too |
//! | a write ([`Scope::Write`]) from an origin not allowed | `403` before the key is looked at: nothing is produced |
//! | a read from an origin not allowed | as without CORS (the browser keeps the answer from the page) |
//! | no `Origin` (a server, curl) | as without CORS |
//!
//! The answer names the request's own origin rather than `*` even when every origin is
//! allowed, so the header is the same whichever way the list is written.

use super::error::allow_header as join;
use super::{empty, Body, HttpError, Scope};
use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ALLOW,
    ORIGIN, VARY,
};
use hyper::{Method, Response, StatusCode};

/// The request headers a page may send.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Content-Encoding, X-Request-Id";
/// The response headers a page may read.
const EXPOSE_HEADERS: &str = "Retry-After, X-Request-Id";
/// How long a browser may reuse a preflight's answer, in seconds (Chromium caps it at 7200).
const MAX_AGE: &str = "3600";

/// The origins allowed by `--cors-allow-origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    Any,
    Only(Vec<String>),
}

/// A `--cors-allow-origins` entry that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--cors-allow-origins: '{0}' is not an origin (scheme://host[:port], no path), or '*'")]
pub struct BadOrigin(pub String);

impl Cors {
    /// The comma list of `--cors-allow-origins`: `None` when empty (no CORS).
    pub fn parse(list: &str) -> Result<Option<Self>, BadOrigin> {
        let entries: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        if entries.contains(&"*") {
            return match entries.as_slice() {
                ["*"] => Ok(Some(Cors::Any)),
                _ => Err(BadOrigin(list.to_string())),
            };
        }
        let origins = entries
            .into_iter()
            .map(|e| {
                is_origin(e)
                    .then(|| e.to_ascii_lowercase())
                    .ok_or_else(|| BadOrigin(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Cors::Only(origins)))
    }

    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Cors::Any => true,
            Cors::Only(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// `scheme://host[:port]` and nothing more.
fn is_origin(e: &str) -> bool {
    let Some((scheme, rest)) = e.split_once("://") else {
        return false;
    };
    let scheme_ok = matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https");
    let host_ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    scheme_ok && host_ok
}

/// What CORS makes of a request to a route with `scope` answering `methods`.
pub(super) enum Verdict {
    /// On as without CORS; the response gets the headers of this allowed origin, if any.
    Pass(Option<HeaderValue>),
    /// Answered here: a preflight.
    Answer(Response<Body>),
    /// Refused: a preflight or a write from an origin not listed.
    Refuse(HttpError),
}

/// Checks a request's `Origin` against `cors` (configured) on a route with a scope.
pub(super) fn check(
    cors: &Cors,
    scope: Scope,
    methods: &'static [Method],
    method: &Method,
    headers: &HeaderMap,
) -> Verdict {
    let origin = headers.get(ORIGIN);
    let allowed = origin.filter(|o| o.to_str().is_ok_and(|o| cors.allows(o)));
    match (method == Method::OPTIONS, origin, allowed) {
        (true, None, _) => {
            let mut r = empty(StatusCode::NO_CONTENT);
            r.headers_mut().insert(ALLOW, join(methods));
            Verdict::Answer(r)
        }
        (true, Some(_), Some(origin)) => Verdict::Answer(preflight(origin.clone(), methods)),
        (true, Some(origin), None) => Verdict::Refuse(refused(origin)),
        (false, Some(origin), None) if scope == Scope::Write => Verdict::Refuse(refused(origin)),
        (false, _, allowed) => Verdict::Pass(allowed.cloned()),
    }
}

fn preflight(origin: HeaderValue, methods: &'static [Method]) -> Response<Body> {
    let mut r = empty(StatusCode::NO_CONTENT);
    let h = r.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(ACCESS_CONTROL_ALLOW_METHODS, join(methods));
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
    h.insert(VARY, HeaderValue::from_static("Origin"));
    r
}

fn refused(origin: &HeaderValue) -> HttpError {
    let named = String::from_utf8_lossy(origin.as_bytes())
        .chars()
        .take(100)
        .collect();
    HttpError::OriginRefused(named)
}

/// The headers of an answer to an allowed origin.
pub(super) fn decorate(response: &mut Response<Body>, origin: HeaderValue) {
    let h = response.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    h.append(VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests;
