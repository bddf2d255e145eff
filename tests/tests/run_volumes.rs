//! Volumes and bind mounts, end to end, under both isolations (virtio-fs through
//! virtiofsd in a VM, mounts handed to the sandbox under process isolation): data outlives
//! its container and two running containers see each other's writes and renames; a new
//! volume is filled from the image; `:ro` holds inside the container; owners, modes and
//! symlinks round-trip to the host; a bind-mounted host file reads; fsync'd data is on
//! the host after a SIGKILL; symlinks and `..` in a bind cannot reach host files outside
//! it; `rm -v` and `--rm` take anonymous volumes (image `VOLUME`s included) and leave
//! named ones; the `volume` verbs; bad mount flags fail with one line and exit 125, leaving
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use run_common::{BUSYBOX, Ctx, GUARD, backends};

/// An image with content (owned 1234:5678, mode 0640, a symlink; `/seed` itself owned
/// 4321:8765, mode 0750) at `/seed` and
/// `VOLUME /seed`, committed from a process container in a root of its own and loaded
/// into `ctx` (so a vm context's sandboxes stay all VMs).
fn seeded_image(ctx: &Ctx) {
    let src = Ctx::new();
    src.ok(&[
        "run",
        "--name",
        "seedsrc",
        "--isolation",
        "process",
        "--network",
        "none",
        BUSYBOX,
        "sh",
        "-c",
        "mkdir -p /seed/sub && echo seeded > /seed/hello && chown 1234:5678 /seed/hello \
         && chmod 640 /seed/hello && ln -s hello /seed/link \
         && chown 4321:8765 /seed && chmod 750 /seed",
    ]);
    src.ok(&[
        "commit",
        "-c",
        "VOLUME [\"/seed\"]",
        "seedsrc",
        "husk/seeded",
    ]);
    src.ok(&["rm", "seedsrc"]);
    let tar = ctx.root().join("seeded.tar");
    src.ok(&["save", "-o", tar.to_str().unwrap(), "husk/seeded"]);
    ctx.ok(&["load", "-i", tar.to_str().unwrap()]);
}

/// What the first container checks (its log says), then it holds on.
const FIRST: &str = "stat -c '%A %u %g %n' /seed /seed/hello /seed/link /seed/sub; \
    readlink /seed/link; cat /seed/hello; \
    echo one > /data/a; \
    mkdir /h/owned && chown 1234:5678 /h/owned && chmod 0751 /h/owned; \
    echo x > /h/mode && chmod 0604 /h/mode; \
    ln -s some/where /h/sl; \
    cat /f; \
    echo no > /ro/x 2>/dev/null && echo ro-writable || echo ro-refused; \
    cat /h/up 2>/dev/null || echo up-blocked; \
    cat /h/esc 2>/dev/null || echo esc-blocked; \
    if mknod /data/nd c 1 3 2>/dev/null; then \
        (echo x > /data/nd) 2>/dev/null && echo dev-opened || echo dev-refused; \
    else echo no-mknod; fi; rm -f /data/nd; \
    grep -c ' /h/t tmpfs' /proc/mounts; \
    echo durable > /data/durable; sync; \
    echo done > /h/ready; \
    exec sleep 1000";

/// What the third container does: read, exchange extended attributes with the host
/// (perl's raw `setxattr`/`getxattr`, 188 and 191 on x86_64), and find a held lock held.
const THIRD: &str = "cat /data/b; perl -e '\
    my ($p, $k, $v, $h) = (\"/data/b\", \"user.from\", \"guest\", \"user.host\"); \
    syscall(188, $p, $k, $v, length($v), 0) == 0 or die \"setxattr: $!\"; \
    my $b = \"\\0\" x 64; my $n = syscall(191, $p, $h, $b, 64); \
    $n >= 0 or die \"getxattr: $!\"; print substr($b, 0, $n), \"\\n\"'; \
    flock /data/lock -c 'flock -n /data/lock true && echo free || echo held'";

fn set_xattr(path: &Path, name: &str, value: &str) {
    let (p, n) = (cstring(path.to_str().unwrap()), cstring(name));
    // SAFETY: setxattr reads two NUL-terminated strings and `value`'s bytes, all alive.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn get_xattr(path: &Path, name: &str) -> String {
    let (p, n) = (cstring(path.to_str().unwrap()), cstring(name));
    let mut buf = [0u8; 64];
    // SAFETY: getxattr writes at most `buf.len()` bytes into `buf`.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        len >= 0,
        "getxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    String::from_utf8_lossy(&buf[..len as usize]).into_owned()
}

