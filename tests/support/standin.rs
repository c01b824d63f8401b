//! A DRBD stand-in site for tests: a temporary state dir with the shared ext4 image, one wrapper
//! script per node (so each node's agent gets its own `drbdadm`/`drbdsetup` path with the node's
//! name baked in), and a `Drop` that detaches every loop device backing the image, whatever state
//! the test left the nodes in.
//!
//! The stand-in itself is `tests/tools/drbd_standin.rs`; [`binary`] builds it on first use.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The stand-in binary, freshly built: under `cargo test` this runs `cargo build --example
/// drbd_standin` once per test binary (same profile and target dir), so a run filtered with
/// `--test` never uses a stale stand-in.
pub fn binary() -> PathBuf {
    let built = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("test binary does not live in <target>/<profile>/deps")?;
        let target_dir = profile_dir.parent().ok_or("no target dir")?;
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        if let Ok(cargo) = std::env::var("CARGO") {
            let out = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "--example",
                    "drbd_standin",
                    "--profile",
                    &profile,
                ])
                .arg("--target-dir")
                .arg(target_dir)
                .arg("--manifest-path")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
                .output()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building the DRBD stand-in failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let path = profile_dir.join("examples").join("drbd_standin");
        if path.exists() {
            Ok(path)
        } else {
            Err(format!(
                "the DRBD stand-in is not built at {}; run `cargo build --example drbd_standin`",
                path.display()
            ))
        }
    });
    match built {
        Ok(path) => path.clone(),
        Err(why) => panic!("{why}"),
    }
}

/// One stand-in resource shared by a set of nodes.
pub struct Site {
    /// The temporary directory holding everything.
    pub dir: tempfile::TempDir,
    /// The stand-in's state dir.
    pub state: PathBuf,
    /// The resource name.
    pub resource: String,
}

impl Site {
    /// Makes the image for `resource` and brings it `up` on every node.
    pub fn create(resource: &str, nodes: &[&str]) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        let site = Site {
            dir,
            state,
            resource: resource.to_string(),
        };
        let standin = binary();
        for node in nodes {
            let bin = site.dir.path().join("bin").join(node);
            std::fs::create_dir_all(&bin).expect("bin dir");
            let script = bin.join("drbd");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\n# test wrapper: the DRBD stand-in as node {node}\nexec '{}' --state-dir '{}' --node '{node}' \"$@\"\n",
                    standin.display(),
                    site.state.display()
                ),
            )
            .expect("wrapper script");
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod wrapper");
        }
        let first = nodes.first().expect("at least one node");
        site.ok(first, &["create-md", resource, "--size-mb", "16"]);
        for node in nodes {
            site.ok(node, &["up", resource]);
        }
        site
    }

    /// The wrapper that acts as `drbdadm` and `drbdsetup` for `node`.
    pub fn wrapper(&self, node: &str) -> String {
        self.dir
            .path()
            .join("bin")
            .join(node)
            .join("drbd")
            .to_string_lossy()
            .into_owned()
    }

    /// Runs the stand-in as `node`.
    pub fn run(&self, node: &str, args: &[&str]) -> Output {
        Command::new(self.wrapper(node))
            .args(args)
            .output()
            .expect("run the stand-in")
    }

    /// Runs the stand-in as `node` and insists that it succeeds.
    pub fn ok(&self, node: &str, args: &[&str]) -> String {
        let out = self.run(node, args);
        assert!(
            out.status.success(),
            "stand-in {node} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The shared image.
    pub fn image(&self) -> PathBuf {
        self.state.join(&self.resource).join("disk.img")
    }

    /// The device symlink the stand-in keeps for `node` while it is Primary.
    pub fn device_link(&self, node: &str) -> PathBuf {
        self.state.join(&self.resource).join(format!("{node}.dev"))
    }

    /// The ledger's entries, oldest first.
    pub fn ledger(&self) -> Vec<serde_json::Value> {
        match std::fs::read_to_string(self.state.join("ledger.jsonl")) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("ledger line is JSON"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Loop devices currently backed by the image.
    pub fn loop_devices(&self) -> Vec<String> {
        let out = Command::new("losetup")
            .arg("-j")
            .arg(self.image())
            .output()
            .expect("losetup -j");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').next())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for device in self.loop_devices() {
            match Command::new("losetup").args(["-d", &device]).status() {
                Ok(s) if s.success() => {}
                other => eprintln!("cleanup: losetup -d {device}: {other:?}"),
            }
        }
    }
}
