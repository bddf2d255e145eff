//! A tiny HTTP/1.1 server on a loopback address for hostile-registry tests: every request
//! is recorded and answered by a closure with raw status, headers and body.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A request as received.
#[derive(Clone, Debug)]
pub struct Request {
    /// The path with query.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status, extra headers, body (Content-Length is added unless `headers`
/// has it or Transfer-Encoding; then the connection closes after the body).
pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// A running server; it lives until the test process ends.
pub struct Server {
    /// `ip:port`.
    pub addr: String,
    /// Every request so far.
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    /// Serves on `ip` (e.g. `127.0.0.1`, `127.0.0.2`), a free port.
    pub fn start(
        ip: &str,
        handler: impl Fn(&Request, &str) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (reqs, me) = (requests.clone(), addr.clone());
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (reqs, me, handler) = (reqs.clone(), me.clone(), handler.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut out = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                        let mut headers = Vec::new();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.push((k.trim().to_lowercase(), v.trim().to_owned()));
                            }
                        }
                        let req = Request { path, headers };
                        reqs.lock().unwrap().push(req.clone());
                        let (status, hs, body) = handler(&req, &me);
                        let mut head = format!("HTTP/1.1 {status} X\r\n");
                        let has_len = hs.iter().any(|(k, _)| {
                            k.eq_ignore_ascii_case("content-length")
                                || k.eq_ignore_ascii_case("transfer-encoding")
                        });
                        for (k, v) in &hs {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        if !has_len {
                            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
                        }
                        head.push_str("\r\n");
                        if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err()
                        {
                            return;
                        }
                        if has_len {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, requests }
    }
}
