//! A batch's `Content-Encoding`: none, `gzip` or `deflate` (the zlib format, as RFC 9110
//! defines it and as a browser's `CompressionStream("deflate")` writes it).
//!
//! `--max-body-bytes` bounds a body twice: as sent (counted as it arrives) and as decoded
//! (the [`Parser`] counts what it is fed). A compressed body is kept as sent (at most the
//! limit) and decoded in slices of [`SLICE`] bytes into the parser, so a small body that
//! would inflate to gigabytes (a zip bomb) stops with `413` after the limit, having cost at
//! most the limit plus one slice. A stream that does not decode, ends early or has bytes after
//! its end is a `400`; nothing of such a batch is produced.

use crate::batch::{BatchError, Parser};
use flate2::{Decompress, FlushDecompress, Status};
use hyper::header::{HeaderMap, CONTENT_ENCODING};
use std::io::Read;

/// How much is decoded at a time.
const SLICE: usize = 64 * 1024;

/// The codings a batch may be sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Refused by the batch's rules (size, lines).
    Batch(BatchError),
    /// Over `--max-body-bytes` as sent.
    TooLargeAsSent(usize),
    /// Not a valid stream of its coding: `400`.
    Corrupt(String),
}

impl From<BatchError> for BodyError {
    fn from(e: BatchError) -> Self {
        BodyError::Batch(e)
    }
}

/// The `Content-Encoding` named in the header was not one of [`Encoding`]'s: `415`.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownEncoding(pub String);

impl Encoding {
    /// The coding of a request's body; absent or `identity` is none.
    pub fn of(headers: &HeaderMap) -> Result<Self, UnknownEncoding> {
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return Ok(Encoding::Identity);
        };
        if values.next().is_some() {
            return Err(UnknownEncoding("more than one Content-Encoding".into()));
        }
        let text = value
            .to_str()
            .map_err(|_| UnknownEncoding("a value that is not text".into()))?
            .trim();
        match text.to_ascii_lowercase().as_str() {
            "identity" | "" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "deflate" => Ok(Encoding::Deflate),
            _ => Err(UnknownEncoding(text.chars().take(64).collect())),
        }
    }
}

/// Reads a body in `encoding` into `parser`, chunk by chunk.
pub struct Decoder {
    encoding: Encoding,
    parser: Parser,
    max_body_bytes: usize,
    /// The compressed body, as sent.
    sent: Vec<u8>,
    sent_bytes: usize,
}

impl Decoder {
    pub fn new(encoding: Encoding, parser: Parser, max_body_bytes: usize) -> Self {
        Self {
            encoding,
            parser,
            max_body_bytes,
            sent: Vec::new(),
            sent_bytes: 0,
        }
    }

    /// Takes the next chunk of the body as sent.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        self.sent_bytes += chunk.len();
        if self.sent_bytes > self.max_body_bytes {
            return Err(BodyError::TooLargeAsSent(self.max_body_bytes));
        }
        match self.encoding {
            Encoding::Identity => self.parser.push(chunk)?,
            Encoding::Gzip | Encoding::Deflate => self.sent.extend_from_slice(chunk),
        }
        Ok(())
    }

    /// Decodes what was sent and returns the parser, fed.
    pub fn finish(mut self) -> Result<Parser, BodyError> {
        let sent = std::mem::take(&mut self.sent);
        if self.encoding != Encoding::Identity && sent.is_empty() {
            return Err(BodyError::Corrupt(
                "an empty body is not a compressed stream".into(),
            ));
        }
        match self.encoding {
            Encoding::Identity => {}
            Encoding::Gzip => gunzip(&sent, &mut self.parser)?,
            Encoding::Deflate => inflate(&sent, &mut self.parser)?,
        }
        Ok(self.parser)
    }
}

/// gzip, one member or several (RFC 1952); the trailer's CRC and length are checked.
fn gunzip(sent: &[u8], parser: &mut Parser) -> Result<(), BodyError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(sent);
    let mut slice = vec![0u8; SLICE];
    loop {
        let n = decoder
            .read(&mut slice)
            .map_err(|e| BodyError::Corrupt(format!("the gzip body does not decode: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        parser.push(&slice[..n])?;
    }
}

/// zlib (RFC 1950), which HTTP calls `deflate`; the stream must end, and end the body.
fn inflate(sent: &[u8], parser: &mut Parser) -> Result<(), BodyError> {
    let corrupt =
        |why: &str| BodyError::Corrupt(format!("the deflate body does not decode: {why}"));
    let mut stream = Decompress::new(true);
    let mut slice = vec![0u8; SLICE];
    loop {
        let (read, written) = (stream.total_in(), stream.total_out());
        let input = &sent[read as usize..];
        let status = stream
            .decompress(input, &mut slice, FlushDecompress::None)
            .map_err(|e| corrupt(&e.to_string()))?;
        let produced = (stream.total_out() - written) as usize;
        parser.push(&slice[..produced])?;
        match status {
            Status::StreamEnd if stream.total_in() as usize == sent.len() => return Ok(()),
            Status::StreamEnd => return Err(corrupt("bytes after the end of the stream")),
            _ if produced == 0 && stream.total_in() == read => {
                return Err(corrupt("the stream ends early"))
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
