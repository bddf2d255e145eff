//! Every precedence rule of the run spec, one test each.

use super::*;
use rootfs::digest::Digest;
use rootfs::store::config::{ContainerConfig, ImageConfig};

fn image(cfg: ContainerConfig) -> ImageRecord {
    ImageRecord {
        id: Digest::of(b"config"),
        references: vec!["docker.io/husk/test:latest".into()],
        repo_digests: vec![],
        manifest_digest: Digest::of(b"manifest"),
        manifest_media_type: String::new(),
        config: ImageConfig {
            config: Some(cfg),
            ..ImageConfig::default()
        },
        layers: vec![],
        created: None,
        size: 0,
        added: String::new(),
        parent: None,
        build_key: None,
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn sample() -> ImageRecord {
    image(ContainerConfig {
        entrypoint: Some(strs(&["/entry", "-x"])),
        cmd: Some(strs(&["default", "cmd"])),
        env: Some(strs(&["PATH=/img/bin", "A=image", "B=image", "C=image"])),
        working_dir: Some("/srv".into()),
        user: Some("nobody".into()),
        ..ContainerConfig::default()
    })
}

fn host(name: &str) -> Option<String> {
    match name {
        "FROM_HOST" => Some("host value".into()),
        _ => None,
    }
}

fn build(img: &ImageRecord, flags: &RunFlags) -> Result<CreateRequest, SpecError> {
    super::build(img, "husk/test", flags, &host, 2)
}

fn argv(r: &CreateRequest) -> Vec<String> {
    r.config
        .entrypoint
        .iter()
        .chain(&r.config.cmd)
        .cloned()
        .collect()
}

#[test]
fn image_defaults_apply_without_flags() {
    let r = build(&sample(), &RunFlags::default()).unwrap();
    let s = &r.config;
    assert_eq!(s.entrypoint, strs(&["/entry", "-x"]));
    assert_eq!(s.cmd, strs(&["default", "cmd"]));
    assert_eq!(argv(&r), strs(&["/entry", "-x", "default", "cmd"]));
    assert_eq!(
        s.env,
        strs(&["PATH=/img/bin", "A=image", "B=image", "C=image"])
    );
    assert_eq!(s.working_dir, "/srv");
    assert_eq!(s.user, "nobody");
    assert_eq!(s.hostname, "");
    assert!(!s.tty && !s.open_stdin && !s.attach_stdout);
    assert_eq!(r.image, "husk/test");
    assert_eq!(r.name, None);
    // docker's default network; everything else as a HostConfig starts.
    let expected = HostConfig {
        network_mode: crate::network::Mode::Bridge,
        ..HostConfig::default()
    };
    assert_eq!(r.host, expected);
}

#[test]
fn cmd_args_replace_image_cmd_but_keep_entrypoint() {
    let flags = RunFlags {
        cmd: strs(&["mine"]),
        ..RunFlags::default()
    };
    let s = build(&sample(), &flags).unwrap();
    assert_eq!(argv(&s), strs(&["/entry", "-x", "mine"]));
}

#[test]
fn entrypoint_flag_replaces_entrypoint_and_clears_image_cmd() {
    let flags = RunFlags {
        entrypoint: Some(vec!["/bin/echo".into()]),
        ..RunFlags::default()
    };
    let s = build(&sample(), &flags).unwrap().config;
    assert_eq!(s.entrypoint, strs(&["/bin/echo"]));
    assert!(s.cmd.is_empty());
    let flags = RunFlags {
        entrypoint: Some(vec!["/bin/echo".into()]),
        cmd: strs(&["a", "b"]),
        ..RunFlags::default()
    };
    assert_eq!(
        argv(&build(&sample(), &flags).unwrap()),
        strs(&["/bin/echo", "a", "b"])
    );
}

#[test]
fn empty_entrypoint_clears_it() {
    let flags = RunFlags {
        entrypoint: Some(vec![String::new()]),
        cmd: strs(&["ls"]),
        ..RunFlags::default()
    };
    let s = build(&sample(), &flags).unwrap();
    assert!(s.config.entrypoint.is_empty());
    assert_eq!(argv(&s), strs(&["ls"]));
    let flags = RunFlags {
        entrypoint: Some(vec![]),
        ..RunFlags::default()
    };
    assert_eq!(build(&sample(), &flags).unwrap_err(), SpecError::NoCommand);
}

#[test]
fn nothing_to_run_is_an_error() {
    let img = image(ContainerConfig::default());
    assert_eq!(
        build(&img, &RunFlags::default()).unwrap_err(),
        SpecError::NoCommand
    );
    let flags = RunFlags {
        cmd: strs(&["true"]),
        ..RunFlags::default()
    };
    assert_eq!(argv(&build(&img, &flags).unwrap()), strs(&["true"]));
}

#[test]
fn env_file_overrides_image_and_e_overrides_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env");
    std::fs::write(
        &file,
        "# a comment\n\n   B=file\nC=file\n  # indented comment\nD=file value with = signs\nFROM_HOST\nNOT_ON_HOST\n",
    )
    .unwrap();
    let flags = RunFlags {
        env_files: vec![file],
        env: strs(&["C=flag", "E=flag", "A"]),
        ..RunFlags::default()
    };
    let s = build(&sample(), &flags).unwrap().config;
    assert_eq!(
        s.env,
        strs(&[
            "PATH=/img/bin",
            "B=file",
            "C=flag",
            "D=file value with = signs",
            "FROM_HOST=host value",
            "E=flag",
        ])
    );
}

#[test]
fn later_env_files_override_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (f1, f2) = (dir.path().join("1"), dir.path().join("2"));
    std::fs::write(&f1, "X=one\nY=one\n").unwrap();
    std::fs::write(&f2, "\u{feff}X=two\n").unwrap();
    let flags = RunFlags {
        env_files: vec![f1, f2],
        cmd: strs(&["true"]),
        ..RunFlags::default()
    };
    let s = build(&image(ContainerConfig::default()), &flags).unwrap();
    assert_eq!(s.config.env, strs(&["X=two", "Y=one"]));
}

