//! `husk run` through the real binary: output, every exit-code case, and bad input giving one
//! clear line, the right code and no state left behind. Parameterized over the isolation
//! backends (the vm half runs only where this host can run Linux guests).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use run_common::{BUSYBOX, Ctx, assert_kernel, backends, stdout};

#[test]
fn echo_prints_and_leaves_nothing_behind() {
    for iso in backends("echo_prints_and_leaves_nothing_behind") {
        let ctx = Ctx::isolated(iso);
        let out = ctx.ok(&["run", "--rm", "--isolation", iso, BUSYBOX, "echo", "hello"]);
        assert_eq!(out, "hello\n", "[{iso}]");
        ctx.assert_clean();
    }
}

#[test]
fn exit_codes_as_docker() {
    for iso in backends("exit_codes_as_docker") {
        let ctx = Ctx::isolated(iso);
        let cases: [(&[&str], i32); 8] = [
            (&["true"], 0),
            (&["sh", "-c", "exit 3"], 3),
            (&["sh", "-c", "exit 255"], 255),
            // The workload is PID 1 of its PID namespace: signals it has no handler for
            // do not reach it from inside (docker's behaviour); a child's death by signal
            // comes back as 128+N.
            (&["sh", "-c", "kill -TERM $$; exit 4"], 4),
            (&["sh", "-c", "sh -c 'kill -KILL $$'; exit $?"], 137),
            (&["/etc/passwd"], 126),
            (&["no-such-command"], 127),
            (&[""], 127),
        ];
        for (cmd, code) in cases {
            let mut args = vec!["run", "--rm", "--isolation", iso, BUSYBOX];
            args.extend_from_slice(cmd);
            let o = ctx.run(&args);
            assert_eq!(
                o.status.code(),
                Some(code),
                "[{iso}] {cmd:?}: {}",
                husk_e2e::stderr(&o)
            );
        }
        let o = ctx.run(&[
            "run",
            "--rm",
            "--isolation",
            iso,
            BUSYBOX,
            "no-such-command",
        ]);
        let err = husk_e2e::stderr(&o);
        assert_eq!(
            err.trim_end(),
            r#"husk: exec: "no-such-command": executable file not found in $PATH"#,
            "[{iso}] says what, as docker does"
        );
        // Detached, as docker: no ID, the reason on one line, the same codes.
        for (cmd, code) in [("no-such-command", 127), ("/etc/passwd", 126)] {
            let o = ctx.run(&["run", "-d", "--rm", "--isolation", iso, BUSYBOX, cmd]);
            let err = husk_e2e::stderr(&o);
            assert_eq!(o.status.code(), Some(code), "[{iso}] -d {cmd}: {err}");
            assert!(o.stdout.is_empty(), "[{iso}] -d {cmd} printed an ID");
            assert!(
                err.starts_with("husk: ") && err.lines().count() == 1,
                "{err}"
            );
        }
        ctx.assert_clean();
    }
}

