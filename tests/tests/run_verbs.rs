//! docker's everyday verbs and flags beyond run: `create` then `start -a`, `rename`,
//! `--label`, `ps --filter/--format/-n/-l`, `inspect -f`, `images --format/--filter`, the
//! `container ...` group and `version`, with docker's messages and exit codes. The one
//! container that runs does so under each isolation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod run_common;

use run_common::{BUSYBOX, Ctx, backends};

#[test]
fn create_rename_label_start_and_find_it_again() {
    for iso in backends("create_rename_label_start_and_find_it_again") {
        let ctx = Ctx::isolated(iso);
        let id = ctx.ok(&[
            "create",
            "--name",
            "first",
            "--label",
            "tier=web",
            "-l",
            "flag",
            "--stop-signal",
            "SIGUSR2",
            "--stop-timeout",
            "5",
            "--isolation",
            iso,
            BUSYBOX,
            "sh",
            "-c",
            "echo created-then-started",
        ]);
        let id = id.trim();
        assert_eq!(id.len(), 64, "[{iso}] {id}");
        let created = ctx.ok(&["ps", "-a", "--filter", "status=created", "-q"]);
        assert_eq!(created.trim(), &id[..12], "[{iso}]");
        assert!(
            ctx.ok(&["ps", "-q"]).is_empty(),
            "[{iso}] created is not running"
        );

        ctx.ok(&["rename", "first", "second"]);
        let e = ctx.fails_with(1, &["rename", "second", "second"]);
        assert_eq!(
            e,
            "Error: Renaming a container with the same name as its current name"
        );
        let e = ctx.fails_with(1, &["rename", "nosuch", "x"]);
        assert_eq!(e, "Error: No such container: nosuch");

        let o = ctx.run(&["start", "-a", "second"]);
        assert_eq!(o.status.code(), Some(0), "[{iso}] {}", husk_e2e::stderr(&o));
        assert_eq!(run_common::stdout(&o), "created-then-started", "[{iso}]");

        let shown = ctx.ok(&[
            "inspect",
            "-f",
            "{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{index .Config.Labels \"tier\"}} {{json .Config.Entrypoint}}",
            "second",
        ]);
        assert_eq!(shown.trim(), "/second exited 0 web null", "[{iso}]");
        let stop = ctx.ok(&[
            "inspect",
            "-f",
            "{{.Config.StopSignal}} {{.Config.StopTimeout}}",
            "second",
        ]);
        assert_eq!(stop.trim(), "SIGUSR2 5", "[{iso}]");
        let rows = ctx.ok(&[
            "container",
            "ls",
            "-a",
            "--filter",
            "label=tier=web",
            "--filter",
            "label=flag",
            "--format",
            "{{.Names}}|{{.State}}|{{.Labels}}|{{.Isolation}}",
        ]);
        assert_eq!(rows.trim(), format!("second|exited|flag=,tier=web|{iso}"));
        for filter in ["label=tier=db", "status=running", "name=first", "exited=1"] {
            let rows = ctx.ok(&["ps", "-a", "-q", "--filter", filter]);
            assert!(rows.is_empty(), "[{iso}] {filter}: {rows}");
        }
        let rows = ctx.ok(&["ps", "-q", "--filter", "exited=0"]);
        assert_eq!(rows.trim(), &id[..12], "[{iso}] exited= implies -a");
        ctx.ok(&["container", "rm", "second"]);
        ctx.assert_clean();
    }
}

