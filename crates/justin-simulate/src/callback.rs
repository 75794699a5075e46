//! A tiny HTTP receiver for update callbacks: it answers each POST with 200 and hands the
//! `update_id` and `status` of its JSON body to the simulator, which waits for the update it
//! requested. Anything else it answers with an error and ignores.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The largest callback body read; the service's are a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;
/// The most header lines read from one request.
const MAX_HEADERS: usize = 100;
/// How long one connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A callback that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The update it is about.
    pub update_id: String,
    /// `completed` or `failed`.
    pub status: String,
}

/// The receiver, listening on a thread of its own for as long as the simulator runs.
#[derive(Debug)]
pub struct Receiver {
    /// The URL to give the service as `callback_url`.
    pub url: String,
    arrivals: mpsc::Receiver<Arrival>,
}

impl Receiver {
    /// Listens on `listen` (`host:port`; port 0 picks a free one). The callback URL is `url`
    /// when given, else `http://<the address listened on>/callback`.
    ///
    /// # Errors
    /// When the address cannot be listened on.
    pub fn start(listen: &str, url: Option<String>) -> Result<Self, String> {
        let listener = TcpListener::bind(listen)
            .map_err(|e| format!("cannot listen for callbacks on {listen}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot tell the callback listener's address: {e}"))?;
        let (tx, arrivals) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(arrival) = answer(stream) {
                    if tx.send(arrival).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Self {
            url: url.unwrap_or_else(|| format!("http://{addr}/callback")),
            arrivals,
        })
    }

    /// Waits at most `timeout` for the callback of `update_id`, dropping callbacks of other
    /// updates (repeats of earlier ones: delivery is at least once). Its status, or `None`.
    pub fn wait_for(&self, update_id: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let arrival = self.arrivals.recv_timeout(left).ok()?;
            if arrival.update_id == update_id {
                return Some(arrival.status);
            }
        }
    }
}

/// Reads one request and answers it: 200 for a POST with a JSON body that names an update,
/// 400 otherwise.
fn answer(mut stream: TcpStream) -> Option<Arrival> {
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    // Headers and body together stay within twice the largest body.
    let limited = stream.try_clone().ok()?.take(2 * MAX_BODY as u64);
    let arrival = read_callback(BufReader::new(limited));
    let status = if arrival.is_some() {
        "200 OK"
    } else {
        "400 Bad Request"
    };
    let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    // The service retries a callback it could not deliver; nothing to do here if this fails.
    stream.write_all(reply.as_bytes()).ok();
    arrival
}

/// The callback in an HTTP/1.1 request: a POST with a `Content-Length` body of JSON holding
/// `update_id` and `status`.
fn read_callback(mut reader: impl BufRead) -> Option<Arrival> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let mut length = None;
    for _ in 0..MAX_HEADERS {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let length = length.filter(|&n| n <= MAX_BODY)?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some(Arrival {
        update_id: json.get("update_id")?.as_str()?.to_owned(),
        status: json.get("status")?.as_str()?.to_owned(),
    })
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

    #[test]
    fn a_callback_gives_its_update_and_status() {
        let body =
            r#"{"status": "completed", "update_id": "u-1", "timestamp": "2025-01-01T00:00:00Z"}"#;
        assert_eq!(
            read_callback(request(body).as_bytes()),
            Some(Arrival {
                update_id: "u-1".into(),
                status: "completed".into()
            })
        );
    }

    #[test]
    fn other_requests_give_nothing() {
        assert_eq!(read_callback("GET / HTTP/1.1\r\n\r\n".as_bytes()), None);
        assert_eq!(read_callback(request("not json").as_bytes()), None);
        assert_eq!(
            read_callback(request(r#"{"status": "failed"}"#).as_bytes()),
            None
        );
        let no_length = "POST /callback HTTP/1.1\r\n\r\n{}";
        assert_eq!(read_callback(no_length.as_bytes()), None);
    }

    #[test]
    fn the_receiver_hands_over_the_awaited_callback_only() {
        let receiver = Receiver::start("127.0.0.1:0", None).unwrap();
        let addr = receiver
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/callback");
        for (id, status) in [("older", "completed"), ("mine", "failed")] {
            let mut stream = TcpStream::connect(addr).unwrap();
            let body = format!(r#"{{"update_id": "{id}", "status": "{status}"}}"#);
            stream.write_all(request(&body).as_bytes()).unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        }
        assert_eq!(
            receiver.wait_for("mine", Duration::from_secs(10)),
            Some("failed".into())
        );
        assert_eq!(receiver.wait_for("mine", Duration::ZERO), None);
    }

    #[test]
    fn a_given_callback_url_is_used_as_is() {
        let receiver =
            Receiver::start("127.0.0.1:0", Some("http://sim.example.org:9000/cb".into())).unwrap();
        assert_eq!(receiver.url, "http://sim.example.org:9000/cb");
    }
}
