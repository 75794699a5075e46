//! Client connections: how many may be open at once ([`ConnectionLimit`]), and the JSON
//! envelope on the answers the HTTP layer writes by itself ([`Connection`]).
//!
//! actix-web answers a malformed request line (400), a request whose headers did not arrive
//! within `server.header_timeout_secs` (408) and headers too large (431) before any handler
//! runs, with an empty body. [`Connection`] wraps each client socket, follows the framing of
//! the responses written to it, and gives exactly those answers the service's JSON envelope.
//! It recognises them by what no response of the application has: a 400, 408 or 431 with
//! `content-length: 0` and no `x-request-id` (the access log sets one on every response).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::http::{ConnectionType, Method};
use actix_web::middleware::Next;
use actix_web::rt::net::TcpStream;
use actix_web::rt::time::Sleep;
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::access_log::REQUEST_ID_HEADER;

/// How often, at most, a refused connection is logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The longest response head followed; past it the connection's bytes pass unchanged.
const MAX_HEAD: usize = 16 * 1024;

/// The open client connections, and the cap `server.max_connections` puts on them.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
    /// When a refusal was last logged, and how many had been refused by then.
    logged: Mutex<Option<(Instant, u64)>>,
}

impl ConnectionLimit {
    /// At most `max` connections open at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            logged: Mutex::new(None),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// A place for one more connection, or `None` when `max` are open (the refusal is
    /// counted and logged, at most once per [`REFUSAL_LOG_EVERY`]).
    pub fn admit(self: &Arc<Self>) -> Option<OpenConnection> {
        let admitted = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok();
        if admitted {
            return Some(OpenConnection(self.clone()));
        }
        let refused = self.refused.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut logged) = self.logged.lock() {
            match *logged {
                None => log::warn!(
                    "open connections reached server.max_connections ({}): new connections \
                     are answered 503 and closed until some close",
                    self.max
                ),
                Some((at, before)) if at.elapsed() >= REFUSAL_LOG_EVERY => log::warn!(
                    "open connections at server.max_connections ({}): {} more connections \
                     refused",
                    self.max,
                    refused - before
                ),
                Some(_) => return None,
            }
            *logged = Some((Instant::now(), refused));
        }
        None
    }
}

/// One admitted connection; frees its place when dropped.
#[derive(Debug)]
pub struct OpenConnection(Arc<ConnectionLimit>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Middleware: an answer to `HEAD` carries no body, and says so with `content-length: 0`
/// (rather than the length of the body a `GET` would get), so that [`Connection`] can follow
/// the responses that come after it.
///
/// # Errors
/// Those of the inner service.
pub async fn head_without_body<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B, ()>>, actix_web::Error> {
    let head = req.method() == Method::HEAD;
    let res = next.call(req).await?;
    Ok(if head {
        res.map_body(|_, _| ()).map_into_right_body()
    } else {
        res.map_into_left_body()
    })
}

/// Middleware: when a response goes out before its request's body was read to the end (a
/// 408 for a stalled body, a 401 or 404 before the body is looked at), the response says
/// `connection: close` and the connection is told, so that a client that never ends its body
/// cannot hold the connection.
///
/// # Errors
/// Those of the inner service.
pub async fn close_when_body_unread<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let headers = req.headers();
    let has_body = headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    let finished = Rc::new(Cell::new(!has_body));
    if has_body {
        let inner = req.take_payload();
        req.set_payload(Payload::Stream {
            payload: Box::pin(Watched {
                inner,
                finished: finished.clone(),
            }),
        });
    }
    let note = req.conn_data::<Rc<ConnectionNote>>().cloned();
    if let Some(note) = &note {
        note.requests.set(note.requests.get() + 1);
    }
    let unread = |finished: &Cell<bool>| {
        if !finished.get() {
            if let Some(note) = &note {
                note.body_left_unread();
            }
        }
    };
    match next.call(req).await {
        Ok(mut res) => {
            if !finished.get() {
                res.response_mut()
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
            }
            unread(&finished);
            Ok(res)
        }
        Err(e) => {
            unread(&finished);
            Err(e)
        }
    }
}

