//! A tiny HTTP listener for the update's callback: it answers every POST with 200 and hands
//! the time the request arrived, and its JSON body, to the benchmark.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Context, Result};

/// The largest callback body read; the service's are a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

/// A callback that arrived.
#[derive(Debug)]
pub struct Arrival {
    /// When its request had been read whole.
    pub at: Instant,
    /// Its body, parsed (JSON `null` when it was not JSON).
    pub body: serde_json::Value,
}

/// The listener, running on a thread of its own for as long as the benchmark runs.
pub struct Receiver {
    /// The URL to give as `callback_url`.
    pub url: String,
    arrivals: mpsc::Receiver<Arrival>,
}

impl Receiver {
    /// Listens on a free loopback port.
    pub fn start() -> Result<Self> {
        let listener =
            TcpListener::bind("127.0.0.1:0").context(|| "cannot listen for the callback".into())?;
        let addr = listener
            .local_addr()
            .context(|| "cannot tell the callback listener's port".into())?;
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
            url: format!("http://{addr}/callback"),
            arrivals,
        })
    }

    /// The next callback, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Arrival> {
        self.arrivals.recv_timeout(timeout).ok()
    }
}

/// Reads one request (head and `content-length` body), answers 200 and closes.
fn answer(mut stream: TcpStream) -> Option<Arrival> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length.min(MAX_BODY)];
    reader.read_exact(&mut body).ok()?;
    let at = Instant::now();
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .ok();
    Some(Arrival {
        at,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posted_body_arrives_and_gets_200() {
        let receiver = Receiver::start().unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = agent
            .post(&receiver.url)
            .header("content-type", "application/json")
            .send(r#"{"status":"completed"}"#)
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let arrival = receiver.next(Duration::from_secs(10)).unwrap();
        assert_eq!(arrival.body["status"], "completed");
    }
}