#[test]
fn e_key_takes_host_value_or_unsets() {
    let flags = RunFlags {
        env: strs(&["FROM_HOST", "B", "EMPTY="]),
        ..RunFlags::default()
    };
    let s = build(&sample(), &flags).unwrap().config;
    assert_eq!(
        s.env,
        strs(&[
            "PATH=/img/bin",
            "A=image",
            "C=image",
            "FROM_HOST=host value",
            "EMPTY="
        ])
    );
}

#[test]
fn bad_env_input() {
    let flags = RunFlags {
        env: strs(&["=x"]),
        ..RunFlags::default()
    };
    assert_eq!(
        build(&sample(), &flags).unwrap_err(),
        SpecError::BadEnv("=x".into())
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env");
    std::fs::write(&file, "BAD NAME=1\n").unwrap();
    let flags = RunFlags {
        env_files: vec![file],
        ..RunFlags::default()
    };
    assert!(matches!(
        build(&sample(), &flags),
        Err(SpecError::BadEnv(_))
    ));
    let flags = RunFlags {
        env_files: vec![dir.path().join("missing")],
        ..RunFlags::default()
    };
    let e = build(&sample(), &flags).unwrap_err();
    assert!(e.to_string().starts_with("open "), "{e}");
}

#[test]
fn process_env_adds_path_hostname_and_term() {
    let img = image(ContainerConfig::default());
    let flags = RunFlags {
        env: strs(&["A=1"]),
        tty: true,
        cmd: strs(&["sh"]),
        ..RunFlags::default()
    };
    let s = build(&img, &flags).unwrap().config;
    assert_eq!(
        process_env(&s, "abc"),
        strs(&[
            &format!("PATH={DEFAULT_PATH}"),
            "HOSTNAME=abc",
            "TERM=xterm",
            "A=1"
        ])
    );
    let s = build(&sample(), &RunFlags::default()).unwrap().config;
    assert_eq!(process_env(&s, "h")[0], "PATH=/img/bin");
    assert!(process_env(&s, "h").contains(&"HOSTNAME=h".to_owned()));
    assert!(!process_env(&s, "h").iter().any(|e| e.starts_with("TERM=")));
}

#[test]
fn workdir_flag_overrides_image_and_must_be_absolute() {
    let flags = RunFlags {
        workdir: Some("/tmp".into()),
        ..RunFlags::default()
    };
    assert_eq!(build(&sample(), &flags).unwrap().config.working_dir, "/tmp");
    let flags = RunFlags {
        workdir: Some("tmp".into()),
        ..RunFlags::default()
    };
    assert_eq!(
        build(&sample(), &flags).unwrap_err(),
        SpecError::RelativeWorkdir("tmp".into())
    );
    let none = RunFlags {
        cmd: strs(&["x"]),
        ..RunFlags::default()
    };
    assert_eq!(
        build(&image(ContainerConfig::default()), &none)
            .unwrap()
            .config
            .working_dir,
        "/"
    );
}

#[test]
fn user_flag_overrides_image_user() {
    for u in ["root", "0", "1000:1000", "daemon:adm"] {
        let flags = RunFlags {
            user: Some(u.into()),
            ..RunFlags::default()
        };
        assert_eq!(build(&sample(), &flags).unwrap().config.user, u);
    }
    for u in ["", ":", "a:", ":b", "a:b:c"] {
        let flags = RunFlags {
            user: Some(u.into()),
            ..RunFlags::default()
        };
        assert_eq!(
            build(&sample(), &flags).unwrap_err(),
            SpecError::BadUser(u.into())
        );
    }
}

#[test]
fn hostname_flag_or_empty_for_the_short_id() {
    let s = build(&sample(), &RunFlags::default()).unwrap();
    assert_eq!(s.config.hostname, "");
    let flags = RunFlags {
        hostname: Some("web".into()),
        ..RunFlags::default()
    };
    assert_eq!(build(&sample(), &flags).unwrap().config.hostname, "web");
}

#[test]
fn memory_sizes_and_minimum() {
    assert_eq!(parse_memory("512m"), Ok(512 << 20));
    assert_eq!(parse_memory("1g"), Ok(1 << 30));
    assert_eq!(parse_memory("6m"), Ok(6 << 20));
    assert_eq!(parse_memory("8388608"), Ok(8 << 20));
    assert_eq!(parse_memory("0"), Ok(0));
    assert_eq!(
        parse_memory("4m"),
        Err(SpecError::MemoryTooSmall("4m".into()))
    );
    assert_eq!(
        parse_memory("1000"),
        Err(SpecError::MemoryTooSmall("1000".into()))
    );
    assert!(matches!(parse_memory("lots"), Err(SpecError::BadMemory(_))));
    assert!(matches!(parse_memory("12q"), Err(SpecError::BadMemory(_))));
    let flags = RunFlags {
        memory: Some("64m".into()),
        ..RunFlags::default()
    };
    assert_eq!(build(&sample(), &flags).unwrap().host.memory, 64 << 20);
}

#[test]
fn cpus_fractional_positive_and_bounded() {
    assert_eq!(parse_cpus("1", 2), Ok(1_000_000_000));
    assert_eq!(parse_cpus("0.5", 2), Ok(500_000_000));
    assert_eq!(parse_cpus(".25", 2), Ok(250_000_000));
    assert_eq!(parse_cpus("1.5", 2), Ok(1_500_000_000));
    assert_eq!(parse_cpus("2", 2), Ok(2_000_000_000));
    assert_eq!(
        parse_cpus("2.5", 2),
        Err(SpecError::TooManyCpus { host: 2 })
    );
    for bad in [
        "0",
        "0.0",
        "-1",
        "",
        ".",
        "1e3",
        "abc",
        "0.0000000001",
        "1.2.3",
    ] {
        assert_eq!(
            parse_cpus(bad, 2),
            Err(SpecError::BadCpus(bad.into())),
            "{bad}"
        );
    }
    let flags = RunFlags {
        cpus: Some("1.5".into()),
        ..RunFlags::default()
    };
    assert_eq!(
        build(&sample(), &flags).unwrap().host.nano_cpus,
        1_500_000_000
    );
}

#[test]
fn restart_policy_and_rm_conflict() {
    let flags = RunFlags {
        restart: Some("on-failure:3".into()),
        ..RunFlags::default()
    };
    let p = build(&sample(), &flags).unwrap().host.restart_policy;
    assert_eq!((p.name.as_str(), p.maximum_retry_count), ("on-failure", 3));
    let stored: crate::container::RestartPolicy =
        serde_json::from_str(r#"{"Name": "", "MaximumRetryCount": 0}"#).unwrap();
    assert_eq!(
        stored.name,
        crate::container::RestartName::No,
        "an empty name is no"
    );
    assert_eq!(serde_json::to_value(&p).unwrap()["Name"], "on-failure");
    let flags = RunFlags {
        restart: Some("sometimes".into()),
        ..RunFlags::default()
    };
    assert!(matches!(
        build(&sample(), &flags),
        Err(SpecError::BadRestart(_))
    ));
    let flags = RunFlags {
        restart: Some("always".into()),
        auto_remove: true,
        ..RunFlags::default()
    };
    assert_eq!(
        build(&sample(), &flags).unwrap_err(),
        SpecError::RestartWithRm
    );
    let flags = RunFlags {
        restart: Some("no".into()),
        auto_remove: true,
        ..RunFlags::default()
    };
    assert!(build(&sample(), &flags).unwrap().host.auto_remove);
}

#[test]
fn isolation_choice_never_falls_back_from_vm() {
    assert_eq!("process".parse(), Ok(IsolationChoice::Process));
    assert!(matches!(
        "container".parse::<IsolationChoice>(),
        Err(SpecError::BadIsolation(_))
    ));
    assert_eq!(IsolationChoice::Auto.resolve(true), Isolation::Vm);
    assert_eq!(IsolationChoice::Auto.resolve(false), Isolation::Process);
    assert_eq!(IsolationChoice::Process.resolve(true), Isolation::Process);
    assert_eq!(IsolationChoice::Vm.resolve(false), Isolation::Vm);
    let flags = RunFlags {
        isolation: Isolation::Process,
        attach: true,
        ..RunFlags::default()
    };
    let r = build(&sample(), &flags).unwrap();
    assert_eq!(r.host.isolation, Isolation::Process);
    assert!(r.config.attach_stdout);
}

fn container() -> crate::container::ContainerConfig {
    let req = build(&sample(), &RunFlags::default()).unwrap();
    crate::container::ContainerConfig::new(
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "web",
        "sha256:00",
        "husk/test",
        req.config,
        req.host,
        vec![],
    )
}

#[test]
fn exec_inherits_env_cwd_and_user_and_flags_override_them() {
    let flags = ExecFlags {
        cmd: strs(&["env"]),
        ..ExecFlags::default()
    };
    let p = exec_process(&container(), &flags, &host).unwrap();
    assert_eq!(p.argv, strs(&["env"]));
    assert_eq!(
        p.env,
        strs(&[
            "PATH=/img/bin",
            "HOSTNAME=0123456789ab",
            "A=image",
            "B=image",
            "C=image"
        ])
    );
    assert_eq!(p.cwd.as_deref(), Some("/srv"));
    assert_eq!(p.user_name.as_deref(), Some("nobody"));
    assert!(!p.tty && !p.stdin && p.size.is_none());
    let flags = ExecFlags {
        env: strs(&["A=exec", "FROM_HOST", "C"]),
        workdir: Some("/tmp".into()),
        user: Some("0:0".into()),
        tty: true,
        interactive: true,
        size: Some(TermSize { rows: 5, cols: 7 }),
        cmd: strs(&["sh"]),
    };
    let p = exec_process(&container(), &flags, &host).unwrap();
    assert_eq!(
        p.env,
        strs(&[
            "PATH=/img/bin",
            "HOSTNAME=0123456789ab",
            "TERM=xterm",
            "A=exec",
            "B=image",
            "FROM_HOST=host value"
        ])
    );
    assert_eq!(p.cwd.as_deref(), Some("/tmp"));
    assert_eq!(p.user_name.as_deref(), Some("0:0"));
    assert!(p.tty && p.stdin);
    assert_eq!(p.size, Some(TermSize { rows: 5, cols: 7 }));
}

#[test]
fn exec_bad_input() {
    let c = container();
    let no_cmd = ExecFlags::default();
    assert_eq!(
        exec_process(&c, &no_cmd, &host).unwrap_err(),
        SpecError::NoCommand
    );
    let rel = ExecFlags {
        workdir: Some("x".into()),
        cmd: strs(&["true"]),
        ..ExecFlags::default()
    };
    assert_eq!(
        exec_process(&c, &rel, &host).unwrap_err(),
        SpecError::RelativeWorkdir("x".into())
    );
}

#[test]
fn add_host_entries_are_name_and_address() {
    assert_eq!(extra_host("db:10.1.2.3").unwrap(), "db:10.1.2.3");
    assert_eq!(extra_host("cache=fd00::5").unwrap(), "cache:fd00::5");
    assert_eq!(extra_host("v6:[fd00::6]").unwrap(), "v6:fd00::6");
    for bad in ["nocolon", "db:999.1.1.1", ":10.0.0.1", "a b:10.0.0.1"] {
        assert_eq!(
            extra_host(bad),
            Err(SpecError::AddHost(bad.into())),
            "{bad}"
        );
    }
}