fn cstring(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap()
}

#[test]
fn volumes_outlive_containers_are_shared_and_keep_owners_modes_and_boundaries() {
    for iso in
        backends("volumes_outlive_containers_are_shared_and_keep_owners_modes_and_boundaries")
    {
        let ctx = Ctx::isolated(iso);
        ctx.import_debian();
        seeded_image(&ctx);
        let host = ctx.root().join("bind");
        std::fs::create_dir(&host).unwrap();
        let secret = ctx.root().join("secret");
        std::fs::write(&secret, "host-secret\n").unwrap();
        std::os::unix::fs::symlink("../secret", host.join("up")).unwrap();
        std::os::unix::fs::symlink(&secret, host.join("esc")).unwrap();
        let file = ctx.root().join("host.txt");
        std::fs::write(&file, "a host file\n").unwrap();
        std::fs::create_dir(ctx.root().join("rodir")).unwrap();
        let bind = format!("{}:/h", host.display());
        let file_bind = format!("{}:/f:ro", file.display());
        let ro_bind = format!("{}:/ro:ro", ctx.root().join("rodir").display());
        let run = ["run", "--isolation", iso, "--network", "none"];

        ctx.ok(&[
            &run[..],
            &[
                "-d",
                "--name",
                "first",
                "-v",
                "vol:/data",
                "-v",
                "seedvol:/seed",
            ],
            &["-v", &bind, "-v", &file_bind, "-v", &ro_bind, "-v", "/anon"],
            &["--tmpfs", "/h/t"],
            &["husk/seeded"],
            &["sh", "-c", FIRST],
        ]
        .concat());
        assert!(
            Ctx::eventually(GUARD, || host.join("ready").exists()),
            "[{iso}] the first container never got ready"
        );
        let logs = ctx.ok(&["logs", "first"]);
        let want = "drwxr-x--- 4321 8765 /seed\n\
                    -rw-r----- 1234 5678 /seed/hello\n\
                    lrwxrwxrwx 0 0 /seed/link\n\
                    drwxr-xr-x 0 0 /seed/sub\n\
                    hello\n\
                    seeded\n\
                    a host file\n\
                    ro-refused\n\
                    up-blocked\n\
                    esc-blocked\n";
        // A device node in a volume does not open (process: `nodev`; vm: virtiofsd
        // makes none on the host); a mount inside a bind stays in the container.
        let device = match iso {
            "vm" => "no-mknod",
            _ => "dev-refused",
        };
        assert_eq!(logs, format!("{want}{device}\n1\n"), "[{iso}]");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&format!("{}/t ", host.display())),
            "[{iso}] a mount inside a bind reached the host"
        );
        // Owners, modes and symlinks made in the container are the host's.
        let owned = std::fs::metadata(host.join("owned")).unwrap();
        assert_eq!(
            (owned.uid(), owned.gid(), owned.mode() & 0o7777),
            (1234, 5678, 0o751),
            "[{iso}]"
        );
        let mode = std::fs::metadata(host.join("mode")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o604, "[{iso}]");
        assert_eq!(
            std::fs::read_link(host.join("sl")).unwrap(),
            Path::new("some/where"),
            "[{iso}]"
        );
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host-secret\n");

        // inspect shows each mount as docker does.
        let mounts = ctx.ok(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Type}} {{.Destination}} {{.RW}}|{{end}}",
            "first",
        ]);
        assert_eq!(
            mounts,
            "volume /anon true|volume /data true|bind /f false|bind /h true|bind /ro false|volume /seed true|\n",
            "[{iso}]"
        );

        // A second container shares the running first one's volumes (`--volumes-from`,
        // read-only ones staying so): it sees its data, writes and renames, and the first
        // sees that at once.
        let script = "cat /data/a; echo two > /data/b.tmp && mv /data/b.tmp /data/b; \
            ls /data; touch /ro/y 2>/dev/null || echo still-ro; cat /f";
        let second = ctx.ok(&[
            &run[..],
            &["--rm", "--volumes-from", "first", "-v", "/scratch"],
            &[BUSYBOX, "sh", "-c", script],
        ]
        .concat());
        assert_eq!(
            second, "one\na\nb\ndurable\nstill-ro\na host file\n",
            "[{iso}]"
        );
        let seen = ctx.ok(&[
            "exec",
            "first",
            "sh",
            "-c",
            "cat /data/b; ls /data/b.tmp 2>&1 | wc -l",
        ]);
        assert_eq!(seen, "two\n1\n", "[{iso}]");

        // fsync'd data is on the host when the container is killed outright.
        ctx.ok(&["kill", "-s", "KILL", "first"]);
        assert_eq!(ctx.ok(&["wait", "first"]), "137\n", "[{iso}]");
        let data = ctx.root().join("volumes/vol/_data");
        assert_eq!(
            std::fs::read_to_string(data.join("durable")).unwrap(),
            "durable\n",
            "[{iso}]"
        );
        ctx.ok(&["rm", "-v", "first"]);

        // The data outlives the container; named volumes stay after `rm -v`, anonymous
        // ones (`-v /anon` here, `-v /scratch` of the `--rm` one) go.
        let names = ctx.ok(&["volume", "ls", "-q"]);
        assert_eq!(names, "seedvol\nvol\n", "[{iso}]");
        // A third container (Debian: perl and flock) reads it, and extended attributes
        // go both ways; a lock taken on the volume holds (inside one container: virtiofsd
        // keeps no locks across VMs, docs/volumes.md).
        set_xattr(&data.join("b"), "user.host", "from-host");
        let third = ctx.ok(&[
            &run[..],
            &[
                "--rm",
                "-v",
                "vol:/data",
                "husk/debian:bookworm",
                "sh",
                "-c",
                THIRD,
            ],
        ]
        .concat());
        assert_eq!(third, "two\nfrom-host\nheld\n", "[{iso}]");
        assert_eq!(get_xattr(&data.join("b"), "user.from"), "guest", "[{iso}]");
        ctx.ok(&["volume", "rm", "vol", "seedvol"]);
        ctx.assert_clean();
    }
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_rm_and_volume_verbs_follow_docker() {
    let ctx = Ctx::isolated("process");
    seeded_image(&ctx);
    let run = ["run", "--isolation", "process", "--network", "none"];
    // The image's VOLUME and `-v /path` are anonymous volumes, filled from the image.
    let out = ctx.ok(&[
        &run[..],
        &[
            "--name",
            "anon",
            "-v",
            "/extra",
            "husk/seeded",
            "cat",
            "/seed/hello",
        ],
    ]
    .concat());
    assert_eq!(out, "seeded\n");
    let inspect = ctx.ok(&["inspect", "-f", "{{json .Mounts}}", "anon"]);
    let mounts: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let mounts = mounts.as_array().unwrap();
    assert_eq!(mounts.len(), 2, "{inspect}");
    for m in mounts {
        assert_eq!(m["Type"], "volume", "{inspect}");
        assert_eq!(m["Driver"], "local");
        assert_eq!(m["RW"], true);
        let name = m["Name"].as_str().unwrap();
        assert_eq!(name.len(), 64);
        assert!(
            m["Source"]
                .as_str()
                .unwrap()
                .ends_with(&format!("volumes/{name}/_data"))
        );
    }
    let anon: Vec<String> = ctx
        .ok(&["volume", "ls", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(anon.len(), 2);
    let e = ctx.fails_with(1, &["volume", "rm", &anon[0]]);
    assert!(
        e.starts_with(&format!("Error: remove {}: volume is in use - [", anon[0])),
        "{e}"
    );
    ctx.ok(&["rm", "-v", "anon"]);
    assert_eq!(ctx.ok(&["volume", "ls", "-q"]), "");
    // `--rm` takes anonymous volumes too, named ones stay.
    ctx.ok(&[&run[..], &["--rm", "-v", "keep:/k", "husk/seeded", "true"]].concat());
    assert_eq!(ctx.ok(&["volume", "ls", "-q"]), "keep\n");

    // `--mount` of each type, `--volumes-from` in a forced mode, and `system df`.
    let out = ctx.ok(&[
        &run[..],
        &[
            "--name",
            "lender",
            "--mount",
            "type=volume,src=lent,dst=/lent",
        ],
        &[
            "--mount",
            "type=tmpfs,dst=/t,tmpfs-size=1m",
            BUSYBOX,
            "sh",
            "-c",
        ],
        &["echo lent > /lent/f; grep ' /t ' /proc/mounts | grep -c size=1024k"],
    ]
    .concat());
    assert_eq!(out, "1\n");
    let out = ctx.ok(&[
        &run[..],
        &["--rm", "--volumes-from", "lender:ro", BUSYBOX, "sh", "-c"],
        &["cat /lent/f; touch /lent/g 2>/dev/null || echo refused"],
    ]
    .concat());
    assert_eq!(out, "lent\nrefused\n");
    let df = ctx.ok(&["system", "df"]);
    let row = df.lines().find(|l| l.starts_with("Local Volumes")).unwrap();
    assert_eq!(row.split_whitespace().nth(2), Some("2"), "{df}");
    ctx.ok(&["rm", "-v", "lender"]);
    ctx.ok(&["volume", "rm", "lent"]);

    // The verbs.
    assert_eq!(
        ctx.ok(&["volume", "create", "--label", "tier=db", "named"]),
        "named\n"
    );
    assert_eq!(ctx.ok(&["volume", "create", "named"]), "named\n");
    let v: serde_json::Value =
        serde_json::from_str(&ctx.ok(&["volume", "inspect", "named"])).unwrap();
    assert_eq!(v[0]["Name"], "named");
    assert_eq!(v[0]["Driver"], "local");
    assert_eq!(v[0]["Labels"]["tier"], "db");
    assert_eq!(
        ctx.ok(&["volume", "inspect", "-f", "{{.Scope}}", "named"]),
        "local\n"
    );
    let e = ctx.fails_with(1, &["volume", "inspect", "nosuch"]);
    assert_eq!(e, "Error: get nosuch: no such volume");
    assert_eq!(
        ctx.ok(&["volume", "ls", "--format", "{{.Name}} {{.Driver}}"]),
        "keep local\nnamed local\n"
    );
    ctx.ok(&[
        &run[..],
        &["--name", "user", "-v", "named:/n", BUSYBOX, "true"],
    ]
    .concat());
    let e = ctx.fails_with(1, &["volume", "rm", "named"]);
    assert!(
        e.starts_with("Error: remove named: volume is in use - ["),
        "{e}"
    );
    // prune takes unused anonymous volumes only; --all unused named ones too.
    ctx.ok(&[&run[..], &["--name", "a2", "-v", "/x", BUSYBOX, "true"]].concat());
    ctx.ok(&["rm", "a2"]);
    let pruned = ctx.ok(&["volume", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Volumes:\n"), "{pruned}");
    assert_eq!(ctx.ok(&["volume", "ls", "-q"]), "keep\nnamed\n");
    let pruned = ctx.ok(&["volume", "prune", "-af"]);
    assert!(
        pruned.contains("keep\n") && !pruned.contains("named\n"),
        "{pruned}"
    );
    ctx.ok(&["rm", "user"]);
    ctx.ok(&["volume", "rm", "named"]);
    assert_eq!(
        ctx.ok(&["volume", "rm", "-f", "gone-already"]),
        "gone-already\n"
    );
    ctx.assert_clean();
}

#[test]
fn bad_mount_flags_fail_with_one_line_and_leave_nothing() {
    let ctx = Ctx::new();
    let missing = ctx.root().join("no-such-dir");
    let missing_bind = format!("{}:/d", missing.display());
    let cases: [(&[&str], &str); 8] = [
        (&["-v", &missing_bind], "bind source path does not exist"),
        (
            &["-v", "rel/dir:/d"],
            "includes invalid characters for a local volume name",
        ),
        (&["-v", "vol:relative"], "mount path must be absolute"),
        (&["-v", "vol:/d:bogus"], "invalid mode: bogus"),
        (
            &["--mount", "type=volume,src=a/b,dst=/d"],
            "includes invalid characters",
        ),
        (
            &["--mount", "type=bind,dst=/d"],
            "a bind mount needs a source",
        ),
        (
            &["--mount", "type=volume,dst=/d,colour=red"],
            "unexpected key",
        ),
        (
            &["-v", "vol:/d", "-v", "other:/d"],
            "Duplicate mount point: /d",
        ),
    ];
    for iso in ["process", "vm"] {
        for (flags, want) in &cases {
            let args = [
                &["run", "--rm", "--isolation", iso, "--network", "none"][..],
                flags,
                &[BUSYBOX, "true"],
            ]
            .concat();
            let e = ctx.fails(125, &args);
            assert!(e.contains(want), "[{iso}] {flags:?}: {e}");
        }
        let e = ctx.fails(
            125,
            &[
                "run",
                "--rm",
                "--isolation",
                iso,
                "--volumes-from",
                "nobody",
                BUSYBOX,
                "true",
            ],
        );
        assert!(e.contains("No such container: nobody"), "{e}");
    }
    assert_eq!(ctx.ok(&["volume", "ls", "-q"]), "", "no volume is left");
    assert!(!missing.exists(), "husk made the missing bind source");
    ctx.assert_clean();
}
