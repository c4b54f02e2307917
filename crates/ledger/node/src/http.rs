//! A minimal HTTP/1.1 client over a kept-alive loopback connection, for the CLI and the bench.
//!
//! The node's API is plain HTTP on 127.0.0.1; a full client library would be a large dependency
//! for a dozen lines of protocol. Supports `Content-Length` and chunked bodies.

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Most bytes of a response body this client reads; a larger one is an error, so a peer that
/// announces a huge body cannot make the caller allocate it.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// One kept-alive connection to `host:port`.
pub struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    ///
    /// # Errors
    /// If it is not JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("response is not JSON")
    }
}

/// Splits `http://host:port` into `host:port`.
pub fn authority(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

impl Conn {
    /// A connection to `url` (`http://host:port`), opened lazily.
    pub fn new(url: &str) -> Self {
        Self {
            addr: authority(url),
            stream: None,
        }
    }

    /// Sends one request; reconnects once if the kept-alive connection was closed.
    ///
    /// # Errors
    /// Connection or protocol errors.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.addr)
                    .await
                    .with_context(|| format!("connecting to {}", self.addr))?;
                s.set_nodelay(true)?;
                self.stream = Some(BufReader::new(s));
            }
            let s = self.stream.as_mut().expect("connected");
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                self.addr,
                body.len()
            );
            let sent = async {
                s.get_mut().write_all(head.as_bytes()).await?;
                s.get_mut().write_all(body).await?;
                read_response(s).await
            }
            .await;
            match sent {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 0 => {
                    tracing::debug!(%e, "retrying on a fresh connection");
                    self.stream = None;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("returns within two attempts")
    }

    /// `GET path`.
    ///
    /// # Errors
    /// Connection or protocol errors.
    pub async fn get(&mut self, path: &str) -> Result<Response> {
        self.request("GET", path, "text/plain", b"").await
    }
}

async fn read_line(s: &mut BufReader<TcpStream>) -> Result<String> {
    let mut line = String::new();
    if s.read_line(&mut line).await? == 0 {
        bail!("connection closed");
    }
    Ok(line.trim_end().to_string())
}

async fn read_response(s: &mut BufReader<TcpStream>) -> Result<Response> {
    let status_line = read_line(s).await?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut len = None;
    let mut chunked = false;
    loop {
        let line = read_line(s).await?;
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = Some(v.trim().parse::<usize>()?);
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size = usize::from_str_radix(read_line(s).await?.trim(), 16)?;
            if size == 0 {
                read_line(s).await.ok();
                break;
            }
            if body.len().saturating_add(size) > MAX_BODY {
                bail!("response body over {MAX_BODY} bytes");
            }
            let mut chunk = vec![0u8; size];
            s.read_exact(&mut chunk).await?;
            body.extend_from_slice(&chunk);
            read_line(s).await.ok();
        }
    } else if let Some(n) = len {
        if n > MAX_BODY {
            bail!("response body of {n} bytes is over {MAX_BODY}");
        }
        body.resize(n, 0);
        s.read_exact(&mut body).await?;
    }
    Ok(Response { status, body })
}

/// Reads a server-sent-event stream, calling `on_event(event, data)` until it returns false or
/// the stream ends.
///
/// # Errors
/// Connection or protocol errors.
pub async fn sse(
    url: &str,
    path: &str,
    mut on_event: impl FnMut(&str, &str) -> bool,
) -> Result<()> {
    let addr = authority(url);
    let s = TcpStream::connect(&addr).await?;
    let mut s = BufReader::new(s);
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.get_mut().write_all(head.as_bytes()).await?;
    let status = read_line(&mut s).await?;
    if !status.contains(" 200") {
        bail!("stream refused: {status}");
    }
    while !read_line(&mut s).await?.is_empty() {}
    let mut pending = String::new();
    loop {
        let size = usize::from_str_radix(read_line(&mut s).await?.trim(), 16)?;
        if size == 0 {
            return Ok(());
        }
        let mut chunk = vec![0u8; size];
        s.read_exact(&mut chunk).await?;
        read_line(&mut s).await.ok();
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let frame: String = pending.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if !data.is_empty() && !on_event(event, &data) {
                return Ok(());
            }
        }
    }
}
