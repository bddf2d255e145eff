//! Warm starts (docs/warm-starts.md): a vm container restored from a template made on
//! first use behaves as a cold-booted one, two clones of one template draw different
//! random numbers, have their own boot IDs, the right time and their own files, a
//! refused template (corrupt state, truncated memory) is said so and made anew while the
//! run goes on, a maker killed while saving leaves nothing a later run would use, and
//! `--cold` boots the kernel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_common;

use std::path::{Path, PathBuf};
use std::process::Output;

use run_common::{BUSYBOX, Ctx, GUARD, assert_kernel, backends, processes_under, stdout};

/// What makes a guest itself: boot ID, 16 random bytes, the time, the hostname, the
/// kernel; then the workload's own file check.
const IDENTITY: &str = "cat /proc/sys/kernel/random/boot_id; \
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; \
    date +%s; hostname; cat /proc/version";

/// A deterministic workload whose output must not depend on how the VM started.
const SAME: &str = "echo $((6*7)); id; ls /; cat /etc/hostname | wc -c; \
    grep -c ' / ' /proc/mounts; echo data > /f; cat /f; rm /f; \
    cat /proc/sys/vm/overcommit_memory 2>/dev/null; ulimit -n";

/// What the VMM says when the guest has the container's scratch disk mounted already.
const SCRATCH_READY: &str = "scratch disk mounted in the template";

/// A private template directory for a test that takes templates apart.
struct Templates(tempfile::TempDir);

impl Templates {
    fn new() -> Self {
        Templates(
            tempfile::Builder::new()
                .prefix("husk-tpl")
                .tempdir()
                .unwrap(),
        )
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// The templates in it: the container template, then its image templates.
    fn all(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort_by_key(|p| p.to_string_lossy().ends_with("-image"));
        dirs
    }

    /// Changes every template in it with `spoil(template directory)`.
    fn spoil_all(&self, spoil: impl Fn(&Path)) {
        for dir in self.all() {
            spoil(&dir);
        }
    }

    /// `husk args` with this template directory.
    fn run(&self, ctx: &Ctx, args: &[&str]) -> Output {
        let mut c = ctx.cmd();
        c.env(runtime::sandbox::template::DIR_ENV, self.path())
            .args(args)
            .stdin(std::process::Stdio::null());
        husk_e2e::output(c)
    }

    /// Runs a detached vm container `name` running `script`; its ID.
    fn start(&self, ctx: &Ctx, name: &str, script: &str) -> String {
        let o = self.run(
            ctx,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--isolation",
                "vm",
                BUSYBOX,
                "sh",
                "-c",
                script,
            ],
        );
        assert!(o.status.success(), "{}", husk_e2e::stderr(&o));
        stdout(&o)
    }
}

/// The VMM's log of container `id`.
fn vmm_log(ctx: &Ctx, id: &str) -> String {
    std::fs::read_to_string(ctx.root().join("containers").join(id).join("vmm.log"))
        .unwrap_or_default()
}

/// Waits for `name` to end and returns its output.
fn finished(ctx: &Ctx, name: &str) -> String {
    assert_eq!(ctx.ok(&["wait", name]).trim(), "0", "{name} failed");
    ctx.ok(&["logs", name]).trim_end().to_owned()
}

/// The lines of `IDENTITY`'s output.
struct Identity {
    boot_id: String,
    random: String,
    time: u64,
    hostname: String,
}

fn identity(ctx: &Ctx, name: &str, out: &str) -> Identity {
    let l: Vec<&str> = out.lines().collect();
    assert!(l.len() >= 5, "{name}: {out}");
    assert_kernel("vm", l[4]);
    Identity {
        boot_id: l[0].into(),
        random: l[1].into(),
        time: l[2].parse().unwrap(),
        hostname: l[3].into(),
    }
    .checked(ctx, name)
}

