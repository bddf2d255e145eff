//! The Engine API, driven by a real client: `husk daemon` on a unix socket in the test's
//! state directory, and Debian's docker 20.10 CLI (`scripts/prepare.sh` unpacks it from
//! docker.io into husk's tool cache; dockerd is never installed or started) talking to
//! it, under both isolations: `run --rm` with exit codes and both output streams, `run -i`
//! with stdin, `run -d -p` then `ps`, `logs`, `inspect`, the published port, `stop`, `rm`;
//! docker's errors and exit codes for a missing container and image; `version`/`info`;
//! a pull from a real loopback registry through `images/create` (CLI and SDK);
//! docker-compose 1.29 bringing a two-service project up and down; the Python SDK.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;
#[path = "../../rootfs/tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use husk_e2e::{NetNs, output};
use run_common::{BUSYBOX, Ctx, GUARD, Tmux, backends, stdout};

/// Debian's docker client, as `scripts/prepare.sh` leaves it.
fn docker_client() -> PathBuf {
    let p = runtime::paths::cache_dir()
        .expect("no cache directory")
        .join("tools/docker");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/prepare.sh",
        p.display()
    );
    p
}

/// `husk daemon` serving `ctx`'s root (in its network namespace), stopped on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(ctx: &Ctx) -> Daemon {
        let socket = ctx.root().join("docker.sock");
        let mut cmd = ctx.cmd();
        cmd.args(["daemon", "-H", &format!("unix://{}", socket.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().unwrap();
        // Generous: the daemon first starts what restart policies want running.
        assert!(
            Ctx::eventually(GUARD, || socket.exists()),
            "the daemon never made {}",
            socket.display()
        );
        Daemon { child, socket }
    }

    /// `docker args` against this daemon.
    fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new(docker_client());
        c.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.socket.with_file_name("docker-config"))
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.docker(args);
        c.stdin(Stdio::null());
        output(c)
    }

    /// Runs `docker args`, asserts success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed ({:?}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// SIGTERM, then the daemon must exit and remove its socket.
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "daemon exit: {status:?}");
        assert!(!self.socket.exists(), "the daemon left its socket");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Now plus `offset` seconds, as seconds since the epoch (docker's `--since`/`--until`).
fn unix_secs(offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (now.as_secs() as i64 + offset).to_string()
}

fn http_get(ns: &NetNs, addr: &'static str) -> String {
    ns.within(move || {
        let mut last = String::new();
        for _ in 0..60 {
            let got = std::net::TcpStream::connect(addr).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                Ok(body)
            });
            match got {
                Ok(body) if body.contains("200 OK") => {
                    return body.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
                }
                Ok(body) => last = body,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("{addr}: {last}");
    })
}

#[test]
fn docker_cli_runs_containers_through_the_daemon() {
    for iso in backends("docker_cli_runs_containers_through_the_daemon") {
        let ns = NetNs::new(&format!("api{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let d = Daemon::start(&ctx);
        let since = unix_secs(-1);
        assert_eq!(
            d.ok(&["version", "--format", "{{.Server.APIVersion}}"])
                .trim(),
            "1.41"
        );

        // Foreground with --rm: both streams, the exit code, nothing left.
        let o = d.run(&[
            "run",
            "--rm",
            "--isolation",
            iso,
            BUSYBOX,
            "sh",
            "-c",
            "echo hello from $(uname -r); echo oops >&2; exit 3",
        ]);
        assert_eq!(o.status.code(), Some(3), "[{iso}] {o:?}");
        let out = stdout(&o);
        let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        match iso {
            "vm" => assert!(out.ends_with("-husk"), "[{iso}] {out}"),
            _ => assert_eq!(out, format!("hello from {}", host_kernel.trim())),
        }
        assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "oops", "[{iso}]");
        assert!(
            Ctx::eventually(GUARD, || ctx.container_dirs().is_empty()),
            "[{iso}] --rm left {:?}",
            ctx.container_dirs()
        );

        // Stdin (-i), piped.
        let mut c = d.docker(&["run", "-i", "--rm", "--isolation", iso, BUSYBOX, "wc", "-c"]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"twelve bytes")
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "[{iso}] {o:?}");
        assert_eq!(stdout(&o).trim(), "12", "[{iso}]");

        // Detached with a published port: ps, logs, inspect, the port, stop, rm.
        let server = "echo started; echo to-stderr >&2; mkdir /www; echo page > /www/index.html; \
                      exec httpd -f -p 80 -h /www";
        let id = d.ok(&[
            "run",
            "-d",
            "--isolation",
            iso,
            "--name",
            "web",
            "-p",
            "8080:80",
            BUSYBOX,
            "sh",
            "-c",
            server,
        ]);
        let id = id.trim();
        assert_eq!(id.len(), 64, "[{iso}] {id}");
        let ps = d.ok(&["ps", "--format", "{{.Names}} {{.Status}} {{.Ports}}"]);
        assert!(
            ps.starts_with("web Up ") && ps.contains("0.0.0.0:8080->80/tcp"),
            "[{iso}] {ps}"
        );
        assert_eq!(http_get(&ns, "127.0.0.1:8080"), "page\n", "[{iso}]");
        let later = d.ok(&["logs", "--since", &unix_secs(3600), "web"]);
        assert_eq!(later, "", "[{iso}] logs --since the future");
        let logs = d.run(&["logs", "web"]);
        assert_eq!(stdout(&logs), "started", "[{iso}]");
        assert_eq!(String::from_utf8_lossy(&logs.stderr).trim(), "to-stderr");
        let state = d.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.HostConfig.Isolation}} {{.Name}}",
            "web",
        ]);
        assert_eq!(state.trim(), format!("running {iso} /web"));
        let top = d.ok(&["top", "web"]);
        assert!(
            top.starts_with("UID") && top.contains("httpd"),
            "[{iso}] {top}"
        );
        let stats = d.ok(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.PIDs}}",
            "web",
        ]);
        assert!(stats.starts_with("web "), "[{iso}] {stats}");
        // docker cp, both ways (HEAD for the stat, PUT and GET of archives).
        let local = ctx.root().join("cp-in.txt");
        std::fs::write(&local, "copied-in\n").unwrap();
        d.ok(&["cp", local.to_str().unwrap(), "web:/www/"]);
        let got = d.ok(&["exec", "web", "cat", "/www/cp-in.txt"]);
        assert_eq!(got, "copied-in\n", "[{iso}]");
        let back = ctx.root().join("cp-out");
        d.ok(&["cp", "web:/www", back.to_str().unwrap()]);
        let page = std::fs::read_to_string(back.join("index.html")).unwrap();
        assert_eq!(page, "page\n", "[{iso}]");
        let o = d.run(&["cp", "web:/nope", back.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "[{iso}] {o:?}");
        d.ok(&["stop", "-t", "1", "web"]);
        let ps = d.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
        assert!(ps.starts_with("web Exited ("), "[{iso}] {ps}");
        assert_eq!(d.ok(&["rm", "web"]).trim(), "web");

        // The event stream saw web's life; prune removes what has stopped; tag and rmi.
        let events = d.ok(&[
            "events",
            "--since",
            &since,
            "--until",
            &unix_secs(1),
            "--filter",
            "container=web",
            "--format",
            "{{.Action}}",
        ]);
        let actions: Vec<&str> = events.lines().collect();
        for want in ["create", "start", "destroy"] {
            assert!(actions.contains(&want), "[{iso}] {actions:?}");
        }
        let gone = d.ok(&["run", "--isolation", iso, "--name", "gone", BUSYBOX, "true"]);
        assert_eq!(gone, "", "[{iso}]");
        let pruned = d.ok(&["container", "prune", "-f"]);
        assert!(pruned.contains("Deleted Containers:"), "[{iso}] {pruned}");
        assert_eq!(d.ok(&["ps", "-aq"]), "", "[{iso}]");
        d.ok(&["tag", BUSYBOX, "mine:1"]);
        let images = d.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert!(images.lines().any(|l| l == "mine:1"), "[{iso}] {images}");
        assert!(d.ok(&["rmi", "mine:1"]).contains("Untagged: mine:1"));

        // docker's errors: a missing container, a running one removed without -f.
        let o = d.run(&["rm", "nope"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("No such container: nope"),
            "{o:?}"
        );
        d.stop();
        ctx.assert_clean();
    }
}

