//! The receiver for the service's update callbacks: a small HTTP/1.1 listener on a thread of
//! its own that reads each request, answers it and hands what it read to its owner. The
//! simulator waits on it for the update it requested ([`Receiver::wait_for`]); the benchmark
//! times the callback of its update; the test suites check what the service sent and, with
//! [`Receiver::start_answering`], make delivery fail on purpose.
//!
//! It reads small requests only (the service's callbacks are a few hundred bytes), gives up on
//! a connection that stalls, and never panics on what a connection sends. What it reports of a
//! request it could not use says what was wrong, never what the body held.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The largest callback body read; the service's are a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;
/// The most header lines read from one request.
const MAX_HEADERS: usize = 100;
/// How long one connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One request the receiver read and answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// When it had been read (whole, or as far as it could be).
    pub at: Instant,
    /// Its JSON body, or why it has none: not a POST, no `Content-Length`, a body over 64 KiB,
    /// a connection that closed or stalled, or a body that is not JSON.
    pub body: Result<Value, String>,
}

impl Arrival {
    /// The `update_id` and `status` of a callback, when its body names both as strings.
    pub fn update(&self) -> Option<(&str, &str)> {
        let body = self.body.as_ref().ok()?;
        Some((
            body.get("update_id")?.as_str()?,
            body.get("status")?.as_str()?,
        ))
    }
}

/// The receiver, listening for as long as it lives (the listening thread ends at the first
/// request after the receiver is dropped).
#[derive(Debug)]
pub struct Receiver {
    url: String,
    arrivals: mpsc::Receiver<Arrival>,
}

impl Receiver {
    /// Listens on `listen` (`host:port`; port 0 picks a free one) and answers 200 to a
    /// callback (a POST whose JSON body names an update and its status), 400 to anything else.
    /// The callback URL is `url` when given, else `http://<the address listened on>/callback`.
    ///
    /// # Errors
    /// When the address cannot be listened on.
    pub fn start(listen: &str, url: Option<String>) -> Result<Self, String> {
        Self::start_answering(listen, url, |_, arrival| {
            if arrival.update().is_some() {
                200
            } else {
                400
            }
        })
    }

    /// Like [`Receiver::start`], answering each request with the status `answer` gives: it is
    /// called with the number of requests answered before this one and what this one held.
    ///
    /// # Errors
    /// When the address cannot be listened on.
    pub fn start_answering(
        listen: &str,
        url: Option<String>,
        mut answer: impl FnMut(usize, &Arrival) -> u16 + Send + 'static,
    ) -> Result<Self, String> {
        let listener = TcpListener::bind(listen)
            .map_err(|e| format!("cannot listen for callbacks on {listen}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot tell the callback listener's address: {e}"))?;
        let (tx, arrivals) = mpsc::channel();
        std::thread::spawn(move || {
            let mut answered = 0;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let arrival = serve(stream, |arrival| answer(answered, arrival));
                answered += 1;
                if tx.send(arrival).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            url: url.unwrap_or_else(|| format!("http://{addr}/callback")),
            arrivals,
        })
    }

    /// The URL to give the service as `callback_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next request, waiting at most `timeout`; `None` when none came.
    pub fn next(&self, timeout: Duration) -> Option<Arrival> {
        self.arrivals.recv_timeout(timeout).ok()
    }

    /// A request received already and not taken yet, without waiting.
    pub fn try_next(&self) -> Option<Arrival> {
        self.arrivals.try_recv().ok()
    }

    /// Waits at most `timeout` for the callback of `update_id`, dropping every other request
    /// (repeats of earlier callbacks: delivery is at least once). Its status, or `None`.
    pub fn wait_for(&self, update_id: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let arrival = self.arrivals.recv_timeout(left).ok()?;
            if let Some((id, status)) = arrival.update() {
                if id == update_id {
                    return Some(status.to_owned());
                }
            }
        }
    }
}

/// Reads one request, answers it with the status `answer` gives, and closes the connection.
fn serve(mut stream: TcpStream, answer: impl FnOnce(&Arrival) -> u16) -> Arrival {
    let body = read(&stream);
    let arrival = Arrival {
        at: Instant::now(),
        body,
    };
    let status = answer(&arrival);
    let reply = format!(
        "HTTP/1.1 {status} {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        reason(status)
    );
    // The service retries a callback it could not deliver; nothing to do here if this fails.
    stream.write_all(reply.as_bytes()).ok();
    arrival
}

/// The request on `stream`, read within [`READ_TIMEOUT`] per read and twice [`MAX_BODY`] in
/// all (headers and body together).
fn read(stream: &TcpStream) -> Result<Value, String> {
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| format!("cannot set a read timeout: {e}"))?;
    let reading = stream
        .try_clone()
        .map_err(|e| format!("cannot read the connection: {e}"))?;
    read_callback(BufReader::new(reading.take(2 * MAX_BODY as u64)))
}

