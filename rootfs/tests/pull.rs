//! Pulls from a real registry (Debian's docker-registry on loopback) with images pushed by
//! skopeo: media types and compressions, platform choice, dedup, resume, concurrency, auth,
//! and registries that serve broken or hostile content.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use rootfs::digest::Digest;
use rootfs::reference::Reference;
use rootfs::registry::{self, Credentials, Outcome, PullOptions, PullReport, progress::Silent};
use rootfs::store::Store;
use support::oci::{self, ImageSpec};
use support::registry::{Push, Registry};

fn pull(root: &Path, r: &str) -> Result<PullReport, registry::PullError> {
    let reference = Reference::parse(r).unwrap();
    registry::pull(root, &reference, &PullOptions::default(), &Silent)
}

/// A chain of errors as the CLI prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn layers(seed: u64, n: usize, size: usize) -> Vec<oci::LayerFiles> {
    (0..n)
        .map(|i| {
            vec![(
                format!("l{i}/data.bin"),
                oci::random_bytes(seed * 100 + i as u64, size),
            )]
        })
        .collect()
}

/// Pushes a single-platform image of `n` layers and returns its diff_ids.
fn push_image(
    reg: &Registry,
    name: &str,
    seed: u64,
    n: usize,
    size: usize,
    how: Push,
) -> Vec<Digest> {
    let layout = tempfile::tempdir().unwrap();
    let built = oci::write_layout(
        layout.path(),
        "t",
        &[ImageSpec {
            arch: "amd64",
            layers: layers(seed, n, size),
        }],
    );
    reg.push(layout.path(), "t", name, how);
    built.into_iter().next().unwrap().diff_ids
}

