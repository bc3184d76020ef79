//! The container image, built without a container engine by
//! `image/build-oci.py` from the binary under test, and checked: its
//! entrypoint runs `keyhook --version` as the image's non-root user with
//! nothing but the image's files, and it has no shell.
//!
//! The image is assembled from the debug binary: what is checked here (the
//! layout, the config, the libraries the binary needs, the user) does not
//! depend on the build profile, and a `dist` build would cost CI minutes.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::support::{backends::require_tool, process::KEYHOOK, tools_required};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A blob of the layout, by its `sha256:` digest.
fn blob(layout: &Path, digest: &Value) -> PathBuf {
    let digest = digest.as_str().unwrap();
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

#[test]
fn the_image_runs_keyhook_as_a_non_root_user_and_has_no_shell() {
    if require_tool("python3").is_none() || require_tool("ldd").is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("oci");
    run(Command::new("python3")
        .arg(repo().join("image/build-oci.py"))
        .arg(KEYHOOK)
        .arg(&layout));

    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(&layout, &index["manifests"][0]["digest"]));
    let config = json(&blob(&layout, &manifest["config"]["digest"]));
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/keyhook"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        env!("CARGO_PKG_VERSION")
    );

    let layer = blob(&layout, &manifest["layers"][0]["digest"]);
    let files = run(Command::new("tar").arg("-tzf").arg(&layer));
    let shells = ["sh", "bash", "dash", "ash", "zsh", "busybox"];
    for file in files.lines() {
        let name = file.trim_end_matches('/').rsplit('/').next().unwrap();
        assert!(!shells.contains(&name), "the image holds a shell: {file}");
    }
    assert!(
        files
            .lines()
            .any(|f| f == "etc/ssl/certs/ca-certificates.crt"),
        "CA certificates for the backends' TLS:\n{files}"
    );

    // The entrypoint, as the image's user, with only the image's files.
    if !is_root() {
        assert!(
            !tools_required(),
            "running the image's entrypoint needs chroot, which needs root"
        );
        eprintln!("skipping the image's entrypoint: chroot needs root");
        return;
    }
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs));
    let version = run(Command::new("chroot")
        .arg("--userspec=65532:65532")
        .arg(&rootfs)
        .args(["/usr/local/bin/keyhook", "--version"]));
    assert_eq!(version, format!("keyhook {}\n", env!("CARGO_PKG_VERSION")));
    let shell = Command::new("chroot")
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "true"])
        .output()
        .unwrap();
    assert!(!shell.status.success(), "/bin/sh ran in the image");
}
