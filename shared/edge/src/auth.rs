//! API keys: the keys file, verifying a presented secret, and minting a new key.
//!
//! The file (`--api-keys-file`) holds one key per line, `<name> <scopes> <sha256-hex>`, where
//! `<scopes>` is `write`, `read`, `write,read` or `browser`, and the hash is SHA-256 of the
//! secret in lowercase or uppercase hex. A `browser` key is *publishable*: safe to put in a
//! web page's HTML, it only sends events, may be given as the `key` query parameter (a beacon
//! cannot set headers), only from an allowed origin when CORS is configured, and has its own
//! rate limit ([`crate::admission`]); it has no other scope. Blank lines and lines starting with `#` are ignored. Only hashes
//! are stored: a leaked file does not let anyone in.
//!
//! A presented secret is hashed once and compared with **every** stored hash in constant time
//! ([`subtle`]), so neither the time taken nor an early exit tells an attacker how close a
//! guess came or which key matched.

pub use analytics_http::Scope;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// One key of the file.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key's name: shown in logs and metric labels, never the secret.
    pub name: Arc<str>,
    scopes: Scopes,
    hash: [u8; 32],
}

/// The scopes of a key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    pub write: bool,
    pub read: bool,
    /// Publishable: sends events from web pages, nothing else.
    pub browser: bool,
}

impl Key {
    /// Whether the key may use a route of `scope` (a browser key: the write routes, under
    /// the conditions of [`crate::admission`]).
    pub fn allows(&self, scope: Scope) -> bool {
        match scope {
            Scope::Write => self.scopes.write || self.scopes.browser,
            Scope::Read => self.scopes.read,
        }
    }

    /// A publishable key ([`Scopes::browser`]).
    pub fn is_browser(&self) -> bool {
        self.scopes.browser
    }
}

/// Why a keys file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the API keys file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("API keys file {path}, line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The keys of one keys file.
#[derive(Debug, Clone, Default)]
pub struct KeyFile {
    keys: Vec<Key>,
}

/// Longest key name: names are metric label values, so they stay short.
pub const MAX_NAME_LEN: usize = 64;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Parses `write`, `read`, `write,read`, `read,write` or `browser` (alone: a publishable
/// key has no other scope).
pub fn parse_scopes(s: &str) -> Result<Scopes, String> {
    let mut scopes = Scopes::default();
    for part in s.split(',') {
        let flag = match part {
            "write" => &mut scopes.write,
            "read" => &mut scopes.read,
            "browser" => &mut scopes.browser,
            _ => {
                return Err(format!(
                    "unknown scope {part:?}: scopes are write, read, write,read or browser"
                ))
            }
        };
        if *flag {
            return Err(format!("scope {part:?} is listed twice"));
        }
        *flag = true;
    }
    if scopes.browser && (scopes.write || scopes.read) {
        return Err(
            "a browser key is publishable and has no other scope: use browser alone".into(),
        );
    }
    Ok(scopes)
}

fn parse_hash(hex: &str) -> Result<[u8; 32], String> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "the third field must be the SHA-256 of the secret in hex (64 characters)".into(),
        );
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex digits");
    }
    Ok(out)
}

impl KeyFile {
    /// Reads and parses `path`; an error names the line and the reason.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| KeyFileError::Line {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses the file's text; an error is the 1-based line number and the reason.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, scopes, hash] = fields[..] else {
                return Err((
                    n,
                    format!(
                        "expected `<name> <scopes> <sha256-hex>`, found {} field(s)",
                        fields.len()
                    ),
                ));
            };
            if !valid_name(name) {
                return Err((
                    n,
                    format!(
                        "invalid key name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
                    ),
                ));
            }
            let scopes = parse_scopes(scopes).map_err(|e| (n, e))?;
            let hash = parse_hash(hash).map_err(|e| (n, e))?;
            if keys.iter().any(|k| &*k.name == name) {
                return Err((n, format!("key name {name:?} is used twice")));
            }
            if keys.iter().any(|k| k.hash == hash) {
                return Err((n, "this hash is already listed under another name".into()));
            }
            keys.push(Key {
                name: name.into(),
                scopes,
                hash,
            });
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &*k.name)
    }

    /// The key whose secret is `secret`, if any. Every stored hash is compared, in constant
    /// time, whatever matches.
    pub fn verify(&self, secret: &[u8]) -> Option<&Key> {
        let presented: [u8; 32] = Sha256::digest(secret).into();
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.hash.ct_eq(&presented)) {
                found = Some(k);
            }
        }
        found
    }
}