/// `-i` without a tty: piped stdin reaches the workload and its end closes the workload's
/// stdin; without `-i` the workload reads nothing.
#[test]
fn piped_stdin_with_i() {
    for iso in backends("piped_stdin_with_i") {
        let ctx = Ctx::isolated(iso);
        let run = |interactive: bool| {
            let mut c = ctx.cmd();
            c.args(["run", "--rm", "--isolation", iso]);
            if interactive {
                c.arg("-i");
            }
            c.args([BUSYBOX, "sh", "-c", "wc -l; echo done"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            std::io::Write::write_all(&mut stdin, b"one\ntwo\nthree\n").unwrap();
            drop(stdin);
            child.wait_with_output().unwrap()
        };
        let o = run(true);
        assert!(o.status.success(), "{}", husk_e2e::stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["3", "done"],
            "{out}"
        );
        let o = run(false);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["0", "done"],
            "{out}"
        );
        // `exec -i` into a running container takes piped stdin the same way.
        ctx.ok(&[
            "run",
            "-d",
            "--name",
            "target",
            "--isolation",
            iso,
            BUSYBOX,
            "sleep",
            "60",
        ]);
        let mut c = ctx.cmd();
        c.args(["exec", "-i", "target", "wc", "-l"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, b"x\ny\n").unwrap();
        drop(stdin);
        let o = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "2");
        ctx.ok(&["rm", "-f", "target"]);
        ctx.assert_clean();
    }
}

#[test]
fn unknown_images_and_bad_references_are_125() {
    let ctx = Ctx::new();
    let e = ctx.fails(
        125,
        &[
            "run",
            "--pull",
            "never",
            "--isolation",
            "process",
            "no/such-image",
        ],
    );
    assert_eq!(e, "husk: No such image: no/such-image:latest");
    // Refused before any lookup or pull, as docker does.
    for bad in ["UPPER/Case", "", "a@@b", "x//y"] {
        let e = ctx.fails(125, &["run", "--isolation", "process", bad, "true"]);
        assert!(
            e.starts_with("husk: invalid reference format"),
            "{bad:?}: {e}"
        );
    }
    assert!(ctx.container_dirs().is_empty());
}

#[test]
fn bad_flags_are_125_and_leave_no_state() {
    let ctx = Ctx::new();
    let cases: [(&[&str], &str); 10] = [
        (&["--memory", "1k"], "minimum memory limit allowed is 6MB"),
        (
            &["--memory", "lots"],
            "invalid --memory: invalid size \"lots\": use a number",
        ),
        (
            &["--memory", "1.5.5g"],
            "invalid --memory: invalid size \"1.5.5g\": use a number",
        ),
        (&["--cpus", "0"], "invalid --cpus"),
        (&["--cpus", "100000"], "range of CPUs"),
        (&["--isolation", "container"], "invalid isolation"),
        (&["-w", "relative"], "needs to be an absolute path"),
        (&["--restart", "sometimes"], "invalid restart policy"),
        (&["--rm", "--restart", "always"], "conflicting options"),
        (&["-u", "a:b:c"], "invalid user"),
    ];
    for (flags, msg) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        if !flags.contains(&"--isolation") {
            args.extend(["--isolation", "process"]);
        }
        args.extend([BUSYBOX, "true"]);
        let e = ctx.fails(125, &args);
        assert!(e.contains(msg), "{flags:?}: {e}");
    }
    let e = ctx.fails(
        125,
        &["run", "--isolation", "process", "--entrypoint", "", BUSYBOX],
    );
    assert!(e.contains("no command specified"), "{e}");
    assert!(
        ctx.container_dirs().is_empty(),
        "{:?}",
        ctx.container_dirs()
    );
}

#[test]
fn unknown_user_is_125_and_rm_leaves_nothing() {
    for iso in backends("unknown_user_is_125_and_rm_leaves_nothing") {
        let ctx = Ctx::isolated(iso);
        let e = ctx.fails(
            125,
            &[
                "run",
                "--rm",
                "--isolation",
                iso,
                "-u",
                "nosuchuser",
                BUSYBOX,
                "id",
            ],
        );
        assert!(e.contains("unable to find user nosuchuser"), "[{iso}] {e}");
        ctx.assert_clean();
    }
}

#[test]
fn vm_without_a_usable_kvm_names_process_isolation() {
    let ctx = Ctx::new();
    for args in [
        &["run", BUSYBOX, "true"][..],
        &["run", "--isolation", "vm", "--rm", BUSYBOX, "true"][..],
    ] {
        let mut c = ctx.cmd();
        c.args(args).env("HUSK_KVM_DEVICE", "/nonexistent/kvm");
        let o = husk_e2e::output(c);
        let e = husk_e2e::stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{e}");
        assert_eq!(
            e.trim_end(),
            "husk: vm isolation needs a usable KVM (/nonexistent/kvm does not exist: this host \
             has no KVM (load kvm_intel/kvm_amd or run on a host with virtualization)); use \
             --isolation process"
        );
    }
    assert!(
        ctx.container_dirs().is_empty(),
        "{:?}",
        ctx.container_dirs()
    );
}

