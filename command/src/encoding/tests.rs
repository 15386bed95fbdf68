use super::*;
use crate::batch::Limits;
use crate::validate::{TEST_NOW as NOW, TEST_WINDOW as W};
use analytics_model::event::Event;
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use hyper::header::HeaderValue;
use std::io::Write;

const MAX: usize = 64 * 1024;

fn body(users: usize) -> Vec<u8> {
    (0..users)
        .map(|i| {
            format!(r#"{{"timestamp":{NOW},"user":"u{i}","event":"click","id":"e{i}"}}"#) + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

fn zlib(raw: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

/// Feeds `sent` in chunks of `chunk` bytes, as a body arrives.
fn read(encoding: Encoding, sent: &[u8], chunk: usize) -> Result<Vec<Event>, BodyError> {
    let limits = Limits {
        max_events: 10_000,
        max_body_bytes: MAX,
    };
    let mut decoder = Decoder::new(encoding, Parser::new(limits, W), MAX);
    for piece in sent.chunks(chunk) {
        decoder.push(piece)?;
    }
    Ok(decoder.finish()?.finish()?)
}

fn encoding(values: &[&str]) -> Result<Encoding, UnknownEncoding> {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
    }
    Encoding::of(&headers)
}

#[test]
fn the_header_names_one_known_coding() {
    assert_eq!(encoding(&[]), Ok(Encoding::Identity));
    assert_eq!(encoding(&["identity"]), Ok(Encoding::Identity));
    assert_eq!(encoding(&["gzip"]), Ok(Encoding::Gzip));
    assert_eq!(encoding(&["GZip "]), Ok(Encoding::Gzip));
    assert_eq!(encoding(&["x-gzip"]), Ok(Encoding::Gzip));
    assert_eq!(encoding(&["deflate"]), Ok(Encoding::Deflate));
    assert_eq!(encoding(&["br"]), Err(UnknownEncoding("br".into())));
    assert_eq!(
        encoding(&["gzip, deflate"]),
        Err(UnknownEncoding("gzip, deflate".into()))
    );
    assert!(encoding(&["gzip", "gzip"]).is_err());
    let mut opaque = HeaderMap::new();
    opaque.insert(
        CONTENT_ENCODING,
        HeaderValue::from_bytes(b"gz\xffip").unwrap(),
    );
    assert!(
        Encoding::of(&opaque).is_err(),
        "a value that is not text is not none"
    );
}

#[test]
fn every_coding_reads_the_same_events_whatever_the_chunks() {
    let raw = body(300);
    let plain = read(Encoding::Identity, &raw, 7).unwrap();
    assert_eq!(plain.len(), 300);
    for chunk in [1, 13, 4096, MAX] {
        assert_eq!(read(Encoding::Gzip, &gzip(&raw), chunk).unwrap(), plain);
        assert_eq!(read(Encoding::Deflate, &zlib(&raw), chunk).unwrap(), plain);
    }
    // Two gzip members one after the other are one body.
    let (a, b) = raw.split_at(raw.len() / 2);
    let two = [gzip(a), gzip(b)].concat();
    assert_eq!(read(Encoding::Gzip, &two, 100).unwrap(), plain);
}

#[test]
fn a_bomb_stops_at_the_limit_as_decoded() {
    // 10 MB of newlines compress to about 10 KB: under the limit as sent, far over it decoded.
    let bomb = vec![b'\n'; 10 * 1024 * 1024];
    for sent in [gzip(&bomb), zlib(&bomb)] {
        assert!(sent.len() < MAX, "{}", sent.len());
        let coding = if sent[0] == 0x1f {
            Encoding::Gzip
        } else {
            Encoding::Deflate
        };
        match read(coding, &sent, 4096) {
            Err(BodyError::Batch(BatchError::TooLarge(reason))) => {
                assert!(reason.contains("--max-body-bytes"), "{reason}")
            }
            other => panic!("{coding:?}: {other:?}"),
        }
    }
}

#[test]
fn the_limit_holds_as_sent_too() {
    let noise: Vec<u8> = (0..MAX as u32 + 1)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(
        read(Encoding::Gzip, &noise, 1000),
        Err(BodyError::TooLargeAsSent(MAX))
    );
}

#[test]
fn corrupt_truncated_or_trailing_streams_are_refused() {
    let raw = body(50);
    let corrupt = |coding: Encoding, sent: &[u8]| match read(coding, sent, 512) {
        Err(BodyError::Corrupt(reason)) => reason,
        other => panic!("{coding:?} {sent:?}: {other:?}"),
    };
    let gz = gzip(&raw);
    let z = zlib(&raw);
    corrupt(Encoding::Gzip, &raw);
    corrupt(Encoding::Gzip, &gz[..gz.len() - 4]);
    corrupt(Encoding::Gzip, &[gz.as_slice(), b"junk"].concat());
    let mut flipped = gz.clone();
    flipped[gz.len() - 6] ^= 0xff; // the CRC
    corrupt(Encoding::Gzip, &flipped);
    corrupt(Encoding::Deflate, &raw);
    corrupt(Encoding::Deflate, &z[..z.len() / 2]);
    let reason = corrupt(Encoding::Deflate, &[z.as_slice(), b"junk"].concat());
    assert!(reason.contains("after the end"), "{reason}");
    // An empty compressed body is not a stream at all.
    corrupt(Encoding::Gzip, b"");
    corrupt(Encoding::Deflate, b"");
}