/// A request body that records when it was read to its end.
struct Watched {
    inner: Payload,
    finished: Rc<Cell<bool>>,
}

impl Stream for Watched {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(None) = next {
            self.finished.set(true);
        }
        next
    }
}

/// The answer to a connection beyond `server.max_connections`.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 92\r\nconnection: close\r\n\r\n\
{\"status\":\"failed\",\"message\":\"The server has too many open connections. Try again shortly.\"}";

/// Answers a connection beyond the cap with 503 and closes it. Whatever the client sent is
/// read (briefly) first, so that closing does not reset the connection before it reads the
/// answer.
pub async fn refuse(mut stream: TcpStream) {
    if stream.write_all(REFUSED).await.is_ok() {
        linger(stream).await;
    }
}

/// What the application tells the connection a request came on (through the request's
/// connection data).
#[derive(Debug, Default)]
pub struct ConnectionNote {
    /// A response went out before its request's body was read to the end. The HTTP layer
    /// then reads the rest of a chunked body before it closes the connection, for as long as
    /// the client takes: the connection gives it `server.body_timeout_secs` for that.
    unread_body: Cell<bool>,
    /// Requests that reached the application on this connection.
    requests: Cell<u64>,
    /// The task reading the connection, woken when `unread_body` is set so that its deadline
    /// starts even while nothing arrives.
    reader: RefCell<Option<Waker>>,
}

impl ConnectionNote {
    fn body_left_unread(&self) {
        self.unread_body.set(true);
        if let Ok(mut reader) = self.reader.try_borrow_mut() {
            if let Some(waker) = reader.take() {
                waker.wake();
            }
        }
    }
}

/// A client connection: bytes read pass unchanged; responses written pass unchanged, except
/// the HTTP layer's own 400, 408 and 431, which get the JSON envelope.
#[derive(Debug)]
pub struct Connection {
    /// Always there until the connection is dropped.
    io: Option<TcpStream>,
    responses: Responses,
    /// Bytes accepted from the writer and not yet written to `io`, from `written` on.
    pending: Vec<u8>,
    written: usize,
    note: Rc<ConnectionNote>,
    /// How long the rest of an unread body may take, and the deadline once it runs.
    drain_allowance: Duration,
    drain: Option<Pin<Box<Sleep>>>,
    /// How long the headers of a request after the first may take once they start arriving
    /// (the HTTP layer times the first request's itself), and the deadline once it runs.
    header_timeout: Duration,
    head: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
    open: Option<OpenConnection>,
}

impl Connection {
    /// Wraps an admitted connection. The headers of each request after the first may take
    /// `header_timeout` from their first byte; the rest of a body left unread may take
    /// `drain_allowance`.
    pub fn new(
        io: TcpStream,
        open: OpenConnection,
        header_timeout: Duration,
        drain_allowance: Duration,
    ) -> Self {
        Self {
            io: Some(io),
            responses: Responses::default(),
            pending: Vec::new(),
            written: 0,
            note: Rc::default(),
            drain_allowance,
            drain: None,
            header_timeout,
            head: None,
            timed_out: false,
            open: Some(open),
        }
    }

    /// What the application can tell this connection; for the request's connection data.
    pub fn note(&self) -> Rc<ConnectionNote> {
        self.note.clone()
    }

    /// Whether every request that reached the application was answered and nothing is left
    /// to write: what is read now starts the next request.
    fn between_requests(&self) -> bool {
        self.responses.completed > 0
            && self.responses.completed == self.note.requests.get()
            && self.written == self.pending.len()
            && self.responses.at_boundary()
    }

    fn io(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.io
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    /// Writes what is pending.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let Some(io) = self.io.as_mut() else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            let n = ready!(Pin::new(io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        if self.pending.capacity() > 64 * 1024 {
            self.pending.shrink_to(64 * 1024);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // After one of its own error answers the HTTP layer drops the connection without
        // reading what the client still sends; closing a socket with unread bytes resets it,
        // and the client may lose the answer. Read them for a moment first.
        if !self.responses.answered_own_error {
            return;
        }
        if let (Some(io), Some(open)) = (self.io.take(), self.open.take()) {
            actix_web::rt::spawn(async move {
                linger(io).await;
                drop(open);
            });
        }
    }
}

/// Closes the writing half, then reads and discards what the client still sends, briefly.
pub async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0_u8; 4096];
    let drain = async {
        let mut left = 1024 * 1024_usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    // Nothing to report: the connection is being closed either way.
    let _ = actix_web::rt::time::timeout(Duration::from_secs(1), drain).await;
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Ok(mut reader) = this.note.reader.try_borrow_mut() {
            if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *reader = Some(cx.waker().clone());
            }
        }
        if this.note.unread_body.get() {
            let allowance = this.drain_allowance;
            let drain = this
                .drain
                .get_or_insert_with(|| Box::pin(actix_web::rt::time::sleep(allowance)));
            if drain.as_mut().poll(cx).is_ready() {
                // The end of the stream, as if the client had closed: the HTTP layer closes.
                return Poll::Ready(Ok(()));
            }
        }
        if this.timed_out {
            return Poll::Ready(Ok(()));
        }
        if !this.between_requests() {
            this.head = None;
        } else if let Some(head) = this.head.as_mut() {
            if head.as_mut().poll(cx).is_ready() {
                // Answer 408 as the HTTP layer does for a first request, then end the stream
                // as if the client had closed: the HTTP layer closes the connection.
                this.timed_out = true;
                this.pending.extend_from_slice(&own_error_answer(408));
                this.responses.answered_own_error = true;
                this.responses.framing = Framing::Through;
                if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(()));
            }
        }
        let before = buf.filled().len();
        let read = this.io()?.poll_read(cx, buf);
        if buf.filled().len() > before && this.head.is_none() && this.between_requests() {
            let mut head = Box::pin(actix_web::rt::time::sleep(this.header_timeout));
            // Registers the wake-up; it cannot have elapsed yet.
            let _ = head.as_mut().poll(cx);
            this.head = Some(head);
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.responses.feed(buf, &mut this.pending);
        // Start writing now; what is left goes out at the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.responses.release(&mut this.pending);
        ready!(this.poll_drain(cx))?;
        this.io()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.responses.release(&mut this.pending);
        ready!(this.poll_drain(cx))?;
        this.io()?.poll_shutdown(cx)
    }
}

