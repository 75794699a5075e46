//! The load generator's HTTP/1.1 client: just enough of the protocol to POST JSON (or GET a
//! path) over a keep-alive connection and read back a `Content-Length` answer, as cheaply as the kernel
//! allows. A general client (ureq, one blocking thread per connection) spent more CPU per
//! request than the service it measured, on the same two CPUs; wrk's way is an event loop over
//! raw sockets, and this is that.
//!
//! Each request is written with one `write` (the head is formatted once per run, only the
//! body and its length vary), and each answer is read into a buffer the connection keeps. An
//! answer this client cannot delimit (chunked, or without a length) is an error with a message
//! saying so, never a guess: the service always sends `Content-Length`.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A head longer than this is refused (the service's are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;
/// A body longer than this is refused (the benchmark's answers are under a kilobyte).
const MAX_BODY: usize = 1024 * 1024;
/// The read buffer each connection starts with; it grows for longer answers.
const BUFFER: usize = 4096;

/// Where every request of a run goes, with the part of its head that never changes.
#[derive(Debug)]
pub struct Endpoint {
    /// The address connections are opened to.
    pub addr: SocketAddr,
    /// `POST <path> HTTP/1.1` and the fixed headers, up to the `Content-Length` value.
    head: Vec<u8>,
    /// The `Host` header's value.
    authority: String,
}

impl Endpoint {
    /// The endpoint `path` of the server at `base_url` (`http://host:port`, as the service
    /// reports it).
    ///
    /// # Errors
    ///
    /// When `base_url` is not a plain `http://` URL with a host that resolves.
    pub fn new(base_url: &str, path: &str) -> Result<Self, String> {
        let authority = base_url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| format!("{base_url} is not an http://host:port URL"))?;
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority} resolves to no address"))?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: "
        )
        .into_bytes();
        Ok(Self {
            addr,
            head,
            authority: authority.to_owned(),
        })
    }

    /// Writes a `GET` of `path` (the request target, already percent-encoded) into `out`
    /// (cleared first).
    pub fn get(&self, path: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(path);
        // Writing into a Vec cannot fail.
        write!(out, " HTTP/1.1\r\nHost: {}\r\n\r\n", self.authority).ok();
    }

    /// Writes the whole request carrying `body` into `out` (cleared first).
    pub fn request(&self, body: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.head);
        // Writing into a Vec cannot fail.
        write!(out, "{}\r\n\r\n", body.len()).ok();
        out.extend_from_slice(body);
    }
}

/// What an answer's head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The server will close the connection after this answer (`Connection: close`, or
    /// HTTP/1.0).
    pub closes: bool,
}

/// One keep-alive connection, with the buffer its answers are read into.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    body: std::ops::Range<usize>,
}

impl Conn {
    /// Opens a connection to `addr`.
    ///
    /// # Errors
    ///
    /// When the connection cannot be opened.
    pub async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: vec![0; BUFFER],
            body: 0..0,
        })
    }

    /// Sends `request` (a whole HTTP/1.1 request) and reads the whole answer; its body is then
    /// [`Conn::body`].
    ///
    /// # Errors
    ///
    /// A message when writing or reading fails, the server closes the connection first, or
    /// the answer is not a `Content-Length`-delimited HTTP/1.x answer. The connection is then
    /// in an unknown state: drop it.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Answer, String> {
        self.body = 0..0;
        self.stream
            .write_all(request)
            .await
            .map_err(|e| format!("sending the request: {e}"))?;
        let mut filled = 0;
        let head_end = loop {
            if let Some(at) = find_head_end(&self.buf[..filled]) {
                break at;
            }
            if filled >= MAX_HEAD {
                return Err(format!("the answer's head is longer than {MAX_HEAD} bytes"));
            }
            filled += self.read_more(filled, MAX_HEAD).await?;
        };
        let head = parse_head(&self.buf[..head_end])?;
        let body_start = head_end + 4;
        let body_end = body_start + head.length;
        while filled < body_end {
            filled += self.read_more(filled, body_end).await?;
        }
        if filled > body_end {
            return Err(format!(
                "the server sent {} bytes beyond the answer's Content-Length",
                filled - body_end
            ));
        }
        self.body = body_start..body_end;
        Ok(head.answer)
    }

    /// The body of the last answer [`Conn::exchange`] read (empty after an error).
    pub fn body(&self) -> &[u8] {
        self.buf.get(self.body.clone()).unwrap_or_default()
    }

    /// Reads into the buffer after its first `filled` bytes, growing it (up to `want` bytes in
    /// all) when it is full; returns how many bytes came.
    async fn read_more(&mut self, filled: usize, want: usize) -> Result<usize, String> {
        if filled == self.buf.len() {
            self.buf.resize(want.max(filled * 2), 0);
        }
        let buf = self.buf.get_mut(filled..).unwrap_or_default();
        match self.stream.read(buf).await {
            Ok(0) if filled == 0 => {
                Err("the server closed the connection without answering".into())
            }
            Ok(0) => Err(format!(
                "the server closed the connection {filled} bytes into its answer"
            )),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("reading the answer: {e}")),
        }
    }
}

/// Where the head ends: the index of its `\r\n\r\n`.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

/// An answer's head, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    answer: Answer,
    /// The body's length in bytes.
    length: usize,
}

