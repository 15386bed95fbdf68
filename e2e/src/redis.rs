//! Reading and flushing a test stack's Redis directly (raw RESP, authenticated), for tests
//! that look under the services.

use crate::stack::Stack;
use anyhow::{bail, Context, Result};

impl Stack {
    /// Fields of a Redis hash (`HKEYS`); empty when the key does not exist.
    pub fn redis_hkeys(&self, key: &str) -> Result<Vec<String>> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = self.redis_connection()?;
        write!(s, "*2\r\n$5\r\nHKEYS\r\n${}\r\n{key}\r\n", key.len())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let n: usize = line
            .trim_start_matches('*')
            .trim()
            .parse()
            .context("HKEYS reply")?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            line.clear();
            r.read_line(&mut line)?; // $len
            line.clear();
            r.read_line(&mut line)?;
            out.push(line.trim_end().to_owned());
        }
        Ok(out)
    }

    /// A connection to the stack's Redis, authenticated.
    fn redis_connection(&self) -> Result<std::net::TcpStream> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.redis_port))?;
        let pw = self.redis_password();
        write!(s, "*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len())?;
        let mut ok = [0u8; 5];
        s.read_exact(&mut ok)?;
        if &ok != b"+OK\r\n" {
            bail!("Redis AUTH answered {:?}", String::from_utf8_lossy(&ok));
        }
        Ok(s)
    }

    /// Redis `FLUSHALL`.
    pub fn flush_redis(&self) -> Result<()> {
        use std::io::{Read, Write};
        let mut s = self.redis_connection()?;
        s.write_all(b"FLUSHALL\r\n")?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        if !buf[..n].starts_with(b"+OK") {
            bail!("FLUSHALL answered {:?}", String::from_utf8_lossy(&buf[..n]));
        }
        Ok(())
    }
}
