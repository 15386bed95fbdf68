use super::*;

const WRITE: &[Method] = &[Method::POST];
const READ: &[Method] = &[Method::GET, Method::HEAD];

fn shop() -> Cors {
    Cors::parse("https://shop.example, http://localhost:8000")
        .unwrap()
        .unwrap()
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                hyper::header::HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

fn answer(v: Verdict) -> Response<Body> {
    match v {
        Verdict::Answer(r) => r,
        // What the dispatcher answers for a refusal.
        Verdict::Refuse(e) => e.into_response(),
        Verdict::Pass(o) => panic!("passed with {o:?}"),
    }
}

fn passed(v: Verdict) -> Option<HeaderValue> {
    match v {
        Verdict::Pass(o) => o,
        Verdict::Answer(r) => panic!("answered {}", r.status()),
        Verdict::Refuse(e) => panic!("refused: {e}"),
    }
}

#[test]
fn the_list_is_exact_origins_or_a_star() {
    assert_eq!(Cors::parse(""), Ok(None));
    assert_eq!(Cors::parse(" , "), Ok(None));
    assert_eq!(Cors::parse("*"), Ok(Some(Cors::Any)));
    assert_eq!(
        Cors::parse("https://Shop.example,http://[::1]:8080"),
        Ok(Some(Cors::Only(vec![
            "https://shop.example".into(),
            "http://[::1]:8080".into()
        ])))
    );
    for bad in [
        "shop.example",
        "https://shop.example/",
        "https://shop.example/path",
        "ftp://shop.example",
        "*,https://shop.example",
        "https://",
    ] {
        assert!(Cors::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_preflight_from_an_allowed_origin_gets_every_header() {
    let h = headers(&[
        ("origin", "https://shop.example"),
        ("access-control-request-method", "POST"),
    ]);
    let r = answer(check(&shop(), Scope::Write, WRITE, &Method::OPTIONS, &h));
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let h = r.headers();
    assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.example");
    assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "POST");
    assert_eq!(
        h[ACCESS_CONTROL_ALLOW_HEADERS],
        "Authorization, Content-Type, Content-Encoding, X-Request-Id"
    );
    assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "3600");
    assert_eq!(h[VARY], "Origin");
    // Any origin, with `*`: the answer still names it.
    let other = headers(&[("origin", "https://elsewhere.example")]);
    let r = answer(check(
        &Cors::Any,
        Scope::Read,
        READ,
        &Method::OPTIONS,
        &other,
    ));
    assert_eq!(
        r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://elsewhere.example"
    );
    assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_METHODS], "GET, HEAD");
}

#[test]
fn a_preflight_from_another_origin_is_refused_without_cors_headers() {
    let h = headers(&[("origin", "https://evil.example")]);
    let r = answer(check(&shop(), Scope::Read, READ, &Method::OPTIONS, &h));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    // The scheme and the port are part of the origin.
    for near in [
        "http://shop.example",
        "https://shop.example:444",
        "http://localhost:8001",
    ] {
        let h = headers(&[("origin", near)]);
        let r = answer(check(&shop(), Scope::Write, WRITE, &Method::OPTIONS, &h));
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{near}");
    }
}

#[test]
fn options_without_an_origin_says_what_the_route_allows() {
    let r = answer(check(
        &shop(),
        Scope::Write,
        WRITE,
        &Method::OPTIONS,
        &HeaderMap::new(),
    ));
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()[ALLOW], "POST");
}

#[test]
fn writes_from_another_origin_are_refused_reads_pass_without_headers() {
    let evil = headers(&[("origin", "https://evil.example")]);
    let r = answer(check(&shop(), Scope::Write, WRITE, &Method::POST, &evil));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        passed(check(&shop(), Scope::Read, READ, &Method::GET, &evil)),
        None
    );
    // Without an Origin (curl, a server) nothing changes.
    assert_eq!(
        passed(check(
            &shop(),
            Scope::Write,
            WRITE,
            &Method::POST,
            &HeaderMap::new()
        )),
        None
    );
    let good = headers(&[("origin", "http://localhost:8000")]);
    let origin = passed(check(&shop(), Scope::Write, WRITE, &Method::POST, &good));
    assert_eq!(
        origin.as_ref().map(|o| o.to_str().unwrap()),
        Some("http://localhost:8000")
    );
    let mut r = empty(StatusCode::NO_CONTENT);
    decorate(&mut r, origin.unwrap());
    assert_eq!(
        r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://localhost:8000"
    );
    assert_eq!(
        r.headers()[ACCESS_CONTROL_EXPOSE_HEADERS],
        "Retry-After, X-Request-Id"
    );
    assert_eq!(r.headers()[VARY], "Origin");
}