/// Parses a head (without its final `\r\n\r\n`).
fn parse_head(bytes: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the answer's head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut closes = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(format!("not an HTTP/1.x answer: {status_line:?}")),
    };
    let mut length = None;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("a header line without a colon: {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| format!("Content-Length {value:?} is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err("two different Content-Length headers".into());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "the answer is sent with Transfer-Encoding: {value}; the load generator reads \
                 only answers with a Content-Length"
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            closes = value.eq_ignore_ascii_case("close");
        }
    }
    // These never have a body (RFC 9112, section 6.3).
    let bodiless = status < 200 || status == 204 || status == 304;
    let length = match length {
        _ if bodiless => 0,
        Some(n) if n > MAX_BODY => {
            return Err(format!(
                "the answer's body is {n} bytes, over the {MAX_BODY} allowed"
            ))
        }
        Some(n) => n,
        None => {
            return Err(format!(
                "the {status} answer has no Content-Length; the load generator cannot tell \
                 where its body ends"
            ))
        }
    };
    Ok(Head {
        answer: Answer { status, closes },
        length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn head(text: &str) -> Result<Head, String> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn a_request_is_the_fixed_head_then_the_length_then_the_body() {
        let endpoint = Endpoint::new("http://127.0.0.1:8080", "/api/v1/action").unwrap();
        let mut out = Vec::new();
        endpoint.request(br#"{"a":1}"#, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /api/v1/action HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
        endpoint.get(b"/api/v1/users/u-1", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /api/v1/users/u-1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        );
    }

    #[test]
    fn only_plain_http_urls_are_endpoints() {
        assert!(Endpoint::new("https://127.0.0.1:8080", "/").is_err());
        assert!(Endpoint::new("http://127.0.0.1:8080/api", "/").is_err());
        assert!(Endpoint::new("http://", "/").is_err());
        assert!(Endpoint::new("http://127.0.0.1:8080/", "/").is_ok());
    }

    #[test]
    fn a_head_gives_the_status_the_length_and_whether_the_connection_stays() {
        let parsed = head("HTTP/1.1 201 Created\r\ncontent-length: 42\r\ndate: x").unwrap();
        assert_eq!(
            parsed.answer,
            Answer {
                status: 201,
                closes: false
            }
        );
        assert_eq!(parsed.length, 42);
        let closing = head("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0");
        assert!(closing.unwrap().answer.closes);
        assert!(
            head("HTTP/1.0 200 OK\r\nContent-Length: 0")
                .unwrap()
                .answer
                .closes
        );
        assert_eq!(head("HTTP/1.1 204 No Content").unwrap().length, 0);
    }

    #[test]
    fn answers_without_a_usable_length_are_errors_that_say_why() {
        let chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").unwrap_err();
        assert!(chunked.contains("Transfer-Encoding: chunked"), "{chunked}");
        let missing = head("HTTP/1.1 201 Created\r\nDate: x").unwrap_err();
        assert!(missing.contains("no Content-Length"), "{missing}");
        assert!(head("HTTP/1.1 201 Created\r\nContent-Length: -1").is_err());
        assert!(head("HTTP/1.1 201 Created\r\nContent-Length: 1\r\nContent-Length: 2").is_err());
        assert!(head("HTTP/2 201\r\nContent-Length: 1").is_err());
        assert!(head("HTTP/1.1 abc OK\r\nContent-Length: 1").is_err());
        assert!(head("HTTP/1.1 201 Created\r\nno colon").is_err());
    }

    /// Serves `answers` in turn, one per request, on one connection.
    fn serve(answers: Vec<Vec<u8>>) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut buf = [0; 4096];
            for answer in answers {
                let mut got = Vec::new();
                // Each test request has an empty body: its head is the whole of it.
                while find_head_end(&got).is_none() {
                    let n = socket.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                // Byte by byte, to exercise reads that stop anywhere.
                for byte in answer {
                    socket.write_all(&[byte]).unwrap();
                }
            }
        });
        addr
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap()
    }

    #[test]
    fn answers_are_read_whole_one_after_the_other_on_one_connection() {
        let big = "x".repeat(3 * BUFFER);
        let addr = serve(vec![
            b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{big}",
                big.len()
            )
            .into_bytes(),
        ]);
        let endpoint = Endpoint::new(&format!("http://{addr}"), "/").unwrap();
        let mut request = Vec::new();
        endpoint.request(b"", &mut request);
        runtime().block_on(async {
            let mut conn = Conn::open(addr).await.unwrap();
            let answer = conn.exchange(&request).await.unwrap();
            assert_eq!(answer.status, 201);
            assert_eq!(conn.body(), b"hello");
            let answer = conn.exchange(&request).await.unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(conn.body(), big.as_bytes());
        });
    }

    #[test]
    fn a_connection_closed_mid_answer_is_an_error() {
        let addr = serve(vec![
            b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhel".to_vec(),
        ]);
        let endpoint = Endpoint::new(&format!("http://{addr}"), "/").unwrap();
        let mut request = Vec::new();
        endpoint.request(b"", &mut request);
        runtime().block_on(async {
            let mut conn = Conn::open(addr).await.unwrap();
            let error = conn.exchange(&request).await.unwrap_err();
            assert!(error.contains("closed the connection"), "{error}");
            assert_eq!(conn.body(), b"");
        });
    }
}