/// The JSON body of an HTTP/1.1 POST with a `Content-Length` body.
fn read_callback(mut reader: impl BufRead) -> Result<Value, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the request line: {e}"))?;
    if !line.starts_with("POST ") {
        let method = line.split_whitespace().next().unwrap_or("nothing");
        return Err(format!("the request is {method:?}, not a POST"));
    }
    let mut length = None;
    let mut headers_ended = false;
    for _ in 0..MAX_HEADERS {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("the connection closed inside the headers".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("cannot read the headers: {e}")),
        }
        let header = line.trim_end();
        if header.is_empty() {
            headers_ended = true;
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    if !headers_ended {
        return Err(format!(
            "the request has more than {MAX_HEADERS} header lines"
        ));
    }
    let length = length.ok_or("the request has no Content-Length")?;
    if length > MAX_BODY {
        return Err(format!(
            "the body of {length} bytes is over the {MAX_BODY} read"
        ));
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("cannot read the body: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("the body is not JSON: {e}"))
}

/// The reason phrase of a status line (clients read the code only).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Answer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> String {
        format!(
            "POST /callback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Sends `text` to the receiver and returns its answer.
    fn send(receiver: &Receiver, text: &str) -> String {
        let addr = receiver
            .url()
            .trim_start_matches("http://")
            .trim_end_matches("/callback");
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(text.as_bytes()).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }

    fn arrival(body: Result<Value, String>) -> Arrival {
        Arrival {
            at: Instant::now(),
            body,
        }
    }

    #[test]
    fn a_callback_gives_its_body_update_and_status() {
        let body =
            r#"{"status": "completed", "update_id": "u-1", "timestamp": "2025-01-01T00:00:00Z"}"#;
        let read = read_callback(request(body).as_bytes());
        assert_eq!(read.as_ref().unwrap()["timestamp"], "2025-01-01T00:00:00Z");
        assert_eq!(arrival(read).update(), Some(("u-1", "completed")));
    }

    #[test]
    fn other_requests_say_what_was_wrong() {
        for (text, expected) in [
            ("GET / HTTP/1.1\r\n\r\n".to_owned(), "\"GET\", not a POST"),
            (String::new(), "\"nothing\", not a POST"),
            (request("not json"), "the body is not JSON"),
            (
                "POST /callback HTTP/1.1\r\n\r\n{}".to_owned(),
                "no Content-Length",
            ),
            (
                "POST /callback HTTP/1.1\r\nContent-Length: 10".to_owned(),
                "closed inside the headers",
            ),
            (
                "POST /callback HTTP/1.1\r\nContent-Length: 99\r\n\r\n{}".to_owned(),
                "cannot read the body",
            ),
            (
                format!(
                    "POST /callback HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                    MAX_BODY + 1
                ),
                "is over the",
            ),
            (
                format!(
                    "POST /callback HTTP/1.1\r\n{}\r\n",
                    "X-A: b\r\n".repeat(MAX_HEADERS)
                ),
                "more than 100 header lines",
            ),
        ] {
            let err = read_callback(text.as_bytes()).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_update_needs_both_an_id_and_a_status() {
        let of = |body: &str| arrival(Ok(serde_json::from_str(body).unwrap()));
        assert_eq!(of(r#"{"status": "failed"}"#).update(), None);
        assert_eq!(of(r#"{"update_id": 7, "status": "failed"}"#).update(), None);
        assert_eq!(arrival(Err("no".into())).update(), None);
    }

    #[test]
    fn the_receiver_hands_over_the_awaited_callback_only() {
        let receiver = Receiver::start("127.0.0.1:0", None).unwrap();
        for (id, status) in [("older", "completed"), ("mine", "failed")] {
            let body = format!(r#"{{"update_id": "{id}", "status": "{status}"}}"#);
            let reply = send(&receiver, &request(&body));
            assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        }
        assert_eq!(
            receiver.wait_for("mine", Duration::from_secs(10)),
            Some("failed".into())
        );
        assert_eq!(receiver.wait_for("mine", Duration::ZERO), None);
    }

    #[test]
    fn anything_but_a_callback_gets_400_and_is_handed_over_with_the_reason() {
        let receiver = Receiver::start("127.0.0.1:0", None).unwrap();
        let reply = send(&receiver, &request(r#"{"status": "completed"}"#));
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
        let reply = send(&receiver, "GET /callback HTTP/1.1\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
        let first = receiver.next(Duration::from_secs(10)).unwrap();
        assert_eq!(first.body.unwrap()["status"], "completed");
        let second = receiver.next(Duration::from_secs(10)).unwrap();
        assert!(second.body.unwrap_err().contains("not a POST"));
        assert_eq!(receiver.try_next(), None);
    }

    #[test]
    fn an_answering_receiver_answers_what_it_is_told_by_count() {
        let receiver =
            Receiver::start_answering(
                "127.0.0.1:0",
                None,
                |before, _| if before < 2 { 503 } else { 200 },
            )
            .unwrap();
        let body = r#"{"update_id": "u", "status": "completed"}"#;
        let replies: Vec<String> = (0..3).map(|_| send(&receiver, &request(body))).collect();
        assert!(replies[0].starts_with("HTTP/1.1 503 "), "{}", replies[0]);
        assert!(replies[1].starts_with("HTTP/1.1 503 "), "{}", replies[1]);
        assert!(replies[2].starts_with("HTTP/1.1 200 OK"), "{}", replies[2]);
        for _ in 0..3 {
            let arrival = receiver.next(Duration::from_secs(10)).unwrap();
            assert_eq!(arrival.update(), Some(("u", "completed")));
        }
    }

    #[test]
    fn a_given_callback_url_is_used_as_is() {
        let receiver =
            Receiver::start("127.0.0.1:0", Some("http://sim.example.org:9000/cb".into())).unwrap();
        assert_eq!(receiver.url(), "http://sim.example.org:9000/cb");
    }
}