/// The responses written to a connection: where their stream is, and whether one of the
/// HTTP layer's own error answers went out.
#[derive(Debug, Default)]
struct Responses {
    framing: Framing,
    answered_own_error: bool,
    /// Final (not 1xx) responses written to their end.
    completed: u64,
}

/// Where the response stream written to a connection is.
#[derive(Debug)]
enum Framing {
    /// In a response head (its bytes so far are held back until it is complete).
    Head(Vec<u8>),
    /// In a body of this many more bytes.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Framing that is not followed (a body until the connection closes, an upgrade, a head
    /// too long to be ours): every further byte passes unchanged.
    Through,
}

impl Default for Framing {
    fn default() -> Self {
        Self::Head(Vec::new())
    }
}

/// Where a chunked body is.
#[derive(Debug)]
enum Chunk {
    /// In a chunk-size line (its bytes so far).
    Size(Vec<u8>),
    /// In a chunk's data, this many more bytes, then its CRLF (`trailing` bytes of it left).
    Data { left: u64, trailing: u8 },
    /// In the trailer section after the last chunk (the current line so far).
    Trailer(Vec<u8>),
}

impl Responses {
    /// Whether the stream is between two responses.
    fn at_boundary(&self) -> bool {
        matches!(&self.framing, Framing::Head(head) if head.is_empty())
    }

