//! A minimal HTTP/1.1 POST client over one keep-alive tokio connection: enough to push
//! line-protocol batches at a store as fast as it takes them, with no TLS or connection pool.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("bad URL {0:?}: expected http://host:port[/path]")]
    BadUrl(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("not an HTTP/1.x response: {0:?}")]
    BadResponse(String),
    #[error("HTTP {code}: {body}")]
    Status { code: u16, body: String },
}

/// `http://host:port[/path?query]`, split once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, for connecting and for the Host header.
    pub authority: String,
    /// Path and query; `/` when the URL has none.
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, PostError> {
        let bad = || PostError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok || authority.contains('@') {
            return Err(bad());
        }
        Ok(Endpoint {
            authority: authority.to_string(),
            path,
        })
    }
}

/// A 2xx answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// One keep-alive connection; reconnects when the server closed it.
pub struct Connection {
    authority: String,
    stream: Option<BufReader<TcpStream>>,
    timeout: Duration,
}

impl Connection {
    pub fn new(authority: &str, timeout: Duration) -> Self {
        Connection {
            authority: authority.to_string(),
            stream: None,
            timeout,
        }
    }

    /// POSTs `body` to `path`. `content_encoding` is e.g. `Some("gzip")` for a compressed body.
    /// Returns the 2xx reply; any other status is an error carrying the start of its body.
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        content_encoding: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, PostError> {
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: citygate-sim\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            self.authority,
            body.len()
        );
        if let Some(enc) = content_encoding {
            head.push_str(&format!("Content-Encoding: {enc}\r\n"));
        }
        head.push_str("\r\n");
        let fresh = self.stream.is_none();
        match self.exchange(head.as_bytes(), body).await {
            // A reused connection may have been closed by the server while idle: the request
            // then fails before any answer, and sending it again on a new one is safe.
            Err(PostError::Io(_)) | Err(PostError::BadResponse(_)) if !fresh => {
                self.stream = None;
                self.exchange(head.as_bytes(), body).await
            }
            other => other,
        }
    }

    async fn exchange(&mut self, head: &[u8], body: &[u8]) -> Result<Reply, PostError> {
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, self.exchange_inner(head, body))
            .await
            .unwrap_or(Err(PostError::Timeout(timeout)));
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange_inner(&mut self, head: &[u8], body: &[u8]) -> Result<Reply, PostError> {
        if self.stream.is_none() {
            let tcp = TcpStream::connect(&self.authority).await?;
            tcp.set_nodelay(true)?;
            self.stream = Some(BufReader::new(tcp));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(PostError::BadResponse("no connection".into()));
        };
        stream.get_mut().write_all(head).await?;
        stream.get_mut().write_all(body).await?;
        stream.get_mut().flush().await?;

        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err(PostError::BadResponse("connection closed".into()));
        }
        let status = parse_status(&line)?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Err(PostError::BadResponse("closed inside the headers".into()));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    length = Some(
                        value
                            .parse::<usize>()
                            .map_err(|_| PostError::BadResponse(header.to_string()))?,
                    )
                }
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let body = if chunked {
            read_chunked(stream).await?
        } else if let Some(n) = length {
            let mut buf = vec![0; n];
            stream.read_exact(&mut buf).await?;
            buf
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            // No length: the body runs to the end of the connection.
            close = true;
            let mut buf = Vec::new();
            stream.read_to_end(&mut buf).await?;
            buf
        };
        if close {
            self.stream = None;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        if (200..300).contains(&status) {
            Ok(Reply { status, body })
        } else {
            Err(PostError::Status {
                code: status,
                body: body.chars().take(512).collect(),
            })
        }
    }
}

async fn read_chunked(stream: &mut BufReader<TcpStream>) -> Result<Vec<u8>, PostError> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| PostError::BadResponse(format!("chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                if stream.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        stream.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        stream.read_exact(&mut crlf).await?;
    }
}

fn parse_status(line: &str) -> Result<u16, PostError> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse()
            .map_err(|_| PostError::BadResponse(line.trim().to_string())),
        _ => Err(PostError::BadResponse(line.trim().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8428/api/v2/write?org=a&bucket=b").expect("url");
        assert_eq!(e.authority, "127.0.0.1:8428");
        assert_eq!(e.path, "/api/v2/write?org=a&bucket=b");
        assert_eq!(Endpoint::parse("http://h:1").expect("url").path, "/");
        assert_eq!(
            Endpoint::parse("http://h:1?x=1").expect("url").path,
            "/?x=1"
        );
        assert!(Endpoint::parse("https://h:1/").is_err());
        assert!(Endpoint::parse("http://h/").is_err());
        assert!(Endpoint::parse("http://:80/").is_err());
    }

    #[test]
    fn reads_status_lines() {
        assert_eq!(parse_status("HTTP/1.1 204 No Content\r\n").ok(), Some(204));
        assert!(parse_status("SSH-2.0-OpenSSH\r\n").is_err());
    }
}
