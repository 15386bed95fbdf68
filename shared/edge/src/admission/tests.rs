use super::*;
use crate::args::EdgeArgs;
use crate::auth::hash_hex;
use hyper::header::HeaderValue;
use std::net::IpAddr;
use std::num::NonZeroU32;

fn edge(keys: Option<&str>, rate: Option<u32>) -> (Edge, tempfile_path::TempPath) {
    let path = tempfile_path::TempPath::new();
    if let Some(k) = keys {
        std::fs::write(&path.0, k).unwrap();
    }
    let args = EdgeArgs {
        api_keys_file: keys.map(|_| path.0.clone()),
        rate_limit: rate.map(|n| NonZeroU32::new(n).unwrap()),
        ..EdgeArgs::default()
    };
    (Edge::new(&args, &Registry::new()).unwrap(), path)
}

mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            Self(std::env::temp_dir().join(format!(
                "edge-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )))
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn with_auth(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
    h
}

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A request from [`PEER`] with `headers`, no query, on a listener without CORS.
fn at(headers: &HeaderMap, scope: Scope) -> Admission<'_> {
    Admission {
        headers,
        query: None,
        scope,
        peer: PEER,
        origin: OriginCheck::Unchecked,
    }
}

#[test]
fn browser_keys_write_only_from_listed_origins_and_may_come_as_key() {
    let file = format!(
        "page browser {}
w write {}
",
        hash_hex("ps"),
        hash_hex("ws")
    );
    let (e, _p) = edge(Some(&file), None);
    let none = HeaderMap::new();
    let query = |q: &'static str, origin| Admission {
        query: Some(q),
        origin,
        ..at(&none, Scope::Write)
    };
    // As a header or as `key`, from a listed origin or where CORS is not configured.
    assert_eq!(e.check(&at(&with_auth("Bearer ps"), Scope::Write)), Ok(()));
    for origin in [OriginCheck::Unchecked, OriginCheck::Listed] {
        assert_eq!(e.check(&query("timestamp=1&key=ps&click", origin)), Ok(()));
    }
    // Never to read; never from another origin when CORS is configured.
    assert_eq!(
        e.check(&at(&with_auth("Bearer ps"), Scope::Read)),
        Err(Refusal::Forbidden(Scope::Read))
    );
    assert_eq!(
        e.check(&query("key=ps", OriginCheck::NotListed)),
        Err(Refusal::BrowserOrigin)
    );
    // A write key as `key`: refused, though valid as a header.
    assert_eq!(
        e.check(&query("key=ws", OriginCheck::Unchecked)),
        Err(Refusal::KeyInQuery)
    );
    // Only a parameter named exactly `key`, with a value.
    for q in ["xkey=ps", "key=", "key", "k%65y=ps", "key=p%73"] {
        assert_eq!(
            e.check(&query(q, OriginCheck::Unchecked)),
            Err(Refusal::Unauthenticated),
            "{q}"
        );
    }
    assert_eq!(e.refused.with_label_values(&["key_in_query", "w"]).get(), 1);
    assert_eq!(
        e.refused
            .with_label_values(&["origin_not_listed", "page"])
            .get(),
        1
    );
}

#[test]
fn browser_keys_are_limited_per_key_and_address() {
    let file = format!(
        "page browser {}
w write {}
",
        hash_hex("ps"),
        hash_hex("ws")
    );
    let path = tempfile_path::TempPath::new();
    std::fs::write(&path.0, file).unwrap();
    let args = EdgeArgs {
        api_keys_file: Some(path.0.clone()),
        rate_limit_browser: NonZeroU32::new(1),
        ..EdgeArgs::default()
    };
    let e = Edge::new(&args, &Registry::new()).unwrap();
    let page = with_auth("Bearer ps");
    let visitor = |peer| Admission {
        peer,
        ..at(&page, Scope::Write)
    };
    assert!(e.check(&visitor(PEER)).is_ok());
    assert!(matches!(
        e.check(&visitor(PEER)),
        Err(Refusal::RateLimited { .. })
    ));
    // Another visitor of the same page has a bucket of its own.
    let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    assert!(e.check(&visitor(other)).is_ok());
    // Write keys are not under --rate-limit-browser (no --rate-limit here).
    let w = with_auth("Bearer ws");
    for _ in 0..5 {
        assert!(e.check(&at(&w, Scope::Write)).is_ok());
    }
}

#[test]
fn keys_and_scopes() {
    let file = format!("w write {}\nr read {}\n", hash_hex("ws"), hash_hex("rs"));
    let (e, _p) = edge(Some(&file), None);
    let none = HeaderMap::new();
    assert_eq!(
        e.check(&at(&none, Scope::Write)),
        Err(Refusal::Unauthenticated)
    );
    for bad in ["Bearer nope", "Basic ws", "Bearer ", "ws", "Bearerws"] {
        assert_eq!(
            e.check(&at(&with_auth(bad), Scope::Write)),
            Err(Refusal::Unauthenticated),
            "{bad}"
        );
    }
    assert_eq!(e.check(&at(&with_auth("Bearer ws"), Scope::Write)), Ok(()));
    assert_eq!(
        e.check(&at(&with_auth("bearer  ws "), Scope::Write)),
        Ok(())
    );
    assert_eq!(
        e.check(&at(&with_auth("Bearer ws"), Scope::Read)),
        Err(Refusal::Forbidden(Scope::Read))
    );
    assert_eq!(
        e.check(&at(&with_auth("Bearer rs"), Scope::Write)),
        Err(Refusal::Forbidden(Scope::Write))
    );
    assert_eq!(e.refused.with_label_values(&["forbidden", "w"]).get(), 1);
    assert_eq!(
        e.refused.with_label_values(&["unauthenticated", ""]).get(),
        6
    );
}

#[test]
fn reload_revokes_and_a_broken_file_keeps_the_old_keys() {
    let (e, p) = edge(Some(&format!("w write {}\n", hash_hex("ws"))), None);
    let auth = with_auth("Bearer ws");
    assert!(e.check(&at(&auth, Scope::Write)).is_ok());
    std::fs::write(&p.0, "w write not-a-hash\n").unwrap();
    e.reload();
    assert!(e.check(&at(&auth, Scope::Write)).is_ok());
    std::fs::write(&p.0, format!("x write {}\n", hash_hex("xs"))).unwrap();
    e.reload();
    assert_eq!(
        e.check(&at(&auth, Scope::Write)),
        Err(Refusal::Unauthenticated)
    );
    assert!(e.check(&at(&with_auth("Bearer xs"), Scope::Write)).is_ok());
}

#[test]
fn rate_limit_per_key_then_per_address() {
    let (e, _p) = edge(Some(&format!("w write {}\n", hash_hex("ws"))), Some(2));
    let auth = with_auth("Bearer ws");
    assert!(e.check(&at(&auth, Scope::Write)).is_ok());
    assert!(e.check(&at(&auth, Scope::Write)).is_ok());
    assert_eq!(
        e.check(&at(&auth, Scope::Write)),
        Err(Refusal::RateLimited {
            retry_after_secs: 1
        })
    );
    let (open, _p) = edge(None, Some(1));
    let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    let h = HeaderMap::new();
    let from = |peer| Admission {
        peer,
        ..at(&h, Scope::Read)
    };
    assert!(open.admit(&from(PEER)).is_ok());
    assert!(open.admit(&from(PEER)).is_err());
    assert!(open.admit(&from(other)).is_ok());
}

#[test]
fn protected_mode() {
    let (open, _p) = edge(None, None);
    assert!(open.protect("127.0.0.1:1".parse().unwrap()).is_ok());
    assert!(open.protect("[::1]:1".parse().unwrap()).is_ok());
    let err = open.protect("0.0.0.0:8081".parse().unwrap()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("--api-keys-file") && msg.contains("--insecure-no-auth"));
    let (keyed, _p) = edge(Some(&format!("w write {}\n", hash_hex("ws"))), None);
    assert!(keyed.protect("0.0.0.0:8081".parse().unwrap()).is_ok());
}