impl Identity {
    fn checked(self, ctx: &Ctx, name: &str) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // The guest's clock is the host's, not the template's (made minutes earlier).
        assert!(
            self.time + GUARD.as_secs() >= now && self.time <= now + 5,
            "{name}'s clock says {}, the host {now}",
            self.time
        );
        let id = ctx
            .ok(&["inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_owned();
        assert!(
            id.starts_with(&self.hostname),
            "{name}: hostname {}",
            self.hostname
        );
        assert_eq!(self.random.len(), 32, "{name}: {}", self.random);
        self
    }
}

#[test]
fn clones_of_one_template_are_not_twins() {
    if !husk_e2e::linux_guests_available("clones_of_one_template_are_not_twins") {
        return;
    }
    let ctx = Ctx::isolated("vm");
    let t = Templates::new();
    // The image's first run makes the container template; its second, a, the image's,
    // from which a and b are restored.
    t.start(&ctx, "w", "true");
    assert_eq!(finished(&ctx, "w"), "");
    let keep = format!("{IDENTITY}; echo secret > /secret; sleep 1000");
    let a = t.start(&ctx, "a", &keep);
    assert!(
        Ctx::eventually(GUARD, || ctx.ok(&["logs", "a"]).lines().count() >= 5),
        "a never printed its identity"
    );
    let b = t.start(&ctx, "b", &format!("{IDENTITY}; sleep 1000"));
    assert!(
        Ctx::eventually(GUARD, || ctx.ok(&["logs", "b"]).lines().count() >= 5),
        "b never printed its identity"
    );
    let (log_a, log_b) = (vmm_log(&ctx, &a), vmm_log(&ctx, &b));
    assert!(log_a.contains("made for this run"), "a: {log_a}");
    assert!(
        log_b.contains("warm start from template") && !log_b.contains("made"),
        "b: {log_b}"
    );
    let ia = identity(&ctx, "a", &ctx.ok(&["logs", "a"]));
    let ib = identity(&ctx, "b", &ctx.ok(&["logs", "b"]));
    assert_ne!(ia.boot_id, ib.boot_id, "one boot ID for two clones");
    assert_ne!(
        ia.random, ib.random,
        "two clones drew the same random bytes"
    );
    assert_ne!(ia.hostname, ib.hostname);
    // Each has its own disks: a's file is not b's.
    assert_eq!(ctx.ok(&["exec", "a", "cat", "/secret"]).trim(), "secret");
    let o = ctx.run(&["exec", "b", "cat", "/secret"]);
    assert_eq!(o.status.code(), Some(1), "b sees a's file");
    assert!(husk_e2e::stderr(&o).contains("can't open"));
    ctx.ok(&["rm", "-f", "a", "b", "w"]);
    ctx.assert_clean();
}

#[test]
fn a_refused_template_is_made_anew_and_the_run_goes_on() {
    if !husk_e2e::linux_guests_available("a_refused_template_is_made_anew_and_the_run_goes_on") {
        return;
    }
    let ctx = Ctx::isolated("vm");
    let t = Templates::new();
    let keep = "cat /f 2>/dev/null || echo none; echo kept > /f";
    let first = t.start(&ctx, "first", keep);
    assert_eq!(finished(&ctx, "first"), "none");
    let log = vmm_log(&ctx, &first);
    // The image's first run: the container template only, with the scratch disk mounted.
    assert!(
        log.contains("made for this run")
            && log.contains(SCRATCH_READY)
            && log.contains("first run here"),
        "{log}"
    );
    assert_eq!(t.all().len(), 1);
    // Started again, its scratch disk is its own (used) one: the container template
    // without it.
    let o = t.run(&ctx, &["start", "-a", "first"]);
    assert_eq!(stdout(&o), "kept", "{}", husk_e2e::stderr(&o));
    let log = vmm_log(&ctx, &first);
    assert!(
        log.contains("warm start from template") && !log.contains(SCRATCH_READY),
        "{log}"
    );
    // The image's second run makes its template from the container template.
    let img = t.start(&ctx, "img", "echo img");
    assert_eq!(finished(&ctx, "img"), "img");
    let templates = t.all();
    assert_eq!(templates.len(), 2, "{templates:?}");
    let image_key = templates[1]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let log = vmm_log(&ctx, &img);
    assert!(
        log.contains(&format!(
            "warm start from template {image_key}, made for this run"
        )) && log.contains(SCRATCH_READY),
        "{log}"
    );
    let key = templates[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // A flipped byte in the state: the checksum refuses it.
    t.spoil_all(|dir| {
        let state = dir.join("state");
        let mut bytes = std::fs::read(&state).unwrap();
        let at = bytes.len() - 10;
        bytes[at] ^= 0x20;
        std::fs::write(&state, bytes).unwrap();
    });
    // A killed maker's temporary directory: never used, cleared by the next maker.
    let leftover = t.path().join(format!(".{key}.tmp-999999"));
    std::fs::create_dir(&leftover).unwrap();
    std::fs::write(leftover.join("state"), b"half").unwrap();
    // A template nobody restored for over a week: the next maker removes it.
    let idle_key = "0123456789abcdef-1x64m";
    let idle = t.path().join(idle_key);
    std::fs::create_dir(&idle).unwrap();
    let week = std::time::Duration::from_secs(8 * 24 * 3600);
    std::fs::File::create(idle.join("used"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - week)
        .unwrap();
    let second = t.start(&ctx, "second", "echo two");
    assert_eq!(finished(&ctx, "second"), "two");
    let log = vmm_log(&ctx, &second);
    assert!(
        log.contains("refused") && log.contains("checksum") && log.contains("made for this run"),
        "{log}"
    );
    assert!(!leftover.exists(), "a killed maker's leftovers stayed");
    assert!(
        !idle.exists() && log.contains(&format!("removed 1 unused template(s): {idle_key}")),
        "{log}"
    );

    // Truncated memory: refused as well.
    t.spoil_all(|dir| {
        let memory = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("memory"))
            .unwrap();
        memory.set_len(4096).unwrap();
    });
    let third = t.start(&ctx, "third", "echo three");
    assert_eq!(finished(&ctx, "third"), "three");
    let log = vmm_log(&ctx, &third);
    assert!(
        log.contains("refused") && log.contains("made for this run"),
        "{log}"
    );

    // The remade template serves the next run as is.
    let fourth = t.start(&ctx, "fourth", "echo four");
    assert_eq!(finished(&ctx, "fourth"), "four");
    let log = vmm_log(&ctx, &fourth);
    assert!(
        log.contains("warm start from template") && !log.contains("made"),
        "{log}"
    );

    // A changed byte in the templates' scratch disks: their digests refuse them.
    t.spoil_all(|dir| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("scratch.ext4"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"x", 1024 + 0x78).unwrap();
    });
    let fifth = t.start(&ctx, "fifth", "echo five");
    assert_eq!(finished(&ctx, "fifth"), "five");
    let log = vmm_log(&ctx, &fifth);
    assert!(
        log.contains("refused")
            && log.contains("scratch disk")
            && log.contains("made for this run"),
        "{log}"
    );
    ctx.ok(&["rm", "first", "img", "second", "third", "fourth", "fifth"]);
    ctx.assert_clean();
}

#[test]
fn cold_and_warm_runs_give_the_same_results() {
    for iso in backends("cold_and_warm_runs_give_the_same_results") {
        let ctx = Ctx::isolated(iso);
        let mut outs = Vec::new();
        for (name, extra) in [("warm", None), ("cold", Some("--cold"))] {
            let mut args = vec!["run", "-d", "--name", name, "--isolation", iso];
            args.extend(extra);
            args.extend([BUSYBOX, "sh", "-c", SAME]);
            let id = ctx.ok(&args).trim().to_owned();
            outs.push(finished(&ctx, name));
            let log = vmm_log(&ctx, &id);
            match (iso, extra) {
                ("vm", None) => assert!(log.contains("warm start from template"), "{log}"),
                ("vm", Some(_)) => assert!(
                    !log.contains("warm start") && log.contains("agent ready"),
                    "{log}"
                ),
                _ => assert_eq!(log, "", "[{iso}] no VMM"),
            }
        }
        assert_eq!(outs[0], outs[1], "[{iso}] warm and cold differ");
        assert!(
            outs[0].starts_with("42\nuid=0(root)"),
            "[{iso}] {}",
            outs[0]
        );
        ctx.ok(&["rm", "warm", "cold"]);
        ctx.assert_clean();
    }
}

#[test]
fn a_maker_killed_while_saving_leaves_nothing_a_later_run_would_use() {
    if !husk_e2e::linux_guests_available(
        "a_maker_killed_while_saving_leaves_nothing_a_later_run_would_use",
    ) {
        return;
    }
    let ctx = Ctx::isolated("vm");
    let t = Templates::new();
    let mut first = ctx.cmd();
    first
        .env(runtime::sandbox::template::DIR_ENV, t.path())
        .args([
            "run",
            "-d",
            "--name",
            "first",
            "--isolation",
            "vm",
            BUSYBOX,
            "true",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut first = first.spawn().unwrap();
    // The save starts when the template guest's console says its agent is ready: kill
    // the VMM then, in the middle of writing the snapshot (or just after it).
    let ready = || {
        std::fs::read_dir(t.path()).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                e.file_name().to_string_lossy().ends_with(".console.log")
                    && std::fs::read_to_string(e.path())
                        .is_ok_and(|c| c.contains("husk-agent: ready"))
            })
        })
    };
    assert!(
        Ctx::eventually(GUARD, ready),
        "the template guest never got ready"
    );
    let root = ctx.root().to_string_lossy().into_owned();
    for p in processes_under(&root) {
        if p.contains("--vmm") {
            let pid: i32 = p.split(':').next().unwrap().parse().unwrap();
            // SAFETY: kill takes no pointers; the pid is this test's VMM process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = first.wait();
    // Whatever is there now is either a whole template or none: a later run restores a
    // whole one, or makes it (clearing the killed maker's temporary directory).
    let second = t.start(&ctx, "second", "echo two");
    assert_eq!(finished(&ctx, "second"), "two");
    let log = vmm_log(&ctx, &second);
    assert!(log.contains("warm start from template"), "{log}");
    assert!(
        !log.contains("refused"),
        "a half-written template was found: {log}"
    );
    eprintln!(
        "the kill landed {}",
        match log.contains("made for this run") {
            true => "before the snapshot was published: the next run made it",
            false => "after the snapshot was published: the next run restored it",
        }
    );
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .map(|e| e.path())
        .collect();
    assert!(
        leftovers.is_empty(),
        "the killed maker's leftovers stayed: {leftovers:?}"
    );
    ctx.ok(&["rm", "-f", "first", "second"]);
    ctx.assert_clean();
}