#[test]
fn auto_isolation_says_what_it_picked() {
    let ctx = Ctx::new();
    let args = [
        "run",
        "--rm",
        "--isolation",
        "auto",
        BUSYBOX,
        "cat",
        "/proc/version",
    ];
    // Without a usable KVM, auto picks process and says why.
    let mut c = ctx.cmd();
    c.args(args).env("HUSK_KVM_DEVICE", "/nonexistent/kvm");
    let o = husk_e2e::output(c);
    let e = husk_e2e::stderr(&o);
    assert!(o.status.success(), "{e}");
    assert_kernel("process", &stdout(&o));
    assert!(
        e.starts_with("husk: --isolation auto: using process (KVM is unusable here: "),
        "{e}"
    );
    // With one, auto picks vm: on an emulating KVM such as PVM as well.
    if !husk_e2e::linux_guests_available("auto_isolation_says_what_it_picked") {
        return;
    }
    let o = ctx.run(&args);
    let e = husk_e2e::stderr(&o);
    assert!(o.status.success(), "{e}");
    assert_kernel("vm", &stdout(&o));
    assert!(
        e.starts_with("husk: --isolation auto: using vm (this host's KVM "),
        "{e}"
    );
    ctx.assert_clean();
}

#[test]
fn management_verbs_on_unknown_containers_fail_like_docker() {
    let ctx = Ctx::new();
    for verb in [
        &["rm", "nope"][..],
        &["stop", "nope"],
        &["kill", "nope"],
        &["logs", "nope"],
        &["inspect", "nope"],
        &["wait", "nope"],
        &["start", "nope"],
    ] {
        let o = ctx.run(verb);
        let e = husk_e2e::stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{verb:?}: {e}");
        // inspect says docker's generic inspect message.
        let expected = match verb[0] {
            "inspect" => "No such object: nope",
            _ => "No such container: nope",
        };
        assert!(
            e.starts_with("Error: ") && e.contains(expected),
            "{verb:?}: {e}"
        );
    }
    let e = ctx.fails(125, &["exec", "nope", "true"]);
    assert!(e.contains("No such container: nope"), "{e}");
}

/// husk itself failing (here: its agent dies before answering) is docker's 125 with the
/// reason on one line, in the foreground and detached, and `--rm` leaves nothing.
#[test]
fn a_sandbox_that_cannot_start_is_125() {
    let ctx = Ctx::new();
    for detach in [false, true] {
        let mut c = ctx.cmd();
        c.env("HUSK_AGENT", "/bin/false")
            .args(["run", "--rm", "--isolation", "process"])
            .args(detach.then_some("-d"))
            .args([BUSYBOX, "true"])
            .stdin(std::process::Stdio::null());
        let o = husk_e2e::output(c);
        let err = husk_e2e::stderr(&o);
        assert_eq!(o.status.code(), Some(125), "detach {detach}: {err}");
        assert!(
            err.starts_with("husk: ") && err.lines().count() == 1,
            "{err}"
        );
        assert!(err.contains("agent"), "{err}");
        assert!(o.stdout.is_empty());
    }
    ctx.assert_clean();
}

/// `--memory` is a real limit in process isolation (the cgroup's): a workload that holds
/// more than it is killed (137, as docker's OOM kill), one that stays under runs; `inspect`
/// shows the limit and `--cpus` as docker does.
#[test]
fn memory_limit_bites_in_process_isolation() {
    let ctx = Ctx::new();
    // A shell variable of 48 MB: the shell holds it all at once.
    let hog = r#"x=$(head -c 48000000 /dev/zero | tr '\0' a); echo ${#x}"#;
    let o = ctx.run(&[
        "run",
        "--name",
        "small",
        "--isolation",
        "process",
        "--memory",
        "16m",
        "--cpus",
        "0.5",
        BUSYBOX,
        "sh",
        "-c",
        hog,
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", husk_e2e::stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&ctx.ok(&["inspect", "small"])).unwrap();
    assert_eq!(v[0]["HostConfig"]["Memory"], 16 << 20);
    assert_eq!(v[0]["HostConfig"]["NanoCpus"], 500_000_000);
    let out = ctx.ok(&[
        "run",
        "--rm",
        "--isolation",
        "process",
        "--memory",
        "256m",
        BUSYBOX,
        "sh",
        "-c",
        hog,
    ]);
    assert_eq!(out.trim(), "48000000");
    ctx.ok(&["rm", "small"]);
    ctx.assert_clean();
}