fn partial_files(root: &Path) -> usize {
    std::fs::read_dir(root.join("images/partial"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn pulls_oci_gzip_and_repull_is_a_no_op() {
    let reg = Registry::start();
    let diff_ids = push_image(&reg, "t/gz:1", 1, 1, 100_000, Push::OciGzip);
    let root = tempfile::tempdir().unwrap();
    let name = format!("{}/t/gz:1", reg.host());
    let r = pull(root.path(), &name).unwrap();
    assert!(!r.up_to_date);
    let layer_ids: Vec<Digest> = r.image.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(layer_ids, diff_ids);
    assert!(r.image.layers[0].media_type.ends_with("tar+gzip"));
    assert!(r.image.references.iter().any(|x| x.ends_with("/t/gz:1")));
    let store = Store::open(root.path()).unwrap();
    for b in r.image.blobs() {
        let bytes = store.read_blob(b).unwrap();
        assert_eq!(&Digest::of(&bytes), b, "blob verified in store");
    }
    assert_eq!(store.resolve(&name).unwrap().id, r.image.id);
    let again = pull(root.path(), &name).unwrap();
    assert!(again.up_to_date);
    assert_eq!(again.downloaded_bytes(), 0);
    assert_eq!(again.image.id, r.image.id);
    assert_eq!(partial_files(root.path()), 0);
}

#[test]
fn pulls_multi_layer_zstd_and_docker_schema2() {
    let reg = Registry::start();
    let zstd_ids = push_image(&reg, "t/zstd:1", 2, 3, 50_000, Push::OciZstd);
    let docker_ids = push_image(&reg, "t/docker:1", 3, 2, 50_000, Push::DockerGzip);
    let root = tempfile::tempdir().unwrap();
    let z = pull(root.path(), &format!("{}/t/zstd:1", reg.host())).unwrap();
    assert_eq!(z.layers.len(), 3);
    assert!(
        z.image
            .layers
            .iter()
            .all(|l| l.media_type.ends_with("tar+zstd"))
    );
    let got: Vec<Digest> = z.image.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(got, zstd_ids);
    let d = pull(root.path(), &format!("{}/t/docker:1", reg.host())).unwrap();
    assert_eq!(
        d.image.manifest_media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert!(
        d.image
            .layers
            .iter()
            .all(|l| l.media_type.contains("docker"))
    );
    let got: Vec<Digest> = d.image.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(got, docker_ids);
}

#[test]
fn index_pull_picks_linux_amd64() {
    let reg = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    let built = oci::write_layout(
        layout.path(),
        "multi",
        &[
            ImageSpec {
                arch: "arm64",
                layers: layers(10, 1, 1000),
            },
            ImageSpec {
                arch: "amd64",
                layers: layers(11, 2, 1000),
            },
        ],
    );
    reg.push(layout.path(), "multi", "t/multi:1", Push::OciGzip);
    let root = tempfile::tempdir().unwrap();
    let r = pull(root.path(), &format!("{}/t/multi:1", reg.host())).unwrap();
    assert_eq!(r.image.config.architecture, "amd64");
    let got: Vec<Digest> = r.image.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(got, built[1].diff_ids);
    assert_ne!(
        r.digest, r.image.manifest_digest,
        "reports the index digest"
    );
    // Pull by the index digest resolves the same image.
    let by_digest = pull(root.path(), &format!("{}/t/multi@{}", reg.host(), r.digest)).unwrap();
    assert_eq!(by_digest.image.id, r.image.id);
}

#[test]
fn shared_layers_are_downloaded_once() {
    let reg = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    let base = layers(20, 1, 200_000).pop().unwrap();
    for (tag, seed) in [("a", 21), ("b", 22)] {
        let mut ls = vec![base.clone()];
        ls.extend(layers(seed, 1, 1000));
        oci::write_layout(
            layout.path(),
            tag,
            &[ImageSpec {
                arch: "amd64",
                layers: ls,
            }],
        );
        reg.push(
            layout.path(),
            tag,
            &format!("t/shared:{tag}"),
            Push::OciGzip,
        );
    }
    let root = tempfile::tempdir().unwrap();
    let a = pull(root.path(), &format!("{}/t/shared:a", reg.host())).unwrap();
    let b = pull(root.path(), &format!("{}/t/shared:b", reg.host())).unwrap();
    assert_eq!(a.layers[0].0, b.layers[0].0);
    assert_eq!(b.layers[0].1, Outcome::AlreadyExists);
    assert!(matches!(b.layers[1].1, Outcome::Downloaded { .. }));
    assert!(!b.up_to_date);
}

#[test]
fn interrupted_download_resumes_from_the_partial() {
    let reg = Registry::start();
    push_image(&reg, "t/big:1", 30, 1, 4 << 20, Push::OciGzip);
    let name = format!("{}/t/big:1", reg.host());
    let full = tempfile::tempdir().unwrap();
    let r = pull(full.path(), &name).unwrap();
    let layer = &r.image.layers[0];
    let blob = std::fs::read(Store::open(full.path()).unwrap().blob_path(&layer.digest)).unwrap();
    let half = blob.len() / 2;

    // A download cut off halfway (what a killed pull leaves) continues where it stopped.
    let root = tempfile::tempdir().unwrap();
    let partial = root.path().join("images/partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join(layer.digest.hex()), &blob[..half]).unwrap();
    let resumed = pull(root.path(), &name).unwrap();
    assert_eq!(
        resumed.layers[0].1,
        Outcome::Downloaded {
            bytes: (blob.len() - half) as u64,
            resumed_from: half as u64
        }
    );
    assert_eq!(partial_files(root.path()), 0);

    // A corrupt partial is detected by the digest check and downloaded again in full.
    let root = tempfile::tempdir().unwrap();
    let partial = root.path().join("images/partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join(layer.digest.hex()), vec![0u8; half]).unwrap();
    let redone = pull(root.path(), &name).unwrap();
    assert_eq!(
        redone.layers[0].1,
        Outcome::Downloaded {
            bytes: blob.len() as u64,
            resumed_from: 0
        }
    );
}

#[test]
fn concurrent_pulls_of_one_image_share_the_work() {
    let reg = Registry::start();
    push_image(&reg, "t/conc:1", 40, 4, 1 << 20, Push::OciGzip);
    let name = format!("{}/t/conc:1", reg.host());
    let root = tempfile::tempdir().unwrap();
    let results: Vec<PullReport> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| pull(root.path(), &name).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|w| w[0].image.id == w[1].image.id));
    // Every layer came over the network exactly once in total.
    for i in 0..4 {
        let downloads = results
            .iter()
            .filter(|r| matches!(r.layers[i].1, Outcome::Downloaded { .. }))
            .count();
        assert_eq!(downloads, 1, "layer {i}");
    }
    let store = Store::open(root.path()).unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(partial_files(root.path()), 0);
}

#[test]
fn basic_auth_login_then_pull() {
    let reg = Registry::start_with_basic_auth("alice", "s3cret");
    push_image(&reg, "t/private:1", 50, 1, 1000, Push::OciGzip);
    let name = format!("{}/t/private:1", reg.host());
    let root = tempfile::tempdir().unwrap();
    // Keep the tester's own docker config out of it.
    unsafe_free_env_check();
    let e = chain(&pull(root.path(), &name).unwrap_err());
    assert!(e.contains("pull access denied"), "{e}");
    let bad = Credentials {
        username: "alice".into(),
        password: "wrong".into(),
    };
    let e = chain(&registry::login(root.path(), &reg.host(), &bad, &[]).unwrap_err());
    assert!(e.contains("incorrect username or password"), "{e}");
    assert!(!root.path().join("auth.json").exists());
    let good = Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    registry::login(root.path(), &reg.host(), &good, &[]).unwrap();
    let r = pull(root.path(), &name).unwrap();
    assert_eq!(r.layers.len(), 1);
}

/// The tests run with the default HOME; a docker config there for 127.0.0.1 would change
/// what the auth tests see.
fn unsafe_free_env_check() {
    if let Some(home) = std::env::var_os("HOME") {
        let cfg = Path::new(&home).join(".docker/config.json");
        if let Ok(s) = std::fs::read_to_string(cfg) {
            assert!(
                !s.contains("127.0.0.1"),
                "~/.docker/config.json has 127.0.0.1 credentials"
            );
        }
    }
}

#[test]
fn corrupt_blob_in_registry_is_a_clear_error_and_leaves_nothing() {
    let reg = Registry::start();
    push_image(&reg, "t/bad:1", 60, 2, 100_000, Push::OciGzip);
    let name = format!("{}/t/bad:1", reg.host());
    // Find the layer blobs: the two biggest files in the registry storage.
    let mut files = reg.blob_files();
    files.sort_by_key(|f| std::fs::metadata(f).unwrap().len());
    let victim = files.last().unwrap().clone();
    let hex = victim
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let len = std::fs::metadata(&victim).unwrap().len() as usize;
    std::fs::write(&victim, vec![0x5a; len]).unwrap();
    let root = tempfile::tempdir().unwrap();
    let e = chain(&pull(root.path(), &name).unwrap_err());
    assert!(e.contains(&format!("pulling {name}")), "{e}");
    assert!(e.contains(&format!("layer sha256:{hex}")), "{e}");
    assert!(e.contains("digest mismatch"), "{e}");
    let store = Store::open(root.path()).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(!store.has_blob(&Digest::from_hex(&hex).unwrap()));
    assert_eq!(partial_files(root.path()), 0);
    // The store still works.
    push_image(&reg, "t/good:1", 61, 1, 1000, Push::OciGzip);
    pull(root.path(), &format!("{}/t/good:1", reg.host())).unwrap();
}

#[test]
fn manifest_referencing_a_missing_blob_names_the_layer() {
    let reg = Registry::start();
    push_image(&reg, "t/missing:1", 70, 1, 100_000, Push::OciGzip);
    let mut files = reg.blob_files();
    files.sort_by_key(|f| std::fs::metadata(f).unwrap().len());
    let victim = files.last().unwrap().clone();
    let hex = victim
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    std::fs::remove_file(&victim).unwrap();
    let root = tempfile::tempdir().unwrap();
    let name = format!("{}/t/missing:1", reg.host());
    let e = chain(&pull(root.path(), &name).unwrap_err());
    assert!(e.contains(&format!("layer sha256:{hex}")), "{e}");
    assert!(Store::open(root.path()).unwrap().list().unwrap().is_empty());
}

#[test]
fn unknown_image_or_tag_is_a_docker_like_error() {
    let reg = Registry::start();
    push_image(&reg, "t/known:1", 80, 1, 1000, Push::OciGzip);
    let root = tempfile::tempdir().unwrap();
    let e = chain(&pull(root.path(), &format!("{}/t/known:nosuch", reg.host())).unwrap_err());
    assert!(
        e.contains(&format!(
            "manifest for {}/t/known:nosuch not found: manifest unknown",
            reg.host()
        )),
        "{e}"
    );
    let e = chain(&pull(root.path(), &format!("{}/t/never", reg.host())).unwrap_err());
    assert!(e.contains("not found"), "{e}");
}

/// Token auth (the Docker Hub scheme) against the real registry: it answers 401 with a
/// `Bearer realm=...,service=...,scope=...` challenge, husk fetches a token from the realm
/// (a loopback token server signing RS256 JWTs the registry verifies), and pulls with it.
/// A repository whose token needs a login is refused until `husk login`, which then sends
/// the credentials to the token server.
#[test]
fn bearer_token_auth_anonymous_and_logged_in() {
    use std::sync::Arc;
    use support::token;
    let issuer = Arc::new(token::Issuer::new());
    let server = token::serve(Arc::clone(&issuer), "alice", "s3cret");
    let realm = format!("http://{}/token", server.addr);
    let reg = Registry::start_with_token_auth(&realm, &issuer.cert(), "alice", "s3cret");
    push_image(&reg, "tok/app:1", 70, 2, 2000, Push::OciGzip);
    push_image(&reg, "private/app:1", 71, 1, 2000, Push::OciGzip);
    let root = tempfile::tempdir().unwrap();
    unsafe_free_env_check();
    server.requests.lock().unwrap().clear();

    let r = pull(root.path(), &format!("{}/tok/app:1", reg.host())).unwrap();
    assert_eq!(r.layers.len(), 2);
    let asked: Vec<Vec<(String, String)>> = server
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| token::query(&r.path))
        .collect();
    assert!(
        asked.iter().any(|q| {
            q.contains(&("service".into(), token::SERVICE.into()))
                && q.contains(&("scope".into(), "repository:tok/app:pull".into()))
        }),
        "no token request for tok/app: {asked:?}"
    );

    let private = format!("{}/private/app:1", reg.host());
    let e = chain(&pull(root.path(), &private).unwrap_err());
    assert!(
        e.contains("pull access denied for private/app") && e.contains("husk login"),
        "{e}"
    );
    let bad = Credentials {
        username: "alice".into(),
        password: "wrong".into(),
    };
    let e = chain(&registry::login(root.path(), &reg.host(), &bad, &[]).unwrap_err());
    assert!(e.contains("incorrect username or password"), "{e}");
    let good = Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    registry::login(root.path(), &reg.host(), &good, &[]).unwrap();
    let r = pull(root.path(), &private).unwrap();
    assert_eq!(r.layers.len(), 1);
}

/// Credentials from a docker-style config file (`$DOCKER_CONFIG/config.json`, `auths` with
/// base64 `user:password`) are used when `husk login` stored none.
#[test]
fn docker_config_credentials_are_used() {
    let reg = Registry::start_with_basic_auth("bob", "hunter2");
    push_image(&reg, "t/dc:1", 72, 1, 1000, Push::OciGzip);
    let root = tempfile::tempdir().unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let name = format!("{}/t/dc:1", reg.host());
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bob:hunter2");
    std::fs::write(
        cfg.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "docker_config_child",
            "--nocapture",
            "--include-ignored",
        ])
        .env("DOCKER_CONFIG", cfg.path())
        .env("HUSK_TEST_ROOT", root.path())
        .env("HUSK_TEST_IMAGE", &name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Store::open(root.path()).unwrap().resolve(&name).is_ok());
}

/// The half of `docker_config_credentials_are_used` that runs in a child process with
/// `DOCKER_CONFIG` set (the environment of this process stays untouched).
#[test]
#[ignore = "run by docker_config_credentials_are_used with DOCKER_CONFIG set"]
fn docker_config_child() {
    let (Some(root), Some(image)) = (
        std::env::var_os("HUSK_TEST_ROOT"),
        std::env::var("HUSK_TEST_IMAGE").ok(),
    ) else {
        panic!("run by docker_config_credentials_are_used");
    };
    pull(Path::new(&root), &image).unwrap();
}
