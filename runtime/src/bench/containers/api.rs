//! The Engine-API part of `husk bench run`: the same container start through the API
//! (`husk daemon`: create, wait for removal, start, over its unix socket, with a client of
//! a few lines so that no client binary's start is counted) against the CLI (`husk run
//! --rm`) and `crun run`, alternating; `GET /containers/json` and `GET
//! /containers/{id}/json` with 100 containers; the daemon's RSS and PSS after that.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{Bench, Error, kib_to_mib, ms, row, set_bundle_args, span};
use crate::bench::stats;

/// Containers listed and inspected.
const LISTED: usize = 100;

/// Requests per latency measurement.
const REQUESTS: usize = 50;

fn fail(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Failed(format!("the Engine API ({what})"), e.to_string())
}

/// One request on a connection of its own; (status, body).
fn http(sock: &Path, method: &str, path: &str, body: &str) -> Result<(u16, String), Error> {
    let mut s = UnixStream::connect(sock).map_err(|e| fail("connect", e))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| fail("timeout", e))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: husk\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| fail(path, e))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| fail(path, e))?;
    parse(&raw).ok_or_else(|| fail(path, "malformed response"))
}

/// Status and body (chunked bodies joined) of a whole response.
fn parse(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((status, body.to_owned()));
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            break;
        }
        out.push_str(after.get(..n)?);
        rest = after.get(n + 2..)?;
    }
    Some((status, out))
}