#[test]
fn daemon_answers_hostile_requests_and_refuses_tcp() {
    let ctx = Ctx::new();
    let d = Daemon::start(&ctx);
    let ask = |req: &str| -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let bad_json = "POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{nope";
    assert!(ask(bad_json).starts_with("HTTP/1.1 400"));
    let too_new = "GET /v9.99/containers/json HTTP/1.1\r\nHost: x\r\n\r\n";
    let r = ask(too_new);
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("too new"),
        "{r}"
    );
    let nothing = "GET /v1.41/nothing/here HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(ask(nothing).starts_with("HTTP/1.1 404"));
    let bad_filter = "GET /containers/json?filters=%7Bnope HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(ask(bad_filter).starts_with("HTTP/1.1 400"));
    let no_image = "POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n{\"Image\":\"nope\"}\n";
    let r = ask(no_image);
    assert!(
        r.starts_with("HTTP/1.1 404") && r.contains("No such image: nope:latest"),
        "{r}"
    );
    let bad_load = "POST /images/load HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nnot a tar";
    assert!(ask(bad_load).starts_with("HTTP/1.1 400"));
    let spools = std::fs::read_dir(ctx.root().join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".api-load"))
        .count();
    assert_eq!(spools, 0, "a failed load left its spool file");
    // The daemon survived all of that.
    assert!(ask("GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n").contains("\r\n\r\nOK"));
    assert_eq!(
        std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
        0o600,
        "the socket is root's only"
    );
    d.stop();

    let o = ctx.run(&["daemon", "-H", "tcp://127.0.0.1:2375"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(husk_e2e::stderr(&o).contains("unix sockets only"), "{o:?}");
}

#[test]
fn docker_pull_through_the_daemon_from_a_loopback_registry() {
    use support::registry::{Push, Registry};
    let reg = Registry::start();
    let source = Ctx::new();
    let layout = source.oci_layout(BUSYBOX);
    reg.push(layout.path(), "latest", "e2e/busybox:1", Push::OciGzip);
    let name = format!("{}/e2e/busybox:1", reg.host());

    // The registry is on the host's loopback: this daemon runs there, its containers on
    // no network.
    let ctx = Ctx::isolated("process").on_host_network();
    let d = Daemon::start(&ctx);
    let o = d.run(&["pull", &name]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(text.contains("Pull complete"), "{text}");
    assert!(
        text.contains(&format!("Status: Downloaded newer image for {name}")),
        "{text}"
    );
    let images = d.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.lines().any(|l| l == name), "{images}");
    let history = d.ok(&["history", "--format", "{{.CreatedBy}}", &name]);
    assert!(!history.trim().is_empty(), "{history}");
    let df = d.ok(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]);
    assert!(df.lines().any(|l| l.starts_with("Images ")), "{df}");
    // save | rmi | load: the same image back, and it runs.
    let tar = ctx.root().join("saved.tar");
    d.ok(&["save", "-o", tar.to_str().unwrap(), &name]);
    assert!(d.ok(&["rmi", &name]).contains(&format!("Untagged: {name}")));
    let loaded = d.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(
        loaded.contains(&format!("Loaded image: {name}")),
        "{loaded}"
    );
    let out = d.ok(&[
        "run",
        "--rm",
        "--isolation",
        "process",
        "--network",
        "none",
        &name,
        "echo",
        "pulled",
    ]);
    assert_eq!(out.trim(), "pulled");
    // The Python SDK pulls too (the image is there already: up to date).
    let sdk_pull = "import sys, docker\n\
        c = docker.DockerClient(base_url=sys.argv[1], version='auto')\n\
        print(c.images.pull(sys.argv[2]).tags)";
    let url = format!("unix://{}", d.socket.display());
    let tags = python_sdk(sdk_pull, &[&url, &name]);
    assert!(tags.contains(&name), "{tags}");
    // A repository the registry does not have: docker's exit code, the registry's word.
    let o = d.run(&["pull", &format!("{}/e2e/missing:1", reg.host())]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    // No container uses it any more: `image prune -a` deletes it (a plain prune does not:
    // it is tagged).
    let kept = d.ok(&["image", "prune", "-f"]);
    assert!(!kept.contains("deleted:"), "{kept}");
    let pruned = d.ok(&["image", "prune", "-a", "-f"]);
    assert!(pruned.contains(&format!("untagged: {name}")), "{pruned}");
    assert!(pruned.contains("deleted: sha256:"), "{pruned}");
    let images = d.ok(&["images", "-q"]);
    assert!(images.trim().is_empty(), "{images}");
    d.stop();
    ctx.assert_clean();
}

/// A compose file with a web service (a published port and a named volume) and a backend
/// that reaches it by service name, under `iso`.
fn compose_file(iso: &str) -> String {
    format!(
        r#"version: "2.4"
services:
  web:
    image: husk/busybox
    isolation: {iso}
    command: sh -c 'echo page-from-web > /data/index.html; exec httpd -f -p 80 -h /data'
    ports:
      - "8080:80"
    volumes:
      - data:/data
  backend:
    image: husk/busybox
    isolation: {iso}
    command: sh -c 'for i in $$(seq 1 120); do wget -q -O - http://web/ && break; sleep 1; done; exec sleep 1000'
    depends_on:
      - web
volumes:
  data:
"#
    )
}

#[test]
fn docker_compose_brings_up_a_two_service_project() {
    for iso in backends("docker_compose_brings_up_a_two_service_project") {
        let ns = NetNs::new(&format!("cmp{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let d = Daemon::start(&ctx);
        let file = ctx.root().join("docker-compose.yml");
        std::fs::write(&file, compose_file(iso)).unwrap();
        let compose = |args: &[&str]| -> Output {
            let mut c = Command::new("docker-compose");
            c.env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
                .arg("-p")
                .arg("demo")
                .arg("-f")
                .arg(&file)
                .args(args)
                .stdin(Stdio::null());
            let o = output(c);
            assert!(o.status.success(), "[{iso}] compose {args:?}: {o:?}");
            o
        };
        compose(&["up", "-d"]);
        let ps = stdout(&compose(&["ps"]));
        assert!(
            ps.lines()
                .any(|l| l.starts_with("demo_web_1") && l.contains(" Up ")),
            "[{iso}] {ps}"
        );
        assert!(ps.contains("0.0.0.0:8080->80/tcp"), "[{iso}] {ps}");
        assert_eq!(
            http_get(&ns, "127.0.0.1:8080"),
            "page-from-web\n",
            "[{iso}]"
        );
        // The backend reached the web service by its name.
        let reached = Ctx::eventually(GUARD, || {
            stdout(&compose(&["logs", "--no-color", "backend"])).contains("page-from-web")
        });
        assert!(reached, "[{iso}] backend never reached web");
        let page = stdout(&compose(&["exec", "-T", "web", "cat", "/data/index.html"]));
        assert_eq!(page, "page-from-web", "[{iso}]");
        compose(&["restart", "web"]);
        assert_eq!(
            http_get(&ns, "127.0.0.1:8080"),
            "page-from-web\n",
            "[{iso}]"
        );
        compose(&["down", "-v"]);
        assert_eq!(d.ok(&["ps", "-aq"]), "", "[{iso}]");
        assert!(
            !d.ok(&["volume", "ls", "-q"]).contains("demo_data"),
            "[{iso}]"
        );
        assert!(
            !d.ok(&["network", "ls"]).contains("demo_default"),
            "[{iso}]"
        );
        d.stop();
        ctx.assert_clean();
    }
}

/// `python3 -c script args...` with docker's Python SDK (from PyPI, unpacked by
/// `scripts/prepare.sh`) on its path; asserts success, returns stdout.
fn python_sdk(script: &str, args: &[&str]) -> String {
    let sdk = runtime::paths::cache_dir()
        .expect("no cache directory")
        .join("tools/docker-py");
    assert!(
        sdk.join("docker/__init__.py").is_file(),
        "{} is missing: run scripts/prepare.sh",
        sdk.display()
    );
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", &sdk)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null());
    let o = output(c);
    assert!(o.status.success(), "python {args:?}: {o:?}");
    stdout(&o)
}

const SDK_RUN: &str = r#"
import sys, docker
c = docker.DockerClient(base_url=sys.argv[1], version="auto")
iso = sys.argv[2]
out = c.containers.run("husk/busybox", ["sh", "-c", "echo sdk-hello"], remove=True, isolation=iso)
assert out == b"sdk-hello\n", out
ct = c.containers.run("husk/busybox", ["sh", "-c", "echo bg; echo eb >&2; exit 7"], detach=True, isolation=iso)
assert ct.wait()["StatusCode"] == 7
assert ct.logs(stdout=True, stderr=False) == b"bg\n", ct.logs()
assert ct.logs(stdout=False, stderr=True) == b"eb\n", ct.logs()
ct.reload()
assert ct.status == "exited", ct.status
ct.remove()
assert c.containers.list(all=True) == []
print("sdk-ok")
"#;

#[test]
fn python_sdk_runs_waits_logs_and_removes() {
    for iso in backends("python_sdk_runs_waits_logs_and_removes") {
        let ns = NetNs::new(&format!("sdk{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let d = Daemon::start(&ctx);
        let url = format!("unix://{}", d.socket.display());
        assert_eq!(python_sdk(SDK_RUN, &[&url, iso]), "sdk-ok", "[{iso}]");
        d.stop();
        ctx.assert_clean();
    }
}

#[test]
fn daemon_serves_a_socket_systemd_passes_it() {
    let ctx = Ctx::new();
    let socket = ctx.root().join("activated.sock");
    // systemd-socket-activate listens, then runs the daemon with the socket as fd 3
    // (LISTEN_FDS/LISTEN_PID), as husk.socket + husk.service do.
    let mut c = Command::new("systemd-socket-activate");
    c.arg("-l")
        .arg(&socket)
        .arg(husk_e2e::husk_bin())
        .arg("daemon")
        .env("HUSK_ROOT", ctx.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let child = c.spawn().unwrap();
    let d = Daemon {
        child,
        socket: socket.clone(),
    };
    assert!(Ctx::eventually(Duration::from_secs(30), || socket.exists()));
    assert_eq!(
        d.ok(&["version", "--format", "{{.Server.APIVersion}}"])
            .trim(),
        "1.41"
    );
    assert_eq!(d.ok(&["ps", "-q"]), "");
}

/// The shim pid `state.json` records for container `id` (0: none).
fn shim_pid(ctx: &Ctx, id: &str) -> i32 {
    let path = ctx.root().join("containers").join(id).join("state.json");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["ShimPid"].as_i64().unwrap_or(0) as i32
}

#[test]
fn daemon_applies_restart_policies_to_lost_and_exited_containers() {
    for iso in backends("daemon_applies_restart_policies_to_lost_and_exited_containers") {
        let ns = NetNs::new(&format!("rp{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let d = Daemon::start(&ctx);
        let run = |name: &str, policy: &str| -> String {
            let id = d.ok(&[
                "run",
                "-d",
                "--isolation",
                iso,
                "--network",
                "none",
                "--name",
                name,
                "--restart",
                policy,
                BUSYBOX,
                "sleep",
                "1000",
            ]);
            id.trim().to_owned()
        };
        let always = run("always", "always");
        let unless = run("unless", "unless-stopped");
        let running =
            |name: &str| d.ok(&["inspect", "-f", "{{.State.Running}}", name]).trim() == "true";

        // A shim killed outright: the daemon notices and applies the policy.
        let old = shim_pid(&ctx, &always);
        assert!(old > 0);
        // SAFETY: kill(2) on a pid read from husk's own state; no memory is involved.
        assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
        let back = Ctx::eventually(GUARD, || {
            let now = shim_pid(&ctx, &always);
            now > 0 && now != old && running("always")
        });
        assert!(back, "[{iso}] the always container did not come back");
        let count = d.ok(&["inspect", "-f", "{{.RestartCount}}", "always"]);
        assert!(count.trim().parse::<u32>().unwrap() >= 1, "[{iso}] {count}");

        // A user's stop: unless-stopped stays down across a daemon restart, always (also
        // stopped by hand) comes back, as docker does.
        d.ok(&["stop", "-t", "1", "unless"]);
        d.ok(&["stop", "-t", "1", "always"]);
        d.stop();
        let d = Daemon::start(&ctx);
        let running =
            |name: &str| d.ok(&["inspect", "-f", "{{.State.Running}}", name]).trim() == "true";
        assert!(
            Ctx::eventually(GUARD, || running("always")),
            "[{iso}] always did not come back when the daemon started"
        );
        assert!(!running("unless"), "[{iso}] unless-stopped came back");
        // Containers outlive the daemon: stopping it leaves them running.
        d.stop();
        assert!(shim_pid(&ctx, &always) > 0);
        assert!(runtime::procfs::alive(shim_pid(&ctx, &always)));
        let d = Daemon::start(&ctx);
        d.ok(&["rm", "-f", &always, &unless]);
        d.stop();
        ctx.assert_clean();
    }
}

#[test]
fn docker_run_and_exec_with_a_terminal_under_tmux() {
    for iso in backends("docker_run_and_exec_with_a_terminal_under_tmux") {
        let ctx = Ctx::isolated(iso);
        let d = Daemon::start(&ctx);
        let tmux = Tmux {
            socket: format!("husk-api-{}-{iso}", std::process::id()),
        };
        let docker = format!(
            "DOCKER_HOST=unix://{} DOCKER_CONFIG={} {}",
            d.socket.display(),
            d.socket.with_file_name("docker-config").display(),
            docker_client().display()
        );
        d.ok(&[
            "run",
            "-d",
            "--name",
            "bg",
            "--network",
            "none",
            "--isolation",
            iso,
            BUSYBOX,
            "sleep",
            "1000",
        ]);
        let command = format!(
            "{docker} run -it --name tty --network none --isolation {iso} {BUSYBOX} sh; \
             echo run-exited-$?; {docker} exec -it bg sh; echo exec-exited-$?; sleep 30"
        );
        tmux.start(&command);
        // `run -it`: a pty of the window's size, what is typed, the shell's exit code.
        tmux.assert_shell_on_a_pty_of_the_window_size();
        tmux.run(&["send-keys", "-t", "t", "exit 3", "Enter"]);
        tmux.wait_for("run-exited-3");
        // `exec -it` into the running container.
        tmux.run(&["send-keys", "-t", "t", "echo e''x-$(tty)", "Enter"]);
        tmux.wait_for("ex-/dev/pts/");
        tmux.run(&["send-keys", "-t", "t", "exit 4", "Enter"]);
        tmux.wait_for("exec-exited-4");
        drop(tmux);
        d.ok(&["rm", "-f", "tty", "bg"]);
        d.stop();
        ctx.assert_clean();
    }
}

#[test]
fn docker_network_and_volume_verbs_through_the_daemon() {
    for iso in backends("docker_network_and_volume_verbs_through_the_daemon") {
        let ns = NetNs::new(&format!("nv{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        let d = Daemon::start(&ctx);
        d.ok(&["network", "create", "--label", "team=a", "n1"]);
        assert_eq!(d.ok(&["volume", "create", "v1"]).trim(), "v1");
        let server = "echo from-volume > /data/f; exec httpd -f -p 80 -h /data";
        d.ok(&[
            "run",
            "-d",
            "--isolation",
            iso,
            "--name",
            "srv",
            "--network",
            "n1",
            "--network-alias",
            "web",
            "-v",
            "v1:/data",
            "--health-cmd",
            "test -f /data/f",
            "--health-interval",
            "1s",
            BUSYBOX,
            "sh",
            "-c",
            server,
        ]);
        // Another container finds it by its alias on the user network.
        let fetch = "for i in $(seq 1 60); do wget -q -O - http://web/f && break; sleep 1; done";
        let got = d.ok(&[
            "run",
            "--rm",
            "--isolation",
            iso,
            "--network",
            "n1",
            BUSYBOX,
            "sh",
            "-c",
            fetch,
        ]);
        assert_eq!(got.trim(), "from-volume", "[{iso}]");
        let on = d.ok(&[
            "network",
            "inspect",
            "-f",
            "{{range .Containers}}{{.Name}}{{end}} {{.Labels}}",
            "n1",
        ]);
        assert_eq!(on.trim(), "srv map[team:a]", "[{iso}]");
        let labelled = d.ok(&["network", "ls", "-q", "--filter", "label=team=a"]);
        assert_eq!(labelled.lines().count(), 1, "[{iso}] {labelled}");
        // The health check came in the create body (durations in nanoseconds).
        let healthy = Ctx::eventually(GUARD, || {
            d.ok(&["inspect", "-f", "{{.State.Health.Status}}", "srv"])
                .trim()
                == "healthy"
        });
        assert!(healthy, "[{iso}] srv never became healthy");
        // Live connect and disconnect of the running container.
        d.ok(&["network", "connect", "bridge", "srv"]);
        let nets = "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}";
        let both = d.ok(&["inspect", "-f", nets, "srv"]);
        assert!(
            both.contains("bridge") && both.contains("n1"),
            "[{iso}] {both}"
        );
        d.ok(&["network", "disconnect", "bridge", "srv"]);
        assert_eq!(
            d.ok(&["inspect", "-f", nets, "srv"]).trim(),
            "n1",
            "[{iso}]"
        );
        // In use: docker's refusals; then everything goes.
        assert_eq!(d.run(&["volume", "rm", "v1"]).status.code(), Some(1));
        assert_eq!(d.run(&["network", "rm", "n1"]).status.code(), Some(1));
        d.ok(&["rm", "-f", "srv"]);
        d.ok(&["network", "rm", "n1"]);
        d.ok(&["volume", "rm", "v1"]);
        assert_eq!(d.ok(&["volume", "ls", "-q"]), "", "[{iso}]");
        d.stop();
        ctx.assert_clean();
    }
}

const BUILT: &str = "FROM husk/busybox\nARG WHO=nobody\nCOPY page.html /srv/\n\
    RUN echo \"built for $WHO\" >> /srv/page.html\nCMD [\"cat\", \"/srv/page.html\"]\n";

/// `docker build` (the classic builder's `POST /build`: a tar context, JSON progress),
/// under both isolations: the image runs; a failing RUN is docker's error and exit code;
/// the Python SDK and compose's `build:` build through the same endpoint (process).
#[test]
fn docker_build_through_the_daemon() {
    for iso in backends("docker_build_through_the_daemon") {
        let ns = NetNs::new(&format!("bld{iso}"));
        let ctx = Ctx::isolated(iso).in_netns(&ns);
        // The host's default, for the clients below that cannot say `--isolation`.
        let settings = format!("{{\"default-isolation\": \"{iso}\"}}");
        std::fs::write(ctx.root().join("daemon.json"), settings).unwrap();
        let d = Daemon::start(&ctx);
        let dir = ctx.root().join("app");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("page.html"), "page\n").unwrap();
        std::fs::write(dir.join("Dockerfile"), BUILT).unwrap();
        let ctxdir = dir.to_str().unwrap();
        let out = d.ok(&[
            "build",
            "-t",
            "app:1",
            "--isolation",
            iso,
            "--build-arg",
            "WHO=docker",
            ctxdir,
        ]);
        assert!(out.contains("Step 4/5 : RUN echo"), "[{iso}] {out}");
        assert!(out.contains("Successfully tagged app:1"), "[{iso}] {out}");
        let ran = d.ok(&["run", "--rm", "--isolation", iso, "app:1"]);
        assert_eq!(ran, "page\nbuilt for docker\n", "[{iso}]");
        std::fs::write(dir.join("Dockerfile"), "FROM husk/busybox\nRUN exit 7\n").unwrap();
        let o = d.run(&["build", "--isolation", iso, ctxdir]);
        assert_eq!(o.status.code(), Some(1), "[{iso}] {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("The command '/bin/sh -c exit 7' returned a non-zero code: 7"),
            "[{iso}] {err}"
        );
        if iso == "process" {
            std::fs::write(dir.join("Dockerfile"), BUILT).unwrap();
            let sdk = "import sys, docker\n\
                c = docker.DockerClient(base_url=sys.argv[1], version='auto')\n\
                img, logs = c.images.build(path=sys.argv[2], tag='sdk:1', buildargs={'WHO': 'sdk'})\n\
                print(img.tags)\n\
                print(c.containers.run('sdk:1', remove=True).decode(), end='')";
            let url = format!("unix://{}", d.socket.display());
            let said = python_sdk(sdk, &[&url, ctxdir]);
            assert!(
                said.contains("'sdk:1'") && said.ends_with("built for sdk"),
                "{said}"
            );
            let file = dir.join("docker-compose.yml");
            std::fs::write(&file, "version: \"2.4\"\nservices:\n  app:\n    build: .\n    image: composed:1\n    isolation: process\n    network_mode: none\n").unwrap();
            let mut c = Command::new("docker-compose");
            c.env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
                .args(["-p", "bld", "-f"])
                .arg(&file)
                .args(["build"])
                .stdin(Stdio::null());
            let o = output(c);
            assert!(o.status.success(), "compose build: {o:?}");
            let images = d.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
            assert!(images.lines().any(|l| l == "composed:1"), "{images}");
        }
        assert_eq!(d.ok(&["ps", "-aq"]), "", "[{iso}]");
        d.stop();
        ctx.assert_clean();
    }
}
