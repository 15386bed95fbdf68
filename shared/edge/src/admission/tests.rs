use super::*;
use crate::args::EdgeArgs;
use crate::auth::hash_hex;
use hyper::header::HeaderValue;
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

#[test]
fn keys_and_scopes() {
    let file = format!("w write {}\nr read {}\n", hash_hex("ws"), hash_hex("rs"));
    let (e, _p) = edge(Some(&file), None);
    let none = HeaderMap::new();
    assert_eq!(
        e.check(&none, Scope::Write, PEER),
        Err(Refusal::Unauthenticated)
    );
    for bad in ["Bearer nope", "Basic ws", "Bearer ", "ws", "Bearerws"] {
        assert_eq!(
            e.check(&with_auth(bad), Scope::Write, PEER),
            Err(Refusal::Unauthenticated),
            "{bad}"
        );
    }
    assert_eq!(e.check(&with_auth("Bearer ws"), Scope::Write, PEER), Ok(()));
    assert_eq!(
        e.check(&with_auth("bearer  ws "), Scope::Write, PEER),
        Ok(())
    );
    assert_eq!(
        e.check(&with_auth("Bearer ws"), Scope::Read, PEER),
        Err(Refusal::Forbidden(Scope::Read))
    );
    assert_eq!(
        e.check(&with_auth("Bearer rs"), Scope::Write, PEER),
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
    assert!(e.check(&auth, Scope::Write, PEER).is_ok());
    std::fs::write(&p.0, "w write not-a-hash\n").unwrap();
    e.reload();
    assert!(e.check(&auth, Scope::Write, PEER).is_ok());
    std::fs::write(&p.0, format!("x write {}\n", hash_hex("xs"))).unwrap();
    e.reload();
    assert_eq!(
        e.check(&auth, Scope::Write, PEER),
        Err(Refusal::Unauthenticated)
    );
    assert!(e.check(&with_auth("Bearer xs"), Scope::Write, PEER).is_ok());
}

#[test]
fn rate_limit_per_key_then_per_address() {
    let (e, _p) = edge(Some(&format!("w write {}\n", hash_hex("ws"))), Some(2));
    let auth = with_auth("Bearer ws");
    assert!(e.check(&auth, Scope::Write, PEER).is_ok());
    assert!(e.check(&auth, Scope::Write, PEER).is_ok());
    assert_eq!(
        e.check(&auth, Scope::Write, PEER),
        Err(Refusal::RateLimited {
            retry_after_secs: 1
        })
    );
    let (open, _p) = edge(None, Some(1));
    let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    let h = HeaderMap::new();
    assert!(open.admit(&h, Scope::Read, PEER).is_ok());
    assert!(open.admit(&h, Scope::Read, PEER).is_err());
    assert!(open.admit(&h, Scope::Read, other).is_ok());
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