/// `husk daemon` on a socket in the work directory, stopped on drop.
struct Daemon {
    child: Child,
    sock: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Bench<'_> {
    fn start_daemon(&self) -> Result<Daemon, Error> {
        let sock = self.o.work_dir.join("api.sock");
        let mut c = self.husk();
        c.args(["daemon", "-H"])
            .arg(format!("unix://{}", sock.display()))
            .stderr(Stdio::null());
        let child = c
            .spawn()
            .map_err(|e| Error::Spawn("husk daemon".into(), e))?;
        let d = Daemon { child, sock };
        let end = Instant::now() + Duration::from_secs(30);
        while http(&d.sock, "GET", "/_ping", "").is_err() {
            if Instant::now() > end {
                return Err(fail("start", "the daemon never answered /_ping"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    /// create, wait (removed), start, the wait's answer: docker run --rm's requests.
    fn api_once(&self, d: &Daemon) -> Result<u64, Error> {
        let body = r#"{"Image":"husk/busybox","Cmd":["true"],"HostConfig":{"AutoRemove":true,"NetworkMode":"none","Isolation":"process"}}"#;
        let t0 = crate::timing::now_ns();
        let (status, created) = http(&d.sock, "POST", "/v1.41/containers/create", body)?;
        if status != 201 {
            return Err(fail("create", created));
        }
        let v: serde_json::Value = serde_json::from_str(&created).map_err(|e| fail("create", e))?;
        let id = v["Id"].as_str().unwrap_or_default().to_owned();
        let sock = d.sock.clone();
        let path = format!("/v1.41/containers/{id}/wait?condition=removed");
        let (registered, heard) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || -> Result<String, Error> {
            let mut s = UnixStream::connect(&sock).map_err(|e| fail("wait", e))?;
            let req = format!("POST {path} HTTP/1.1\r\nHost: husk\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).map_err(|e| fail("wait", e))?;
            let mut raw = Vec::new();
            let mut buf = [0u8; 1024];
            while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).map_err(|e| fail("wait", e))?;
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
            let _ = registered.send(());
            s.read_to_end(&mut raw).map_err(|e| fail("wait", e))?;
            Ok(parse(&raw).map(|(_, b)| b).unwrap_or_default())
        });
        heard
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| fail("wait", e))?;
        let (status, text) = http(
            &d.sock,
            "POST",
            &format!("/v1.41/containers/{id}/start"),
            "",
        )?;
        if status != 204 {
            return Err(fail("start", text));
        }
        let result = waiter.join().map_err(|_| fail("wait", "thread"))??;
        let t1 = crate::timing::now_ns();
        if !result.contains("\"StatusCode\":0") {
            return Err(fail("wait", result));
        }
        Ok(t1 - t0)
    }

    /// The API rows of the report.
    pub(super) fn api(&self, out: &mut Vec<String>) -> Result<(), Error> {
        set_bundle_args(self.bundle.as_deref(), &["true"])?;
        let d = self.start_daemon()?;
        self.api_once(&d)?;
        let (mut cli, mut api, mut crun) = (Vec::new(), Vec::new(), Vec::new());
        for n in 0..self.o.api_runs {
            log::info!("engine API: run {}/{}", n + 1, self.o.api_runs);
            let marks = self.husk_once("process", &[], n)?;
            cli.push(ms(span(&marks, "spawn", "exit").unwrap_or(0)));
            api.push(ms(self.api_once(&d)?));
            if let Some(ns) = self.crun_once(n)? {
                crun.push(ms(ns));
            }
        }
        out.push(String::new());
        out.push(format!(
            "Engine API (husk daemon), {} runs each, alternating:",
            self.o.api_runs
        ));
        out.push(row("husk run --rm (process) true: CLI", stats(&cli), "ms"));
        out.push(row("  the same through the API", stats(&api), "ms"));
        if !crun.is_empty() {
            out.push(row("  crun run true (same rootfs)", stats(&crun), "ms"));
        }
        if let (Some(a), Some(c)) = (stats(&api), stats(&cli)) {
            out.push(format!(
                "ratio API/CLI (medians): {:.2}x  (the API's requests: create, wait, start; \
                 no client binary's own start counted)",
                a.median / c.median
            ));
        }
        self.api_lists(&d, out)
    }

    /// List and inspect latency with [`LISTED`] created containers, then the daemon's
    /// memory.
    fn api_lists(&self, d: &Daemon, out: &mut Vec<String>) -> Result<(), Error> {
        let body = r#"{"Image":"husk/busybox","Cmd":["true"],"HostConfig":{"NetworkMode":"none","Isolation":"process"}}"#;
        let mut ids = Vec::new();
        for _ in 0..LISTED {
            let (status, text) = http(&d.sock, "POST", "/v1.41/containers/create", body)?;
            if status != 201 {
                return Err(fail("create", text));
            }
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| fail("create", e))?;
            ids.push(v["Id"].as_str().unwrap_or_default().to_owned());
        }
        let time = |path: &str| -> Result<f64, Error> {
            let t0 = Instant::now();
            let (status, text) = http(&d.sock, "GET", path, "")?;
            if status != 200 {
                return Err(fail(path, text));
            }
            Ok(t0.elapsed().as_secs_f64() * 1e3)
        };
        let mut list = Vec::new();
        let mut inspect = Vec::new();
        for i in 0..REQUESTS {
            list.push(time("/v1.41/containers/json?all=1")?);
            inspect.push(time(&format!(
                "/v1.41/containers/{}/json",
                ids[i % ids.len()]
            ))?);
        }
        let pid = d.child.id() as i32;
        let rss = crate::procfs::rss(pid) as f64 / (1024.0 * 1024.0);
        let pss = kib_to_mib(crate::procfs::pss_kib(pid));
        for id in &ids {
            http(
                &d.sock,
                "DELETE",
                &format!("/v1.41/containers/{id}?force=1"),
                "",
            )?;
        }
        out.push(row(
            &format!("GET /containers/json?all=1 ({LISTED} containers)"),
            stats(&list),
            "ms",
        ));
        out.push(row(
            &format!("GET /containers/{{id}}/json ({LISTED} containers)"),
            stats(&inspect),
            "ms",
        ));
        out.push(format!(
            "husk daemon memory after that: RSS {rss:.1} MiB, PSS {pss:.1} MiB"
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::parse;

    #[test]
    fn whole_and_chunked_responses() {
        let whole = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse(whole).unwrap(), (201, "{}".to_owned()));
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse(chunked).unwrap(), (200, "abcde".to_owned()));
        assert!(parse(b"garbage").is_none());
    }
}
