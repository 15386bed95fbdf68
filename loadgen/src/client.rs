//! A minimal HTTP/1.1 keep-alive client (no TLS, no chunked request bodies): small and fast
//! enough that the load generator measures the server, not itself.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Client {
    addr: String,
    stream: BufReader<TcpStream>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    pub async fn connect(addr: &str) -> Result<Self> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Self {
            addr: addr.to_owned(),
            stream: BufReader::new(s),
        })
    }

    /// Sends one request (empty body) and reads the response.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response> {
        self.request_with_body(method, target, headers, b"").await
    }

    /// `POST /analytics/batch` with an NDJSON `body`.
    pub async fn post_batch(&mut self, body: &[u8]) -> Result<Response> {
        self.request_with_body(
            "POST",
            "/analytics/batch",
            &[("Content-Type", "application/x-ndjson")],
            body,
        )
        .await
    }

    /// Sends one request with `body` and reads the response.
    pub async fn request_with_body(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.get_mut().write_all(&bytes).await?;
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.parse()?;
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0u8; if method == "HEAD" { 0 } else { len }];
        self.stream.read_exact(&mut body).await?;
        Ok(Response {
            status,
            headers,
            body: String::from_utf8(body)?,
        })
    }
}