/// SHA-256 of `secret` in lowercase hex: the third field of a keys-file line.
pub fn hash_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new key: its secret (shown once) and the line to append to the keys file.
pub struct Minted {
    pub secret: String,
    pub line: String,
}

/// Mints a key: 32 random bytes from the operating system, as `ak_` and 64 hex digits.
pub fn mint(name: &str, scopes: &str) -> Result<Minted, String> {
    if !valid_name(name) {
        return Err(format!(
            "invalid key name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
        ));
    }
    parse_scopes(scopes)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let secret: String = std::iter::once("ak_".to_owned())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect();
    let line = format!("{name} {scopes} {}", hash_hex(&secret));
    Ok(Minted { secret, line })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cret";

    fn file(lines: &str) -> Result<KeyFile, (usize, String)> {
        KeyFile::parse(lines)
    }

    #[test]
    fn parses_keys_comments_and_blank_lines() {
        let text = format!(
            "# keys\n\nwriter write {}\n  reader   read,write   {}  \n",
            hash_hex(SECRET),
            hash_hex("other").to_uppercase()
        );
        let f = file(&text).unwrap();
        assert_eq!(f.names().collect::<Vec<_>>(), ["writer", "reader"]);
        let k = f.verify(SECRET.as_bytes()).unwrap();
        assert_eq!(&*k.name, "writer");
        assert!(k.allows(Scope::Write) && !k.allows(Scope::Read));
        let k = f.verify(b"other").unwrap();
        assert!(k.allows(Scope::Write) && k.allows(Scope::Read) && !k.is_browser());
        let f = file(&format!("page browser {}", hash_hex(SECRET))).unwrap();
        let k = f.verify(SECRET.as_bytes()).unwrap();
        assert!(k.is_browser() && k.allows(Scope::Write) && !k.allows(Scope::Read));
        assert!(f.verify(b"s3cre").is_none());
        assert!(f.verify(b"").is_none());
    }

    #[test]
    fn refuses_malformed_lines_with_their_number() {
        let h = hash_hex(SECRET);
        let cases = [
            (format!("a write {h}\nb write\n"), 2, "field"),
            (format!("a admin {h}"), 1, "unknown scope"),
            (format!("a write,write {h}"), 1, "twice"),
            (format!("a browser,write {h}"), 1, "browser alone"),
            (format!("a read,browser {h}"), 1, "browser alone"),
            (format!("a write {}", &h[..63]), 1, "SHA-256"),
            (format!("a write {}z", &h[..63]), 1, "SHA-256"),
            (format!("a/b write {h}"), 1, "invalid key name"),
            (
                format!("a write {h}\n# x\na read {}", hash_hex("2")),
                3,
                "used twice",
            ),
            (format!("a write {h}\nb read {h}"), 2, "already listed"),
            (format!("a write {h} extra"), 1, "field"),
        ];
        for (text, line, words) in cases {
            let (n, reason) = file(&text).unwrap_err();
            assert_eq!(n, line, "{text:?}: {reason}");
            assert!(reason.contains(words), "{text:?}: {reason}");
        }
    }

    #[test]
    fn minted_keys_verify_against_their_line() {
        let m = mint("ci-writer", "write").unwrap();
        assert!(m.secret.starts_with("ak_") && m.secret.len() == 67);
        let f = file(&m.line).unwrap();
        assert_eq!(&*f.verify(m.secret.as_bytes()).unwrap().name, "ci-writer");
        assert_ne!(mint("a", "read").unwrap().secret, m.secret);
        assert!(mint("bad name", "read").is_err());
        assert!(mint("a", "admin").is_err());
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
