//! Devices in a container: the standard nodes work, a node the workload makes itself (it
//! has CAP_MKNOD, as with docker) cannot be opened, under both isolations; `--device` adds a
//! host node under process isolation and is refused under vm.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use run_common::{BUSYBOX, Ctx, backends};

#[test]
fn only_the_containers_devices_open() {
    for iso in backends("only_the_containers_devices_open") {
        let ctx = Ctx::isolated(iso);
        // The workload's own node is refused; the standard nodes work; a `dev` tmpfs is
        // fine in a VM (its devices are the guest's) and refused on the host.
        let mut script = String::from(
            "mknod /tmp/mine c 1 3 && echo made; echo x > /tmp/mine || echo refused; \
             echo y > /dev/null && echo null-ok; head -c 3 /dev/zero | wc -c",
        );
        let mut args = vec!["run", "--rm", "--isolation", iso];
        if iso == "vm" {
            args.extend(["--tmpfs", "/x:dev"]);
            script.push_str("; mknod /x/n c 1 3 && echo y > /x/n && echo dev-ok");
        }
        args.extend([BUSYBOX, "sh", "-c", &script]);
        let out = ctx.ok(&args);
        let expected = match iso {
            "vm" => "made\nrefused\nnull-ok\n3\ndev-ok\n",
            _ => "made\nrefused\nnull-ok\n3\n",
        };
        assert_eq!(out, expected, "[{iso}]");
        if iso == "process" {
            let e = ctx.fails(
                125,
                &["run", "--isolation", iso, "--tmpfs", "/x:dev", BUSYBOX],
            );
            assert!(
                e.contains("the dev option is refused under process isolation"),
                "{e}"
            );
        }

        if iso == "process" {
            let script = "head -c 4 /dev/myzero | wc -c; echo x > /dev/myzero && echo rw";
            let out = ctx.ok(&[
                "run",
                "--rm",
                "--isolation",
                iso,
                "--device",
                "/dev/zero:/dev/myzero:rw",
                BUSYBOX,
                "sh",
                "-c",
                script,
            ]);
            assert_eq!(out, "4\nrw\n");
            let shown = ctx.ok(&[
                "create",
                "--isolation",
                iso,
                "--device",
                "/dev/zero",
                BUSYBOX,
            ]);
            let devices = ctx.ok(&[
                "inspect",
                "-f",
                "{{json .HostConfig.Devices}}",
                shown.trim(),
            ]);
            assert_eq!(
                devices.trim(),
                r#"[{"CgroupPermissions":"rwm","PathInContainer":"/dev/zero","PathOnHost":"/dev/zero"}]"#
            );
            ctx.ok(&["rm", shown.trim()]);
        } else {
            let e = ctx.fails(
                125,
                &["run", "--isolation", iso, "--device", "/dev/null", BUSYBOX],
            );
            assert!(e.contains("not supported under vm isolation"), "{e}");
        }
        let e = ctx.fails(
            125,
            &[
                "run",
                "--isolation",
                "process",
                "--device",
                "/dev/nosuch",
                BUSYBOX,
            ],
        );
        assert_eq!(
            e,
            "husk: error gathering device information while adding custom device \"/dev/nosuch\": no such file or directory"
        );
        ctx.assert_clean();
    }
}