    /// Follows `input` and appends it to `out`, with the HTTP layer's own error answers
    /// rewritten; an incomplete head is held back until its end arrives.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match &mut self.framing {
                Framing::Through => {
                    out.extend_from_slice(input);
                    return;
                }
                Framing::Head(head) => {
                    let byte = input[0];
                    input = &input[1..];
                    head.push(byte);
                    if head.ends_with(b"\r\n\r\n") {
                        let head = std::mem::take(head);
                        let (framing, own_error, complete) = finish_head(&head, out);
                        self.framing = framing;
                        self.answered_own_error |= own_error;
                        self.completed += u64::from(complete);
                    } else if head.len() > MAX_HEAD {
                        out.extend_from_slice(head);
                        self.framing = Framing::Through;
                    }
                }
                Framing::Length(left) => {
                    let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        self.framing = Framing::default();
                        self.completed += 1;
                    }
                }
                Framing::Chunked(chunk) => {
                    let byte = input[0];
                    match chunk {
                        Chunk::Size(line) => {
                            out.push(byte);
                            input = &input[1..];
                            line.push(byte);
                            if line.ends_with(b"\r\n") {
                                match chunk_size(line) {
                                    Some(0) => *chunk = Chunk::Trailer(Vec::new()),
                                    Some(left) => *chunk = Chunk::Data { left, trailing: 2 },
                                    None => self.framing = Framing::Through,
                                }
                            } else if line.len() > MAX_HEAD {
                                self.framing = Framing::Through;
                            }
                        }
                        Chunk::Data { left, trailing } => {
                            if *left > 0 {
                                let take = usize::try_from(*left)
                                    .map_or(input.len(), |l| l.min(input.len()));
                                out.extend_from_slice(&input[..take]);
                                input = &input[take..];
                                *left -= take as u64;
                            } else {
                                out.push(byte);
                                input = &input[1..];
                                *trailing -= 1;
                                if *trailing == 0 {
                                    *chunk = Chunk::Size(Vec::new());
                                }
                            }
                        }
                        Chunk::Trailer(line) => {
                            out.push(byte);
                            input = &input[1..];
                            line.push(byte);
                            if line.as_slice() == b"\r\n" {
                                self.framing = Framing::default();
                                self.completed += 1;
                            } else if line.ends_with(b"\r\n") {
                                line.clear();
                            } else if line.len() > MAX_HEAD {
                                self.framing = Framing::Through;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Hands over a head held back (the writer flushes before it is complete, which the
    /// HTTP layer never does): it passes unchanged, and so does all that follows.
    fn release(&mut self, out: &mut Vec<u8>) {
        if let Framing::Head(head) = &mut self.framing {
            if !head.is_empty() {
                out.extend_from_slice(head);
                self.framing = Framing::Through;
            }
        }
    }
}

/// The size of a chunk from its size line (`1a;ext\r\n`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = std::str::from_utf8(line).ok()?;
    let hex = line.trim_end_matches("\r\n").split(';').next()?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// What the HTTP layer says with each of its own error answers.
fn own_error_message(status: u16) -> Option<&'static str> {
    match status {
        400 => Some("The request is not valid HTTP."),
        408 => Some("The request was not received in time."),
        431 => Some("The request's headers are too large."),
        _ => None,
    }
}

/// Appends a complete response head to `out` (rewritten when it is one of the HTTP layer's
/// own error answers, followed by its JSON body); how its body is framed, whether it was one
/// of those answers, and whether the response is complete with its head.
fn finish_head(head: &[u8], out: &mut Vec<u8>) -> (Framing, bool, bool) {
    let Ok(text) = std::str::from_utf8(head) else {
        out.extend_from_slice(head);
        return (Framing::Through, false, false);
    };
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .filter(|line| line.starts_with("HTTP/1."))
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok());
    let Some(status) = status else {
        out.extend_from_slice(head);
        return (Framing::Through, false, false);
    };
    let mut length = None;
    let mut chunked = false;
    let mut request_id = false;
    for line in lines.clone() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case(REQUEST_ID_HEADER) {
            request_id = true;
        }
    }
    if let Some(message) = own_error_message(status) {
        if length == Some(0) && !chunked && !request_id {
            out.extend_from_slice(&rewritten(text, message));
            return (Framing::default(), true, true);
        }
    }
    out.extend_from_slice(head);
    let framing = match status {
        101 => Framing::Through,
        100..=199 => return (Framing::default(), false, false),
        204 | 304 => Framing::default(),
        _ if chunked => Framing::Chunked(Chunk::Size(Vec::new())),
        _ => match length {
            Some(0) => Framing::default(),
            Some(n) => Framing::Length(n),
            None => Framing::Through,
        },
    };
    let complete = matches!(&framing, Framing::Head(_));
    (framing, false, complete)
}

/// `head` (the HTTP layer's own error answer, without a body) with `message` in the JSON
/// envelope as its body.
fn rewritten(head: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "status": "failed", "message": message }).to_string();
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    let mut lines = head.split("\r\n");
    if let Some(status_line) = lines.next() {
        out.extend_from_slice(status_line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for line in lines.filter(|line| !line.is_empty()) {
        let name = line.split(':').next().unwrap_or_default();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("content-type")
        {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    out
}

/// The whole answer `status` (400, 408 or 431) as the HTTP layer would write it, in the JSON
/// envelope, closing the connection.
fn own_error_answer(status: u16) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        _ => "Request Header Fields Too Large",
    };
    let head = format!("HTTP/1.1 {status} {reason}\r\nconnection: close\r\n\r\n");
    rewritten(&head, own_error_message(status).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(parts: &[&[u8]]) -> Vec<u8> {
        let mut responses = Responses::default();
        let mut out = Vec::new();
        for part in parts {
            responses.feed(part, &mut out);
        }
        responses.release(&mut out);
        out
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: a\r\n\r\n{}";
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
3\r\nabc\r\n0\r\n\r\n";
    const TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\
connection: close\r\ndate: x\r\n\r\n";

    fn rewritten_timeout() -> Vec<u8> {
        let body = r#"{"message":"The request was not received in time.","status":"failed"}"#;
        format!(
            "HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ndate: x\r\n\
content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn the_layers_own_errors_get_the_envelope() {
        assert_eq!(through(&[TIMEOUT]), rewritten_timeout());
        let bad = through(&[b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"]);
        let text = String::from_utf8(bad).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["status"], "failed");
        assert_eq!(body["message"], "The request is not valid HTTP.");
        assert!(text.contains(&format!("content-length: {}", body.to_string().len())));
    }

    #[test]
    fn the_applications_answers_pass_unchanged_in_any_cut() {
        let app_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: r\r\n\r\n";
        let stream: Vec<u8> = [OK, CHUNKED, app_400, OK, TIMEOUT].concat();
        let expected: Vec<u8> = [OK, CHUNKED, app_400, OK, &rewritten_timeout()].concat();
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(through(&[a, b]), expected, "cut at {cut}");
        }
    }

    #[test]
    fn unfollowed_framing_passes_everything_after_it() {
        let until_close = b"HTTP/1.0 200 OK\r\n\r\nbody";
        let stream: Vec<u8> = [until_close.as_slice(), TIMEOUT].concat();
        assert_eq!(through(&[&stream]), stream);
    }

    #[test]
    fn the_cap_refuses_beyond_max_and_frees_places() {
        let limit = ConnectionLimit::new(2);
        let a = limit.admit().unwrap();
        let b = limit.admit().unwrap();
        assert!(limit.admit().is_none());
        assert_eq!(limit.open(), 2);
        drop(a);
        let c = limit.admit();
        assert!(c.is_some());
        drop((b, c));
        assert_eq!(limit.open(), 0);
    }

    #[test]
    fn the_refusal_is_a_well_formed_answer() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["status"], "failed");
    }
}