#[test]
fn ps_and_images_formats_filters_and_errors_are_docker_like() {
    let ctx = Ctx::new();
    let mut ids = Vec::new();
    let cidfile = ctx.root().join("a.cid");
    let cid = cidfile.to_str().unwrap();
    for name in ["a", "b", "c"] {
        let mut args = vec!["create", "--name", name, "--isolation", "process"];
        if name == "a" {
            args.extend(["--cidfile", cid]);
        }
        args.push(BUSYBOX);
        let id = ctx.ok(&args);
        if name == "a" {
            assert_eq!(std::fs::read_to_string(&cidfile).unwrap(), id.trim());
        }
        ids.push(id.trim()[..12].to_owned());
    }
    let e = ctx.fails(125, &["create", "--cidfile", cid, BUSYBOX]);
    assert!(e.starts_with("husk: Container ID file found"), "{e}");
    // Newest first; -n and -l take the newest and include stopped ones.
    let last2 = ctx.ok(&["ps", "-n", "2", "--format", "{{.Names}}"]);
    assert_eq!(last2, "c\nb\n");
    assert_eq!(ctx.ok(&["ps", "-l", "--format", "{{.ID}}"]).trim(), ids[2]);
    let table = ctx.ok(&["ps", "-a", "--format", "table {{.Names}}\\t{{.Status}}"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("NAMES"), "{table}");
    assert_eq!(lines[0].find("STATUS"), lines[1].find("Created"), "{table}");
    let json = ctx.ok(&["ps", "-l", "--format", "{{json .}}"]);
    let row: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(row["Names"], "c");
    assert_eq!(row["State"], "created");
    assert_eq!(row["Image"], BUSYBOX);

    let e = ctx.fails(125, &["create", "--stop-signal", "NOPE", BUSYBOX]);
    assert_eq!(e, "husk: invalid stop signal: invalid signal: NOPE");
    let e = ctx.fails_with(1, &["stop", "-s", "NOPE", "a"]);
    assert_eq!(e, "Error: invalid signal: NOPE");
    let e = ctx.fails_with(1, &["ps", "--filter", "colour=red"]);
    assert_eq!(e, "Error: invalid filter 'colour'");
    let e = ctx.fails_with(1, &["ps", "--filter", "status=sleeping"]);
    assert!(
        e.starts_with("Error: invalid filter 'status=sleeping'"),
        "{e}"
    );
    let e = ctx.fails_with(1, &["ps", "-a", "--format", "{{.Nope}}"]);
    assert!(e.starts_with("Error: template"), "{e}");
    let e = ctx.fails_with(1, &["ps", "--format", "{{.Names"]);
    assert!(e.starts_with("Error: template parsing error"), "{e}");
    let e = ctx.fails_with(1, &["inspect", "-f", "{{.Nope}}", "a"]);
    assert!(e.starts_with("Error: template"), "{e}");

    let images = ctx.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(images.trim(), format!("{BUSYBOX}:latest"));
    let none = ctx.ok(&["images", "-q", "--filter", "dangling=true"]);
    assert!(none.is_empty(), "{none}");
    let found = ctx.ok(&[
        "images",
        "--filter",
        "reference=husk/*",
        "--format",
        "{{.ID}}",
    ]);
    assert_eq!(found.trim().len(), 12, "{found}");
    let nothing = ctx.ok(&["images", "--filter", "reference=other/*", "-q"]);
    assert!(nothing.is_empty());
    let top = ctx.ok(&["history", "-q", BUSYBOX]);
    assert_eq!(top.lines().next(), ctx.ok(&["images", "-q"]).lines().next());
    let steps = ctx.ok(&["image", "history", "--format", "{{.Size}}", BUSYBOX]);
    assert!(steps.lines().any(|l| l.ends_with("MB")), "{steps}");
    let id = ctx.ok(&["image", "inspect", "-f", "{{.Id}}", BUSYBOX]);
    assert!(id.trim().starts_with("sha256:"), "{id}");

    // The default isolation: $HUSK_ISOLATION, else daemon.json's, else vm.
    std::fs::write(
        ctx.root().join("daemon.json"),
        r#"{"default-isolation": "process"}"#,
    )
    .unwrap();
    let isolation = |env: Option<&str>| {
        let mut c = ctx.cmd();
        c.args(["create", BUSYBOX]);
        match env {
            Some(v) => c.env("HUSK_ISOLATION", v),
            None => c.env_remove("HUSK_ISOLATION"),
        };
        let o = husk_e2e::output(c);
        assert!(o.status.success(), "{}", husk_e2e::stderr(&o));
        let id = String::from_utf8(o.stdout).unwrap();
        let iso = ctx.ok(&["inspect", "-f", "{{.HostConfig.Isolation}}", id.trim()]);
        ctx.ok(&["rm", id.trim()]);
        iso.trim().to_owned()
    };
    assert_eq!(isolation(None), "process");
    assert_eq!(isolation(Some("vm")), "vm");
    std::fs::remove_file(ctx.root().join("daemon.json")).unwrap();
    assert_eq!(isolation(None), "vm");

    let version = ctx.ok(&["version"]);
    assert!(version.starts_with("Client: husk\n Version:"), "{version}");
    assert!(version.contains("Isolation:"), "{version}");
    let df = ctx.ok(&["system", "df"]);
    let row = |kind: &str| {
        df.lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} in {df}"))
            .split_whitespace()
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("Images"), "1 1", "{df}");
    assert_eq!(row("Containers"), "3 0", "{df}");
    ctx.ok(&["rm", "-v", "a"]);
    let pruned = ctx.ok(&["container", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Containers:\n"), "{pruned}");
    for id in &ids[1..] {
        assert!(pruned.contains(id.as_str()), "{pruned}");
    }
    assert!(pruned.contains("Total reclaimed space: "), "{pruned}");
    assert!(ctx.container_dirs().is_empty());
    // Nothing uses the image now: system prune -a takes it.
    let pruned = ctx.ok(&["system", "prune", "-a", "-f"]);
    assert!(pruned.contains("Deleted Images:\n"), "{pruned}");
    assert!(ctx.ok(&["images", "-q"]).is_empty());
}

#[test]
fn stats_then_pause_stops_the_whole_sandbox_and_unpause_resumes_it() {
    for iso in backends("stats_then_pause_stops_the_whole_sandbox_and_unpause_resumes_it") {
        let ctx = Ctx::isolated(iso);
        // -dit works without a terminal here: the pty is the container's (as docker does).
        let script = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done";
        ctx.ok(&[
            "run",
            "-d",
            "--name",
            "ticker",
            "--isolation",
            iso,
            BUSYBOX,
            "sh",
            "-c",
            script,
        ]);
        let ticks = || ctx.ok(&["logs", "ticker"]).lines().count();
        assert!(
            Ctx::eventually(run_common::GUARD, || ticks() > 0),
            "[{iso}]"
        );
        // stats: docker's columns, read from the VMM (vm) or the cgroup (process).
        let stats = ctx.ok(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}",
        ]);
        let f: Vec<&str> = stats.trim().split('|').collect();
        assert_eq!(f[0], "ticker", "[{iso}] {stats}");
        let cpu: f64 = f[1].trim_end_matches('%').parse().unwrap();
        assert!(cpu >= 0.0, "[{iso}] {stats}");
        let (used, limit) = f[2].split_once(" / ").unwrap();
        assert!(!used.starts_with("0B"), "[{iso}] {stats}");
        match iso {
            "vm" => {
                assert_eq!(limit, "256MiB", "[vm] the guest's RAM: {stats}");
                assert_eq!(f[3], "-", "[vm] guest processes are not visible: {stats}");
            }
            _ => assert!(f[3].parse::<u32>().unwrap() >= 2, "[{iso}] {stats}"),
        }
        ctx.ok(&["pause", "ticker"]);
        let state = ctx.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}} {{.State.Running}} {{.State.Pid}}",
            "ticker",
        ]);
        let fields: Vec<&str> = state.split_whitespace().collect();
        assert_eq!(&fields[..3], ["paused", "true", "true"], "[{iso}] {state}");
        let pid: i64 = fields[3].parse().unwrap();
        match iso {
            // The VMM process is stopped as a whole: no vCPU runs.
            "vm" => assert_eq!(
                runtime::procfs::state(i32::try_from(pid).unwrap()),
                Some('T'),
                "[vm] the VMM is stopped"
            ),
            // The container's cgroup is frozen (v1's freezer, or v2's cgroup.freeze).
            _ => {
                let id = ctx.ok(&["inspect", "-f", "{{.Id}}", "ticker"]);
                let v1 = format!("/sys/fs/cgroup/freezer/husk/{}/freezer.state", id.trim());
                let v2 = format!("/sys/fs/cgroup/husk/{}/cgroup.events", id.trim());
                let frozen = std::fs::read_to_string(&v1).is_ok_and(|s| s.trim() == "FROZEN")
                    || std::fs::read_to_string(&v2)
                        .is_ok_and(|s| s.lines().any(|l| l == "frozen 1"));
                assert!(frozen, "[{iso}] the cgroup is frozen (pid {pid})");
            }
        }
        let ps = ctx.ok(&[
            "ps",
            "--filter",
            "status=paused",
            "--format",
            "{{.Names}} {{.Status}}",
        ]);
        assert!(
            ps.starts_with("ticker Up") && ps.trim_end().ends_with("(Paused)"),
            "{ps}"
        );
        let e = ctx.fails(125, &["exec", "ticker", "true"]);
        assert_eq!(
            e,
            "husk: Container ticker is paused, unpause the container before exec"
        );
        let e = ctx.fails_with(1, &["pause", "ticker"]);
        assert!(e.ends_with("is already paused"), "[{iso}] {e}");
        let paused_at = ticks();
        ctx.ok(&["unpause", "ticker"]);
        let e = ctx.fails_with(1, &["unpause", "ticker"]);
        assert!(e.ends_with("is not paused"), "[{iso}] {e}");
        assert!(
            Ctx::eventually(run_common::GUARD, || ticks() > paused_at + 2),
            "[{iso}] it runs again"
        );
        assert_eq!(
            ctx.ok(&["inspect", "-f", "{{.State.Status}}", "ticker"])
                .trim(),
            "running"
        );
        // stop of a paused container resumes it first, so the stop can land.
        ctx.ok(&["pause", "ticker"]);
        ctx.ok(&["stop", "-t", "1", "ticker"]);
        assert_eq!(
            ctx.ok(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.Paused}}",
                "ticker"
            ])
            .trim(),
            "exited false"
        );
        ctx.ok(&["rm", "ticker"]);
        ctx.assert_clean();
    }
}
