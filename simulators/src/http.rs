//! A tiny blocking HTTP/1.1 client: enough to POST a JSON batch to the gateway and read the
//! status line, without pulling an async runtime into the simulator.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a POST failed.
#[derive(Debug)]
pub enum HttpError {
    /// The URL is not `http://host[:port][/path]`.
    BadUrl(String),
    /// Connecting, writing or reading failed.
    Io(std::io::Error),
    /// The reply did not start with an HTTP/1.x status line.
    BadResponse(String),
    /// The server answered with a status outside 200..300; `body` is its start.
    Status { code: u16, body: String },
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::BadUrl(u) => write!(f, "bad URL {u:?}: expected http://host[:port][/path]"),
            HttpError::Io(e) => write!(f, "I/O error: {e}"),
            HttpError::BadResponse(line) => write!(f, "not an HTTP response: {line:?}"),
            HttpError::Status { code, body } => write!(f, "HTTP {code}: {body}"),
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for HttpError {
    fn from(e: std::io::Error) -> Self {
        HttpError::Io(e)
    }
}

/// Where to POST: parsed once, used for every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    host: String,
    port: u16,
    path: String,
}

impl HttpTarget {
    /// Parses `http://host[:port][/path]` (no TLS, no user info).
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = || HttpError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        // "[::1]:8080" or "host:8080" or "host"
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(bad)?;
            let port = match &v6[end + 1..] {
                "" => 80,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(bad)?,
            };
            (format!("[{}]", &v6[..end]), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (authority.to_string(), 80),
            }
        };
        Ok(Self {
            host,
            port,
            path: path.to_string(),
        })
    }

    /// POSTs `body` as `application/json` and returns the status code when it is 2xx.
    pub fn post_json(&self, body: &str, timeout: Duration) -> Result<u16, HttpError> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let addr = (host, self.port).to_socket_addrs()?.next().ok_or_else(|| {
            HttpError::BadUrl(format!("{}:{} resolves to nothing", self.host, self.port))
        })?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        // One connection per request keeps the client trivial; a batch per tick is few requests.
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: citygate-sim\r\n\r\n",
            self.path,
            self.host,
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        stream.flush()?;

        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let code = parse_status(&status_line)?;
        if (200..300).contains(&code) {
            return Ok(code);
        }
        // Skip the headers, then keep the start of the body for the error message.
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
        }
        let mut snippet = Vec::new();
        let _ = reader.take(512).read_to_end(&mut snippet);
        Err(HttpError::Status {
            code,
            body: String::from_utf8_lossy(&snippet)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
    }
}

fn parse_status(line: &str) -> Result<u16, HttpError> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse()
            .map_err(|_| HttpError::BadResponse(line.trim().to_string())),
        _ => Err(HttpError::BadResponse(line.trim().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one request with `reply` and returns what the client sent.
    fn serve_once(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/api/v1/ingest",
            listener.local_addr().expect("addr")
        );
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // read until the whole declared body is in
            loop {
                let n = s.read(&mut buf).expect("read");
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            s.write_all(reply.as_bytes()).expect("write");
            String::from_utf8_lossy(&got).to_string()
        });
        (url, handle)
    }

    #[test]
    fn posts_json_and_accepts_2xx() {
        let (url, server) = serve_once("HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
        let target = HttpTarget::parse(&url).expect("url");
        let code = target
            .post_json(r#"[{"sensor":"x","ph":7.1}]"#, Duration::from_secs(5))
            .expect("2xx");
        assert_eq!(code, 202);
        let request = server.join().expect("server");
        assert!(
            request.starts_with("POST /api/v1/ingest HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Content-Type: application/json"));
        assert!(request.ends_with(r#"[{"sensor":"x","ph":7.1}]"#));
    }

    #[test]
    fn reports_non_2xx_with_the_body() {
        let (url, server) = serve_once(
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad payload",
        );
        let target = HttpTarget::parse(&url).expect("url");
        let err = target
            .post_json("[]", Duration::from_secs(5))
            .expect_err("400");
        server.join().expect("server");
        match err {
            HttpError::Status { code, body } => {
                assert_eq!(code, 400);
                assert_eq!(body, "bad payload");
            }
            other => panic!("expected a status error, got {other}"),
        }
    }

    #[test]
    fn parses_urls() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/api/v1/ingest").expect("url");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/api/v1/ingest")
        );
        let t = HttpTarget::parse("http://localhost").expect("url");
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        let t = HttpTarget::parse("http://[::1]:9000/x").expect("url");
        assert_eq!((t.host.as_str(), t.port), ("[::1]", 9000));
        assert!(HttpTarget::parse("https://x").is_err());
        assert!(HttpTarget::parse("http://x:notaport/").is_err());
        assert!(HttpTarget::parse("http:///path").is_err());
    }
}
